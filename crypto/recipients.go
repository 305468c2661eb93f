package crypto

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/containers/ocicrypt/config"
)

// Recipients is a compiled set of recipients; shroud's identity is always
// one of them. Subset narrows it to the keys valid for one push, without
// parsing anything again.
type Recipients struct {
	specs []string
	keys  []RecipientKey
	// parts are what each key (by its index in keys) adds to the
	// EncryptConfig; idJWK and decrypt are the identity's part and the
	// PKCS#11 configuration every set shares.
	parts   []recipientPart
	idJWK   []byte
	decrypt config.DecryptConfig
	// noIdentity: the identity is not a recipient (an encrypt-only rule).
	noIdentity bool
	ec         *config.EncryptConfig
	// subsets are the subsets compiled so far, by the keys they keep.
	mu      sync.Mutex
	subsets map[string]*Recipients
}

// recipientPart is one key's parameter of the EncryptConfig: a JWK, a
// certificate, a PKCS#11 key file, a key provider's arguments (value
// under param), or an OpenPGP key (ring and addr).
type recipientPart struct {
	param      string
	value      []byte
	ring, addr []byte
}

// maxSubsets bounds the subsets a set remembers; beyond, a subset is
// compiled for each push (a few slices appended).
const maxSubsets = 64

// WithoutIdentity is r without shroud's identity among the recipients:
// the set of an encrypt-only rule, whose layer keys shroud can never
// unwrap again once it wrapped them. It fails for a set with no other key.
func (r *Recipients) WithoutIdentity() (*Recipients, error) {
	if len(r.keys) == 0 {
		return nil, errors.New("without shroud's identity the set has no recipient")
	}
	s := &Recipients{idJWK: r.idJWK, decrypt: r.decrypt, noIdentity: true,
		specs: r.specs, keys: r.keys, parts: r.parts}
	s.compile()
	return s, nil
}

// HasIdentity says whether shroud's identity is a recipient of r.
func (r *Recipients) HasIdentity() bool { return !r.noIdentity }

// Specs lists the recipients besides the identity.
func (r *Recipients) Specs() []string { return r.specs }

// Keys lists the keys the set wraps for besides the identity, in the
// order of its recipients: one per recipient, or one per key of a pgp:
// keyring.
func (r *Recipients) Keys() []RecipientKey { return r.keys }

// Subset is the set of the keys whose index in Keys keep holds true (and
// the identity): r itself when keep holds every key. keep must be as long
// as Keys. A subset is compiled once and remembered.
func (r *Recipients) Subset(keep []bool) *Recipients {
	if len(keep) != len(r.keys) {
		panic(fmt.Sprintf("crypto: Subset of %d keys given %d", len(r.keys), len(keep)))
	}
	if !slices.Contains(keep, false) {
		return r
	}
	b := make([]byte, len(keep))
	for i, k := range keep {
		if k {
			b[i] = 1
		}
	}
	key := string(b)
	r.mu.Lock()
	defer r.mu.Unlock()
	if s, ok := r.subsets[key]; ok {
		return s
	}
	s := &Recipients{idJWK: r.idJWK, decrypt: r.decrypt, noIdentity: r.noIdentity}
	for i, k := range r.keys {
		if keep[i] {
			if len(s.specs) == 0 || s.specs[len(s.specs)-1] != k.Spec {
				s.specs = append(s.specs, k.Spec)
			}
			s.keys = append(s.keys, k)
			s.parts = append(s.parts, r.parts[i])
		}
	}
	s.compile()
	if r.subsets == nil {
		r.subsets = map[string]*Recipients{}
	}
	if len(r.subsets) < maxSubsets {
		r.subsets[key] = s
	}
	return s
}

// compile builds the EncryptConfig of the set's parts.
func (r *Recipients) compile() {
	p := map[string][][]byte{}
	if !r.noIdentity {
		p["pubkeys"] = [][]byte{r.idJWK}
	}
	var ring []byte
	for _, part := range r.parts {
		if part.ring != nil {
			ring = append(ring, part.ring...)
			// ocicrypt selects keys out of the ring by address: one
			// address once, or its keys are wrapped for twice.
			if !slices.ContainsFunc(p["gpg-recipients"], func(a []byte) bool { return string(a) == string(part.addr) }) {
				p["gpg-recipients"] = append(p["gpg-recipients"], part.addr)
			}
			continue
		}
		p[part.param] = append(p[part.param], part.value)
	}
	if ring != nil {
		p["gpg-pubkeyringfile"] = [][]byte{ring}
	}
	r.ec = &config.EncryptConfig{Parameters: p, DecryptConfig: r.decrypt}
}

// Recipients compiles a set of recipients (plus the identity).
func (k *Keyring) Recipients(rs []Recipient) (*Recipients, error) {
	idJWK, err := withKeyID(k.identity.PublicPEM())
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	set := &Recipients{idJWK: idJWK, decrypt: config.DecryptConfig{Parameters: map[string][][]byte{"pkcs11-config": {k.p11}}}}
	for _, r := range rs {
		parts, err := k.recipientParts(r)
		if err != nil {
			return nil, err
		}
		set.specs = append(set.specs, r.Spec)
		set.keys = append(set.keys, r.Keys()...)
		set.parts = append(set.parts, parts...)
	}
	set.compile()
	// A trial wrap reaches every PKCS#11 token and key provider now: a
	// module outside the allowed paths, a missing token or key, a provider
	// that does not answer fails here, naming the recipient.
	for _, r := range rs {
		one := &config.EncryptConfig{DecryptConfig: set.decrypt}
		var id string
		switch r.scheme {
		case "pkcs11":
			id, one.Parameters = AnnotationKeys+"pkcs11", map[string][][]byte{"pkcs11-pubkeys": {r.data}}
		case "provider":
			id, one.Parameters = AnnotationKeys+"provider."+r.provider, map[string][][]byte{r.provider: {r.data}}
		default:
			continue
		}
		if b, err := k.wrapWith(k.wrapper(id), scopedEncrypt(id, one), trialOptions()); err != nil || len(b) == 0 {
			return nil, fmt.Errorf("recipient %q: the trial wrap failed: %w", r.Spec, errors.Join(err, errors.New("no wrapped key")))
		}
	}
	return set, nil
}

// recipientParts are what r's keys add to an EncryptConfig, one per key.
func (k *Keyring) recipientParts(r Recipient) ([]recipientPart, error) {
	if len(r.keys) == 0 {
		return nil, fmt.Errorf("recipient %q: not parsed by ParseRecipient", r.Spec)
	}
	var parts []recipientPart
	switch r.scheme {
	case "jwe":
		jwk, err := withKeyID(r.data)
		if err != nil {
			return nil, fmt.Errorf("recipient %q: %w", r.Spec, err)
		}
		parts = []recipientPart{{param: "pubkeys", value: jwk}}
	case "pkcs7":
		parts = []recipientPart{{param: "x509s", value: r.data}}
	case "pgp":
		for _, ki := range r.keys {
			parts = append(parts, recipientPart{ring: ki.ring, addr: ki.addr})
		}
	case "pkcs11":
		parts = []recipientPart{{param: "pkcs11-pubkeys", value: r.data}}
	case "provider":
		if _, ok := k.providers[r.provider]; !ok {
			return nil, fmt.Errorf("recipient %q: no key provider %q is configured", r.Spec, r.provider)
		}
		parts = []recipientPart{{param: r.provider, value: r.data}}
	default:
		return nil, fmt.Errorf("recipient %q: scheme %q cannot wrap keys", r.Spec, r.scheme)
	}
	if len(parts) != len(r.keys) {
		return nil, fmt.Errorf("recipient %q: %d keys but %d parts", r.Spec, len(r.keys), len(parts))
	}
	if len(parts) != len(r.keys) {
		return nil, fmt.Errorf("recipient %q: %d keys but %d parts", r.Spec, len(r.keys), len(parts))
	}
	return parts, nil
}

// Extend is base with the recipients extra added after its own (an access
// request's approved keys added to a rule's): base is not changed. extra
// may hold only recipients no trial wrap is needed for (jwe, pkcs7, pgp,
// as ParseRecipientData gives them).
func (k *Keyring) Extend(base *Recipients, extra []Recipient) (*Recipients, error) {
	if len(extra) == 0 {
		return base, nil
	}
	set := &Recipients{idJWK: base.idJWK, decrypt: base.decrypt, noIdentity: base.noIdentity,
		specs: slices.Clone(base.specs), keys: slices.Clone(base.keys), parts: slices.Clone(base.parts)}
	for _, r := range extra {
		if r.scheme == "pkcs11" || r.scheme == "provider" {
			return nil, fmt.Errorf("recipient %q: a %s recipient cannot be added to a compiled set", r.Spec, r.scheme)
		}
		parts, err := k.recipientParts(r)
		if err != nil {
			return nil, err
		}
		set.specs = append(set.specs, r.Spec)
		set.keys = append(set.keys, r.Keys()...)
		set.parts = append(set.parts, parts...)
	}
	set.compile()
	return set, nil
}

// WrappedIDs name what a layer key wrapped for r is wrapped for, sorted:
// each key of r by its key id and a fingerprint of the material it is
// wrapped with (the JWK, certificate, key file, provider arguments,
// OpenPGP keyring and address: a key provider's key replaced under the
// same provider name, an OpenPGP encryption subkey rotated under the
// same primary key, change it), and the identity's key id when the
// identity is a recipient. Two sets wrap alike exactly when their
// WrappedIDs are equal.
func (r *Recipients) WrappedIDs(id *Identity) []string {
	ids := make([]string, 0, len(r.keys)+1)
	for i, k := range r.keys {
		h := sha256.New()
		p := r.parts[i]
		for _, b := range [][]byte{[]byte(p.param), p.value, p.ring, p.addr} {
			var n [8]byte
			binary.BigEndian.PutUint64(n[:], uint64(len(b)))
			h.Write(n[:])
			h.Write(b)
		}
		ids = append(ids, k.ID+"#"+hex.EncodeToString(h.Sum(nil))[:32])
	}
	if !r.noIdentity {
		ids = append(ids, id.KeyID())
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

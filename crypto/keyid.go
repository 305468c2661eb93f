package crypto

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/containers/ocicrypt/crypto/pkcs11"
	"github.com/containers/ocicrypt/utils"
	"github.com/go-jose/go-jose/v4"
)

// Key ids name keys the way trust documents (allow and deny lists), the
// audit log and shroud's messages do, whatever file a key came from:
//
//   - "sha256:<lower hex>": the SHA-256 of the DER SubjectPublicKeyInfo of
//     an RSA or EC key (a jwe: recipient in PEM, DER or JWK form, the
//     public half of a private key, the key of an X.509 certificate for
//     pkcs7, shroud's identity); a key and its certificate have one id;
//   - "pgp:<UPPER HEX fingerprint>": an OpenPGP key by its primary key's
//     fingerprint (v4: 40 hex digits). A file holding a ring of several
//     keys is several keys, each with its id (KeyIDs);
//   - "pkcs11:<path attributes>": a key in a PKCS#11 token by the path
//     attributes of its URI (token, object, id...), sorted, without its
//     type (the public and the private object of one key pair have one
//     id) and without any query attribute (module, pin-value). shroud
//     does not log in to a token to read its public key at start-up;
//   - "provider:<name>": the keys behind a key provider.
//
// ValidKeyID checks that a key id given to shroud (a trust list entry, a
// --key-id) is spelt as shroud computes it: key ids are compared as
// strings, so an id spelt otherwise (upper-case sha256: hex, no prefix, a
// PKCS#11 URI with its query or its attributes in another order) names no
// key.

// RecipientKey is one key a compiled set of recipients wraps for. A
// pgp: recipient holding several keys gives one each.
type RecipientKey struct {
	// Spec is the recipient it comes from ("jwe:/etc/shroud/ops.pub").
	Spec string
	// ID is its key id.
	ID string
	// NotBefore and NotAfter bound its validity from the key material
	// itself (zero: unbounded): an X.509 certificate's, an OpenPGP key's
	// creation and expiry.
	NotBefore, NotAfter time.Time
}

// keyInfo is what ParseRecipient and ParseDecryptionKey learn of each key
// a file holds.
type keyInfo struct {
	id                  string
	notBefore, notAfter time.Time
	// ring and addr (pgp recipients): this key alone as a binary keyring,
	// and the address ocicrypt selects it by.
	ring, addr []byte
}

// KeyID is the recipient's key id; for a pgp: file holding several keys,
// the first one's (KeyIDs lists them all).
func (r Recipient) KeyID() string {
	if len(r.keys) == 0 {
		return ""
	}
	return r.keys[0].id
}

// KeyIDs lists the ids of the recipient's keys: one, or one per key of a
// pgp: keyring.
func (r Recipient) KeyIDs() []string {
	ids := make([]string, len(r.keys))
	for i, k := range r.keys {
		ids[i] = k.id
	}
	return ids
}

// Keys lists the recipient's keys with their validity.
func (r Recipient) Keys() []RecipientKey {
	out := make([]RecipientKey, len(r.keys))
	for i, k := range r.keys {
		out[i] = RecipientKey{Spec: r.Spec, ID: k.id, NotBefore: k.notBefore, NotAfter: k.notAfter}
	}
	return out
}

// Validity bounds when the recipient's key may be wrapped for, from the
// key material alone (zero: unbounded): a pkcs7 certificate's NotBefore
// and NotAfter; an OpenPGP key's creation and the expiry of its primary
// key and encryption subkeys (and its revocation, if the file holds one).
// For a pgp: file of several keys it is the first one's: Keys has each.
func (r Recipient) Validity() (notBefore, notAfter time.Time) {
	if len(r.keys) == 0 {
		return time.Time{}, time.Time{}
	}
	return r.keys[0].notBefore, r.keys[0].notAfter
}

// KeyID is the decryption key's id; for an OpenPGP file holding several
// keys, the first one's (KeyIDs lists them all). A certificate (for
// pkcs7) has the id of its key, as the private key beside it does.
func (k DecryptionKey) KeyID() string {
	if len(k.keys) == 0 {
		return ""
	}
	return k.keys[0].id
}

// KeyIDs lists the ids of the keys the file holds.
func (k DecryptionKey) KeyIDs() []string {
	ids := make([]string, len(k.keys))
	for i, ki := range k.keys {
		ids[i] = ki.id
	}
	return ids
}

// Validity bounds when the key may unwrap, from the key material alone
// (zero: unbounded): a certificate's NotBefore and NotAfter, an OpenPGP
// key's creation and expiry (for a file of several keys, the span in
// which all of them are valid). A bare private key has no bounds of its
// own; the Keyring bounds it by the certificates of its key configured
// beside it (KeyInfo).
func (k DecryptionKey) Validity() (notBefore, notAfter time.Time) {
	for i, ki := range k.keys {
		if i == 0 {
			notBefore, notAfter = ki.notBefore, ki.notAfter
			continue
		}
		notBefore, notAfter = latest(notBefore, ki.notBefore), earliest(notAfter, ki.notAfter)
	}
	return notBefore, notAfter
}

// KeyID is the identity's key id: the SHA-256 of its public key's SPKI.
func (id *Identity) KeyID() string {
	s, err := spkiID(id.private.Public())
	if err != nil {
		return "sha256:unknown"
	}
	return s
}

// ErrInvalidKeyID is why ValidKeyID refuses an id.
var ErrInvalidKeyID = errors.New("not a key id")

// ValidKeyID checks that id has one of the forms above, exactly as shroud
// writes them: "sha256:" and 64 lower-case hex digits; "pgp:" and 40
// (v4) or 64 (v5, v6) upper-case hex digits; "pkcs11:" and one or more
// path attributes, sorted, pct-encoded as PKCS#11 URIs are, without
// "type" and without a query; "provider:" and a name with no ':' and no
// white space. The error wraps ErrInvalidKeyID and says which form it
// misses.
func ValidKeyID(id string) error {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%w: %q: "+format, append([]any{ErrInvalidKeyID, id}, args...)...)
	}
	scheme, rest, ok := strings.Cut(id, ":")
	if !ok {
		return fail("no sha256:, pgp:, pkcs11: or provider: prefix")
	}
	switch scheme {
	case "sha256":
		if len(rest) != 64 || !isHex(rest, false) {
			return fail("want sha256: and 64 lower-case hex digits (the SHA-256 of the key's SPKI)")
		}
	case "pgp":
		if (len(rest) != 40 && len(rest) != 64) || !isHex(rest, true) {
			return fail("want pgp: and the fingerprint in 40 (v4) or 64 (v5, v6) upper-case hex digits")
		}
	case "pkcs11":
		if err := validPKCS11ID(rest); err != nil {
			return fail("%v", err)
		}
	case "provider":
		if rest == "" || strings.ContainsFunc(rest, func(r rune) bool { return r == ':' || r == utf8.RuneError || unicode.IsSpace(r) || !unicode.IsPrint(r) }) {
			return fail("want provider: and the key provider's name (no ':', no white space)")
		}
	default:
		return fail("unknown prefix %q (want sha256:, pgp:, pkcs11: or provider:)", scheme+":")
	}
	return nil
}

// isHex says whether s is hex digits all of one case.
func isHex(s string, upper bool) bool {
	for _, c := range []byte(s) {
		switch {
		case c >= '0' && c <= '9':
		case !upper && c >= 'a' && c <= 'f', upper && c >= 'A' && c <= 'F':
		default:
			return false
		}
	}
	return true
}

// validPKCS11ID checks the part of a pkcs11: key id after its prefix, as
// pkcs11KeyID writes it.
func validPKCS11ID(attrs string) error {
	if attrs == "" {
		return errors.New("no path attribute (want pkcs11:object=...;token=...)")
	}
	if strings.ContainsAny(attrs, "?#") {
		return errors.New("a key id has the URI's path attributes only, no query (module-path, pin-value)")
	}
	list := strings.Split(attrs, ";")
	for i, a := range list {
		name, value, ok := strings.Cut(a, "=")
		if !ok || !validAttrName(name) || !validAttrValue(value) {
			return fmt.Errorf("attribute %q is not name=value, pct-encoded", a)
		}
		if name == "type" {
			return errors.New("a key id leaves out the type attribute (its public and private objects have one id)")
		}
		if i > 0 && list[i-1] >= a {
			return errors.New("attributes not sorted, or repeated (a key id lists them sorted)")
		}
	}
	return nil
}

func validAttrName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// validAttrValue: the characters a PKCS#11 URI path attribute keeps as
// they are, and %XX escapes of the others.
func validAttrValue(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("-._~:[]@!$&'()*+,=", c) >= 0:
		case c == '%' && i+2 < len(s) && isHex(s[i+1:i+3], true):
			i += 2
		default:
			return false
		}
	}
	return true
}

// ProviderKeyID is the key id of the keys behind key provider name.
func ProviderKeyID(name string) string { return "provider:" + name }

// spkiID is "sha256:" and the hex SHA-256 of a public key's DER SPKI.
func spkiID(pub crypto.PublicKey) (string, error) {
	if jwk, ok := pub.(*jose.JSONWebKey); ok {
		pub = jwk.Key
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("key id: %w", err)
	}
	return spkiDERID(der), nil
}

func spkiDERID(der []byte) string {
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// pgpKeyID names an OpenPGP key by its primary key's fingerprint.
func pgpKeyID(e *openpgp.Entity) string {
	return "pgp:" + strings.ToUpper(hex.EncodeToString(e.PrimaryKey.Fingerprint))
}

// pkcs11KeyID names a key of a PKCS#11 key file by its URI's path
// attributes, sorted, without "type"; the query (module, PIN) is left
// out: a pin-value is a secret.
func pkcs11KeyID(keyFile []byte) (string, error) {
	obj, err := pkcs11.ParsePkcs11KeyFile(keyFile)
	if err != nil {
		return "", err
	}
	s, err := obj.Uri.Format()
	if err != nil {
		return "", err
	}
	path, _, _ := strings.Cut(strings.TrimPrefix(s, "pkcs11:"), "?")
	var attrs []string
	for _, a := range strings.Split(path, ";") {
		if a != "" && !strings.HasPrefix(a, "type=") {
			attrs = append(attrs, a)
		}
	}
	slices.Sort(attrs)
	return "pkcs11:" + strings.Join(attrs, ";"), nil
}

// recipientKeys finds the keys of a parsed recipient, their ids and
// validity.
func recipientKeys(r Recipient) ([]keyInfo, error) {
	switch r.scheme {
	case "jwe":
		pub, err := utils.ParsePublicKey(r.data, "JWE")
		if err != nil {
			return nil, err
		}
		id, err := spkiID(pub)
		if err != nil {
			return nil, err
		}
		return []keyInfo{{id: id}}, nil
	case "pkcs7":
		cert, err := utils.ParseCertificate(r.data, "PKCS7")
		if err != nil {
			return nil, err
		}
		return []keyInfo{certKey(cert)}, nil
	case "pgp":
		el, err := openpgp.ReadKeyRing(bytes.NewReader(r.data))
		if err != nil {
			return nil, err
		}
		if len(el) != len(r.pgpIDs) {
			return nil, errors.New("OpenPGP keyring read differently twice")
		}
		var out []keyInfo
		for i, e := range el {
			if _, ok := encryptionWindow(e); !ok {
				return nil, fmt.Errorf("OpenPGP key %s has no key that can encrypt", pgpKeyID(e))
			}
			var ring bytes.Buffer
			if err := e.Serialize(&ring); err != nil {
				return nil, fmt.Errorf("OpenPGP key %s: %w", pgpKeyID(e), err)
			}
			nb, na := pgpValidity(e)
			out = append(out, keyInfo{id: pgpKeyID(e), notBefore: nb, notAfter: na, ring: ring.Bytes(), addr: r.pgpIDs[i]})
		}
		return out, nil
	case "pkcs11":
		id, err := pkcs11KeyID(r.data)
		if err != nil {
			return nil, err
		}
		return []keyInfo{{id: id}}, nil
	case "provider":
		return []keyInfo{{id: ProviderKeyID(r.provider)}}, nil
	}
	return nil, fmt.Errorf("scheme %q has no key ids", r.scheme)
}

// decryptionKeys finds the keys of a parsed decryption key file, their
// ids and validity.
func decryptionKeys(k DecryptionKey) ([]keyInfo, error) {
	switch k.kind {
	case "private":
		priv, err := utils.ParsePrivateKey(k.data, k.password, "JWE")
		if err != nil {
			return nil, err
		}
		if jwk, ok := priv.(*jose.JSONWebKey); ok {
			priv = jwk.Key
		}
		s, ok := priv.(interface{ Public() crypto.PublicKey })
		if !ok {
			return nil, fmt.Errorf("%T has no public key", priv)
		}
		id, err := spkiID(s.Public())
		if err != nil {
			return nil, err
		}
		return []keyInfo{{id: id}}, nil
	case "x509":
		cert, err := utils.ParseCertificate(k.data, "PKCS7")
		if err != nil {
			return nil, err
		}
		return []keyInfo{certKey(cert)}, nil
	case "pgp":
		el, err := openpgp.ReadKeyRing(bytes.NewReader(k.data))
		if err != nil {
			return nil, err
		}
		var out []keyInfo
		for _, e := range el {
			nb, na := pgpValidity(e)
			out = append(out, keyInfo{id: pgpKeyID(e), notBefore: nb, notAfter: na})
		}
		return out, nil
	case "pkcs11":
		id, err := pkcs11KeyID(k.data)
		if err != nil {
			return nil, err
		}
		return []keyInfo{{id: id}}, nil
	}
	return nil, fmt.Errorf("decryption key kind %q has no key ids", k.kind)
}

func certKey(c *x509.Certificate) keyInfo {
	return keyInfo{id: spkiDERID(c.RawSubjectPublicKeyInfo), notBefore: c.NotBefore, notAfter: c.NotAfter}
}

// KeyInfo is one of the keys a Keyring unwraps with, as UnwrapWith's
// allow is asked about it.
type KeyInfo struct {
	// Name is what allow is given: IdentityKey, a DecryptionKey's Path,
	// "provider:"+name.
	Name string
	// IDs are its key ids: one, or one per key of an OpenPGP keyring
	// file (every one of which must be allowed for the file to be used).
	IDs []string
	// NotBefore and NotAfter bound its validity from the key material
	// (zero: unbounded). A private key configured with certificates of
	// its key (for pkcs7) is bounded by them: from the earliest NotBefore
	// to the latest NotAfter of those certificates.
	NotBefore, NotAfter time.Time
}

// KeyInfo lists the keys the keyring unwraps with, in the order it tries
// them (KeyNames).
func (k *Keyring) KeyInfo() []KeyInfo { return slices.Clone(k.info) }

// Holds names the key of k that opens what is wrapped for r: any key
// provider recipient (shroud may ask a provider to unwrap), or a key of k
// (an identity, a decryption key) with one of r's key ids. ok is false
// when k opens nothing wrapped for r alone; an encrypt-only rule takes no
// recipient k holds.
func (k *Keyring) Holds(r Recipient) (name string, ok bool) {
	if strings.HasPrefix(r.Spec, "provider:") {
		return r.Spec, true
	}
	for _, id := range r.KeyIDs() {
		if name, ok := k.HoldsKeyID(id); ok {
			return name, true
		}
	}
	return "", false
}

// HoldsKeyID names the key of k whose key id is id.
func (k *Keyring) HoldsKeyID(id string) (name string, ok bool) {
	for _, info := range k.info {
		if slices.Contains(info.IDs, id) {
			return info.Name, true
		}
	}
	return "", false
}

// keyInfos describes the keyring's slots.
func keyInfos(id *Identity, previous []*Identity, keys []DecryptionKey, slots []keySlot) []KeyInfo {
	previousIDs := map[string]string{}
	for _, p := range previous {
		previousIDs[PreviousIdentityKey(p)] = p.KeyID()
	}
	// The certificates of each key: their spans joined.
	certs := map[string]window{}
	for _, dk := range keys {
		if dk.kind != "x509" || len(dk.keys) == 0 {
			continue
		}
		ki := dk.keys[0]
		w, seen := certs[ki.id]
		if !seen {
			certs[ki.id] = window{ki.notBefore, ki.notAfter}
			continue
		}
		if ki.notBefore.Before(w.notBefore) {
			w.notBefore = ki.notBefore
		}
		if w.notAfter.IsZero() || ki.notAfter.IsZero() {
			w.notAfter = time.Time{}
		} else if ki.notAfter.After(w.notAfter) {
			w.notAfter = ki.notAfter
		}
		certs[ki.id] = w
	}
	byPath := map[string]DecryptionKey{}
	for _, dk := range keys {
		if dk.kind != "x509" {
			byPath[dk.Path] = dk
		}
	}
	out := make([]KeyInfo, 0, len(slots))
	for _, s := range slots {
		info := KeyInfo{Name: s.name}
		dk, isKey := byPath[s.name]
		switch {
		case s.name == IdentityKey:
			info.IDs = []string{id.KeyID()}
		case previousIDs[s.name] != "":
			info.IDs = []string{previousIDs[s.name]}
		case isKey:
			info.IDs = dk.KeyIDs()
			info.NotBefore, info.NotAfter = dk.Validity()
			if w, ok := certs[dk.KeyID()]; ok && dk.kind == "private" {
				info.NotBefore, info.NotAfter = latest(info.NotBefore, w.notBefore), earliest(info.NotAfter, w.notAfter)
			}
		default: // a key provider
			info.IDs = []string{ProviderKeyID(strings.TrimPrefix(s.name, "provider:"))}
		}
		out = append(out, info)
	}
	return out
}

// PublicKeyID is the key id of an RSA or EC public key, as a jwe
// recipient of it has ("sha256:" and the hex SHA-256 of its DER SPKI).
func PublicKeyID(pub crypto.PublicKey) (string, error) { return spkiID(pub) }

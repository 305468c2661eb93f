package trust

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/go-jose/go-jose/v4"

	"github.com/shroud-oci/shroud/crypto"
)

// Target file names. The lists for a namespace ns are the TUF targets
// "<ns>/recipients.json" and "<ns>/revocations.json"; the top-level
// targets role's are "recipients.json" and "revocations.json" (ns "").
const (
	RecipientsFile  = "recipients.json"
	RevocationsFile = "revocations.json"
)

// Revocation reasons.
const (
	ReasonKeyCompromise = "keyCompromise"
	ReasonSuperseded    = "superseded"
	ReasonRetired       = "retired"
)

// Recipient is an entry of an allow list: a key shroud may wrap layer keys
// for, in the repositories its scopes name, between NotBefore and NotAfter.
type Recipient struct {
	// KeyID names the key: "sha256:<hex>" of the SPKI DER (jwe, pkcs7: of
	// the certificate's public key), "pgp:<UPPER HEX fingerprint>",
	// "pkcs11:<path attributes>" or "provider:<name>".
	KeyID string `json:"key_id"`
	// Scheme is "jwe", "pgp", "pkcs7", "pkcs11" or "provider".
	Scheme string `json:"scheme"`
	// PublicKey is the key itself (PEM or armored), optional: the allow
	// list doubles as key distribution.
	PublicKey string `json:"public_key,omitempty"`
	// URL says where to get the key when PublicKey is empty, optional.
	URL string `json:"url,omitempty"`
	// Scopes are repository globs ("team-a/**"): "*" within one path
	// segment, "**" across segments, "?" one character. An entry with no
	// scope allows nothing.
	Scopes []string `json:"scopes"`
	// NotBefore and NotAfter bound the entry's validity; zero: unbounded.
	NotBefore time.Time `json:"not_before,omitzero"`
	NotAfter  time.Time `json:"not_after,omitzero"`
}

// Revocation is an entry of a deny list. It overrides any allow entry of
// the same key and, once trusted, is never dropped.
type Revocation struct {
	KeyID string `json:"key_id"`
	// RevokedAt records when the key stopped being trusted (the jobs use
	// it); the entry applies as soon as it is trusted, whatever it says.
	RevokedAt time.Time `json:"revoked_at"`
	// Reason is "keyCompromise", "superseded" or "retired".
	Reason string `json:"reason"`
}

// RecipientList is the content of a recipients.json target.
type RecipientList struct {
	Recipients []Recipient `json:"recipients"`
}

// RevocationList is the content of a revocations.json target.
type RevocationList struct {
	Revocations []Revocation `json:"revocations"`
}

// schemePrefix names the schemes a recipient entry may have (the
// ocicrypt key wrappers) and the prefix of the key ids of each scheme's keys.
var schemePrefix = map[string]string{"jwe": "sha256:", "pkcs7": "sha256:", "pgp": "pgp:", "pkcs11": "pkcs11:", "provider": "provider:"}

// ValidKeyID checks that id has the form its scheme's keys are named by
// (crypto.ValidKeyID, and the scheme's prefix).
func ValidKeyID(scheme, id string) error {
	prefix, ok := schemePrefix[scheme]
	if !ok {
		return fmt.Errorf("unknown scheme %q (want jwe, pgp, pkcs7, pkcs11 or provider)", scheme)
	}
	if err := crypto.ValidKeyID(id); err != nil {
		return err
	}
	if !strings.HasPrefix(id, prefix) {
		return fmt.Errorf("key id %q is not a %s key id (want %s...)", id, scheme, prefix)
	}
	return nil
}

// Validate checks an allow entry on its own.
func (r Recipient) Validate() error {
	if err := ValidKeyID(r.Scheme, r.KeyID); err != nil {
		return err
	}
	if len(r.Scopes) == 0 {
		return fmt.Errorf("recipient %s has no scope", r.KeyID)
	}
	for _, s := range r.Scopes {
		if _, err := compileGlob(s); err != nil {
			return fmt.Errorf("recipient %s: %w", r.KeyID, err)
		}
	}
	if !r.NotBefore.IsZero() && !r.NotAfter.IsZero() && !r.NotAfter.After(r.NotBefore) {
		return fmt.Errorf("recipient %s: not_after %s is not after not_before %s", r.KeyID, r.NotAfter.Format(time.RFC3339), r.NotBefore.Format(time.RFC3339))
	}
	return nil
}

// Validate checks a deny entry on its own.
func (r Revocation) Validate() error {
	if err := crypto.ValidKeyID(r.KeyID); err != nil {
		return fmt.Errorf("revocation: %w", err)
	}
	switch r.Reason {
	case ReasonKeyCompromise, ReasonSuperseded, ReasonRetired:
	default:
		return fmt.Errorf("revocation of %s: unknown reason %q (want keyCompromise, superseded or retired)", r.KeyID, r.Reason)
	}
	if r.RevokedAt.IsZero() {
		return fmt.Errorf("revocation of %s: no revoked_at", r.KeyID)
	}
	return nil
}

// ParseRecipients decodes a recipients.json. Unknown fields are an error:
// a misspelt "not_after" must not make a key valid forever. So is an
// entry whose key_id is no key id (crypto.ValidKeyID): it would name no
// key, and a list that says other than what its signer meant is refused
// whole, as one that does not parse. (Validate checks the rest of an
// entry, which the refresh ignores alone if it fails.)
func ParseRecipients(data []byte) (RecipientList, error) {
	var l RecipientList
	if err := decodeStrict(data, &l); err != nil {
		return RecipientList{}, fmt.Errorf("recipients: %w", err)
	}
	for i, e := range l.Recipients {
		if err := crypto.ValidKeyID(e.KeyID); err != nil {
			return RecipientList{}, fmt.Errorf("recipients: entry %d: %w", i+1, err)
		}
	}
	return l, nil
}

// ParseRevocations decodes a revocations.json, strictly as
// ParseRecipients does: a deny entry whose key_id is no key id (an id
// pasted without its "sha256:", in upper case) would revoke nothing, and
// the list is refused.
func ParseRevocations(data []byte) (RevocationList, error) {
	var l RevocationList
	if err := decodeStrict(data, &l); err != nil {
		return RevocationList{}, fmt.Errorf("revocations: %w", err)
	}
	for i, e := range l.Revocations {
		if err := crypto.ValidKeyID(e.KeyID); err != nil {
			return RevocationList{}, fmt.Errorf("revocations: entry %d: %w", i+1, err)
		}
	}
	return l, nil
}

func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing data after the document")
	}
	return nil
}

// ErrPrivateKey is why PublicKeyOnly refuses key material: it holds a
// private (or secret) key.
var ErrPrivateKey = errors.New("holds a private key")

// jwkPrivate are the members of a JWK that carry private material (RFC
// 7518 §6: EC and OKP "d", RSA "d" and its CRT values, oct "k").
var jwkPrivate = []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"}

// PublicKeyOnly is the public_key an allow entry of scheme may carry,
// re-serialized from data, the key as given: a jwe public key as PEM
// (PKIX; a JWK stays a JWK, its public members only), a pkcs7
// certificate as PEM, a pgp keyring armored, its public packets only.
// The list is published: data that holds private material (a PEM or
// DER private key, an armored or binary OpenPGP secret key, a JWK with
// "d"...) is an ErrPrivateKey, and data that is not a public key of
// scheme an error. pkcs11 and provider entries carry no key.
func PublicKeyOnly(scheme string, data []byte) (string, error) {
	if err := noPrivateKey(data); err != nil {
		return "", err
	}
	switch scheme {
	case "jwe":
		return jwePublicKey(data)
	case "pkcs7":
		cert, err := x509.ParseCertificate(pemOrDER(data, "CERTIFICATE"))
		if err != nil {
			return "", fmt.Errorf("not an X.509 certificate (PEM or DER): %w", err)
		}
		return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})), nil
	case "pgp":
		return pgpPublicKey(data)
	case "pkcs11", "provider":
		return "", fmt.Errorf("a %s entry carries no public key (the key stays where %s keeps it)", scheme, scheme)
	}
	return "", fmt.Errorf("unknown scheme %q (want jwe, pgp, pkcs7, pkcs11 or provider)", scheme)
}

// publicKeysOnly checks that every public_key of a recipients list is a
// public key alone (PublicKeyOnly), whatever else the list gets wrong
// (Verify checks the list as replicas do).
func publicKeysOnly(data []byte) error {
	var l struct {
		Recipients []struct {
			KeyID     string `json:"key_id"`
			Scheme    string `json:"scheme"`
			PublicKey string `json:"public_key"`
		} `json:"recipients"`
	}
	if err := json.Unmarshal(data, &l); err != nil {
		return fmt.Errorf("not a recipients list: %w", err)
	}
	for i, r := range l.Recipients {
		if r.PublicKey == "" {
			continue
		}
		if _, err := PublicKeyOnly(r.Scheme, []byte(r.PublicKey)); err != nil {
			return fmt.Errorf("entry %d (%q): public_key: %w", i+1, r.KeyID, err)
		}
	}
	return nil
}

// noPrivateKey refuses data that is, or holds, a private key in any of
// the forms ocicrypt reads one.
func noPrivateKey(data []byte) error {
	if privateKey.Match(data) {
		return fmt.Errorf("%w (a PEM or armored private key block)", ErrPrivateKey)
	}
	for rest := data; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if strings.Contains(b.Type, "PRIVATE") {
			return fmt.Errorf("%w (a PEM %s block)", ErrPrivateKey, b.Type)
		}
	}
	if _, err := x509.ParsePKCS8PrivateKey(data); err == nil {
		return fmt.Errorf("%w (PKCS #8 DER)", ErrPrivateKey)
	}
	if _, err := x509.ParsePKCS1PrivateKey(data); err == nil {
		return fmt.Errorf("%w (PKCS #1 DER)", ErrPrivateKey)
	}
	if _, err := x509.ParseECPrivateKey(data); err == nil {
		return fmt.Errorf("%w (SEC 1 DER)", ErrPrivateKey)
	}
	var members map[string]json.RawMessage
	if json.Unmarshal(data, &members) == nil {
		for _, m := range jwkPrivate {
			if _, ok := members[m]; ok {
				return fmt.Errorf("%w (a JWK with %q)", ErrPrivateKey, m)
			}
		}
	}
	if el, err := openpgp.ReadKeyRing(bytes.NewReader(dearmor(data))); err == nil {
		for _, e := range el {
			if e.PrivateKey != nil || slices.ContainsFunc(e.Subkeys, func(s openpgp.Subkey) bool { return s.PrivateKey != nil }) {
				return fmt.Errorf("%w (OpenPGP secret key %X)", ErrPrivateKey, e.PrimaryKey.Fingerprint)
			}
		}
	}
	return nil
}

// pemOrDER is the bytes of data's first PEM block of type typ, or data
// itself (DER).
func pemOrDER(data []byte, typ string) []byte {
	for rest := data; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			return data
		}
		if b.Type == typ {
			return b.Bytes
		}
	}
}

func jwePublicKey(data []byte) (string, error) {
	if trimmed := bytes.TrimSpace(data); len(trimmed) > 0 && trimmed[0] == '{' {
		var jwk jose.JSONWebKey
		if err := jwk.UnmarshalJSON(trimmed); err != nil {
			return "", fmt.Errorf("not a JWK: %w", err)
		}
		if !jwk.IsPublic() || !jwk.Valid() {
			return "", errors.New("not a public JWK")
		}
		out, err := jwk.Public().MarshalJSON()
		if err != nil {
			return "", err
		}
		return string(out), nil
	}
	pub, err := x509.ParsePKIXPublicKey(pemOrDER(data, "PUBLIC KEY"))
	if err != nil {
		return "", fmt.Errorf("not a public key (PEM, DER or JWK): %w", err)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), nil
}

func pgpPublicKey(data []byte) (string, error) {
	if blk, err := armor.Decode(bytes.NewReader(data)); err == nil && blk.Type != openpgp.PublicKeyType {
		return "", fmt.Errorf("an armored %s, not a %s", blk.Type, openpgp.PublicKeyType)
	}
	el, err := openpgp.ReadKeyRing(bytes.NewReader(dearmor(data)))
	if err != nil {
		return "", fmt.Errorf("not an OpenPGP public key: %w", err)
	}
	// ReadKeyRing skips what it cannot read as a key: no data, a marker
	// packet, or a mangled packet reads as a keyring with no key.
	if len(el) == 0 {
		return "", errors.New("not an OpenPGP public key: it holds no key")
	}
	var out bytes.Buffer
	w, err := armor.Encode(&out, openpgp.PublicKeyType, nil)
	if err != nil {
		return "", err
	}
	for _, e := range el {
		if err := e.Serialize(w); err != nil {
			return "", fmt.Errorf("OpenPGP key %X: %w", e.PrimaryKey.Fingerprint, err)
		}
	}
	if err := w.Close(); err != nil {
		return "", err
	}
	out.WriteByte('\n')
	return out.String(), nil
}

// dearmor is the body of an armored OpenPGP block, or data as it is.
func dearmor(data []byte) []byte {
	blk, err := armor.Decode(bytes.NewReader(data))
	if err != nil {
		return data
	}
	body, err := io.ReadAll(io.LimitReader(blk.Body, int64(len(data))))
	if err != nil {
		return data
	}
	return body
}

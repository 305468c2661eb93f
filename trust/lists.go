package trust

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

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

package access

import (
	"bytes"
	"crypto"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/opencontainers/go-digest"

	scrypto "github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/names"
)

// An owner approval: how a request for the repositories of an
// encrypt-only rule is granted. shroud holds no key that opens those
// images, so the owner (a recipient of the rule) unwraps the layer keys
// on its own machine, wraps each for the request's key, and submits only
// the new wrapped keys, signed with its key (`shroud access approve
// --key`). shroud checks that the signer is a recipient of every
// repository's rule, then adds the wrapped keys to the stored manifests
// (proxy.Handler.AddWrappedKeys). It never sees a layer key.

// OwnerApprovalVersion is the version of OwnerApproval.
const OwnerApprovalVersion = "shroud-owner-approval/v1"

// MaxOwnerApprovalBytes bounds an owner approval's JWS.
const MaxOwnerApprovalBytes = 16 << 20

// OwnerApproval is what an owner signs.
type OwnerApproval struct {
	Version string `json:"version"`
	// Request is the id of the request approved, Audience the key id of
	// the shroud it is for, Created when it was signed.
	Request  string    `json:"request"`
	Audience string    `json:"audience"`
	Created  time.Time `json:"created"`
	// Expires ends the grant (zero: no end).
	Expires time.Time   `json:"expires,omitzero"`
	Wraps   []OwnerWrap `json:"wraps"`
}

// OwnerWrap is the wrapped keys of one layer for the request's key.
type OwnerWrap struct {
	Repository   string        `json:"repository"`
	CipherDigest digest.Digest `json:"cipher_digest"`
	// PlainDigest is the layer's plaintext digest, from its key's
	// private options: shroud adds the wrapped keys only to a layer it
	// encrypted from that plaintext for the repository, and its mapping
	// learns the new key too.
	PlainDigest digest.Digest `json:"plain_digest"`
	// Annotations are ocicrypt annotations (org.opencontainers.image.
	// enc.keys.<scheme>) with one base64 wrapped key each.
	Annotations map[string]string `json:"annotations"`
}

// SignOwnerApproval signs a with key, the owner's private key, as a
// compact JWS carrying the owner's public key.
func SignOwnerApproval(a OwnerApproval, key crypto.Signer) (string, error) {
	if a.Version == "" {
		a.Version = OwnerApprovalVersion
	}
	b, err := json.Marshal(a)
	if err != nil {
		return "", err
	}
	return signJWS(b, key, true)
}

// VerifyOwnerApproval checks an owner approval of request r by this
// shroud (audience) at now: signed by the key its header carries, for r,
// recent, and naming only r's repositories. It returns the approval and
// the signer's key id, which the caller checks against the rules.
func VerifyOwnerApproval(jwsText string, r Request, audience string, now time.Time) (OwnerApproval, string, error) {
	var a OwnerApproval
	if len(jwsText) > MaxOwnerApprovalBytes {
		return a, "", invalid("the owner approval has more than %d bytes", MaxOwnerApprovalBytes)
	}
	jws, err := jose.ParseSigned(strings.TrimSpace(jwsText), signatureAlgorithms)
	if err != nil {
		return a, "", invalid("the owner approval is not a JWS signed with one of RS*, PS*, ES*: %v", err)
	}
	if len(jws.Signatures) != 1 || jws.Signatures[0].Protected.JSONWebKey == nil {
		return a, "", invalid("the owner approval must carry one signature and the signer's public key (jwk)")
	}
	jwk := jws.Signatures[0].Protected.JSONWebKey
	if !jwk.IsPublic() || !jwk.Valid() {
		return a, "", invalid("the owner approval's jwk is not a public key")
	}
	signed, err := jws.Verify(jwk)
	if err != nil {
		return a, "", invalid("the owner approval is not signed by the key it carries")
	}
	dec := json.NewDecoder(bytes.NewReader(signed))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&a); err != nil {
		return a, "", invalid("the owner approval's payload: %v", err)
	}
	if a.Version != OwnerApprovalVersion {
		return a, "", invalid("owner approval version %.40q: want %s", a.Version, OwnerApprovalVersion)
	}
	if a.Request != r.ID {
		return a, "", invalid("the owner approval is for request %.40q, not %s", a.Request, r.ID)
	}
	if a.Audience != audience {
		return a, "", invalid("the owner approval is for %.80q, not this shroud (%s)", a.Audience, audience)
	}
	if d := now.Sub(a.Created); d > MaxClockSkew || d < -MaxClockSkew {
		return a, "", invalid("the owner approval was made at %s, more than %s from this server's clock: sign it again", a.Created.UTC().Format(time.RFC3339), MaxClockSkew)
	}
	if len(a.Wraps) == 0 {
		return a, "", invalid("the owner approval wraps no layer key: nothing would open the stored images for the requester")
	}
	seen := map[string]bool{}
	for _, w := range a.Wraps {
		if !names.Repository(w.Repository) || !slices.Contains(r.Repositories, w.Repository) {
			return a, "", invalid("the owner approval wraps for repository %.80q, which the request does not name", w.Repository)
		}
		if w.CipherDigest.Validate() != nil {
			return a, "", invalid("the owner approval names a layer %.80q that is not a digest", w.CipherDigest)
		}
		if w.PlainDigest.Validate() != nil {
			return a, "", invalid("layer %s: plain_digest %.80q is not a digest (the one its key's private options name)", w.CipherDigest, w.PlainDigest)
		}
		k := w.Repository + "@" + w.CipherDigest.String()
		if seen[k] {
			return a, "", invalid("the owner approval names layer %s of %s twice", w.CipherDigest, w.Repository)
		}
		seen[k] = true
		if len(w.Annotations) == 0 {
			return a, "", invalid("layer %s: no wrapped key", w.CipherDigest)
		}
		for name, v := range w.Annotations {
			if !strings.HasPrefix(name, scrypto.AnnotationKeys) || v == "" || strings.Contains(v, ",") {
				return a, "", invalid("layer %s: %.80q is not one wrapped key of an ocicrypt scheme", w.CipherDigest, name)
			}
		}
	}
	id, err := scrypto.PublicKeyID(jwk.Key)
	if err != nil {
		return a, "", invalid("the owner approval's key: %v", err)
	}
	return a, id, nil
}

// ApproveByOwner grants a pending request of encrypt-only repositories
// with an owner's approval, signed by ownerKeyID (VerifyOwnerApproval),
// which must be a recipient of the rule of every repository it names.
// The caller has added the wrapped keys to the stored images before: a
// request stays pending until they are.
func (s *Store) ApproveByOwner(id, by, ownerKeyID string, expires time.Time) (Request, error) {
	return s.decide(id, func(r *Request, rec scrypto.Recipient, now time.Time) error {
		if err := s.OwnerMayApprove(*r, ownerKeyID); err != nil {
			return err
		}
		return approve(r, rec, now, by+" (owner "+ownerKeyID+")", expires)
	})
}

// OwnerMayApprove says whether the key ownerKeyID may approve r: it is a
// recipient of the encrypt-only rule of each of r's repositories.
func (s *Store) OwnerMayApprove(r Request, ownerKeyID string) error {
	if s.policy == nil {
		return invalid("no policy to check the owner's key against")
	}
	for _, repo := range r.Repositories {
		rule := s.policy.Match(repo)
		if rule == nil || rule.Action != scrypto.Encrypt || rule.Recipients == nil || !rule.EncryptOnly {
			return invalid("repository %s: not under an encrypt-only rule (shroud rewraps the others itself: approve without --key)", repo)
		}
		i := slices.IndexFunc(rule.Recipients.Keys(), func(k scrypto.RecipientKey) bool { return k.ID == ownerKeyID })
		if i < 0 {
			return invalid("the owner key %s is not a recipient of %s (repository %s): only a recipient of a repository's rule approves for it", ownerKeyID, rule, repo)
		}
		k := rule.Recipients.Keys()[i]
		if err := scrypto.CheckValidity(k.ID, k.NotBefore, k.NotAfter, s.now()); err != nil {
			return invalid("the owner key: %v", err)
		}
	}
	return nil
}

// NeedsOwner says whether a request names a repository of an
// encrypt-only rule: shroud cannot rewrap it, only an owner approval
// grants it.
func (s *Store) NeedsOwner(r Request) bool {
	if s.policy == nil {
		return false
	}
	for _, repo := range r.Repositories {
		if rule := s.policy.Match(repo); rule != nil && rule.EncryptOnly {
			return true
		}
	}
	return false
}

package access

import (
	"bytes"
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/go-jose/go-jose/v4"

	scrypto "github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/names"
)

// State is where a request stands.
type State string

// The states of a request.
const (
	Pending  State = "pending"
	Approved State = "approved"
	Denied   State = "denied"
	// Expired: pending past PendingFor, or approved past its grant's
	// expiry.
	Expired State = "expired"
)

// PayloadVersion names the request payload's format.
const PayloadVersion = "shroud-access-request/v1"

// Bounds of a request.
const (
	MaxRequestBytes = 64 << 10
	MaxRepositories = 100
	MaxNameLen      = 128
	MaxReasonLen    = 256
	// MaxClockSkew is how far a request's created time may be from the
	// server's clock.
	MaxClockSkew = 10 * time.Minute
	// PendingFor is how long a request waits for a decision.
	PendingFor = 7 * 24 * time.Hour
)

// Payload is what a requester signs.
type Payload struct {
	Version string `json:"version"`
	// Audience is the key id of the shroud identity the request is for
	// (GET /shroud/v1/access says it).
	Audience     string    `json:"audience"`
	Name         string    `json:"name"`
	Repositories []string  `json:"repositories"`
	Scheme       string    `json:"scheme"`
	Key          string    `json:"key"` // PEM: a public key (jwe) or a certificate (pkcs7)
	Created      time.Time `json:"created"`
}

// Request is a request as the store keeps it.
type Request struct {
	ID           string    `json:"id"`
	Name         string    `json:"name"`
	Repositories []string  `json:"repositories"`
	Scheme       string    `json:"scheme"`
	Key          string    `json:"key"`
	KeyID        string    `json:"key_id"`
	Created      time.Time `json:"created"`
	State        State     `json:"state"`
	DecidedAt    time.Time `json:"decided_at,omitzero"`
	DecidedBy    string    `json:"decided_by,omitempty"`
	Reason       string    `json:"reason,omitempty"`
	// Expires ends an approved request's grant; zero: it does not end.
	Expires time.Time `json:"expires,omitzero"`
	// Remote is the address the request came from, for the owners (a
	// requester's poll does not show it).
	Remote string `json:"remote,omitempty"`
	// WasGranted: the request was approved before it was denied (its
	// denial takes a key back).
	WasGranted bool `json:"was_granted,omitempty"`
}

// StateAt is the request's state at now: a pending request past
// PendingFor and a grant past its expiry are Expired.
func (r *Request) StateAt(now time.Time) State {
	switch {
	case r.State == Pending && now.After(r.Created.Add(PendingFor)):
		return Expired
	case r.State == Approved && !r.Expires.IsZero() && now.After(r.Expires):
		return Expired
	}
	return r.State
}

// InvalidError is a request refused for what it holds; its message says
// why, for the requester.
type InvalidError struct{ msg string }

func (e *InvalidError) Error() string { return e.msg }

func invalid(format string, args ...any) error {
	return &InvalidError{msg: fmt.Sprintf(format, args...)}
}

// signatureAlgorithms are the JWS algorithms a request may be signed with.
var signatureAlgorithms = []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512, jose.ES256, jose.ES384, jose.ES512}

// verify checks a signed request for audience at now and returns what it
// asks for, its key parsed as a recipient. A request is a compact JWS
// signed by the key it submits (jwe, pkcs7), or for an OpenPGP key (pgp)
// a JSON envelope {"payload": <base64 of the payload JSON>,
// "pgp_signature": <armored detached signature of those bytes>} made
// with that key (SignPGP; gpg --armor --detach-sign does it too).
func verify(body []byte, audience string, now time.Time) (Payload, scrypto.Recipient, error) {
	body = bytes.TrimSpace(body)
	var p Payload
	var err error
	if len(body) > 0 && body[0] == '{' {
		p, err = verifyPGP(body)
	} else {
		p, err = verifyJWS(body)
	}
	if err != nil {
		return p, scrypto.Recipient{}, err
	}
	rec, err := checkPayload(p, audience, now)
	return p, rec, err
}

// decodePayload reads a request's payload, strictly.
func decodePayload(b []byte) (Payload, error) {
	var p Payload
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return p, invalid("the request's payload: %v", err)
	}
	if p.Version != PayloadVersion {
		return p, invalid("payload version %.40q: want %s", p.Version, PayloadVersion)
	}
	return p, nil
}

// verifyJWS checks a compact JWS signed by the key it submits.
func verifyJWS(body []byte) (Payload, error) {
	jws, err := jose.ParseSigned(string(body), signatureAlgorithms)
	if err != nil {
		return Payload{}, invalid("the request is not a JWS signed with one of RS*, PS*, ES*: %v", err)
	}
	if len(jws.Signatures) != 1 {
		return Payload{}, invalid("the request carries %d signatures, want 1", len(jws.Signatures))
	}
	// The payload is read before it is verified only to learn the key it
	// must verify with; nothing of it is used unless the signature holds.
	p, err := decodePayload(jws.UnsafePayloadWithoutVerification())
	if err != nil {
		return p, err
	}
	if p.Scheme == "pgp" {
		return p, invalid("a pgp request is signed with OpenPGP (pgp_signature), not as a JWS")
	}
	pub, err := publicKey(p.Scheme, []byte(p.Key))
	if err != nil {
		return p, invalid("key: %v", err)
	}
	signed, err := jws.Verify(pub)
	if err != nil {
		return p, invalid("the request is not signed by the key it submits (proof of possession failed)")
	}
	if !bytes.Equal(signed, jws.UnsafePayloadWithoutVerification()) {
		return p, invalid("the request's signed payload differs from its payload")
	}
	return p, nil
}

// checkPayload checks what a request asks for, once its signature held.
func checkPayload(p Payload, audience string, now time.Time) (scrypto.Recipient, error) {
	if p.Audience != audience {
		return scrypto.Recipient{}, invalid("the request is for %.80q, not this shroud (%s)", p.Audience, audience)
	}
	if d := now.Sub(p.Created); d > MaxClockSkew || d < -MaxClockSkew {
		return scrypto.Recipient{}, invalid("the request was made at %s, more than %s from this server's clock: sign it again", p.Created.UTC().Format(time.RFC3339), MaxClockSkew)
	}
	if !printable(p.Name, MaxNameLen) || p.Name == "" {
		return scrypto.Recipient{}, invalid("name: want 1 to %d printable characters", MaxNameLen)
	}
	if len(p.Repositories) == 0 || len(p.Repositories) > MaxRepositories {
		return scrypto.Recipient{}, invalid("repositories: name 1 to %d", MaxRepositories)
	}
	seen := map[string]bool{}
	for _, r := range p.Repositories {
		if !names.Repository(r) {
			return scrypto.Recipient{}, invalid("repository %.80q: not a repository name", r)
		}
		if seen[r] {
			return scrypto.Recipient{}, invalid("repository %q: named twice", r)
		}
		seen[r] = true
	}
	rec, err := scrypto.ParseRecipientData("access:"+p.Name, p.Scheme, []byte(p.Key))
	if err != nil {
		return scrypto.Recipient{}, invalid("key: %v", err)
	}
	if err := validNow(rec, now); err != nil {
		return scrypto.Recipient{}, invalid("key: %v", err)
	}
	return rec, nil
}

// validNow checks the validity r's own material gives it (an X.509
// certificate's NotBefore and NotAfter) at now.
func validNow(r scrypto.Recipient, now time.Time) error {
	nb, na := r.Validity()
	return scrypto.CheckValidity(r.KeyID(), nb, na, now)
}

// publicKey is the key a request of scheme must be signed with.
func publicKey(scheme string, b []byte) (crypto.PublicKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("want PEM")
	}
	switch scheme {
	case "jwe":
		if blk.Type != "PUBLIC KEY" {
			return nil, fmt.Errorf("jwe: want a PEM PUBLIC KEY, got %q", blk.Type)
		}
		return x509.ParsePKIXPublicKey(blk.Bytes)
	case "pkcs7":
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("pkcs7: want a PEM CERTIFICATE, got %q", blk.Type)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		// ocicrypt's pkcs7 wrapper wraps for RSA keys alone: another
		// key, once granted, would fail every push's wrap.
		if _, ok := c.PublicKey.(*rsa.PublicKey); !ok {
			return nil, fmt.Errorf("pkcs7: the certificate holds a %T; pkcs7 wraps for RSA keys only (submit an EC key as jwe)", c.PublicKey)
		}
		return c.PublicKey, nil
	default:
		return nil, fmt.Errorf("scheme %.20q: want jwe or pkcs7", scheme)
	}
}

func printable(s string, max int) bool { return names.Printable(s, max) }

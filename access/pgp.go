package access

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
)

// pgpEnvelope is a request for an OpenPGP key: the payload's JSON, and
// an armored detached OpenPGP signature of it by the key it submits.
type pgpEnvelope struct {
	Payload      string `json:"payload"` // standard base64 of the payload JSON
	PGPSignature string `json:"pgp_signature"`
}

// verifyPGP checks a request for an OpenPGP key: its signature must be
// made by the key (a key of the armored public key block) it submits.
func verifyPGP(body []byte) (Payload, error) {
	var env pgpEnvelope
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&env); err != nil {
		return Payload{}, invalid("the request is neither a JWS nor an OpenPGP envelope {payload, pgp_signature}: %v", err)
	}
	raw, err := base64.StdEncoding.DecodeString(env.Payload)
	if err != nil {
		return Payload{}, invalid("payload: not base64: %v", err)
	}
	p, err := decodePayload(raw)
	if err != nil {
		return p, err
	}
	if p.Scheme != "pgp" {
		return p, invalid("an OpenPGP envelope submits a pgp key, not %.20q (sign jwe and pkcs7 requests as a JWS)", p.Scheme)
	}
	ring, err := openpgp.ReadArmoredKeyRing(strings.NewReader(p.Key))
	if err != nil {
		return p, invalid("key: not an armored OpenPGP public key: %v", err)
	}
	if len(ring) != 1 {
		return p, invalid("key: %d OpenPGP keys, want one", len(ring))
	}
	if _, err := openpgp.CheckArmoredDetachedSignature(ring, bytes.NewReader(raw), strings.NewReader(env.PGPSignature), nil); err != nil {
		return p, invalid("the request is not signed by the OpenPGP key it submits (proof of possession failed): %v", err)
	}
	return p, nil
}

// SignPGP makes a request for an OpenPGP key: p (whose Key is e's armored
// public key) signed with e's private key.
func SignPGP(p Payload, e *openpgp.Entity) ([]byte, error) {
	if p.Version == "" {
		p.Version = PayloadVersion
	}
	p.Scheme = "pgp"
	if p.Key == "" {
		var pub bytes.Buffer
		w, err := armor.Encode(&pub, openpgp.PublicKeyType, nil)
		if err != nil {
			return nil, err
		}
		if err := e.Serialize(w); err != nil {
			return nil, fmt.Errorf("sign: public key: %w", err)
		}
		w.Close()
		p.Key = pub.String()
	}
	raw, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	var sig bytes.Buffer
	if err := openpgp.ArmoredDetachSign(&sig, e, bytes.NewReader(raw), nil); err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	return json.Marshal(pgpEnvelope{Payload: base64.StdEncoding.EncodeToString(raw), PGPSignature: sig.String()})
}

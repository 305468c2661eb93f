package access

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"fmt"

	"github.com/go-jose/go-jose/v4"
)

// Sign makes a request: p signed by key, the private key of p.Key, as a
// compact JWS (what `shroud access request` submits).
func Sign(p Payload, key crypto.Signer) (string, error) {
	if p.Version == "" {
		p.Version = PayloadVersion
	}
	b, err := json.Marshal(p)
	if err != nil {
		return "", err
	}
	return signJWS(b, key, false)
}

// signJWS signs payload with key as a compact JWS, the public key in its
// header when embed.
func signJWS(payload []byte, key crypto.Signer, embed bool) (string, error) {
	var alg jose.SignatureAlgorithm
	switch k := key.Public().(type) {
	case *rsa.PublicKey:
		alg = jose.PS256
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			alg = jose.ES256
		case elliptic.P384():
			alg = jose.ES384
		case elliptic.P521():
			alg = jose.ES512
		default:
			return "", fmt.Errorf("sign: EC curve %s is not supported", k.Curve.Params().Name)
		}
	default:
		return "", fmt.Errorf("sign: %T keys are not supported (want RSA or EC)", k)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, &jose.SignerOptions{EmbedJWK: embed})
	if err != nil {
		return "", fmt.Errorf("sign: %w", err)
	}
	jws, err := s.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("sign: %w", err)
	}
	return jws.CompactSerialize()
}

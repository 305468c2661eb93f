package crypto

import (
	"fmt"

	"github.com/go-jose/go-jose/v4"
)

// AnnotationOriginal is the manifest annotation that carries the bytes a
// client pushed, sealed to shroud's identity, so that a pull returns them
// byte for byte (and with them the client's digest).
const AnnotationOriginal = "dev.shroud.manifest.original"

// Seal encrypts a manifest's original bytes and content type to the identity
// as a compact JWE (A256GCM; ECDH-ES+A256KW or RSA-OAEP-256). The content
// type travels in the protected "cty" header.
func (id *Identity) Seal(contentType string, body []byte) (string, error) {
	enc, err := jose.NewEncrypter(jose.A256GCM,
		jose.Recipient{Algorithm: id.keyAlgorithm(), Key: id.private.Public()},
		(&jose.EncrypterOptions{}).WithContentType(jose.ContentType(contentType)))
	if err != nil {
		return "", fmt.Errorf("seal manifest: %w", err)
	}
	obj, err := enc.Encrypt(body)
	if err != nil {
		return "", fmt.Errorf("seal manifest: %w", err)
	}
	return obj.CompactSerialize()
}

// Open reverses Seal.
func (id *Identity) Open(sealed string) (contentType string, body []byte, err error) {
	obj, err := jose.ParseEncryptedCompact(sealed,
		[]jose.KeyAlgorithm{jose.ECDH_ES_A256KW, jose.RSA_OAEP_256},
		[]jose.ContentEncryption{jose.A256GCM})
	if err != nil {
		return "", nil, fmt.Errorf("parse sealed manifest: %w", err)
	}
	body, err = obj.Decrypt(id.private)
	if err != nil {
		return "", nil, fmt.Errorf("open sealed manifest (sealed to another identity?): %w", err)
	}
	if cty, ok := obj.Header.ExtraHeaders[jose.HeaderContentType].(string); ok {
		contentType = cty
	}
	return contentType, body, nil
}

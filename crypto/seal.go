package crypto

import (
	"bytes"
	"compress/flate"
	"fmt"
	"io"

	"github.com/go-jose/go-jose/v4"
)

// headerDeflate marks a sealed manifest whose plaintext was compressed
// (raw DEFLATE) before encryption. go-jose's own "zip" is not used: it
// refuses to inflate more than ten times the compressed size, and a large
// manifest of repetitive annotations compresses far better than that.
const headerDeflate = "dev.shroud.deflate"

// MaxSealedManifest bounds what Open inflates.
const MaxSealedManifest = 4 << 20

// AnnotationOriginal is the manifest annotation that carries the bytes a
// client pushed, sealed to shroud's identity, so that a pull returns them
// byte for byte (and with them the client's digest).
const AnnotationOriginal = "dev.shroud.manifest.original"

// Seal compresses a manifest's original bytes and encrypts them with their
// content type to the identity as a compact JWE (A256GCM; ECDH-ES+A256KW or
// RSA-OAEP-256). The content type travels in the protected "cty" header.
func (id *Identity) Seal(contentType string, body []byte) (string, error) {
	var z bytes.Buffer
	zw, err := flate.NewWriter(&z, flate.BestCompression)
	if err != nil {
		return "", fmt.Errorf("seal manifest: %w", err)
	}
	zw.Write(body)
	if err := zw.Close(); err != nil {
		return "", fmt.Errorf("seal manifest: %w", err)
	}
	opts := (&jose.EncrypterOptions{}).WithContentType(jose.ContentType(contentType)).WithHeader(headerDeflate, true)
	enc, err := jose.NewEncrypter(jose.A256GCM,
		jose.Recipient{Algorithm: id.keyAlgorithm(), Key: id.private.Public()}, opts)
	if err != nil {
		return "", fmt.Errorf("seal manifest: %w", err)
	}
	obj, err := enc.Encrypt(z.Bytes())
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
	if z, _ := obj.Header.ExtraHeaders[headerDeflate].(bool); z {
		body, err = io.ReadAll(io.LimitReader(flate.NewReader(bytes.NewReader(body)), MaxSealedManifest+1))
		if err != nil {
			return "", nil, fmt.Errorf("inflate sealed manifest: %w", err)
		}
		if len(body) > MaxSealedManifest {
			return "", nil, fmt.Errorf("sealed manifest inflates to more than %d bytes", MaxSealedManifest)
		}
	}
	return contentType, body, nil
}

package crypto

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"strings"

	"github.com/containers/ocicrypt/blockcipher"
	"github.com/opencontainers/go-digest"
)

// Annotation keys of ocicrypt's format.
const (
	AnnotationPrefix  = "org.opencontainers.image.enc."
	AnnotationKeys    = AnnotationPrefix + "keys."
	AnnotationPubOpts = AnnotationPrefix + "pubopts"
)

// HMACSize is the length of a layer's HMAC (HMAC-SHA256).
const HMACSize = sha256.Size

// MaxPrivateOptionsSize bounds what unwrapping a layer key may yield:
// ocicrypt's private options are a few hundred bytes, and an unwrap that
// would yield more (a compressed OpenPGP message, a key provider's
// answer) fails without reading further.
const MaxPrivateOptionsSize = 64 << 10

// PrivateOptions is what ocicrypt wraps for each recipient of a layer: the
// symmetric key, the nonce and the plaintext digest.
type PrivateOptions struct {
	Key         LayerKey
	PlainDigest digest.Digest
}

// Marshal returns the JSON ocicrypt expects:
// {"symkey","digest","cipheroptions":{"nonce"}}.
func (o PrivateOptions) Marshal() ([]byte, error) {
	return json.Marshal(blockcipher.PrivateLayerBlockCipherOptions{
		SymmetricKey:  o.Key.Key,
		Digest:        o.PlainDigest,
		CipherOptions: map[string][]byte{"nonce": o.Key.Nonce},
	})
}

// ParsePrivateOptions parses ocicrypt's private options.
func ParsePrivateOptions(b []byte) (PrivateOptions, error) {
	var p blockcipher.PrivateLayerBlockCipherOptions
	if err := json.Unmarshal(b, &p); err != nil {
		return PrivateOptions{}, fmt.Errorf("parse private layer options: %w", err)
	}
	o := PrivateOptions{Key: LayerKey{Key: p.SymmetricKey, Nonce: p.CipherOptions["nonce"]}, PlainDigest: p.Digest}
	if err := o.Key.validate(); err != nil {
		return PrivateOptions{}, fmt.Errorf("private layer options: %w", err)
	}
	if o.PlainDigest != "" {
		if err := o.PlainDigest.Validate(); err != nil {
			return PrivateOptions{}, fmt.Errorf("private layer options: digest: %w", err)
		}
	}
	return o, nil
}

// PublicOptions are the cleartext cipher options of a layer.
type PublicOptions struct {
	HMAC []byte
}

// Annotation returns the base64 value of org.opencontainers.image.enc.pubopts.
func (o PublicOptions) Annotation() (string, error) {
	b, err := json.Marshal(blockcipher.PublicLayerBlockCipherOptions{
		CipherType:    blockcipher.AES256CTR,
		Hmac:          o.HMAC,
		CipherOptions: map[string][]byte{},
	})
	if err != nil {
		return "", fmt.Errorf("marshal public layer options: %w", err)
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// ParsePublicOptions reads org.opencontainers.image.enc.pubopts from a
// layer's annotations: ocicrypt's cipher (or none named, its default) and
// an HMAC of HMACSize bytes. A missing annotation is an error.
func ParsePublicOptions(annotations map[string]string) (PublicOptions, error) {
	v, ok := annotations[AnnotationPubOpts]
	if !ok {
		return PublicOptions{}, fmt.Errorf("layer has no %s annotation", AnnotationPubOpts)
	}
	b, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		return PublicOptions{}, fmt.Errorf("decode %s: %w", AnnotationPubOpts, err)
	}
	var p blockcipher.PublicLayerBlockCipherOptions
	if err := json.Unmarshal(b, &p); err != nil {
		return PublicOptions{}, fmt.Errorf("parse %s: %w", AnnotationPubOpts, err)
	}
	if p.CipherType != "" && p.CipherType != blockcipher.AES256CTR {
		return PublicOptions{}, fmt.Errorf("%s: unsupported layer cipher %q", AnnotationPubOpts, p.CipherType)
	}
	if len(p.Hmac) != HMACSize {
		return PublicOptions{}, fmt.Errorf("%s: a %d-byte HMAC, not HMAC-SHA256's %d bytes", AnnotationPubOpts, len(p.Hmac), HMACSize)
	}
	return PublicOptions{HMAC: p.Hmac}, nil
}

// HasWrappedKeys says whether a layer's annotations carry a wrapped layer
// key of any scheme, which every ocicrypt-encrypted layer does: a layer
// whose media type says +encrypted without one is not encrypted.
func HasWrappedKeys(a map[string]string) bool {
	for k, v := range a {
		if strings.HasPrefix(k, AnnotationKeys) && v != "" {
			return true
		}
	}
	return false
}

// EncAnnotations returns the ocicrypt annotations of a (the enc.* ones).
func EncAnnotations(a map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range a {
		if strings.HasPrefix(k, AnnotationPrefix) {
			out[k] = v
		}
	}
	return out
}

// WithoutEncAnnotations returns a without the ocicrypt annotations, or nil if
// nothing is left.
func WithoutEncAnnotations(a map[string]string) map[string]string {
	out := maps.Clone(a)
	maps.DeleteFunc(out, func(k, _ string) bool { return strings.HasPrefix(k, AnnotationPrefix) })
	if len(out) == 0 {
		return nil
	}
	return out
}

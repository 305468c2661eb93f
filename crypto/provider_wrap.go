package crypto

import (
	"errors"
	"fmt"

	"github.com/go-jose/go-jose/v4"
)

// What shroud keyprovider wraps: a layer's private options (the JSON
// ocicrypt hands a key provider as OptsData) encrypted to the identity
// as a compact JWE, with the repository scope the wrap was made for in
// its protected header (authenticated: it cannot be changed without the
// identity's private key). Anyone holding the identity's public key can
// make one, exactly as anyone can wrap a layer key with jwe:; what the
// header binds is which repositories a key provider opening it answers
// for.
const (
	// headerScope names the repository (or glob) a wrap is bound to.
	headerScope = "dev.shroud.scope"
	// headerProvider marks a key-provider wrap, in the authenticated
	// header: OpenOptions opens nothing else the identity can decrypt
	// (sealed originals, layer keys wrapped for it as a jwe recipient),
	// which would make a key provider sharing serve's identity an oracle.
	headerProvider = "dev.shroud.kp"
	// MaxProviderWrapped bounds a wrapped key OpenOptions parses.
	MaxProviderWrapped = 32 << 10
	// MaxProviderOptions bounds the options WrapOptions wraps.
	MaxProviderOptions = 16 << 10
)

// ErrNotWrappedForIdentity is a wrapped key this identity cannot open.
var ErrNotWrappedForIdentity = errors.New("not wrapped for this identity")

// WrapOptions encrypts opts to the identity (A256GCM; ECDH-ES+A256KW or
// RSA-OAEP-256, as Seal), binding scope ("" for none) and the
// identity's key id (kid) in the protected header.
func (id *Identity) WrapOptions(opts []byte, scope string) (string, error) {
	if len(opts) > MaxProviderOptions {
		return "", fmt.Errorf("wrap options: %d bytes, more than %d", len(opts), MaxProviderOptions)
	}
	eo := (&jose.EncrypterOptions{}).WithHeader(headerProvider, "1")
	if scope != "" {
		eo = eo.WithHeader(headerScope, scope)
	}
	enc, err := jose.NewEncrypter(jose.A256GCM,
		jose.Recipient{Algorithm: id.keyAlgorithm(), Key: id.private.Public(), KeyID: id.KeyID()}, eo)
	if err != nil {
		return "", fmt.Errorf("wrap options: %w", err)
	}
	obj, err := enc.Encrypt(opts)
	if err != nil {
		return "", fmt.Errorf("wrap options: %w", err)
	}
	return obj.CompactSerialize()
}

// OpenOptions reverses WrapOptions: the options, the scope bound to them
// and the key id the wrap names. What does not decrypt with the identity
// is ErrNotWrappedForIdentity.
func (id *Identity) OpenOptions(wrapped string) (opts []byte, scope, keyID string, err error) {
	if len(wrapped) > MaxProviderWrapped {
		return nil, "", "", fmt.Errorf("%w: %d bytes, more than %d", ErrNotWrappedForIdentity, len(wrapped), MaxProviderWrapped)
	}
	obj, err := jose.ParseEncryptedCompact(wrapped,
		[]jose.KeyAlgorithm{id.keyAlgorithm()}, []jose.ContentEncryption{jose.A256GCM})
	if err != nil {
		return nil, "", "", fmt.Errorf("%w: parse: %v", ErrNotWrappedForIdentity, err)
	}
	if mark, _ := obj.Header.ExtraHeaders[headerProvider].(string); mark != "1" {
		return nil, "", "", fmt.Errorf("%w: not a key-provider wrap", ErrNotWrappedForIdentity)
	}
	if raw, ok := obj.Header.ExtraHeaders[headerScope]; ok {
		s, isString := raw.(string)
		if !isString || s == "" {
			return nil, "", "", fmt.Errorf("%w: a scope header that is not a repository", ErrNotWrappedForIdentity)
		}
		scope = s
	}
	opts, err = obj.Decrypt(id.private)
	if err != nil {
		return nil, "", "", fmt.Errorf("%w: does not decrypt with identity %s", ErrNotWrappedForIdentity, id.Fingerprint())
	}
	return opts, scope, obj.Header.KeyID, nil
}

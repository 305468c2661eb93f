package crypto

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
)

// Purposes of the keys an Identity derives. Each is its own key: one leaking
// (a shared cache's key, say) opens nothing the others protect.
const (
	// PurposeUploadState seals upload session state into Location URLs.
	PurposeUploadState = "upload-state"
	// PurposeManifestPointer names the upstream tags that find a
	// manifest by the digest its client pushed.
	PurposeManifestPointer = "manifest-pointer"
	// PurposeSharedKey names the entries of the shared cache tier.
	PurposeSharedKey = "shared-cache-key"
	// PurposeSharedValue seals the values of the shared cache tier.
	PurposeSharedValue = "shared-cache-value"
	// PurposePendingKey seals, for an encrypt-only rule, a layer key
	// between its blob's upload and the manifest that names it
	// (pending.go).
	PurposePendingKey = "pending-layer-key"
	// PurposeBinding binds an encrypt-only manifest's layers to the
	// repository shroud stored it for (AnnotationBinding).
	PurposeBinding = "encrypt-only-binding"
)

// DeriveKey returns the 32-byte key for purpose, derived with HKDF-SHA256
// from the identity's private key (its PKCS#8 bytes; for an identity in a
// PKCS#11 token, the token's signature of a fixed message: see
// identity_token.go). Every replica that holds the identity derives the
// same keys; nothing else can.
func (id *Identity) DeriveKey(purpose string) ([]byte, error) {
	if purpose == "" {
		return nil, errors.New("derive key: no purpose")
	}
	secret := id.secret
	if id.tok == nil {
		var err error
		if secret, err = x509.MarshalPKCS8PrivateKey(id.private); err != nil {
			return nil, fmt.Errorf("derive %s key: %w", purpose, err)
		}
	}
	k, err := hkdf.Key(sha256.New, secret, nil, "shroud/v1/"+purpose, 32)
	if err != nil {
		return nil, fmt.Errorf("derive %s key: %w", purpose, err)
	}
	return k, nil
}

// KeyedHash is HMAC-SHA256 under a derived key: names that reveal nothing
// of what they name to whoever stores them (a registry's tags, a shared
// cache's keys), and that nobody without the key can compute.
type KeyedHash struct{ key []byte }

// NewKeyedHash returns a KeyedHash under key (32 bytes).
func NewKeyedHash(key []byte) (*KeyedHash, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("keyed hash: key is %d bytes, want 32", len(key))
	}
	return &KeyedHash{key: append([]byte(nil), key...)}, nil
}

// Sum returns the hex HMAC of the parts, each length-prefixed so that no
// two lists of parts hash alike.
func (k *KeyedHash) Sum(parts ...string) string {
	m := hmac.New(sha256.New, k.key)
	for _, p := range parts {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(p)))
		m.Write(n[:])
		m.Write([]byte(p))
	}
	return hex.EncodeToString(m.Sum(nil))
}

// Box seals small values with AES-256-GCM under a derived key, a random
// nonce each: what shroud hands to a party it does not trust to read or
// change it (a client's Location URL, a shared cache) and later takes back.
type Box struct{ aead cipher.AEAD }

// ErrBoxOpen is returned for a value the Box did not seal, or sealed for
// other associated data.
var ErrBoxOpen = errors.New("sealed value does not open: forged, damaged or sealed for something else")

// NewBox returns a Box under key (32 bytes).
func NewBox(key []byte) (*Box, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("box: key is %d bytes, want 32", len(key))
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("box: %w", err)
	}
	a, err := cipher.NewGCM(b)
	if err != nil {
		return nil, fmt.Errorf("box: %w", err)
	}
	return &Box{aead: a}, nil
}

// Seal encrypts and authenticates plain, bound to ad (what the value is
// for: a session id, a cache key), which must be given again to open it.
func (b *Box) Seal(plain, ad []byte) ([]byte, error) {
	nonce := make([]byte, b.aead.NonceSize(), b.aead.NonceSize()+len(plain)+b.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("box: nonce: %w", err)
	}
	return b.aead.Seal(nonce, nonce, plain, ad), nil
}

// Open reverses Seal, or fails with ErrBoxOpen.
func (b *Box) Open(sealed, ad []byte) ([]byte, error) {
	n := b.aead.NonceSize()
	if len(sealed) < n+b.aead.Overhead() {
		return nil, ErrBoxOpen
	}
	plain, err := b.aead.Open(nil, sealed[:n], sealed[n:], ad)
	if err != nil {
		return nil, ErrBoxOpen
	}
	return plain, nil
}

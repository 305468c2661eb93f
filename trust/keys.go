package trust

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"fmt"
	"os"

	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// LoadSigner reads a PEM private key (ed25519, or ECDSA P-256: what
// `shroud keygen --type ec` writes) to sign trust metadata with.
func LoadSigner(path string) (signature.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	priv, err := cryptoutils.UnmarshalPEMToPrivateKey(data, cryptoutils.SkipPassword)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	return signerOf(priv, path)
}

func signerOf(priv crypto.PrivateKey, name string) (signature.Signer, error) {
	switch k := priv.(type) {
	case ed25519.PrivateKey:
		return signature.LoadSigner(k, crypto.Hash(0))
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("signing key %s: ECDSA on %s (want P-256)", name, k.Curve.Params().Name)
		}
		return signature.LoadSigner(k, crypto.SHA256)
	default:
		return nil, fmt.Errorf("signing key %s: %T (want ed25519 or ECDSA P-256)", name, priv)
	}
}

// LoadPublicKey reads the public half of a signing key, from a PEM public
// key or private key file, as TUF metadata names keys.
func LoadPublicKey(path string) (*metadata.Key, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	var pub crypto.PublicKey
	if p, err := cryptoutils.UnmarshalPEMToPublicKey(data); err == nil {
		pub = p
	} else if priv, err2 := cryptoutils.UnmarshalPEMToPrivateKey(data, cryptoutils.SkipPassword); err2 == nil {
		s, err := signerOf(priv, path)
		if err != nil {
			return nil, err
		}
		if pub, err = s.PublicKey(); err != nil {
			return nil, err
		}
	} else {
		return nil, fmt.Errorf("public key %s: %w", path, err)
	}
	return keyOf(pub, path)
}

// KeyOf names a public key as TUF metadata does.
func KeyOf(s signature.Signer) (*metadata.Key, error) {
	pub, err := s.PublicKey()
	if err != nil {
		return nil, err
	}
	return keyOf(pub, "signer")
}

func keyOf(pub crypto.PublicKey, name string) (*metadata.Key, error) {
	switch k := pub.(type) {
	case ed25519.PublicKey:
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("key %s: ECDSA on %s (want P-256)", name, k.Curve.Params().Name)
		}
	default:
		return nil, fmt.Errorf("key %s: %T (want ed25519 or ECDSA P-256)", name, pub)
	}
	key, err := metadata.KeyFromPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", name, err)
	}
	return key, nil
}

package crypto

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/containers/ocicrypt/utils"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/cryptosigner"
)

// Identity file names inside the data directory.
const (
	IdentityFile       = "identity.pem"
	IdentityPublicFile = "identity.pub.pem"
)

// Identity is shroud's own key pair. It is a recipient of every layer shroud
// encrypts and seals the original manifests shroud stores upstream.
type Identity struct {
	private   crypto.Signer
	publicPEM []byte
	path      string
	// tok is the token of an identity in a PKCS#11 token (nil for a key
	// file), and secret what DeriveKey derives from for it
	// (identity_token.go).
	tok    *token
	secret []byte
}

// Fingerprint is the identity's JWK thumbprint (RFC 7638, SHA-256,
// base64url): the name a recipient's key goes by in shroud's messages.
func (id *Identity) Fingerprint() string {
	return Fingerprint(id.private.Public())
}

// Fingerprint returns the JWK thumbprint of a public key.
func Fingerprint(pub crypto.PublicKey) string {
	tp, err := (&jose.JSONWebKey{Key: pub}).Thumbprint(crypto.SHA256)
	if err != nil {
		return "unknown"
	}
	return base64.RawURLEncoding.EncodeToString(tp)
}

// Path is the file the private key was read from (the PKCS#11 key file
// of an identity in a token).
func (id *Identity) Path() string { return id.path }

// PublicPEM returns the identity's public key as a PEM "PUBLIC KEY" block,
// the form skopeo's --encryption-key jwe: takes.
func (id *Identity) PublicPEM() []byte { return id.publicPEM }

// LoadIdentity reads a private key file (PEM or DER, PKCS#1, PKCS#8 or SEC 1,
// RSA or EC, or a JWK), as skopeo's --decryption-key accepts it.
func LoadIdentity(path string) (*Identity, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read identity: %w", err)
	}
	k, err := utils.ParsePrivateKey(b, nil, "identity")
	if err != nil {
		return nil, fmt.Errorf("identity %s: %w", path, err)
	}
	if jwk, ok := k.(*jose.JSONWebKey); ok {
		k = jwk.Key
	}
	var dec crypto.Signer
	switch k := k.(type) {
	case *rsa.PrivateKey:
		dec = k
	case *ecdsa.PrivateKey:
		dec = k
	default:
		return nil, fmt.Errorf("identity %s: %T is not an RSA or EC private key", path, k)
	}
	return newIdentity(dec, path)
}

// newIdentity is the identity of a private key read from path.
func newIdentity(key crypto.Signer, path string) (*Identity, error) {
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, fmt.Errorf("identity %s: public key: %w", path, err)
	}
	return &Identity{
		private:   key,
		publicPEM: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}),
		path:      path,
	}, nil
}

// InToken says whether the identity's private key is in a PKCS#11 token.
func (id *Identity) InToken() bool { return id.tok != nil }

// LoadOrCreateIdentity loads dir/identity.pem, or on first start writes a new
// EC P-256 key pair there (identity.pem mode 0600, identity.pub.pem) and says
// so with created.
func LoadOrCreateIdentity(dir string) (id *Identity, created bool, err error) {
	path := filepath.Join(dir, IdentityFile)
	if _, err := os.Stat(path); err == nil {
		id, err := LoadIdentity(path)
		return id, false, err
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, fmt.Errorf("identity: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, fmt.Errorf("create data dir: %w", err)
	}
	priv, pub, err := GenerateKeyPair("ec")
	if err != nil {
		return nil, false, err
	}
	if err := os.WriteFile(filepath.Join(dir, IdentityPublicFile), pub, 0o644); err != nil {
		return nil, false, fmt.Errorf("write identity public key: %w", err)
	}
	// O_EXCL: two replicas starting at once on one volume must not
	// overwrite each other's key.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, false, fmt.Errorf("write identity: %w", err)
	}
	if _, err := f.Write(priv); err != nil {
		f.Close()
		return nil, false, fmt.Errorf("write identity: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, false, fmt.Errorf("write identity: %w", err)
	}
	id, err = LoadIdentity(path)
	return id, true, err
}

// GenerateKeyPair returns a new private key (PKCS#8 PEM) and its public key
// (PKIX PEM): kind "ec" is P-256, "rsa" is RSA 3072.
func GenerateKeyPair(kind string) (privPEM, pubPEM []byte, err error) {
	var priv crypto.Signer
	switch kind {
	case "ec":
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "rsa":
		priv, err = rsa.GenerateKey(rand.Reader, 3072)
	default:
		return nil, nil, fmt.Errorf("unknown key type %q (want ec or rsa)", kind)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("generate %s key: %w", kind, err)
	}
	p8, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, nil, fmt.Errorf("marshal private key: %w", err)
	}
	pkix, err := x509.MarshalPKIXPublicKey(priv.Public())
	if err != nil {
		return nil, nil, fmt.Errorf("marshal public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}),
		pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkix}), nil
}

// privatePEM returns the private key as PKCS#8 PEM, the form ocicrypt's JWE
// key wrapper takes.
func (id *Identity) privatePEM() ([]byte, error) {
	if id.tok != nil {
		return nil, fmt.Errorf("identity %s: the private key is in a PKCS#11 token and cannot be exported", id.path)
	}
	p8, err := x509.MarshalPKCS8PrivateKey(id.private)
	if err != nil {
		return nil, fmt.Errorf("marshal identity: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}), nil
}

// keyAlgorithm is the JWE key management algorithm for the identity.
// A token identity's is RSA-OAEP (SHA-1): every token implements it
// (SoftHSM2 no other), and it is what its layer keys are wrapped with.
func (id *Identity) keyAlgorithm() jose.KeyAlgorithm {
	if id.tok != nil {
		return jose.RSA_OAEP
	}
	if _, ok := id.private.(*ecdsa.PrivateKey); ok {
		return jose.ECDH_ES_A256KW
	}
	return jose.RSA_OAEP_256
}

// jweDecryptionKey is what go-jose decrypts a JWE to the identity with:
// the private key, or for a token identity the token (an
// OpaqueKeyDecrypter).
func (id *Identity) jweDecryptionKey() any {
	if k, ok := id.private.(*tokenKey); ok {
		return jose.OpaqueKeyDecrypter(k)
	}
	return id.private
}

// jwsSigningKey is what go-jose signs with as the identity.
func (id *Identity) jwsSigningKey() any {
	if id.tok != nil {
		return cryptosigner.Opaque(id.private)
	}
	return id.private
}

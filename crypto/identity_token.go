package crypto

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/containers/ocicrypt/crypto/pkcs11"
	"github.com/go-jose/go-jose/v4"
)

// An identity in a PKCS#11 token (an HSM, a cloud KMS's PKCS#11 library,
// SoftHSM2 in the tests): its private key never leaves the token, and
// nothing of it is on shroud's disk. It is named by an ocicrypt PKCS#11
// key file (the YAML skopeo's --decryption-key takes), of an RSA key pair.
//
// What the identity does goes through the token, each operation in a
// session of its own (crypto11 opens the module, logs in, and closes it
// again after): ocicrypt's PKCS#11 key wrapper finalizes the module after
// each of its operations, so a session held open across them would be
// closed under shroud's feet. The keyring holds the identity's token lock
// around ocicrypt's PKCS#11 operations too.
//
//   - Layer keys stay wrapped for the identity as JWE (RSA-OAEP, which
//     ocicrypt's JWE key wrapper writes for an RSA key and every token
//     implements) and are unwrapped by go-jose through the token's
//     crypto.Decrypter. Software holding the key file alone (skopeo's
//     --decryption-key pkcs11:) reads only the pkcs11 scheme: make the
//     token's public key file a pkcs11: recipient for that.
//   - Seals are signed (PS256) and decrypted (RSA-OAEP) by the token.
//   - The derived keys (DeriveKey) come from HKDF over a secret only the
//     token can produce: its RSA PKCS#1 v1.5 signature of a fixed,
//     domain-separated message. PKCS#1 v1.5 signatures are deterministic
//     (RFC 8017 §8.2), so every replica holding the same token key derives
//     the same keys, from the key pair alone (no second object, such as an
//     HMAC secret key, to provision and replicate with it); and computing
//     it without the private key is forging an RSA signature. The message
//     names shroud and its purpose, so that no signature the key makes for
//     anything else is the secret; a token key shroud shares with other
//     software that signs what it is given should not be shroud's identity.
const tokenDeriveMessage = "shroud/v1/identity-token-derive-secret"

// ErrNoPKCS11 is the error of a token identity in a build of shroud without
// cgo, which cannot load a PKCS#11 module.
var ErrNoPKCS11 = errors.New("this build of shroud has no PKCS#11 support (built without cgo)")

// TokenModules are the PKCS#11 modules a token identity's key file may
// name: the pkcs11 config section's allowed-module-paths and
// module-directories.
type TokenModules struct {
	AllowedModulePaths []string
	ModuleDirectories  []string
}

// token is where a token identity's key pair lives.
type token struct {
	keyFile string
	module  string
	label   string // token label
	object  []byte // CKA_LABEL of the key pair, or nil
	id      []byte // CKA_ID of the key pair, or nil
	pin     string
	env     map[string]string // the key file's module environment
	// mu is held around every operation on the token, and by the keyring
	// around ocicrypt's PKCS#11 operations.
	mu *sync.Mutex
}

// IsTokenIdentity says whether an --identity value names a key in a
// PKCS#11 token ("pkcs11:<key file>").
func IsTokenIdentity(spec string) bool { return strings.HasPrefix(spec, "pkcs11:") }

// LoadTokenIdentity loads the identity whose key pair is in a PKCS#11 token,
// named by the ocicrypt PKCS#11 key file of spec ("pkcs11:<file>" or the
// file). It logs in, checks the key pair is RSA and can sign and decrypt
// (a trial seal), and derives the secret of DeriveKey. Its errors name the
// key file, module, token and object, never the PIN.
func LoadTokenIdentity(ctx context.Context, spec string, mods TokenModules) (*Identity, error) {
	path := strings.TrimPrefix(spec, "pkcs11:")
	tok, err := parseTokenKeyFile(path, mods)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var pub crypto.PublicKey
	err = tok.do(func(s crypto.Signer) error {
		pub = s.Public()
		return nil
	})
	if err != nil {
		return nil, err
	}
	rpub, ok := pub.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("identity %s: the token's key pair is %T: a token identity must be RSA", path, pub)
	}
	key := &tokenKey{tok: tok, pub: rpub}
	id, err := newIdentity(key, path)
	if err != nil {
		return nil, err
	}
	id.tok = tok
	h := sha256.Sum256([]byte(tokenDeriveMessage))
	if id.secret, err = key.Sign(nil, h[:], crypto.SHA256); err != nil {
		return nil, fmt.Errorf("identity %s: derive secret: %w", path, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	sealed, err := id.Seal(Seal{Repository: "shroud/identity-trial"})
	if err == nil {
		_, err = id.Open(sealed)
	}
	if err != nil {
		return nil, fmt.Errorf("identity %s: the token cannot sign (RSA-PSS) and decrypt (RSA-OAEP) with its key: %w", path, err)
	}
	return id, nil
}

// parseTokenKeyFile reads an ocicrypt PKCS#11 key file.
func parseTokenKeyFile(path string, mods TokenModules) (*token, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read identity: %w", err)
	}
	obj, err := pkcs11.ParsePkcs11KeyFile(b)
	if err != nil {
		return nil, fmt.Errorf("identity %s: %w", path, err)
	}
	u := obj.Uri
	u.SetModuleDirectories(mods.ModuleDirectories)
	u.SetAllowedModulePaths(mods.AllowedModulePaths)
	module, err := u.GetModule()
	if err != nil {
		return nil, fmt.Errorf("identity %s: PKCS#11 module: %w (allow it with pkcs11 allowed-module-paths)", path, err)
	}
	label, ok := u.GetPathAttribute("token", false)
	if !ok || label == "" {
		return nil, fmt.Errorf("identity %s: the PKCS#11 URI names no token (token=)", path)
	}
	tok := &token{keyFile: path, module: module, label: label, env: u.GetEnvMap(), mu: new(sync.Mutex)}
	if v, ok := u.GetPathAttribute("object", false); ok && v != "" {
		tok.object = []byte(v)
	}
	if v, ok := u.GetPathAttribute("id", false); ok && v != "" {
		tok.id = []byte(v)
	}
	if tok.object == nil && tok.id == nil {
		return nil, fmt.Errorf("identity %s: the PKCS#11 URI names no key (object= or id=)", path)
	}
	if u.HasPIN() {
		if tok.pin, err = u.GetPIN(); err != nil {
			return nil, fmt.Errorf("identity %s: PIN: %w", path, err)
		}
	}
	return tok, nil
}

// name says which key pair the key file names.
func (t *token) name() string {
	var parts []string
	if t.object != nil {
		parts = append(parts, fmt.Sprintf("object=%q", t.object))
	}
	if t.id != nil {
		parts = append(parts, fmt.Sprintf("id=%x", t.id))
	}
	return strings.Join(parts, " ")
}

// scrubPIN keeps the PIN out of an error a module might have put it in.
func scrubPIN(err error, pin string) error {
	if pin == "" || !strings.Contains(err.Error(), pin) {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), pin, "<pin>"))
}

// setEnv sets the module environment of a key file (as ocicrypt does
// around its PKCS#11 operations) and returns what restores it.
func setEnv(env map[string]string) func() {
	type old struct {
		v  string
		ok bool
	}
	saved := map[string]old{}
	for k, v := range env {
		ov, ok := os.LookupEnv(k)
		saved[k] = old{ov, ok}
		os.Setenv(k, v)
	}
	return func() {
		for k, o := range saved {
			if o.ok {
				os.Setenv(k, o.v)
			} else {
				os.Unsetenv(k)
			}
		}
	}
}

// tokenKey is a token identity's private key: a crypto.Signer and
// crypto.Decrypter each of whose operations runs in the token.
type tokenKey struct {
	tok *token
	pub *rsa.PublicKey
}

// Public implements crypto.Signer.
func (k *tokenKey) Public() crypto.PublicKey { return k.pub }

// Sign implements crypto.Signer. An RSA-PSS salt of "any length"
// (go-jose's cryptosigner asks for one; crypto11 refuses it) is the
// hash's length, the salt go-jose gives a software key.
func (k *tokenKey) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) (sig []byte, err error) {
	if pss, ok := opts.(*rsa.PSSOptions); ok && pss.SaltLength == rsa.PSSSaltLengthAuto {
		opts = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: pss.Hash}
	}
	err = k.tok.do(func(s crypto.Signer) error {
		sig, err = s.Sign(rand, digest, opts)
		return err
	})
	return sig, err
}

// Decrypt implements crypto.Decrypter.
func (k *tokenKey) Decrypt(rand io.Reader, msg []byte, opts crypto.DecrypterOpts) (plain []byte, err error) {
	err = k.tok.do(func(s crypto.Signer) error {
		d, ok := s.(crypto.Decrypter)
		if !ok {
			return fmt.Errorf("identity %s: the token's key cannot decrypt", k.tok.keyFile)
		}
		plain, err = d.Decrypt(rand, msg, opts)
		return err
	})
	return plain, err
}

// DecryptKey implements go-jose's OpaqueKeyDecrypter: RSA-OAEP (SHA-1)
// and RSA-OAEP-256 key management, decrypted by the token.
func (k *tokenKey) DecryptKey(encryptedKey []byte, header jose.Header) ([]byte, error) {
	var h crypto.Hash
	switch jose.KeyAlgorithm(header.Algorithm) {
	case jose.RSA_OAEP:
		h = crypto.SHA1
	case jose.RSA_OAEP_256:
		h = crypto.SHA256
	default:
		return nil, fmt.Errorf("identity %s: key algorithm %q is not RSA-OAEP", k.tok.keyFile, header.Algorithm)
	}
	return k.Decrypt(nil, encryptedKey, &rsa.OAEPOptions{Hash: h})
}

// unwrapJWE opens a JWE wrapped key (ocicrypt's jwe scheme) with a token
// identity, as ocicrypt's JWE key wrapper opens it with a private key.
func (id *Identity) unwrapJWE(b []byte) ([]byte, error) {
	if _, err := parseJWE(b, false); err != nil {
		return nil, fmt.Errorf("%w: jwe: %w", ErrInvalidEncryption, err)
	}
	algs, encs := jweAlgorithms()
	obj, err := jose.ParseEncrypted(string(b), algs, encs)
	if err != nil {
		return nil, fmt.Errorf("jwe: %w", err)
	}
	_, _, plain, err := obj.DecryptMulti(id.jweDecryptionKey())
	if err != nil {
		return nil, fmt.Errorf("jwe: does not decrypt with identity %s: %w", id.Fingerprint(), err)
	}
	return plain, nil
}

package crypto

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"os"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/containers/ocicrypt/config"
	"github.com/containers/ocicrypt/crypto/pkcs11"
	"github.com/containers/ocicrypt/keywrap/jwe"
	"github.com/containers/ocicrypt/utils"
)

// Recipient is one parsed recipient spec, in the form skopeo's
// --encryption-key and ctr-enc take: jwe:<public key file> (PEM, DER or
// JWK; RSA or EC), pgp:<OpenPGP public key file> (armored or binary),
// pkcs7:<X.509 certificate file> (PEM or DER), pkcs11:<key file>,
// provider:<name>[:<args>] (a key provider the keyring is configured with).
type Recipient struct {
	Spec     string
	scheme   string
	data     []byte    // the key or certificate; for pgp a binary keyring; for a provider its arguments
	pgpIDs   [][]byte  // for pgp: the address ocicrypt selects each key by
	provider string    // for provider: its name
	keys     []keyInfo // its keys' ids and validity (keyid.go)
}

// ParseRecipient reads a recipient spec. A file that does not parse is an
// error naming it.
func ParseRecipient(spec string) (Recipient, error) {
	scheme, arg, ok := strings.Cut(spec, ":")
	if !ok || arg == "" {
		return Recipient{}, fmt.Errorf("recipient %q: want <scheme>:<argument>, e.g. jwe:/path/to/key.pub.pem", spec)
	}
	fail := func(format string, args ...any) (Recipient, error) {
		return Recipient{}, fmt.Errorf("recipient %q: "+format, append([]any{spec}, args...)...)
	}
	switch scheme {
	case "jwe", "pgp", "pkcs7", "pkcs11":
	case "provider":
		// provider:<name>[:<args>], as ocicrypt passes it to the provider.
		name, args, _ := strings.Cut(arg, ":")
		if args == "" {
			args = "Enabled"
		}
		return Recipient{Spec: spec, scheme: scheme, provider: name, data: []byte(args), keys: []keyInfo{{id: ProviderKeyID(name)}}}, nil
	default:
		return fail("unknown scheme %q (want jwe, pgp, pkcs7, pkcs11 or provider)", scheme)
	}
	b, err := os.ReadFile(arg)
	if err != nil {
		return fail("%w", err)
	}
	return parseRecipientData(spec, scheme, arg, b)
}

// ParseRecipientData reads a recipient's key from data, as ParseRecipient
// reads it from a file: scheme is jwe (a public key: PEM, DER or JWK),
// pkcs7 (an X.509 certificate) or pgp (OpenPGP public keys). spec names
// it in messages and in Specs (an access request's "access:<id>").
func ParseRecipientData(spec, scheme string, data []byte) (Recipient, error) {
	switch scheme {
	case "jwe", "pkcs7", "pgp":
	default:
		return Recipient{}, fmt.Errorf("recipient %q: scheme %q: want jwe, pkcs7 or pgp", spec, scheme)
	}
	return parseRecipientData(spec, scheme, "the key", data)
}

// parseRecipientData checks and describes a recipient's key b, read from
// arg (a file's path, for messages).
func parseRecipientData(spec, scheme, arg string, b []byte) (Recipient, error) {
	fail := func(format string, args ...any) (Recipient, error) {
		return Recipient{}, fmt.Errorf("recipient %q: "+format, append([]any{spec}, args...)...)
	}
	var err error
	r := Recipient{Spec: spec, scheme: scheme, data: b}
	switch scheme {
	case "jwe":
		if _, err := utils.ParsePublicKey(b, "JWE"); err != nil {
			return fail("%s is not a public key (PEM, DER or JWK): %w", arg, err)
		}
		// A trial wrap: a JWK whose "alg" does not suit its key only
		// fails here, and must fail at start-up, not at the first push.
		ec := &config.EncryptConfig{Parameters: map[string][][]byte{"pubkeys": {b}}}
		if _, err := jwe.NewKeyWrapper().WrapKeys(ec, trialOptions()); err != nil {
			return fail("%s cannot wrap keys (a JWK needs an \"alg\" that suits its key): %w", arg, err)
		}
	case "pkcs7":
		if _, err := utils.ParseCertificate(b, "PKCS7"); err != nil {
			return fail("%s is not an X.509 certificate: %w", arg, err)
		}
	case "pkcs11":
		if _, err := pkcs11.ParsePkcs11KeyFile(b); err != nil {
			return fail("%s is not a PKCS#11 key file (yaml with a pkcs11: uri): %w", arg, err)
		}
	case "pgp":
		ring, ids, err := parsePGPPublic(b)
		if err != nil {
			return fail("%s: %w", arg, err)
		}
		r.data, r.pgpIDs = ring, ids
	}
	if r.keys, err = recipientKeys(r); err != nil {
		return fail("%s: %w", arg, err)
	}
	return r, nil
}

// parsePGPPublic reads OpenPGP public keys (armored or binary) and returns
// them as a binary keyring with the address of each key's first identity,
// which is how ocicrypt's PGP key wrapper picks recipients out of a ring.
func parsePGPPublic(b []byte) (ring []byte, ids [][]byte, err error) {
	if blk, err := armor.Decode(bytes.NewReader(b)); err == nil {
		if b, err = io.ReadAll(blk.Body); err != nil {
			return nil, nil, fmt.Errorf("dearmor: %w", err)
		}
	}
	el, err := openpgp.ReadKeyRing(bytes.NewReader(b))
	if err != nil {
		return nil, nil, fmt.Errorf("not an OpenPGP public key: %w", err)
	}
	// ReadKeyRing skips what it cannot read as a key: an empty file or a
	// lone marker packet reads as a keyring with no key, a recipient
	// that would wrap for nobody.
	if len(el) == 0 {
		return nil, nil, errors.New("not an OpenPGP public key: it holds no key")
	}
	for _, e := range el {
		var id []byte
		for name := range e.Identities {
			addr, err := mail.ParseAddress(name)
			if err != nil {
				return nil, nil, fmt.Errorf("OpenPGP identity %q has no address ocicrypt can select the key by: %w", name, err)
			}
			if id == nil {
				id = []byte(addr.Address)
			}
		}
		if id == nil {
			return nil, nil, fmt.Errorf("OpenPGP key %X has no identity", e.PrimaryKey.KeyId)
		}
		ids = append(ids, id)
	}
	return b, ids, nil
}

// DecryptionKey is one key shroud may unwrap layers with: a private key
// (jwe, pkcs7), an OpenPGP private key, a PKCS#11 key file (yaml naming a
// key in a token), or the X.509 certificate pkcs7 decryption needs beside
// its private key.
type DecryptionKey struct {
	Path     string
	kind     string // "private", "pgp", "pkcs11" or "x509"
	data     []byte
	password []byte
	keys     []keyInfo // its keys' ids and validity (keyid.go)
}

// ParseDecryptionKey reads a key file in the form skopeo's
// --decryption-key takes: "file" or "file:password".
func ParseDecryptionKey(spec string) (DecryptionKey, error) {
	path, password := spec, ""
	if _, err := os.Stat(spec); err != nil {
		if i := strings.LastIndex(spec, ":"); i > 0 {
			path, password = spec[:i], spec[i+1:]
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return DecryptionKey{}, fmt.Errorf("decryption key: %w", err)
	}
	k := DecryptionKey{Path: path, data: b, password: []byte(password)}
	switch {
	case utils.IsPkcs11PrivateKey(b):
		k.kind = "pkcs11"
	case utils.IsCertificate(b):
		k.kind = "x509"
	case isPGPPrivate(b):
		k.kind = "pgp"
		if blk, err := armor.Decode(bytes.NewReader(b)); err == nil {
			if k.data, err = io.ReadAll(blk.Body); err != nil {
				return DecryptionKey{}, fmt.Errorf("decryption key %s: %w", path, err)
			}
		}
	default:
		if _, err := utils.ParsePrivateKey(b, k.password, "JWE"); err != nil {
			return DecryptionKey{}, fmt.Errorf("decryption key %s: not a private key, OpenPGP private key or certificate shroud can use: %w", path, err)
		}
		k.kind = "private"
	}
	if k.keys, err = decryptionKeys(k); err != nil {
		return DecryptionKey{}, fmt.Errorf("decryption key %s: %w", path, err)
	}
	return k, nil
}

func isPGPPrivate(b []byte) bool {
	if blk, err := armor.Decode(bytes.NewReader(b)); err == nil {
		return blk.Type == "PGP PRIVATE KEY BLOCK"
	}
	el, err := openpgp.ReadKeyRing(bytes.NewReader(b))
	return err == nil && len(el) > 0 && el[0].PrivateKey != nil
}

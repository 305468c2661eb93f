package crypto

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/containers/ocicrypt"
	"github.com/containers/ocicrypt/config"
	"github.com/go-jose/go-jose/v4"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/shroud-oci/shroud/internal/testkeys"
)

// jweKeyFiles writes a public key in one of the forms jwe: takes.
func jweKeyFiles(t *testing.T, dir string) map[string][2]string {
	t.Helper()
	out := map[string][2]string{}
	write := func(name string, pub, priv []byte) {
		pp, sp := filepath.Join(dir, name+".pub"), filepath.Join(dir, name+".key")
		os.WriteFile(pp, pub, 0o644)
		os.WriteFile(sp, priv, 0o600)
		out[name] = [2]string{pp, sp}
	}
	for _, bits := range []int{2048, 3072, 4096} {
		k, _ := rsa.GenerateKey(rand.Reader, bits)
		pub, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
		priv, _ := x509.MarshalPKCS8PrivateKey(k)
		name := "rsa" + string(rune('0'+bits/1000))
		write(name+"-pem", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: priv}))
		if bits == 2048 {
			write("rsa-der", pub, priv)
		}
	}
	for _, c := range []elliptic.Curve{elliptic.P256(), elliptic.P384(), elliptic.P521()} {
		k, _ := ecdsa.GenerateKey(c, rand.Reader)
		pub, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
		priv, _ := x509.MarshalPKCS8PrivateKey(k)
		write("ec-"+c.Params().Name, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: priv}))
		if c == elliptic.P256() {
			jpub, _ := json.Marshal(jose.JSONWebKey{Key: &k.PublicKey, Algorithm: string(jose.ECDH_ES_A256KW)})
			jpriv, _ := json.Marshal(jose.JSONWebKey{Key: k, Algorithm: string(jose.ECDH_ES_A256KW)})
			// Without "alg", ocicrypt would wrap for an EC key with RSA-OAEP:
			// shroud refuses such a file at start-up.
			bad, _ := json.Marshal(jose.JSONWebKey{Key: &k.PublicKey})
			os.WriteFile(filepath.Join(dir, "ec-jwk-noalg.pub"), bad, 0o644)
			write("ec-jwk", jpub, jpriv)
		}
	}
	return out
}

// Every scheme and key form: what shroud wraps for a recipient, ocicrypt
// (skopeo, imgcrypt) opens with that recipient's private key alone, and a
// keyring holding that key opens too.
func TestSchemesInteropWithOcicrypt(t *testing.T) {
	dir := t.TempDir()
	type tc struct {
		spec string
		keys []string // decryption key files
	}
	var cases []tc
	for name, f := range jweKeyFiles(t, dir) {
		cases = append(cases, tc{"jwe:" + f[0], []string{f[1]}})
		_ = name
	}
	pgpPub, pgpPriv, _ := testkeys.PGP(t, dir, "alice", true)
	cases = append(cases, tc{"pgp:" + pgpPub, []string{pgpPriv}})
	cert, key := testkeys.Cert(t, dir, "bob", false)
	cases = append(cases, tc{"pkcs7:" + cert, []string{key, cert}})

	if _, err := ParseRecipient("jwe:" + filepath.Join(dir, "ec-jwk-noalg.pub")); err == nil {
		t.Fatal("an EC JWK without alg was accepted")
	}
	for _, c := range cases {
		t.Run(c.spec[:strings.Index(c.spec, ":")]+"/"+filepath.Base(c.spec), func(t *testing.T) {
			kr, _ := testKeyring(t)
			plain, ct, desc, opts := wrappedFor(t, kr, c.spec)

			// ocicrypt with only the recipient's key.
			var privs, pws, gpgs, gpgpws, x509s [][]byte
			for _, k := range c.keys {
				dk, err := ParseDecryptionKey(k)
				if err != nil {
					t.Fatal(err)
				}
				switch dk.kind {
				case "private":
					privs, pws = append(privs, dk.data), append(pws, []byte{})
				case "pgp":
					gpgs, gpgpws = append(gpgs, dk.data), append(gpgpws, []byte{})
				case "x509":
					x509s = append(x509s, dk.data)
				}
			}
			dc := &config.DecryptConfig{Parameters: map[string][][]byte{
				"privkeys": privs, "privkeys-passwords": pws, "gpg-privatekeys": gpgs, "gpg-privatekeys-passwords": gpgpws, "x509s": x509s}}
			rd, _, err := ocicrypt.DecryptLayer(dc, bytes.NewReader(ct), desc, false)
			if err != nil {
				t.Fatalf("ocicrypt with the recipient's key: %v", err)
			}
			if got, _ := io.ReadAll(rd); !bytes.Equal(got, plain) {
				t.Fatal("ocicrypt decrypted other bytes")
			}

			// Who the key is wrapped for, by name.
			desc2 := kr.Describe(desc.Annotations)
			switch scheme := c.spec[:strings.Index(c.spec, ":")]; scheme {
			case "jwe":
				if len(desc2) != 1 || strings.Count(desc2[0], " kid ") != 2 || !strings.Contains(desc2[0], kr.Identity().Fingerprint()) {
					t.Fatalf("Describe = %v, want both JWE recipients named by key id", desc2)
				}
			case "pkcs7":
				if !slices.ContainsFunc(desc2, func(s string) bool { return strings.Contains(s, `issuer "CN=bob" serial 1`) }) {
					t.Fatalf("Describe = %v, want the certificate's issuer and serial", desc2)
				}
			case "pgp":
				if !slices.ContainsFunc(desc2, func(s string) bool { return strings.HasPrefix(s, "pgp key ids [") }) {
					t.Fatalf("Describe = %v, want the OpenPGP key id", desc2)
				}
			}

			// Another shroud holding only that key opens it.
			other, _ := testKeyring(t)
			var dks []DecryptionKey
			for _, k := range c.keys {
				dk, _ := ParseDecryptionKey(k)
				dks = append(dks, dk)
			}
			kr2, err := NewKeyring(other.Identity(), dks)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := kr2.Unwrap(desc.Annotations); err != nil || !bytes.Equal(got.Key.Key, opts.Key.Key) {
				t.Fatalf("a keyring with the recipient's key: %v", err)
			}
		})
	}
}

// wrappedFor encrypts a random layer with kr and wraps its key for the
// recipient spec (and the identity): plaintext, ciphertext, the encrypted
// descriptor with those annotations, and the layer's options.
func wrappedFor(t *testing.T, kr *Keyring, spec string) ([]byte, []byte, ocispec.Descriptor, PrivateOptions) {
	t.Helper()
	r, err := ParseRecipient(spec)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := kr.Recipients([]Recipient{r})
	if err != nil {
		t.Fatal(err)
	}
	plain := randomBytes(t, 10_000)
	ct, desc := shroudEncrypt(t, kr, plain)
	opts, _ := kr.Unwrap(desc.Annotations)
	pub, _ := ParsePublicOptions(desc.Annotations)
	if desc.Annotations, err = kr.Wrap(opts, pub, rs); err != nil {
		t.Fatal(err)
	}
	return plain, ct, desc, opts
}

// Rewrap adds recipients to a layer ocicrypt encrypted, keeping the ones it
// had, without touching the ciphertext.
func TestRewrap(t *testing.T) {
	dir := t.TempDir()
	kr, _ := testKeyring(t)
	plain := randomBytes(t, 5000)
	cc, _ := config.EncryptWithJwe([][]byte{kr.Identity().PublicPEM()})
	r, fin, err := ocicrypt.EncryptLayer(cc.EncryptConfig, bytes.NewReader(plain), ocispec.Descriptor{})
	if err != nil {
		t.Fatal(err)
	}
	ct, _ := io.ReadAll(r)
	ann, _ := fin()
	pgpPub, pgpPriv, pgpID := testkeys.PGP(t, dir, "carol", true)
	rec, err := ParseRecipient("pgp:" + pgpPub)
	if err != nil {
		t.Fatal(err)
	}
	rs, _ := kr.Recipients([]Recipient{rec})
	out, err := kr.Rewrap(ann, rs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out[AnnotationKeys+"jwe"], ann[AnnotationKeys+"jwe"]+",") || out[AnnotationKeys+"pgp"] == "" {
		t.Fatalf("rewrap did not add to the existing keys: %v", out)
	}
	dk, _ := ParseDecryptionKey(pgpPriv)
	only, _ := testKeyring(t)
	kr2, _ := NewKeyring(only.Identity(), []DecryptionKey{dk})
	opts, err := kr2.Unwrap(out)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := ParsePublicOptions(out)
	dr, _ := DecryptReader(bytes.NewReader(ct), opts.Key, pub.HMAC, "")
	if got, _ := io.ReadAll(dr); !bytes.Equal(got, plain) {
		t.Fatal("the added recipient cannot decrypt the unchanged ciphertext")
	}
	// A keyring without a key to it names the pgp key id.
	stranger, _ := testKeyring(t)
	_, err = stranger.Unwrap(map[string]string{AnnotationKeys + "pgp": out[AnnotationKeys+"pgp"], AnnotationPubOpts: out[AnnotationPubOpts]})
	if !errors.Is(err, ErrNoKey) || !strings.Contains(err.Error(), strings.ToUpper(strings.TrimLeft(hex16(pgpID), "0"))) {
		t.Fatalf("err = %v, want ErrNoKey naming key id %016X", err, pgpID)
	}
}

func hex16(v uint64) string {
	const digits = "0123456789ABCDEF"
	b := make([]byte, 16)
	for i := 15; i >= 0; i-- {
		b[i] = digits[v&0xf]
		v >>= 4
	}
	return string(b)
}

func TestPolicy(t *testing.T) {
	kr, _ := testKeyring(t)
	rs, _ := kr.Recipients(nil)
	p, err := NewPolicy([]Rule{
		{Pattern: "team-a/**", Action: Encrypt, Recipients: rs, Layers: []int{0, -1}},
		{Pattern: "public/*", Action: Passthrough},
		{Pattern: "forbidden/**", Action: Deny},
		{Pattern: "**", Action: Encrypt, Recipients: rs, Platforms: []string{"linux/amd64", "linux/arm/v7"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for repo, want := range map[string]int{
		"team-a/app": 0, "team-a/x/y": 0, "team-a": 3, "public/web": 1, "public/a/b": 3, "forbidden/x": 2, "other": 3,
	} {
		if got := p.Match(repo); got == nil || got.Index != want {
			t.Errorf("Match(%q) = %v, want rule %d", repo, got, want)
		}
	}
	r := p.Rules()[0]
	for i, want := range []bool{true, false, false, true} {
		if r.EncryptsLayer(i, 4) != want {
			t.Errorf("layers [0,-1]: EncryptsLayer(%d, 4) = %v", i, !want)
		}
	}
	last := p.Rules()[3]
	if !last.EncryptsPlatform("linux", "amd64", "") || last.EncryptsPlatform("linux", "arm64", "") || !last.EncryptsPlatform("linux", "arm", "v7") || last.EncryptsPlatform("linux", "arm", "v6") {
		t.Error("EncryptsPlatform")
	}
	only, _ := NewPolicy([]Rule{{Pattern: "a/*", Action: Deny}})
	if only.Match("b") != nil {
		t.Error("a repository no rule matches matched")
	}
	for _, bad := range [][]Rule{
		{{Pattern: "x", Action: "shred"}},
		{{Pattern: "", Action: Deny}},
		{{Pattern: "x", Action: Encrypt}},
		{{Pattern: "x", Action: Deny, Layers: []int{1}}},
	} {
		if _, err := NewPolicy(bad); err == nil {
			t.Errorf("NewPolicy(%+v) passed", bad)
		}
	}
}

// An OpenPGP private key protected by a passphrase opens with
// "file:passphrase", as skopeo's --decryption-key takes it, and not
// without it.
func TestPGPPassphrase(t *testing.T) {
	dir := t.TempDir()
	e, err := openpgp.NewEntity("dave", "", "dave@example.com", nil)
	if err != nil {
		t.Fatal(err)
	}
	var pb bytes.Buffer
	e.Serialize(&pb)
	pubPath := filepath.Join(dir, "dave.pub.gpg")
	os.WriteFile(pubPath, pb.Bytes(), 0o644)
	if err := e.EncryptPrivateKeys([]byte("s3cret"), nil); err != nil {
		t.Fatal(err)
	}
	var sb bytes.Buffer
	w, _ := armor.Encode(&sb, openpgp.PrivateKeyType, nil)
	e.SerializePrivateWithoutSigning(w, nil)
	w.Close()
	privPath := filepath.Join(dir, "dave.asc")
	os.WriteFile(privPath, sb.Bytes(), 0o600)

	kr, _ := testKeyring(t)
	rec, err := ParseRecipient("pgp:" + pubPath)
	if err != nil {
		t.Fatal(err)
	}
	rs, _ := kr.Recipients([]Recipient{rec})
	_, desc := shroudEncrypt(t, kr, []byte("layer"))
	opts, _ := kr.Unwrap(desc.Annotations)
	pub, _ := ParsePublicOptions(desc.Annotations)
	ann, _ := kr.Wrap(opts, pub, rs)
	only := map[string]string{AnnotationKeys + "pgp": ann[AnnotationKeys+"pgp"], AnnotationPubOpts: ann[AnnotationPubOpts]}

	for spec, wantOK := range map[string]bool{privPath + ":s3cret": true, privPath + ":wrong": false} {
		dk, err := ParseDecryptionKey(spec)
		if err != nil {
			t.Fatal(err)
		}
		other, _ := testKeyring(t)
		kr2, _ := NewKeyring(other.Identity(), []DecryptionKey{dk})
		if _, err := kr2.Unwrap(only); (err == nil) != wantOK {
			t.Errorf("%s: err = %v", spec, err)
		}
	}
}

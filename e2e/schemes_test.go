package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"

	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/shroudtest"
	"github.com/shroud-oci/shroud/internal/testkeys"
)

// scheme is one recipient form: the spec shroud and skopeo take, and the
// --decryption-key files that open it.
type scheme struct {
	name       string
	recipient  string
	decryption []string
	gnupgHome  string // for skopeo's pgp encryption, which asks gpg
}

func pemFile(t *testing.T, path, typ string, der []byte) string {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func schemes(t *testing.T) []scheme {
	t.Helper()
	dir := t.TempDir()
	var out []scheme
	for _, bits := range []int{2048, 4096} {
		k, _ := rsa.GenerateKey(rand.Reader, bits)
		pub, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
		priv, _ := x509.MarshalPKCS8PrivateKey(k)
		n := filepath.Join(dir, "rsa"+big.NewInt(int64(bits)).String())
		out = append(out, scheme{name: "jwe-rsa" + big.NewInt(int64(bits)).String(), recipient: "jwe:" + pemFile(t, n+".pub.pem", "PUBLIC KEY", pub),
			decryption: []string{pemFile(t, n+".pem", "PRIVATE KEY", priv)}})
		if bits == 2048 {
			os.WriteFile(n+".pub.der", pub, 0o644)
			out = append(out, scheme{name: "jwe-rsa-der", recipient: "jwe:" + n + ".pub.der", decryption: []string{n + ".pem"}})
		}
	}
	for _, c := range []elliptic.Curve{elliptic.P256(), elliptic.P384(), elliptic.P521()} {
		k, _ := ecdsa.GenerateKey(c, rand.Reader)
		pub, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
		priv, _ := x509.MarshalPKCS8PrivateKey(k)
		n := filepath.Join(dir, c.Params().Name)
		out = append(out, scheme{name: "jwe-" + c.Params().Name, recipient: "jwe:" + pemFile(t, n+".pub.pem", "PUBLIC KEY", pub),
			decryption: []string{pemFile(t, n+".pem", "PRIVATE KEY", priv)}})
	}
	// A JWK (RSA: skopeo 1.9's ocicrypt cannot wrap for an EC JWK; shroud's
	// can, as the crypto package's tests show).
	jk, _ := rsa.GenerateKey(rand.Reader, 2048)
	jwk, _ := json.Marshal(jose.JSONWebKey{Key: &jk.PublicKey, Algorithm: string(jose.RSA_OAEP)})
	os.WriteFile(filepath.Join(dir, "rsa.pub.jwk"), jwk, 0o644)
	jpriv, _ := x509.MarshalPKCS8PrivateKey(jk)
	out = append(out, scheme{name: "jwe-jwk", recipient: "jwe:" + filepath.Join(dir, "rsa.pub.jwk"),
		decryption: []string{pemFile(t, filepath.Join(dir, "jwk.pem"), "PRIVATE KEY", jpriv)}})
	// OpenPGP: the public key armored, the private key binary (skopeo 1.9
	// only recognizes a binary OpenPGP private key; shroud takes both), and
	// a GNUPGHOME holding the public key for skopeo's own pgp encryption.
	pgpPub, pgpPriv, _ := testkeys.PGP(t, dir, "alice", false)
	home := filepath.Join(dir, "gnupg")
	os.MkdirAll(home, 0o700)
	imp := exec.Command("gpg", "--batch", "--import", pgpPub)
	imp.Env = append(os.Environ(), "GNUPGHOME="+home)
	if out, err := imp.CombinedOutput(); err != nil {
		t.Fatalf("gpg --import (gnupg is installed by .ci/run): %v\n%s", err, out)
	}
	out = append(out, scheme{name: "pgp", recipient: "pgp:" + pgpPub, decryption: []string{pgpPriv}, gnupgHome: home})
	// PKCS#7 to an X.509 certificate; decryption takes key and certificate.
	cert, key := testkeys.Cert(t, dir, "bob", false)
	out = append(out, scheme{name: "pkcs7", recipient: "pkcs7:" + cert, decryption: []string{key, cert}})
	return out
}

func (s scheme) skopeoDecryptionArgs() []string {
	var a []string
	for _, f := range s.decryption {
		a = append(a, "--decryption-key", f)
	}
	return a
}

// For each scheme: what shroud encrypts to a recipient, skopeo decrypts
// straight from the upstream with that recipient's key; what skopeo
// encrypts to it straight to the upstream, shroud decrypts given the key.
func TestSchemesWithSkopeo(t *testing.T) {
	for _, sc := range schemes(t) {
		t.Run(sc.name, func(t *testing.T) {
			rec, err := crypto.ParseRecipient(sc.recipient)
			if err != nil {
				t.Fatal(err)
			}
			s := sharedShroud(t, shroudtest.WithRecipients(rec))
			src, img := ociLayout(t, 2, 100_000)
			recordLayers(t, img)
			repo := "/schemes/" + strings.ToLower(sc.name) + ":1"
			skopeo(t, "copy", "--dest-tls-verify=false", src, "docker://"+s.Host()+repo)
			dec := filepath.Join(t.TempDir(), "dec")
			skopeo(t, append(append([]string{"copy", "--src-tls-verify=false"}, sc.skopeoDecryptionArgs()...),
				"docker://"+shared.up.Host()+repo, "oci:"+dec+":app")...)
			_, dm := layoutManifest(t, dec)
			if got, want := manifestLayerDigests(dm), layerDigests(t, img); !slices.Equal(got, want) {
				t.Fatalf("skopeo decrypted %v, want %v", got, want)
			}

			// The other way: skopeo encrypts to the upstream.
			src2, img2 := ociLayout(t, 2, 100_000)
			repo2 := "/schemes/" + strings.ToLower(sc.name) + "-skopeo:1"
			args := []string{"copy", "--dest-tls-verify=false", "--encryption-key", sc.recipient, src2, "docker://" + shared.up.Host() + repo2}
			if sc.gnupgHome != "" {
				args[3] = "pgp:alice@example.com" // skopeo takes pgp recipients from the gpg keyring by address
			}
			skopeoEnv(t, []string{"GNUPGHOME=" + sc.gnupgHome}, args...)
			var keys []crypto.DecryptionKey
			for _, f := range sc.decryption {
				k, err := crypto.ParseDecryptionKey(f)
				if err != nil {
					t.Fatal(err)
				}
				keys = append(keys, k)
			}
			s2 := sharedShroud(t, shroudtest.WithDecryptionKeys(keys...))
			out := filepath.Join(t.TempDir(), "out")
			skopeo(t, "copy", "--src-tls-verify=false", "docker://"+s2.Host()+repo2, "oci:"+out+":app")
			_, om := layoutManifest(t, out)
			if got, want := manifestLayerDigests(om), layerDigests(t, img2); !slices.Equal(got, want) {
				t.Fatalf("shroud decrypted skopeo's %s image to %v, want %v", sc.name, got, want)
			}
		})
	}
}

func skopeoEnv(t *testing.T, env []string, args ...string) string {
	t.Helper()
	cmd := exec.Command("skopeo", append([]string{"--insecure-policy"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("skopeo %v: %v\n%s", args, err, out)
	}
	return string(out)
}

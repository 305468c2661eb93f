// Package softhsm makes SoftHSM2 tokens for the tests: a real PKCS#11
// module (Debian's softhsm2) holding an RSA key, and the ocicrypt PKCS#11
// key files naming it.
package softhsm

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Module is Debian's SoftHSM2 PKCS#11 module.
const Module = "/usr/lib/softhsm/libsofthsm2.so"

// Token makes a token holding an RSA key of bits and returns the public
// and private PKCS#11 key files naming it. SoftHSM does RSA-OAEP with SHA-1
// only, which ocicrypt uses when the key file's module environment sets
// OCICRYPT_OAEP_HASHALG=sha1; sha1 false leaves ocicrypt's SHA-256.
func Token(t testing.TB, bits int, sha1 bool) (pub, priv string) {
	t.Helper()
	pub, priv, _ = TokenKey(t, bits, sha1)
	return pub, priv
}

// TokenKey is Token, and the RSA key imported into the token (a test
// looks for its bytes where they must not be).
func TokenKey(t testing.TB, bits int, sha1 bool) (pub, priv string, key *rsa.PrivateKey) {
	t.Helper()
	if _, err := exec.LookPath("softhsm2-util"); err != nil {
		t.Fatal("softhsm2-util is not installed (apt-get install softhsm2; .ci/run does)")
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "softhsm2.conf")
	os.MkdirAll(filepath.Join(dir, "tokens"), 0o700)
	os.WriteFile(conf, []byte("directories.tokendir = "+filepath.Join(dir, "tokens")+"\nobjectstore.backend = file\nlog.level = ERROR\n"), 0o600)
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	keyFile := filepath.Join(dir, "k.pem")
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	for _, args := range [][]string{
		{"--init-token", "--free", "--label", "shroud", "--pin", "1234", "--so-pin", "5678"},
		{"--import", keyFile, "--token", "shroud", "--label", "ops", "--id", "01", "--pin", "1234"},
	} {
		cmd := exec.Command("softhsm2-util", args...)
		cmd.Env = append(os.Environ(), "SOFTHSM2_CONF="+conf)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("softhsm2-util %v: %v\n%s", args, err, out)
		}
	}
	os.Remove(keyFile) // the key lives in the token only
	write := func(name, typ string) string {
		p := filepath.Join(dir, name)
		y := fmt.Sprintf("pkcs11:\n  uri: pkcs11:token=shroud;object=ops;type=%s?module-path=%s&pin-value=1234\nmodule:\n  env:\n    SOFTHSM2_CONF: %s\n", typ, Module, conf)
		if sha1 {
			y += "    OCICRYPT_OAEP_HASHALG: sha1\n"
		}
		os.WriteFile(p, []byte(y), 0o600)
		return p
	}
	return write("pub.yaml", "public"), write("priv.yaml", "private"), k
}

package crypto

import (
	"bytes"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/containers/ocicrypt"
	"github.com/containers/ocicrypt/config"

	"github.com/shroud-oci/shroud/internal/softhsm"
)

const softhsmModule = softhsm.Module

// A layer key wrapped for a key in a SoftHSM2 token: shroud opens it
// with the token's private key, and so does ocicrypt (imgcrypt, skopeo).
func TestPKCS11SoftHSM(t *testing.T) {
	pub, priv := softhsm.Token(t, 2048, true)
	kr, _ := testKeyring(t)
	kr, err := NewKeyring(kr.Identity(), nil, WithPKCS11([]string{softhsmModule}, nil))
	if err != nil {
		t.Fatal(err)
	}
	plain, ct, desc, opts := wrappedFor(t, kr, "pkcs11:"+pub)
	ann := desc.Annotations
	if ann[AnnotationKeys+"pkcs11"] == "" {
		t.Fatalf("no pkcs11 wrapped key: %v", ann)
	}
	desc.Annotations = map[string]string{AnnotationKeys + "pkcs11": ann[AnnotationKeys+"pkcs11"], AnnotationPubOpts: ann[AnnotationPubOpts]}

	dk, err := ParseDecryptionKey(priv)
	if err != nil || dk.kind != "pkcs11" {
		t.Fatalf("ParseDecryptionKey(pkcs11 yaml) = %+v, %v", dk, err)
	}
	other, _ := testKeyring(t)
	hsm, err := NewKeyring(other.Identity(), []DecryptionKey{dk}, WithPKCS11([]string{softhsmModule}, nil))
	if err != nil {
		t.Fatal(err)
	}
	got, err := hsm.Unwrap(desc.Annotations)
	if err != nil || !bytes.Equal(got.Key.Key, opts.Key.Key) {
		t.Fatalf("unwrap with the token's key: %v", err)
	}
	if by := hsm.OpenedBy(desc.Annotations); by != priv {
		t.Fatalf("OpenedBy = %q, want %s", by, priv)
	}

	p11conf := []byte("module-directories: []\nallowed-module-paths: [" + softhsmModule + "]\n")
	privYaml, _ := os.ReadFile(priv)
	dc := &config.DecryptConfig{Parameters: map[string][][]byte{"pkcs11-yamls": {privYaml}, "pkcs11-config": {p11conf}}}
	r, _, err := ocicrypt.DecryptLayer(dc, bytes.NewReader(ct), desc, false)
	if err != nil {
		t.Fatalf("ocicrypt with the token's key: %v", err)
	}
	if b, _ := io.ReadAll(r); !bytes.Equal(b, plain) {
		t.Fatal("ocicrypt decrypted other bytes")
	}
}

// Start-up failures: a module outside the allowed paths, and a key the
// token cannot wrap ocicrypt's 193-byte private options with (RSA-OAEP-
// SHA256: SoftHSM refuses it, and on 2048 bits it carries 190 bytes).
func TestPKCS11StartupFailures(t *testing.T) {
	pub, priv := softhsm.Token(t, 2048, true)
	kr, _ := testKeyring(t)
	dk, _ := ParseDecryptionKey(priv)
	if _, err := NewKeyring(kr.Identity(), []DecryptionKey{dk}); err == nil || !strings.Contains(err.Error(), priv) {
		t.Fatalf("a PKCS#11 key with no allowed module: err = %v, want one naming %s", err, priv)
	}
	rec, _ := ParseRecipient("pkcs11:" + pub)
	if _, err := kr.Recipients([]Recipient{rec}); err == nil || !strings.Contains(err.Error(), pub) {
		t.Fatalf("a PKCS#11 recipient with no allowed module: err = %v", err)
	}
	pub2048, _ := softhsm.Token(t, 2048, false)
	kr2, _ := NewKeyring(kr.Identity(), nil, WithPKCS11([]string{softhsmModule}, nil))
	rec2048, _ := ParseRecipient("pkcs11:" + pub2048)
	if _, err := kr2.Recipients([]Recipient{rec2048}); err == nil {
		t.Fatal("a 2048-bit PKCS#11 key was accepted although RSA-OAEP-SHA256 cannot wrap the layer options with it")
	}
}

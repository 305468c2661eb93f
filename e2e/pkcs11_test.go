package e2e

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/shroudtest"
	"github.com/shroud-oci/shroud/internal/softhsm"
)

// A recipient whose key lives in a SoftHSM2 token: shroud encrypts for it
// what skopeo pushes, and a second shroud that holds nothing but the
// token's key file serves the plaintext back. (Debian's skopeo 1.9 has no
// PKCS#11 support at all, "Provided protocol not recognized"; the crypto
// package's tests prove ocicrypt itself opens these layers with the token.)
func TestPKCS11ThroughShroud(t *testing.T) {
	pub, priv := softhsm.Token(t, 2048, true)
	rec, err := crypto.ParseRecipient("pkcs11:" + pub)
	if err != nil {
		t.Fatal(err)
	}
	s := sharedShroud(t, shroudtest.WithPKCS11Modules(softhsm.Module), shroudtest.WithRecipients(rec))
	src, img := ociLayout(t, 2, 100_000)
	recordLayers(t, img)
	skopeo(t, "copy", "--dest-tls-verify=false", src, "docker://"+s.Host()+"/pkcs11/app:1")

	key, err := crypto.ParseDecryptionKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	other := sharedShroud(t, shroudtest.WithPKCS11Modules(softhsm.Module), shroudtest.WithDecryptionKeys(key))
	// The second shroud has another identity: only the token opens the
	// layers (it serves the manifest decrypted, not the sealed original).
	out := filepath.Join(t.TempDir(), "out")
	skopeo(t, "copy", "--src-tls-verify=false", "docker://"+other.Host()+"/pkcs11/app:1", "oci:"+out+":app")
	_, om := layoutManifest(t, out)
	if got, want := manifestLayerDigests(om), layerDigests(t, img); !slices.Equal(got, want) {
		t.Fatalf("layers through a shroud holding the token's key %v, want %v", got, want)
	}
}

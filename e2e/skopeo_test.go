package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/shroudtest"
)

// skopeo pushes a plain image through shroud; pulled back through shroud
// it is the same image (same manifest digest); straight from the upstream,
// `skopeo copy --decryption-key` with shroud's identity gets the same
// layers back.
func TestSkopeoPushThroughShroud(t *testing.T) {
	for _, up := range shroudtest.Upstreams(t) {
		t.Run(up.Name, func(t *testing.T) {
			s := shroudtest.Start(t, up)
			src, img := ociLayout(t, 3, 400_000)
			skopeo(t, "copy", "--dest-tls-verify=false", src, "docker://"+s.Host()+"/team/app:1")

			back := filepath.Join(t.TempDir(), "back")
			skopeo(t, "copy", "--src-tls-verify=false", "docker://"+s.Host()+"/team/app:1", "oci:"+back+":app")
			raw, m := layoutManifest(t, back)
			want, _ := img.RawManifest()
			if string(raw) != string(want) {
				t.Fatalf("manifest pulled back through shroud differs:\n got %s\nwant %s", raw, want)
			}
			inspect := skopeo(t, "inspect", "--raw", "--tls-verify=false", "docker://"+s.Host()+"/team/app:1")
			if strings.TrimSpace(inspect) != strings.TrimSpace(string(want)) {
				t.Fatalf("skopeo inspect --raw through shroud differs from the pushed manifest")
			}

			// The upstream holds an encrypted image skopeo cannot open
			// without a key...
			plainDir := filepath.Join(t.TempDir(), "nokey")
			if out, err := skopeoErr(t, "copy", "--src-tls-verify=false", "docker://"+up.Host()+"/team/app:1", "oci:"+plainDir+":app"); err == nil {
				_, m2 := layoutManifest(t, plainDir)
				for _, l := range m2.Layers {
					if !crypto.IsEncryptedMediaType(l.MediaType) {
						t.Fatalf("upstream layer %s is not encrypted", l.Digest)
					}
				}
			} else {
				t.Logf("copy of the encrypted image without a key: %v %s", err, out)
			}
			// ...and opens with shroud's identity.
			dec := filepath.Join(t.TempDir(), "dec")
			skopeo(t, "copy", "--src-tls-verify=false", "--decryption-key", s.IdentityFile(),
				"docker://"+up.Host()+"/team/app:1", "oci:"+dec+":app")
			_, dm := layoutManifest(t, dec)
			if got, want := manifestLayerDigests(dm), layerDigests(t, img); !slices.Equal(got, want) {
				t.Fatalf("skopeo decrypted layers %v, want %v", got, want)
			}
			for _, l := range dm.Layers {
				b := layoutBlob(t, dec, l.Digest.String())
				if sum := sha256.Sum256(b); "sha256:"+hex.EncodeToString(sum[:]) != l.Digest.String() {
					t.Fatalf("decrypted layer %s has other content", l.Digest)
				}
			}
			_ = m
		})
	}
}

// skopeo encrypts straight to the upstream (--encryption-key jwe:); a pull
// through shroud, given the private key, gets the plaintext layers; a
// shroud without it answers DENIED naming the recipients.
func TestSkopeoEncryptedPulledThroughShroud(t *testing.T) {
	for _, up := range shroudtest.Upstreams(t) {
		t.Run(up.Name, func(t *testing.T) {
			dir := t.TempDir()
			for _, kind := range []string{"ec", "rsa"} {
				priv, pub, err := crypto.GenerateKeyPair(kind)
				if err != nil {
					t.Fatal(err)
				}
				privFile, pubFile := filepath.Join(dir, kind+".pem"), filepath.Join(dir, kind+".pub.pem")
				os.WriteFile(privFile, priv, 0o600)
				os.WriteFile(pubFile, pub, 0o644)
				src, img := ociLayout(t, 2, 300_000)
				repo := "/skopeo-" + kind + "/app:1"
				skopeo(t, "copy", "--dest-tls-verify=false", "--encryption-key", "jwe:"+pubFile, src, "docker://"+up.Host()+repo)

				key, err := crypto.ParseDecryptionKey(privFile)
				if err != nil {
					t.Fatal(err)
				}
				s := shroudtest.Start(t, up, shroudtest.WithDecryptionKeys(key))
				out := filepath.Join(t.TempDir(), "out")
				skopeo(t, "copy", "--src-tls-verify=false", "docker://"+s.Host()+repo, "oci:"+out+":app")
				_, m := layoutManifest(t, out)
				if got, want := manifestLayerDigests(m), layerDigests(t, img); !slices.Equal(got, want) {
					t.Fatalf("%s: layers through shroud %v, want the plaintext %v", kind, got, want)
				}
				for _, l := range m.Layers {
					if crypto.IsEncryptedMediaType(l.MediaType) || len(l.Annotations) != 0 {
						t.Fatalf("%s: served layer %+v still looks encrypted", kind, l)
					}
				}

				without := shroudtest.Start(t, up)
				msg, err := skopeoErr(t, "inspect", "--raw", "--tls-verify=false", "docker://"+without.Host()+repo)
				t.Logf("%s: skopeo through a shroud without the key: %s", kind, strings.TrimSpace(msg))
				if err == nil || !strings.Contains(msg, "denied") {
					t.Fatalf("%s: a shroud without the key served the image: %v %s", kind, err, msg)
				}
			}
		})
	}
}

// An image skopeo encrypted itself, pushed through shroud, is stored as it
// came (its layers are not encrypted twice): skopeo opens it straight from
// the upstream with its own key, and pulls it back through shroud byte for
// byte.
func TestSkopeoEncryptedPushedThroughShroud(t *testing.T) {
	dir := t.TempDir()
	priv, pub, err := crypto.GenerateKeyPair("ec")
	if err != nil {
		t.Fatal(err)
	}
	privFile, pubFile := filepath.Join(dir, "k.pem"), filepath.Join(dir, "k.pub.pem")
	os.WriteFile(privFile, priv, 0o600)
	os.WriteFile(pubFile, pub, 0o644)
	s := sharedShroud(t)
	src, img := ociLayout(t, 2, 200_000)
	recordLayers(t, img)
	dst := "docker://" + s.Host() + "/pre-encrypted/app:1"
	skopeo(t, "copy", "--dest-tls-verify=false", "--encryption-key", "jwe:"+pubFile, src, dst)

	enc := filepath.Join(t.TempDir(), "enc")
	skopeo(t, "copy", "--src-tls-verify=false", dst, "oci:"+enc+":app")
	_, em := layoutManifest(t, enc)
	for _, l := range em.Layers {
		if !crypto.IsEncryptedMediaType(l.MediaType) {
			t.Fatalf("pulled back through shroud, layer %s is not the encrypted one pushed", l.Digest)
		}
	}
	dec := filepath.Join(t.TempDir(), "dec")
	skopeo(t, "copy", "--src-tls-verify=false", "--decryption-key", privFile,
		"docker://"+shared.up.Host()+"/pre-encrypted/app:1", "oci:"+dec+":app")
	_, dm := layoutManifest(t, dec)
	if got, want := manifestLayerDigests(dm), layerDigests(t, img); !slices.Equal(got, want) {
		t.Fatalf("skopeo decrypted from the upstream %v, want %v", got, want)
	}
}

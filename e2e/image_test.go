package e2e

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// buildImage runs the README's `go run ./cmd/shroud-image --out DIR` with a
// fixed SOURCE_DATE_EPOCH and returns the layout's only image and the
// digest the command printed. Only the tests of the image build it.
func buildImage(t *testing.T, args ...string) (dir string, img v1.Image, printed string) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "image")
	cmd := exec.Command("go", append([]string{"run", "./cmd/shroud-image", "--out", dir, "--version", "v0.0.0-e2e"}, args...)...)
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH=1700000000")
	var errb strings.Builder
	cmd.Stderr = &errb
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go run ./cmd/shroud-image: %v\n%s", err, errb.String())
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 {
		t.Fatalf("the layout names %d manifests, want 1", len(im.Manifests))
	}
	if img, err = idx.Image(im.Manifests[0].Digest); err != nil {
		t.Fatal(err)
	}
	return dir, img, strings.TrimSpace(string(out))
}

// extractBinary writes /usr/local/bin/shroud of img's only layer to a file
// and returns its path.
func extractBinary(t *testing.T, img v1.Image) string {
	t.Helper()
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %v (%d), want 1", err, len(layers))
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			t.Fatal("the layer has no usr/local/bin/shroud")
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name != "usr/local/bin/shroud" {
			continue
		}
		if h.Mode != 0o755 {
			t.Fatalf("usr/local/bin/shroud mode %o, want 755", h.Mode)
		}
		p := filepath.Join(t.TempDir(), "shroud")
		f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o755)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(f, tr); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		return p
	}
}

// The image the README builds: its config runs shroud as non-root, the
// binary in it serves, and the image itself goes through shroud (the
// binary from the image, in front of distribution v3) with crane: the
// upstream holds it encrypted, and it comes back with its digest.
func TestImageRunsAndRoundTripsThroughShroud(t *testing.T) {
	dir, img, printed := buildImage(t)
	want, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if printed != want.String() {
		t.Fatalf("shroud-image printed %q, the layout holds %s", printed, want)
	}

	// The binary of the image serves with the embedded registry.
	bin := extractBinary(t, img)
	startShroud(t, bin, "--data-dir", filepath.Join(t.TempDir(), "embedded"))

	// It is built without cgo: a token identity says so at start-up.
	module := filepath.Join(t.TempDir(), "module.so")
	writeFile(t, module, "not a module")
	keyFile := filepath.Join(t.TempDir(), "token.yaml")
	writeFile(t, keyFile, "pkcs11:\n  uri: pkcs11:token=shroud;object=ops;type=private?module-path="+module+"&pin-value=1234\n")
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, cfg, "identity: pkcs11:"+keyFile+"\npkcs11:\n  allowed-module-paths: ["+module+"]\n")
	out, err := exec.Command(bin, "serve", "--listen", freeAddr(t), "--config", cfg, "--data-dir", t.TempDir()).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "this build of shroud has no PKCS#11 support (built without cgo)") {
		t.Fatalf("the image's shroud with a PKCS#11 identity: %v\n%s\nwant a start-up failure saying it has no PKCS#11 support", err, out)
	}

	// Through that shroud in front of distribution v3.
	up := distributionV3(t)
	upHost := strings.TrimPrefix(up.URL, "http://")
	addr, _, _ := startShroud(t, bin, "--upstream", up.URL, "--data-dir", filepath.Join(t.TempDir(), "proxy"))
	ref := addr + "/shroud/shroud:e2e"
	crane(t, "push", dir, ref)
	if got := crane(t, "digest", ref); got != want.String() {
		t.Fatalf("crane digest through shroud %s, want %s", got, want)
	}

	// The config as a user reads it.
	var cf v1.ConfigFile
	if err := json.Unmarshal([]byte(crane(t, "config", ref)), &cf); err != nil {
		t.Fatal(err)
	}
	if u := cf.Config.User; u == "" || u == "0" || strings.HasPrefix(u, "0:") || strings.HasPrefix(u, "root") {
		t.Errorf("image user %q: want non-root", u)
	}
	if cf.Config.User != "65532:65532" {
		t.Errorf("image user %q, want 65532:65532", cf.Config.User)
	}
	if !slices.Equal(cf.Config.Entrypoint, []string{"/usr/local/bin/shroud"}) || !slices.Equal(cf.Config.Cmd, []string{"serve", "--data-dir", "/var/lib/shroud"}) {
		t.Errorf("entrypoint %q cmd %q", cf.Config.Entrypoint, cf.Config.Cmd)
	}
	for k, v := range map[string]string{
		"org.opencontainers.image.title":   "shroud",
		"org.opencontainers.image.version": "v0.0.0-e2e",
		"org.opencontainers.image.created": "2023-11-14T22:13:20Z",
		"org.opencontainers.image.source":  "https://github.com/shroud-oci/shroud",
	} {
		if cf.Config.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, cf.Config.Labels[k], v)
		}
	}
	if cf.Config.Labels["org.opencontainers.image.revision"] == "" {
		t.Error("no org.opencontainers.image.revision label")
	}

	// The upstream holds ciphertext: its manifest names no plaintext layer.
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	plainLayer := m.Layers[0].Digest.String()
	var upM v1.Manifest
	if err := json.Unmarshal([]byte(crane(t, "manifest", upHost+"/shroud/shroud:e2e")), &upM); err != nil {
		t.Fatal(err)
	}
	if len(upM.Layers) != 1 || upM.Layers[0].Digest.String() == plainLayer || !strings.HasSuffix(string(upM.Layers[0].MediaType), "+encrypted") {
		t.Fatalf("upstream layers %+v: want one encrypted layer, not the plaintext %s", upM.Layers, plainLayer)
	}

	// Pulled back through shroud: the same image, layer for layer.
	back := filepath.Join(t.TempDir(), "back")
	crane(t, "pull", "--format", "oci", ref, back)
	bidx, err := layout.ImageIndexFromPath(back)
	if err != nil {
		t.Fatal(err)
	}
	bim, err := bidx.IndexManifest()
	if err != nil || len(bim.Manifests) != 1 || bim.Manifests[0].Digest != want {
		t.Fatalf("pulled back %+v (%v), want the one image %s", bim, err, want)
	}
	bimg, err := bidx.Image(want)
	if err != nil {
		t.Fatal(err)
	}
	if got := extractBinary(t, bimg); !sameFile(t, got, bin) {
		t.Fatal("the binary pulled back through shroud differs from the one pushed")
	}
}

// Two builds of the same commit and SOURCE_DATE_EPOCH are the same image,
// and --push (here through shroud) pushes that image.
func TestImageBuildIsReproducibleAndPushes(t *testing.T) {
	addr, _, _ := startShroud(t, buildShroud(t), "--upstream", distributionV3(t).URL, "--data-dir", t.TempDir())
	_, a, _ := buildImage(t)
	_, b, _ := buildImage(t, "--push", addr+"/shroud/pushed:1", "--insecure")
	da, _ := a.Digest()
	db, _ := b.Digest()
	if da != db {
		t.Fatalf("two builds: %s and %s", da, db)
	}
	if got := crane(t, "digest", addr+"/shroud/pushed:1"); got != da.String() {
		t.Fatalf("shroud-image --push: crane digest %s, want %s", got, da)
	}
}

func sameFile(t *testing.T, a, b string) bool {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	return string(x) == string(y)
}

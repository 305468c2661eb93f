package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// skopeo runs skopeo and fails the test with its output on error.
func skopeo(t *testing.T, args ...string) string {
	t.Helper()
	out, err := skopeoErr(t, args...)
	if err != nil {
		t.Fatalf("skopeo %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func skopeoErr(t *testing.T, args ...string) (string, error) {
	t.Helper()
	bin, err := exec.LookPath("skopeo")
	if err != nil {
		t.Fatal("skopeo is not installed (apt-get install skopeo; .ci/run does)")
	}
	cmd := exec.Command(bin, append([]string{"--insecure-policy"}, args...)...)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err = cmd.Run()
	return buf.String(), err
}

// ociLayout writes an OCI image with n gzip layers to a new layout and
// returns the skopeo reference, the image and the layout dir.
func ociLayout(t *testing.T, n int, layerSize int64) (string, v1.Image) {
	t.Helper()
	img := mutate.MediaType(mutate.ConfigMediaType(empty.Image, types.OCIConfigJSON), types.OCIManifestSchema1)
	for i := 0; i < n; i++ {
		l, err := random.Layer(layerSize, types.OCILayer)
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(t.TempDir(), "src")
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{ocispec.AnnotationRefName: "app"})); err != nil {
		t.Fatal(err)
	}
	return "oci:" + dir + ":app", img
}

// layoutManifest reads the manifest a skopeo oci: destination holds.
func layoutManifest(t *testing.T, dir string) ([]byte, ocispec.Manifest) {
	t.Helper()
	var idx ocispec.Index
	b, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &idx); err != nil || len(idx.Manifests) != 1 {
		t.Fatalf("layout %s index: %s", dir, b)
	}
	d := idx.Manifests[0].Digest
	raw, err := os.ReadFile(filepath.Join(dir, "blobs", d.Algorithm().String(), d.Encoded()))
	if err != nil {
		t.Fatal(err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return raw, m
}

// layerDigests are an image's layer digests, sorted.
func layerDigests(t *testing.T, img v1.Image) []string {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range ls {
		d, _ := l.Digest()
		out = append(out, d.String())
	}
	sort.Strings(out)
	return out
}

func manifestLayerDigests(m ocispec.Manifest) []string {
	var out []string
	for _, l := range m.Layers {
		out = append(out, l.Digest.String())
	}
	sort.Strings(out)
	return out
}

// layoutBlob reads a blob of a layout.
func layoutBlob(t *testing.T, dir, d string) []byte {
	t.Helper()
	alg, hex, _ := strings.Cut(d, ":")
	b, err := os.ReadFile(filepath.Join(dir, "blobs", alg, hex))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

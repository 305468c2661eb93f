package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func crane(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(tool("crane"), append(args, "--insecure")...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("crane %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	return strings.TrimSpace(out.String())
}

func digestOf(t *testing.T, img interface{ Digest() (v1.Hash, error) }) string {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// crane through shroud: push, digest, manifest, pull, copy, ls, catalog and
// index append, every digest as pushed.
func TestCrane(t *testing.T) {
	s := sharedShroud(t)
	host := s.Host()
	img, err := random.Image(300_000, 3)
	if err != nil {
		t.Fatal(err)
	}
	recordLayers(t, img)
	dir := t.TempDir()
	tarPath := filepath.Join(dir, "img.tar")
	if err := tarball.WriteToFile(tarPath, name.MustParseReference("example/img:1"), img); err != nil {
		t.Fatal(err)
	}
	want := digestOf(t, img)
	crane(t, "push", tarPath, host+"/crane/app:1")
	if got := crane(t, "digest", host+"/crane/app:1"); got != want {
		t.Fatalf("crane digest %s, want %s", got, want)
	}
	raw, _ := img.RawManifest()
	if got := crane(t, "manifest", host+"/crane/app:1"); got != string(raw) {
		t.Fatalf("crane manifest differs from the pushed manifest")
	}
	out := filepath.Join(dir, "out.tar")
	crane(t, "pull", "--format", "tarball", host+"/crane/app:1", out)
	pulled, err := tarball.ImageFromPath(out, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := layerDigests(t, pulled), layerDigests(t, img); !slices.Equal(got, want) {
		t.Fatalf("crane pull layers %v, want %v", got, want)
	}
	crane(t, "copy", host+"/crane/app:1", host+"/crane/copy:1")
	if got := crane(t, "digest", host+"/crane/copy:1"); got != want {
		t.Fatalf("crane copy changed the digest: %s", got)
	}
	if got := crane(t, "ls", host+"/crane/app"); got != "1" {
		t.Fatalf("crane ls = %q", got)
	}
	if got := crane(t, "catalog", host); !strings.Contains(got, "crane/app") || !strings.Contains(got, "crane/copy") {
		t.Fatalf("crane catalog = %q", got)
	}

	other, _ := random.Image(100_000, 1)
	recordLayers(t, other)
	otherTar := filepath.Join(dir, "other.tar")
	tarball.WriteToFile(otherTar, name.MustParseReference("example/other:1"), other)
	crane(t, "push", otherTar, host+"/crane/other:1")
	crane(t, "index", "append", "-m", host+"/crane/app:1", "-m", host+"/crane/other:1", "-t", host+"/crane/idx:1")
	var idx ocispec.Index
	if err := json.Unmarshal([]byte(crane(t, "manifest", host+"/crane/idx:1")), &idx); err != nil {
		t.Fatal(err)
	}
	if len(idx.Manifests) != 2 || idx.Manifests[0].Digest.String() != want || idx.Manifests[1].Digest.String() != digestOf(t, other) {
		t.Fatalf("index through shroud names %v, want the plaintext images", idx.Manifests)
	}
	idxDigest := crane(t, "digest", host+"/crane/idx:1")
	crane(t, "copy", host+"/crane/idx:1", host+"/crane/idx-copy:1")
	if got := crane(t, "digest", host+"/crane/idx-copy:1"); got != idxDigest {
		t.Fatalf("index copy digest %s, want %s", got, idxDigest)
	}
	if got := crane(t, "digest", host+"/crane/idx-copy@"+want); got != want {
		t.Fatalf("child by digest after copy: %s", got)
	}
}

// skopeo copy --all of a multi-platform image in and out, and inspect.
func TestSkopeoMultiPlatform(t *testing.T) {
	s := sharedShroud(t)
	idx, err := random.Index(200_000, 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	im, _ := idx.IndexManifest()
	for _, c := range im.Manifests {
		img, _ := idx.Image(c.Digest)
		recordLayers(t, img)
	}
	src := filepath.Join(t.TempDir(), "src")
	p, err := layout.Write(src, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{ocispec.AnnotationRefName: "multi"})); err != nil {
		t.Fatal(err)
	}
	dst := "docker://" + s.Host() + "/multi/app:1"
	skopeo(t, "copy", "--all", "--dest-tls-verify=false", "oci:"+src+":multi", dst)
	wantRaw, _ := idx.RawManifest()
	if got := skopeo(t, "inspect", "--raw", "--tls-verify=false", dst); strings.TrimSpace(got) != string(wantRaw) {
		t.Fatalf("skopeo inspect --raw of the index differs:\n got %s\nwant %s", got, wantRaw)
	}
	// Back out through shroud, and as a baseline straight from the source
	// layout: skopeo converts Docker children for an OCI layout the same
	// way in both, so the two layouts must name the same index.
	back, base := filepath.Join(t.TempDir(), "back"), filepath.Join(t.TempDir(), "base")
	skopeo(t, "copy", "--all", "--src-tls-verify=false", dst, "oci:"+back+":multi")
	skopeo(t, "copy", "--all", "oci:"+src+":multi", "oci:"+base+":multi")
	b, _ := os.ReadFile(filepath.Join(back, "index.json"))
	want, _ := os.ReadFile(filepath.Join(base, "index.json"))
	if !bytes.Equal(b, want) {
		t.Fatalf("skopeo copy --all back through shroud: %s, straight: %s", b, want)
	}
	// Plain inspect of one image: the digest skopeo reports is the pushed one.
	child := im.Manifests[0].Digest.String()
	var info struct{ Digest string }
	json.Unmarshal([]byte(skopeo(t, "inspect", "--tls-verify=false", "docker://"+s.Host()+"/multi/app@"+child)), &info)
	if info.Digest != child {
		t.Fatalf("skopeo inspect digest %s, want %s", info.Digest, child)
	}
}

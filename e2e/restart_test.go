package e2e

import (
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Issue 10: manifests are found by the digest their client pushed after
// the shroud binary restarts, though no tag names them any more: v1 after
// v2 was pushed under the same tag, a multi-platform index's child after
// another image took the index's tag. Against distribution v3 and Debian's
// docker-registry 2.8, with crane and skopeo; a delete by digest after the
// restart sticks, and takes the pointer tag with it.
func TestRestartFindsManifestsByDigest(t *testing.T) {
	bin := buildShroud(t)
	for _, kind := range upstreamKinds[:2] {
		t.Run(kind.name, func(t *testing.T) {
			up := kind.start(t)
			data := filepath.Join(t.TempDir(), "data")
			serve := func() (string, *exec.Cmd) {
				addr, cmd, _ := startShroud(t, bin, "--data-dir", data, "--upstream", up.URL)
				return addr, cmd
			}
			addr, cmd := serve()
			dir := t.TempDir()
			push := func(img v1.Image, dst string) {
				t.Helper()
				p := filepath.Join(dir, strings.NewReplacer("/", "_", ":", "_").Replace(dst)+".tar")
				if err := tarball.WriteToFile(p, name.MustParseReference("example/img:1"), img); err != nil {
					t.Fatal(err)
				}
				recordLayers(t, img)
				crane(t, "push", p, addr+"/"+dst)
			}
			v1img, _ := random.Image(100_000, 2)
			v2img, _ := random.Image(100_000, 2)
			push(v1img, "restart/app:latest")
			push(v2img, "restart/app:latest")

			idx, _ := random.Index(50_000, 1, 2)
			src := filepath.Join(t.TempDir(), "src")
			lp, err := layout.Write(src, empty.Index)
			if err != nil {
				t.Fatal(err)
			}
			if err := lp.AppendIndex(idx, layout.WithAnnotations(map[string]string{ocispec.AnnotationRefName: "multi"})); err != nil {
				t.Fatal(err)
			}
			skopeo(t, "copy", "--all", "--dest-tls-verify=false", "oci:"+src+":multi", "docker://"+addr+"/restart/multi:latest")
			other, _ := random.Image(10_000, 1)
			push(other, "restart/multi:latest")

			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			cmd.Wait()
			addr, _ = serve()

			d1 := digestOf(t, v1img)
			raw1, _ := v1img.RawManifest()
			if got := crane(t, "manifest", addr+"/restart/app@"+d1); got != string(raw1) {
				t.Fatalf("v1 by digest after the restart: %.200s, want the manifest pushed", got)
			}
			if got := crane(t, "digest", addr+"/restart/app@"+d1); got != d1 {
				t.Fatalf("v1 digest after the restart: %s, want %s", got, d1)
			}
			out := filepath.Join(dir, "v1-back.tar")
			crane(t, "pull", "--format", "tarball", addr+"/restart/app@"+d1, out)
			back, err := tarball.ImageFromPath(out, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := layerDigests(t, back), layerDigests(t, v1img); strings.Join(got, ",") != strings.Join(want, ",") {
				t.Fatalf("v1 layers after the restart %v, want %v", got, want)
			}
			im, _ := idx.IndexManifest()
			for _, c := range im.Manifests {
				img, _ := idx.Image(c.Digest)
				raw, _ := img.RawManifest()
				if got := crane(t, "manifest", addr+"/restart/multi@"+c.Digest.String()); got != string(raw) {
					t.Fatalf("index child %s after the restart: %.200s", c.Digest, got)
				}
			}
			idxRaw, _ := idx.RawManifest()
			if got := crane(t, "manifest", addr+"/restart/multi@"+digestOf(t, idx)); got != string(idxRaw) {
				t.Fatalf("index by digest after the restart: %.200s", got)
			}

			// What the registry shows: pointer tags, no plaintext digest.
			tags := crane(t, "ls", up.Host()+"/restart/app")
			if !strings.Contains(tags, "shroud-") || strings.Contains(tags, strings.TrimPrefix(d1, "sha256:")[:12]) {
				t.Fatalf("upstream tags of restart/app:\n%s", tags)
			}
			if got := crane(t, "ls", addr+"/restart/app"); got != "latest" {
				t.Fatalf("tags through shroud: %q, want latest alone", got)
			}

			// A delete by digest after the restart: gone, pointer and all.
			before := strings.Count(tags, "shroud-")
			crane(t, "delete", addr+"/restart/app@"+d1)
			if out, err := exec.Command(tool("crane"), "manifest", addr+"/restart/app@"+d1, "--insecure").CombinedOutput(); err == nil || !strings.Contains(string(out), "MANIFEST_UNKNOWN") {
				t.Fatalf("v1 after its delete: %v %.300s", err, out)
			}
			if after := strings.Count(crane(t, "ls", up.Host()+"/restart/app"), "shroud-"); after != before-1 {
				t.Fatalf("pointer tags upstream: %d before the delete, %d after; want one fewer", before, after)
			}
			raw2, _ := v2img.RawManifest()
			if got := crane(t, "manifest", addr+"/restart/app:latest"); got != string(raw2) {
				t.Fatalf("v2 after deleting v1: %.200s", got)
			}
		})
	}
}

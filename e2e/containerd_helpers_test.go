package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ggcrane "github.com/google/go-containerregistry/pkg/crane"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Debian's containerd and its ctr (package containerd), which .ci/run
// installs.
const (
	containerdBin = "/usr/bin/containerd"
	ctrBin        = "/usr/bin/ctr"
)

// containerd is a containerd of the test's own: its root, state and
// socket in a directory of its own, the native snapshotter, no CRI.
type containerd struct {
	t        *testing.T
	dir      string
	sock     string
	hostsDir string // /etc/containerd/certs.d of this containerd
}

// startContainerd starts Debian's containerd as root, the way a node
// runs it, but private to the test, and stops it by its pid at the end.
func startContainerd(t *testing.T) *containerd {
	t.Helper()
	for _, bin := range []string{containerdBin, ctrBin} {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("%s: %v (apt-get install containerd; .ci/run does)", bin, err)
		}
	}
	if os.Geteuid() != 0 {
		t.Fatal("containerd needs root (the e2e tests run as root, as on CI)")
	}
	// A short path: unix socket names are bounded (108 bytes).
	dir, err := os.MkdirTemp("", "ctd")
	if err != nil {
		t.Fatal(err)
	}
	c := &containerd{t: t, dir: dir, sock: filepath.Join(dir, "c.sock"), hostsDir: filepath.Join(dir, "certs.d")}
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = %q

[ttrpc]
  address = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.sock, c.sock+".ttrpc")
	cfgFile := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	cmd := exec.Command(containerdBin, "--config", cfgFile)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		os.RemoveAll(dir)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		if out, err := exec.CommandContext(ctx, ctrBin, "--address", c.sock, "version").CombinedOutput(); err == nil && strings.Contains(string(out), "Server:") {
			return c
		}
		if ctx.Err() != nil {
			t.Fatalf("containerd did not answer within 30s:\n%s", logs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// mirror writes hosts.toml for origin: server, and shroud at mirrorURL as
// the host asked first for pulls and resolves (with ca, its CA file).
func (c *containerd) mirror(origin, server, mirrorURL, ca string) {
	c.t.Helper()
	dir := filepath.Join(c.hostsDir, origin)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		c.t.Fatal(err)
	}
	toml := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", server, mirrorURL)
	if ca != "" {
		toml += fmt.Sprintf("  ca = %q\n", ca)
	}
	if err := os.WriteFile(filepath.Join(dir, "hosts.toml"), []byte(toml), 0o644); err != nil {
		c.t.Fatal(err)
	}
}

// ctr runs ctr against this containerd in namespace e2e.
func (c *containerd) ctr(args ...string) (string, error) {
	c.t.Helper()
	out, err := exec.Command(ctrBin, append([]string{"--address", c.sock, "--namespace", "e2e"}, args...)...).CombinedOutput()
	return string(out), err
}

// pull pulls ref with the hosts directory and the native snapshotter
// (unpacking it), as the CRI plugin of a node would.
func (c *containerd) pull(ref string, extra ...string) {
	c.t.Helper()
	args := append(append([]string{"images", "pull", "--hosts-dir", c.hostsDir, "--snapshotter", "native"}, extra...), ref)
	if out, err := c.ctr(args...); err != nil {
		c.t.Fatalf("ctr images pull %s: %v\n%s", ref, err, out)
	}
}

// imageDigest is the digest containerd recorded for ref.
func (c *containerd) imageDigest(ref string) string {
	c.t.Helper()
	out, err := c.ctr("images", "ls")
	if err != nil {
		c.t.Fatalf("ctr images ls: %v\n%s", err, out)
	}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) >= 3 && f[0] == ref {
			return f[2]
		}
	}
	c.t.Fatalf("containerd has no image %s:\n%s", ref, out)
	return ""
}

// unpacked reads path in the snapshots containerd unpacked (the native
// snapshotter keeps each as a directory), failing if no snapshot has it.
func (c *containerd) unpacked(path string) string {
	c.t.Helper()
	snaps, _ := filepath.Glob(filepath.Join(c.dir, "root", "io.containerd.snapshotter.v1.native", "snapshots", "*"))
	for _, s := range snaps {
		if b, err := os.ReadFile(filepath.Join(s, path)); err == nil {
			return string(b)
		}
	}
	c.t.Fatalf("no unpacked snapshot holds %s (%d snapshots)", path, len(snaps))
	return ""
}

// fileImage is an image for platform whose one layer holds path with a
// random content, which it returns.
func fileImage(t *testing.T, path string, platform v1.Platform) (v1.Image, string) {
	t.Helper()
	b := make([]byte, 16)
	rand.Read(b)
	content := platform.String() + " " + hex.EncodeToString(b) + "\n"
	layer, err := ggcrane.Layer(map[string][]byte{path: []byte(content)})
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), layer)
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = platform.OS, platform.Architecture, platform.Variant
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	return img, content
}

// upstreamLayersEncrypted fails the test unless every layer of the
// upstream's manifest for ref is encrypted and none is one of plain.
func upstreamLayersEncrypted(t *testing.T, ref string, plain ...v1.Image) {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r)
	if err != nil {
		t.Fatalf("the upstream's %s: %v", ref, err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	plainDigests := map[v1.Hash]bool{}
	for _, p := range plain {
		ls, _ := p.Layers()
		for _, l := range ls {
			d, _ := l.Digest()
			plainDigests[d] = true
		}
	}
	for _, l := range m.Layers {
		if !strings.HasSuffix(string(l.MediaType), "+encrypted") || plainDigests[l.Digest] {
			t.Fatalf("the upstream holds layer %s (%s) of %s: not shroud's ciphertext", l.Digest, l.MediaType, ref)
		}
	}
}

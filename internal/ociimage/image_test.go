package ociimage

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"slices"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func spec(created time.Time) Spec {
	return Spec{
		Binary:   []byte("\x7fELF pretend shroud"),
		CACerts:  []byte("-----BEGIN CERTIFICATE-----\n"),
		Platform: v1.Platform{OS: "linux", Architecture: "arm64"},
		Created:  created,
		Version:  "v1.2.3",
		Revision: "09f187e",
		Source:   "https://github.com/shroud-oci/shroud",
		Licenses: "Apache-2.0",
	}
}

func build(t *testing.T, s Spec) v1.Image {
	t.Helper()
	img, err := Build(s)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

type file struct {
	mode     int64
	uid, gid int
	typ      byte
	body     []byte
	modTime  time.Time
}

// files reads the image's only layer.
func files(t *testing.T, img v1.Image) map[string]file {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("%d layers, want 1", len(layers))
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	out := map[string]file{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out["/"+h.Name] = file{mode: h.Mode, uid: h.Uid, gid: h.Gid, typ: h.Typeflag, body: b, modTime: h.ModTime}
	}
}

func TestConfigRunsShroudServeAsNonRoot(t *testing.T) {
	created := time.Unix(1700000000, 0).UTC()
	img := build(t, spec(created))
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	if c.User != "65532:65532" {
		t.Errorf("User %q, want 65532:65532", c.User)
	}
	if !slices.Equal(c.Entrypoint, []string{"/usr/local/bin/shroud"}) {
		t.Errorf("Entrypoint %q", c.Entrypoint)
	}
	if !slices.Equal(c.Cmd, []string{"serve", "--data-dir", "/var/lib/shroud"}) {
		t.Errorf("Cmd %q", c.Cmd)
	}
	if _, ok := c.ExposedPorts["5000/tcp"]; !ok || len(c.ExposedPorts) != 1 {
		t.Errorf("ExposedPorts %v, want 5000/tcp", c.ExposedPorts)
	}
	if c.WorkingDir != "/var/lib/shroud" {
		t.Errorf("WorkingDir %q", c.WorkingDir)
	}
	if cf.OS != "linux" || cf.Architecture != "arm64" {
		t.Errorf("platform %s/%s, want linux/arm64", cf.OS, cf.Architecture)
	}
	want := map[string]string{
		"org.opencontainers.image.title":    "shroud",
		"org.opencontainers.image.source":   "https://github.com/shroud-oci/shroud",
		"org.opencontainers.image.version":  "v1.2.3",
		"org.opencontainers.image.revision": "09f187e",
		"org.opencontainers.image.created":  "2023-11-14T22:13:20Z",
		"org.opencontainers.image.licenses": "Apache-2.0",
	}
	for k, v := range want {
		if c.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, c.Labels[k], v)
		}
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.MediaType != "application/vnd.oci.image.manifest.v1+json" || m.Config.MediaType != "application/vnd.oci.image.config.v1+json" || m.Layers[0].MediaType != "application/vnd.oci.image.layer.v1.tar+gzip" {
		t.Errorf("media types %s / %s / %s, want OCI", m.MediaType, m.Config.MediaType, m.Layers[0].MediaType)
	}
}

func TestLayerHoldsTheBinaryCertsUsersAndDataDirAndNoShell(t *testing.T) {
	s := spec(time.Unix(0, 0))
	fs := files(t, build(t, s))
	check := func(name string, typ byte, mode int64, uid int) file {
		t.Helper()
		f, ok := fs[name]
		if !ok {
			t.Fatalf("no %s in the layer", name)
		}
		if f.typ != typ || f.mode != mode || f.uid != uid || f.gid != uid {
			t.Errorf("%s: type %c mode %o owner %d:%d, want type %c mode %o owner %d:%d", name, f.typ, f.mode, f.uid, f.gid, typ, mode, uid, uid)
		}
		return f
	}
	if f := check("/usr/local/bin/shroud", tar.TypeReg, 0o755, 0); !bytes.Equal(f.body, s.Binary) {
		t.Error("/usr/local/bin/shroud is not the binary given")
	}
	if f := check("/etc/ssl/certs/ca-certificates.crt", tar.TypeReg, 0o644, 0); !bytes.Equal(f.body, s.CACerts) {
		t.Error("ca-certificates.crt is not the roots given")
	}
	if f := check("/etc/passwd", tar.TypeReg, 0o644, 0); !bytes.Contains(f.body, []byte("nonroot:x:65532:65532:")) {
		t.Errorf("/etc/passwd has no nonroot 65532:\n%s", f.body)
	}
	if f := check("/etc/group", tar.TypeReg, 0o644, 0); !bytes.Contains(f.body, []byte("nonroot:x:65532:")) {
		t.Errorf("/etc/group has no nonroot 65532:\n%s", f.body)
	}
	check("/var/lib/shroud/", tar.TypeDir, 0o700, 65532)
	check("/tmp/", tar.TypeDir, 0o1777, 0)
	for name := range fs {
		switch name {
		case "/bin/sh", "/bin/", "/usr/bin/", "/bin/busybox", "/usr/bin/sh":
			t.Errorf("the layer has %s: no shell belongs in the image", name)
		}
	}
	for name, f := range fs {
		if f.typ == tar.TypeReg && f.mode&0o111 != 0 && name != "/usr/local/bin/shroud" {
			t.Errorf("%s is executable: the binary should be the only one", name)
		}
	}
}

func TestSameInputsSameDigest(t *testing.T) {
	s := spec(time.Unix(1700000000, 0))
	a, err := build(t, s).Digest()
	if err != nil {
		t.Fatal(err)
	}
	b, err := build(t, s).Digest()
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Fatalf("two builds of the same inputs: %s and %s", a, b)
	}
	s.Binary = append(bytes.Clone(s.Binary), '!')
	if c, _ := build(t, s).Digest(); c == a {
		t.Fatalf("a different binary gave the same digest %s", c)
	}
}

func TestEveryTimestampIsCreated(t *testing.T) {
	created := time.Unix(1234567890, 0).UTC()
	img := build(t, spec(created))
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !cf.Created.Time.Equal(created) {
		t.Errorf("config created %v, want %v", cf.Created.Time, created)
	}
	for i, h := range cf.History {
		if !h.Created.Time.Equal(created) {
			t.Errorf("history %d created %v, want %v", i, h.Created.Time, created)
		}
	}
	for name, f := range files(t, img) {
		if !f.modTime.Equal(created) {
			t.Errorf("%s mtime %v, want %v", name, f.modTime, created)
		}
	}
	a, _ := img.Digest()
	b, _ := build(t, spec(created.Add(time.Second))).Digest()
	if a == b {
		t.Fatalf("another SOURCE_DATE_EPOCH gave the same digest %s", a)
	}
}

func TestBuildRefusesWhatItCannotRun(t *testing.T) {
	s := spec(time.Unix(0, 0))
	s.Binary = nil
	if _, err := Build(s); err == nil {
		t.Error("an image without a binary built")
	}
	s = spec(time.Unix(0, 0))
	s.Platform = v1.Platform{}
	if _, err := Build(s); err == nil {
		t.Error("an image without a platform built")
	}
}

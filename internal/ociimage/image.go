package ociimage

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Where things are in the image.
const (
	BinaryPath = "/usr/local/bin/shroud"
	CACertPath = "/etc/ssl/certs/ca-certificates.crt"
	DataDir    = "/var/lib/shroud"
	// NonRoot is the uid and gid shroud runs as (distroless's nonroot).
	NonRoot = 65532
)

// Spec is what goes into the image.
type Spec struct {
	Binary   []byte      // the static shroud binary for Platform
	CACerts  []byte      // PEM roots, so that https upstreams verify
	Platform v1.Platform // OS and Architecture (Variant if any)
	Created  time.Time   // every timestamp: SOURCE_DATE_EPOCH
	Version  string      // org.opencontainers.image.version
	Revision string      // the git commit
	Source   string      // the repository's URL
	Licenses string      // SPDX expression; empty leaves the label out
}

// Build returns the image of s: one layer, run as NonRoot, with no shell.
func Build(s Spec) (v1.Image, error) {
	if len(s.Binary) == 0 {
		return nil, fmt.Errorf("ociimage: no binary")
	}
	if s.Platform.OS == "" || s.Platform.Architecture == "" {
		return nil, fmt.Errorf("ociimage: platform %q names no OS and architecture", s.Platform.String())
	}
	created := s.Created.UTC()
	tb, err := layerTar(s, created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(tb)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("ociimage: layer: %w", err)
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History:   v1.History{Created: v1.Time{Time: created}, CreatedBy: "shroud-image", Comment: "shroud " + s.Version},
	})
	if err != nil {
		return nil, fmt.Errorf("ociimage: append layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("ociimage: config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant, cf.OSVersion = s.Platform.OS, s.Platform.Architecture, s.Platform.Variant, s.Platform.OSVersion
	cf.Config = v1.Config{
		User:         fmt.Sprintf("%d:%d", NonRoot, NonRoot),
		Entrypoint:   []string{BinaryPath},
		Cmd:          []string{"serve", "--data-dir", DataDir},
		ExposedPorts: map[string]struct{}{"5000/tcp": {}},
		WorkingDir:   DataDir,
		Env:          []string{"PATH=/usr/local/bin", "SSL_CERT_FILE=" + CACertPath},
		Labels:       Labels(s),
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("ociimage: config: %w", err)
	}
	img, err = mutate.CreatedAt(img, v1.Time{Time: created})
	if err != nil {
		return nil, fmt.Errorf("ociimage: created: %w", err)
	}
	return img, nil
}

// Labels are the image's OCI annotations-as-labels.
func Labels(s Spec) map[string]string {
	l := map[string]string{
		"org.opencontainers.image.title":   "shroud",
		"org.opencontainers.image.source":  s.Source,
		"org.opencontainers.image.version": s.Version,
		"org.opencontainers.image.created": s.Created.UTC().Format(time.RFC3339),
	}
	if s.Revision != "" {
		l["org.opencontainers.image.revision"] = s.Revision
	}
	if s.Licenses != "" {
		l["org.opencontainers.image.licenses"] = s.Licenses
	}
	return l
}

// entry is one file, directory or link of the layer.
type entry struct {
	name     string // without the leading slash
	mode     int64
	uid, gid int
	body     []byte
	dir      bool
}

// entries are the layer's contents, parents before children.
func entries(s Spec) []entry {
	root := func(name string) entry { return entry{name: name, mode: 0o755, dir: true} }
	return []entry{
		root("etc/"),
		{name: "etc/group", mode: 0o644, body: []byte("root:x:0:\nnonroot:x:65532:\n")},
		{name: "etc/passwd", mode: 0o644, body: []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")},
		root("etc/ssl/"),
		root("etc/ssl/certs/"),
		{name: "etc/ssl/certs/ca-certificates.crt", mode: 0o644, body: s.CACerts},
		{name: "home/", mode: 0o755, dir: true},
		{name: "home/nonroot/", mode: 0o700, uid: NonRoot, gid: NonRoot, dir: true},
		{name: "tmp/", mode: 0o1777, dir: true},
		root("usr/"),
		root("usr/local/"),
		root("usr/local/bin/"),
		{name: "usr/local/bin/shroud", mode: 0o755, body: s.Binary},
		root("var/"),
		root("var/lib/"),
		{name: "var/lib/shroud/", mode: 0o700, uid: NonRoot, gid: NonRoot, dir: true},
	}
}

// layerTar writes entries as an uncompressed tar, every header the same
// for the same inputs (no user names, one timestamp: Created).
func layerTar(s Spec, created time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries(s) {
		h := &tar.Header{
			Name:    e.name,
			Mode:    e.mode,
			Uid:     e.uid,
			Gid:     e.gid,
			ModTime: created,
			Format:  tar.FormatPAX,
		}
		if e.dir {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("ociimage: tar %s: %w", e.name, err)
		}
		if !e.dir {
			if _, err := tw.Write(e.body); err != nil {
				return nil, fmt.Errorf("ociimage: tar %s: %w", e.name, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("ociimage: tar: %w", err)
	}
	return buf.Bytes(), nil
}

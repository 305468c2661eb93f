package trust

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// maxArtifactFile bounds one file of an artifact being built: what the
// proxy's RegistryFetch reads of one upstream answer (the Checker bounds
// each document more tightly still).
const maxArtifactFile = 32 << 20

// The names a repository directory's files may have to be published, by
// where they stand: metadata/ holds "<role>.json" and "<n>.<role>.json"
// (role names as roleName allows them), targets/ the lists and their
// hash-prefixed copies in a directory per namespace. Anything else there
// (an editor's backup, a key file put there by mistake, the temporaries
// of a write under way) is left out.
var (
	metadataName = regexp.MustCompile(`^(?:[1-9][0-9]*\.)?[a-z0-9][a-z0-9._-]{0,63}\.json$`)
	listName     = regexp.MustCompile(`^(?:[0-9a-f]{64}\.)?(?:` + regexp.QuoteMeta(RecipientsFile) + `|` + regexp.QuoteMeta(RevocationsFile) + `)$`)
	// privateKey is the first line of a PEM or armored private key, the
	// one thing no published file may hold.
	privateKey = regexp.MustCompile(`-----BEGIN [A-Z0-9 ]*PRIVATE KEY`)
)

// Artifact is a trust repository as the OCI artifact OCISource reads:
// an image manifest of artifactType ArtifactType whose config is the
// empty descriptor and whose layers are the repository's files, titled
// with their paths and sorted by them, so that the same directory always
// makes the same manifest (and digest).
type Artifact struct {
	// Dir is the repository directory the artifact was built from.
	Dir string
	// Manifest is the manifest, as it is to be pushed.
	Manifest []byte
	// Files are the published files by path ("metadata/1.root.json").
	Files map[string][]byte
	// Skipped are the paths under metadata/ and targets/ left out, each
	// with why.
	Skipped []string

	manifest ocispec.Manifest
}

// BuildArtifact builds the artifact of the repository in dir, as
// `shroud trust` writes it. Only regular files under metadata/ and
// targets/ named as the layout names them go in, read without following
// a link out of dir; a file that holds a private key, a metadata/ or
// targets/ that is a link, or a manifest larger than OCISource reads
// (maxArtifactManifest) is an error. It checks no signature: Verify
// does.
func BuildArtifact(dir string) (*Artifact, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("trust artifact: %w", err)
	}
	defer root.Close()
	a := &Artifact{Dir: dir, Files: map[string][]byte{}}
	for _, top := range []string{metadataDir, targetsDir} {
		if err := a.addTree(root, top); err != nil {
			return nil, fmt.Errorf("trust artifact of %s: %w", dir, err)
		}
	}
	if err := a.pack(); err != nil {
		return nil, fmt.Errorf("trust artifact of %s: %w", dir, err)
	}
	return a, nil
}

// pack makes the manifest of a.Files.
func (a *Artifact) pack() error {
	if _, ok := a.Files[metadataDir+"/1.root.json"]; !ok {
		return fmt.Errorf("no %s/1.root.json: not a trust repository", metadataDir)
	}
	names := make([]string, 0, len(a.Files))
	for n := range a.Files {
		names = append(names, n)
	}
	slices.Sort(names)
	a.manifest = ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: ArtifactType,
		Config:       ocispec.DescriptorEmptyJSON,
		Layers:       make([]ocispec.Descriptor, 0, len(names)),
	}
	for _, n := range names {
		a.manifest.Layers = append(a.manifest.Layers, ArtifactLayer(n, a.Files[n]))
	}
	var err error
	if a.Manifest, err = json.Marshal(a.manifest); err != nil {
		return err
	}
	if len(a.Manifest) > maxArtifactManifest {
		return fmt.Errorf("its manifest (%d files) is %d bytes, more than the %d the OCI source reads", len(names), len(a.Manifest), maxArtifactManifest)
	}
	return nil
}

// addTree adds the files under top ("metadata", "targets") of root.
func (a *Artifact) addTree(root *os.Root, top string) error {
	st, err := root.Lstat(top)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return fmt.Errorf("%s is not a directory (a link is not followed)", top)
	}
	return fs.WalkDir(root.FS(), top, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == top {
			return nil
		}
		if d.IsDir() {
			if top == targetsDir && validNamespace(strings.TrimPrefix(p, top+"/")) {
				return nil
			}
			a.Skipped = append(a.Skipped, p+"/: not a directory of the layout")
			return fs.SkipDir
		}
		if !d.Type().IsRegular() {
			a.Skipped = append(a.Skipped, p+": not a regular file")
			return nil
		}
		want := metadataName
		if top == targetsDir {
			want = listName
		}
		if (top == metadataDir && path.Dir(p) != top) || !want.MatchString(d.Name()) {
			a.Skipped = append(a.Skipped, p+": not a file of the layout")
			return nil
		}
		data, err := readRegular(root, p)
		if err != nil {
			return err
		}
		if privateKey.Match(data) {
			return fmt.Errorf("%s holds a private key: refusing to publish it", p)
		}
		a.Files[p] = data
		return nil
	})
}

// readRegular reads the regular file p of root, at most maxArtifactFile
// bytes.
func readRegular(root *os.Root, p string) ([]byte, error) {
	f, err := root.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", p)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxArtifactFile+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	if len(data) > maxArtifactFile {
		return nil, fmt.Errorf("%s is larger than %d bytes", p, maxArtifactFile)
	}
	return data, nil
}

// Digest is the manifest's digest.
func (a *Artifact) Digest() digest.Digest { return digest.FromBytes(a.Manifest) }

// Blob is one blob the manifest references.
type Blob struct {
	MediaType string
	Digest    digest.Digest
	Data      []byte
}

// Blobs are the blobs the manifest references, each once: the config,
// then the files in manifest order (two files of the same content, as a
// list and its hash-prefixed copy, are one blob).
func (a *Artifact) Blobs() []Blob {
	out := []Blob{{MediaType: a.manifest.Config.MediaType, Digest: a.manifest.Config.Digest, Data: a.manifest.Config.Data}}
	seen := map[digest.Digest]bool{a.manifest.Config.Digest: true}
	for _, l := range a.manifest.Layers {
		if !seen[l.Digest] {
			seen[l.Digest] = true
			out = append(out, Blob{MediaType: l.MediaType, Digest: l.Digest, Data: a.Files[l.Annotations[ocispec.AnnotationTitle]]})
		}
	}
	return out
}

// Verification is what a replica makes of an artifact.
type Verification struct {
	// Published is what the replica trusted of the artifact published
	// before (LastOutcome failed, and LastError why, when there was
	// none it could verify).
	Published Status
	// Status is what it trusts once it has refreshed from the new one.
	Status Status
}

// Verify refreshes, at now, a new Checker given the artifact's
// metadata/1.root.json (what replicas are given as --trust-root) from
// published (the artifact as the registry holds it now; nil: none) and
// then from the artifact itself, as a replica that trusted the published
// one would at its next refresh. It fails unless that last refresh
// succeeds with every namespace's lists accepted: the roots' chain signed
// by their thresholds, timestamp, snapshot and every targets role signed
// and not expired at now, no version rolled back and no deny entry
// dropped from the published ones. Publishing an artifact that fails
// would make every replica refuse it (and freeze when what it trusts
// expires).
func (a *Artifact) Verify(ctx context.Context, now time.Time, published *Source) (Verification, error) {
	var v Verification
	dataDir, err := os.MkdirTemp("", "shroud-trust-verify-")
	if err != nil {
		return v, fmt.Errorf("trust artifact: %w", err)
	}
	defer os.RemoveAll(dataDir)
	opts := Options{
		Root:    a.Files[metadataDir+"/1.root.json"],
		DataDir: dataDir,
		Logger:  slog.New(slog.DiscardHandler),
		Clock:   func() time.Time { return now },
	}
	if published != nil {
		opts.Source = *published
		prev, err := New(opts)
		if err != nil {
			return v, err
		}
		_ = prev.Refresh(ctx) // its outcome is in Published
		v.Published = prev.Status()
	}
	// A Checker on the same data dir starts from what the first trusted.
	opts.Source = a.source()
	c, err := New(opts)
	if err != nil {
		return v, err
	}
	err = c.Refresh(ctx)
	v.Status = c.Status()
	if err != nil {
		return v, err
	}
	if len(v.Status.Refusals) > 0 {
		return v, fmt.Errorf("trust artifact of %s: refused: %s", a.Dir, strings.Join(v.Status.Refusals, "; "))
	}
	return v, nil
}

// source reads the artifact from memory, as OCISource reads it from the
// registry.
func (a *Artifact) source() Source {
	const repo, tag = "local", "artifact"
	blobs := map[string][]byte{}
	for _, b := range a.Blobs() {
		blobs[repo+"/blobs/"+b.Digest.String()] = b.Data
	}
	src := OCISource(repo, tag, func(_ context.Context, name string) ([]byte, error) {
		if name == repo+"/manifests/"+tag {
			return a.Manifest, nil
		}
		if b, ok := blobs[name]; ok {
			return b, nil
		}
		return nil, notFound(name)
	})
	src.Name = "artifact of " + a.Dir
	return src
}

package trust

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/fetcher"
)

// maxArtifactFile bounds one file of an artifact being built: what the
// proxy's RegistryFetch reads of one upstream answer (the Checker bounds
// each document more tightly still).
const maxArtifactFile = 32 << 20

// The names a repository directory's files may have to be published, by
// where they stand: metadata/ holds "<role>.json" and "<n>.<role>.json"
// (role names as roleName allows them; only the files of a role the
// metadata names are published, addMetadata), targets/ the lists and their
// hash-prefixed copies in a directory per namespace. Anything else there
// (an editor's backup, a key file put there by mistake, the temporaries
// of a write under way) is left out.
var (
	metadataName = regexp.MustCompile(`^(?:[1-9][0-9]*\.)?[a-z0-9][a-z0-9._-]{0,63}\.json$`)
	listName     = regexp.MustCompile(`^(?:[0-9a-f]{64}\.)?(?:` + regexp.QuoteMeta(RecipientsFile) + `|` + regexp.QuoteMeta(RevocationsFile) + `)$`)
	// privateKey is the first line of a PEM or armored private key, the
	// one thing no published file may hold.
	privateKey = regexp.MustCompile(`-----BEGIN [A-Z0-9 ]*PRIVATE KEY`)
	// versioned splits "<n>.<rest>".
	versioned = regexp.MustCompile(`^[1-9][0-9]*\.(.+)$`)
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
// a link out of dir: under metadata/, the files of the TUF roles
// (N.root.json, timestamp.json, [N.]snapshot.json, [N.]targets.json and
// [N.]<role>.json for each role targets metadata there delegates), each
// of its role's type. A file that holds a private key (a PEM or armored
// one anywhere, an allow entry's public_key that is not a public key
// alone, PublicKeyOnly), a role's file that is not its metadata, a
// metadata/ or targets/ that is a link, or a manifest larger than
// OCISource reads (maxArtifactManifest) is an error. It checks no
// signature: Verify does.
func BuildArtifact(dir string) (*Artifact, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("trust artifact: %w", err)
	}
	defer root.Close()
	a := &Artifact{Dir: dir, Files: map[string][]byte{}}
	meta := map[string][]byte{}
	if err := a.addTree(root, metadataDir, meta); err != nil {
		return nil, fmt.Errorf("trust artifact of %s: %w", dir, err)
	}
	if err := a.addMetadata(meta); err != nil {
		return nil, fmt.Errorf("trust artifact of %s: %w", dir, err)
	}
	if err := a.addTree(root, targetsDir, nil); err != nil {
		return nil, fmt.Errorf("trust artifact of %s: %w", dir, err)
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

// addTree adds the files under top ("metadata", "targets") of root:
// those of targets/ to a.Files, those of metadata/ to meta, by name, for
// addMetadata to sort out.
func (a *Artifact) addTree(root *os.Root, top string, meta map[string][]byte) error {
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
		if top == metadataDir {
			meta[d.Name()] = data
			return nil
		}
		if privateKey.Match(data) {
			return fmt.Errorf("%s holds a private key: refusing to publish it", p)
		}
		if strings.HasSuffix(d.Name(), RecipientsFile) {
			if err := publicKeysOnly(data); err != nil {
				return fmt.Errorf("%s: %w: refusing to publish it (add the key again with shroud trust add-key --public-key, or drop its public_key)", p, err)
			}
		}
		a.Files[p] = data
		return nil
	})
}

// addMetadata adds the files of meta (metadata/ by name) that are a TUF
// role's: root's and snapshot's by version and latest, timestamp.json,
// and those of targets and of each role a targets metadata file among
// them delegates (whatever its version: a role dropped since may have
// been delegated by an older one).
func (a *Artifact) addMetadata(meta map[string][]byte) error {
	names := make([]string, 0, len(meta))
	for n := range meta {
		names = append(names, n)
	}
	slices.Sort(names)
	delegated := map[string]bool{metadata.TARGETS: true}
	for grown := true; grown; {
		grown = false
		for _, n := range names {
			role, ok := roleOfFile(n, delegated)
			if !ok || metadataType(role) != metadata.TARGETS {
				continue
			}
			for _, d := range delegationsOf(meta[n]) {
				if !delegated[d] && roleName.MatchString(d) && !slices.Contains(metadata.TOP_LEVEL_ROLE_NAMES[:], d) {
					delegated[d], grown = true, true
				}
			}
		}
	}
	for _, n := range names {
		p, data := metadataDir+"/"+n, meta[n]
		role, ok := roleOfFile(n, delegated)
		if !ok {
			a.Skipped = append(a.Skipped, p+": names no role of the repository's metadata")
			continue
		}
		if privateKey.Match(data) {
			return fmt.Errorf("%s holds a private key: refusing to publish it", p)
		}
		var probe struct {
			Signed struct {
				Type string `json:"_type"`
			} `json:"signed"`
		}
		if err := json.Unmarshal(data, &probe); err != nil || probe.Signed.Type != metadataType(role) {
			return fmt.Errorf("%s is named as role %s's but is not %s metadata: refusing to publish it", p, role, metadataType(role))
		}
		a.Files[p] = data
	}
	return nil
}

// roleOfFile is the role whose metadata file name is: N.root.json,
// root.json, timestamp.json, [N.]snapshot.json, [N.]<role>.json for the
// roles of delegated (targets among them).
func roleOfFile(name string, delegated map[string]bool) (string, bool) {
	base, ok := strings.CutSuffix(name, ".json")
	if !ok {
		return "", false
	}
	var candidates []string
	if m := versioned.FindStringSubmatch(base); m != nil {
		candidates = append(candidates, m[1])
	}
	candidates = append(candidates, base)
	for i, role := range candidates {
		unversioned := i == len(candidates)-1
		switch {
		case role == metadata.TIMESTAMP && unversioned,
			role == metadata.ROOT, role == metadata.SNAPSHOT, delegated[role]:
			return role, true
		}
	}
	return "", false
}

// metadataType is the _type of role's metadata.
func metadataType(role string) string {
	switch role {
	case metadata.ROOT, metadata.TIMESTAMP, metadata.SNAPSHOT:
		return role
	}
	return metadata.TARGETS
}

// delegationsOf lists the roles a targets metadata file delegates, read
// without checking it (Verify does).
func delegationsOf(data []byte) []string {
	var probe struct {
		Signed struct {
			Delegations *struct {
				Roles []struct {
					Name string `json:"name"`
				} `json:"roles"`
			} `json:"delegations"`
		} `json:"signed"`
	}
	if json.Unmarshal(data, &probe) != nil || probe.Signed.Delegations == nil {
		return nil
	}
	out := make([]string, 0, len(probe.Signed.Delegations.Roles))
	for _, r := range probe.Signed.Delegations.Roles {
		out = append(out, r.Name)
	}
	return out
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

// ErrPublishedUnverified is why Verify refuses to check an artifact
// against the one published: what the tag holds is not a trust
// repository replicas could trust (not a trust artifact, no
// metadata/1.root.json, another metadata/1.root.json than the new
// artifact's, a signature or a document that fails at every reference
// time). Publishing over it anyway (`shroud trust publish --force`)
// replaces the trust repository replicas were given.
var ErrPublishedUnverified = errors.New("the published trust artifact does not verify")

// Verification is what a replica makes of an artifact.
type Verification struct {
	// Published is what a replica trusted of the artifact published
	// before (zero without one).
	Published Status
	// PublishedAt is the reference time Published was checked at: now,
	// or, when what the artifact holds had expired by now, the last time
	// every document it was refreshed from was valid, when replicas
	// could still trust it (and still hold its deny entries).
	PublishedAt time.Time
	// Status is what it trusts once it has refreshed from the new one.
	Status Status
}

// maxPublishedAttempts bounds the refreshes Verify makes of the
// published artifact, each at an earlier reference time.
const maxPublishedAttempts = 8

// Verify refreshes, at now, a new Checker from published (the artifact
// as the registry holds it now; nil: nothing there, a first
// publication) and then from the artifact itself, as a replica that
// trusted the published one would at its next refresh. The Checker is
// given the published artifact's metadata/1.root.json, the root replicas
// hold (--trust-root), and the new artifact must carry the same one; with
// no published artifact, its own. When the published artifact has
// expired by now it is refreshed as of the last time it was valid, so
// that its deny entries are loaded all the same. Verify fails unless
// that last refresh succeeds with every namespace's lists accepted: the
// roots' chain signed by their thresholds, timestamp, snapshot and every
// targets role signed and not expired at now, no version rolled back and
// no deny entry of the published ones dropped. Publishing an artifact
// that fails would make every replica refuse it (and freeze when what it
// trusts expires). A published artifact that cannot be trusted at any
// reference time is an ErrPublishedUnverified.
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
		root, err := publishedRoot(ctx, *published)
		if err != nil {
			return v, fmt.Errorf("%w: %s: %w", ErrPublishedUnverified, published.Name, err)
		}
		if !bytes.Equal(root, opts.Root) {
			return v, fmt.Errorf("%w: %s holds another %s/1.root.json than %s: a different trust repository, which replicas given the published root (--trust-root) refuse", ErrPublishedUnverified, published.Name, metadataDir, a.Dir)
		}
		opts.Root = root
		if opts.DataDir, v.Published, v.PublishedAt, err = refreshPublished(ctx, opts, *published, now); err != nil {
			return v, fmt.Errorf("%w: %s: %w", ErrPublishedUnverified, published.Name, err)
		}
	}
	// A Checker on the same data dir starts from what the first trusted:
	// its versions and its deny entries.
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

// publishedRoot is the published artifact's metadata/1.root.json.
func publishedRoot(ctx context.Context, src Source) ([]byte, error) {
	data, err := src.Fetcher(ctx).DownloadFile(src.MetadataURL+"1.root.json", Limits{}.withDefaults().Root, 0)
	if err != nil {
		return nil, fmt.Errorf("%s/1.root.json: %w", metadataDir, err)
	}
	return data, nil
}

// refreshPublished refreshes a Checker from the published artifact, in a
// data dir of its own under opts.DataDir, at now; when that fails for an
// expired document or refuses a namespace, again as of the earliest
// expiry of the documents it read, until it is all accepted or no
// earlier time is left. It answers the data dir of the best refresh (all
// accepted, else the fewest refusals, the latest first), what that
// Checker trusts and when; or the error of the refresh at now when none
// succeeds.
func refreshPublished(ctx context.Context, opts Options, src Source, now time.Time) (string, Status, time.Time, error) {
	base := opts.DataDir
	var (
		best     string
		bestSt   Status
		bestAt   time.Time
		firstErr error
	)
	at := now
	for i := range maxPublishedAttempts {
		rec := &expiryRecorder{}
		rec.note(opts.Root)
		o := opts
		o.DataDir = filepath.Join(base, fmt.Sprintf("published-%d", i))
		o.Source = rec.wrap(src)
		refAt := at
		o.Clock = func() time.Time { return refAt }
		c, err := New(o)
		if err != nil {
			return "", Status{}, time.Time{}, err
		}
		err = c.Refresh(ctx)
		st := c.Status()
		switch {
		case err == nil && (best == "" || len(st.Refusals) < len(bestSt.Refusals)):
			best, bestSt, bestAt = o.DataDir, st, at
		case err != nil && firstErr == nil:
			firstErr = err
		}
		clean := err == nil && len(st.Refusals) == 0
		if clean || (err != nil && !errors.Is(err, &metadata.ErrExpiredMetadata{})) {
			break
		}
		e := rec.earliest()
		if e.IsZero() || !e.Before(at) {
			break
		}
		at = e
	}
	if best == "" {
		return "", Status{}, time.Time{}, firstErr
	}
	return best, bestSt, bestAt, nil
}

// expiryRecorder notes the earliest expiry of the metadata a refresh
// downloads: of timestamp, snapshot and targets roles, and of the newest
// root (the expiry of a root rotated away binds nothing).
type expiryRecorder struct {
	roles       time.Time
	root        time.Time
	rootVersion int64
}

func (r *expiryRecorder) wrap(src Source) Source {
	inner := src.Fetcher
	src.Fetcher = func(ctx context.Context) fetcher.Fetcher {
		f := inner(ctx)
		return fetchFunc(func(name string, maxLength int64) ([]byte, error) {
			data, err := f.DownloadFile(name, maxLength, 0)
			if err == nil {
				r.note(data)
			}
			return data, err
		})
	}
	return src
}

func (r *expiryRecorder) note(data []byte) {
	var probe struct {
		Signed struct {
			Type    string    `json:"_type"`
			Version int64     `json:"version"`
			Expires time.Time `json:"expires"`
		} `json:"signed"`
	}
	if json.Unmarshal(data, &probe) != nil || probe.Signed.Expires.IsZero() {
		return
	}
	if probe.Signed.Type == metadata.ROOT {
		if probe.Signed.Version > r.rootVersion {
			r.root, r.rootVersion = probe.Signed.Expires, probe.Signed.Version
		}
		return
	}
	if r.roles.IsZero() || probe.Signed.Expires.Before(r.roles) {
		r.roles = probe.Signed.Expires
	}
}

// earliest is the earliest expiry noted (zero: none).
func (r *expiryRecorder) earliest() time.Time {
	switch {
	case r.root.IsZero():
		return r.roles
	case r.roles.IsZero() || r.root.Before(r.roles):
		return r.root
	}
	return r.roles
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

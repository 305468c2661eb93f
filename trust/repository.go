package trust

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// DefaultExpiry is how long a document signed by `shroud trust` stays
// valid unless told otherwise; delegated roles take targets'.
var DefaultExpiry = map[string]time.Duration{
	metadata.ROOT:      365 * 24 * time.Hour,
	metadata.TARGETS:   90 * 24 * time.Hour,
	metadata.SNAPSHOT:  7 * 24 * time.Hour,
	metadata.TIMESTAMP: 24 * time.Hour,
}

// Expiry is DefaultExpiry for role.
func Expiry(role string) time.Duration {
	if d, ok := DefaultExpiry[role]; ok {
		return d
	}
	return DefaultExpiry[metadata.TARGETS]
}

var roleName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// Repository is a trust repository being written, by `shroud trust` and
// by the tests: the signed metadata in <dir>/metadata (every root version
// as "<n>.root.json", snapshot and targets roles as "<n>.<role>.json" and
// their latest as "<role>.json", timestamp.json), the lists in
// <dir>/targets ("team-a/recipients.json", and the hash-prefixed copy the
// clients fetch). It holds no key: every change is signed with the
// signers its caller gives.
type Repository struct {
	dir       string
	Root      *metadata.Metadata[metadata.RootType]
	Timestamp *metadata.Metadata[metadata.TimestampType]
	Snapshot  *metadata.Metadata[metadata.SnapshotType]
	// Roles are targets and the delegated roles.
	Roles map[string]*metadata.Metadata[metadata.TargetsType]

	// written is the root as last written: a new root must be signed by
	// its threshold too.
	written *metadata.Metadata[metadata.RootType]
	dirty   map[string]bool
}

// RootKeys are the keys of a new repository's top-level roles.
type RootKeys struct {
	Root          []*metadata.Key
	RootThreshold int
	Targets       []*metadata.Key
	Snapshot      []*metadata.Key
	Timestamp     []*metadata.Key
}

// CreateRepository makes the version-1 documents of a new repository in
// dir (empty lists, nothing signed yet: Sign each role, then Write). It
// refuses a dir that already holds one.
func CreateRepository(dir string, keys RootKeys, now time.Time) (*Repository, error) {
	if _, err := os.Stat(filepath.Join(dir, metadataDir, "root.json")); err == nil {
		return nil, fmt.Errorf("%s already holds a trust repository", dir)
	}
	exp := func(role string) time.Time { return now.Add(Expiry(role)).UTC().Truncate(time.Second) }
	r := &Repository{
		dir:       dir,
		Root:      metadata.Root(exp(metadata.ROOT)),
		Timestamp: metadata.Timestamp(exp(metadata.TIMESTAMP)),
		Snapshot:  metadata.Snapshot(exp(metadata.SNAPSHOT)),
		Roles:     map[string]*metadata.Metadata[metadata.TargetsType]{metadata.TARGETS: metadata.Targets(exp(metadata.TARGETS))},
		dirty:     map[string]bool{},
	}
	if keys.RootThreshold == 0 {
		keys.RootThreshold = 1
	}
	for role, ks := range map[string][]*metadata.Key{
		metadata.ROOT: keys.Root, metadata.TARGETS: keys.Targets,
		metadata.SNAPSHOT: keys.Snapshot, metadata.TIMESTAMP: keys.Timestamp,
	} {
		threshold := 1
		if role == metadata.ROOT {
			threshold = keys.RootThreshold
		}
		if err := r.SetRoleKeys(role, ks, threshold); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// OpenRepository reads the repository in dir.
func OpenRepository(dir string) (*Repository, error) {
	md := filepath.Join(dir, metadataDir)
	r := &Repository{dir: dir, Roles: map[string]*metadata.Metadata[metadata.TargetsType]{}, dirty: map[string]bool{}}
	var err error
	if r.Root, err = metadata.Root().FromFile(filepath.Join(md, "root.json")); err != nil {
		return nil, fmt.Errorf("trust repository %s: %w", dir, err)
	}
	if r.written, err = metadata.Root().FromFile(filepath.Join(md, "root.json")); err != nil {
		return nil, err
	}
	if r.Timestamp, err = metadata.Timestamp().FromFile(filepath.Join(md, "timestamp.json")); err != nil {
		return nil, fmt.Errorf("trust repository %s: %w", dir, err)
	}
	if r.Snapshot, err = metadata.Snapshot().FromFile(filepath.Join(md, "snapshot.json")); err != nil {
		return nil, fmt.Errorf("trust repository %s: %w", dir, err)
	}
	todo := []string{metadata.TARGETS}
	for len(todo) > 0 {
		name := todo[0]
		todo = todo[1:]
		if r.Roles[name] != nil {
			continue
		}
		t, err := metadata.Targets().FromFile(filepath.Join(md, name+".json"))
		if err != nil {
			return nil, fmt.Errorf("trust repository %s: role %s: %w", dir, name, err)
		}
		r.Roles[name] = t
		if t.Signed.Delegations != nil {
			for _, d := range t.Signed.Delegations.Roles {
				todo = append(todo, d.Name)
			}
		}
	}
	return r, nil
}

// Dir is where the repository lives.
func (r *Repository) Dir() string { return r.dir }

// SetRoleKeys makes keys, with threshold, the keys of role: a top-level
// role in root, a delegated role in its delegator. Keys no role uses any
// more are dropped. The delegator must then be re-signed.
func (r *Repository) SetRoleKeys(role string, keys []*metadata.Key, threshold int) error {
	if len(keys) == 0 {
		return fmt.Errorf("role %s: no key", role)
	}
	if threshold < 1 || threshold > len(keys) {
		return fmt.Errorf("role %s: threshold %d with %d keys", role, threshold, len(keys))
	}
	ids := make([]string, 0, len(keys))
	for _, k := range keys {
		id, err := k.ID()
		if err != nil {
			return err
		}
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	if threshold > len(ids) {
		return fmt.Errorf("role %s: threshold %d with %d distinct keys", role, threshold, len(ids))
	}
	if rr, ok := r.Root.Signed.Roles[role]; ok {
		for _, id := range slices.Clone(rr.KeyIDs) {
			if err := r.Root.Signed.RevokeKey(id, role); err != nil {
				return err
			}
		}
		for _, k := range keys {
			if err := r.Root.Signed.AddKey(k, role); err != nil {
				return err
			}
		}
		r.Root.Signed.Roles[role].Threshold = threshold
		return nil
	}
	parent, d := r.delegation(role)
	if d == nil {
		return fmt.Errorf("no role %s", role)
	}
	for _, id := range slices.Clone(d.KeyIDs) {
		if err := parent.Signed.RevokeKey(id, role); err != nil {
			return err
		}
	}
	for _, k := range keys {
		if err := parent.Signed.AddKey(k, role); err != nil {
			return err
		}
	}
	_, d = r.delegation(role)
	d.Threshold = threshold
	return nil
}

// delegation finds the role delegating name and its delegation entry.
func (r *Repository) delegation(name string) (*metadata.Metadata[metadata.TargetsType], *metadata.DelegatedRole) {
	parents := make([]string, 0, len(r.Roles))
	for p := range r.Roles {
		parents = append(parents, p)
	}
	slices.Sort(parents)
	for _, p := range parents {
		t := r.Roles[p]
		if t.Signed.Delegations == nil {
			continue
		}
		for i := range t.Signed.Delegations.Roles {
			if t.Signed.Delegations.Roles[i].Name == name {
				return t, &t.Signed.Delegations.Roles[i]
			}
		}
	}
	return nil, nil
}

// Delegate makes parent delegate paths (TUF path patterns:
// "team-a/*" lets the role sign the lists of namespace team-a) to a new
// role name with keys and threshold. Parent must then be re-signed, and
// the new role signed.
func (r *Repository) Delegate(parent, name string, paths []string, keys []*metadata.Key, threshold int, expires time.Time) error {
	p := r.Roles[parent]
	if p == nil {
		return fmt.Errorf("no role %s", parent)
	}
	if !roleName.MatchString(name) || slices.Contains(metadata.TOP_LEVEL_ROLE_NAMES[:], name) {
		return fmt.Errorf("role name %q: want lower-case letters, digits, '.', '_' or '-', not a top-level role", name)
	}
	if r.Roles[name] != nil {
		return fmt.Errorf("role %s exists", name)
	}
	if len(paths) == 0 {
		return fmt.Errorf("role %s: no path", name)
	}
	for _, pp := range paths {
		if _, ok := namespaceOfPattern(pp); !ok {
			return fmt.Errorf("role %s: path %q names no namespace (want <namespace>/*)", name, pp)
		}
	}
	if p.Signed.Delegations == nil {
		p.Signed.Delegations = &metadata.Delegations{Keys: map[string]*metadata.Key{}}
	}
	p.Signed.Delegations.Roles = append(p.Signed.Delegations.Roles, metadata.DelegatedRole{
		Name: name, KeyIDs: []string{}, Threshold: 1, Paths: paths,
	})
	r.Roles[name] = metadata.Targets(expires.UTC().Truncate(time.Second))
	return r.SetRoleKeys(name, keys, threshold)
}

// Namespaces lists the namespaces a role signs lists for ("" for
// targets), from its delegation's paths.
func (r *Repository) Namespaces(role string) []string {
	if role == metadata.TARGETS {
		return []string{""}
	}
	_, d := r.delegation(role)
	if d == nil {
		return nil
	}
	var out []string
	for _, p := range d.Paths {
		if ns, ok := namespaceOfPattern(p); ok && !slices.Contains(out, ns) {
			out = append(out, ns)
		}
	}
	return out
}

// Bump makes a new version of role expiring at expires; a new snapshot
// lists the current version of every targets role, a new timestamp the
// current snapshot's.
func (r *Repository) Bump(role string, expires time.Time) error {
	expires = expires.UTC().Truncate(time.Second)
	switch role {
	case metadata.ROOT:
		r.Root.Signed.Version++
		r.Root.Signed.Expires = expires
	case metadata.TIMESTAMP:
		r.Timestamp.Signed.Version++
		r.Timestamp.Signed.Expires = expires
		r.Timestamp.Signed.Meta["snapshot.json"] = metadata.MetaFile(r.Snapshot.Signed.Version)
	case metadata.SNAPSHOT:
		r.Snapshot.Signed.Version++
		r.Snapshot.Signed.Expires = expires
		r.Snapshot.Signed.Meta = map[string]*metadata.MetaFiles{}
		for name, t := range r.Roles {
			r.Snapshot.Signed.Meta[name+".json"] = metadata.MetaFile(t.Signed.Version)
		}
	default:
		t := r.Roles[role]
		if t == nil {
			return fmt.Errorf("no role %s", role)
		}
		t.Signed.Version++
		t.Signed.Expires = expires
	}
	return nil
}

// Sign replaces role's signatures with those of signers and checks that
// they meet its threshold (a new root: the previous root's threshold
// too).
func (r *Repository) Sign(role string, signers ...signature.Signer) error {
	if len(signers) == 0 {
		return fmt.Errorf("sign %s: no key", role)
	}
	var err error
	switch role {
	case metadata.ROOT:
		err = signAll(r.Root, signers)
		if err == nil {
			err = r.Root.VerifyDelegate(metadata.ROOT, r.Root)
		}
		if err == nil && r.written != nil && r.written.Signed.Version < r.Root.Signed.Version {
			err = r.written.VerifyDelegate(metadata.ROOT, r.Root)
		}
	case metadata.TIMESTAMP:
		err = signAll(r.Timestamp, signers)
		if err == nil {
			err = r.Root.VerifyDelegate(role, r.Timestamp)
		}
	case metadata.SNAPSHOT:
		err = signAll(r.Snapshot, signers)
		if err == nil {
			err = r.Root.VerifyDelegate(role, r.Snapshot)
		}
	case metadata.TARGETS:
		err = signAll(r.Roles[role], signers)
		if err == nil {
			err = r.Root.VerifyDelegate(role, r.Roles[role])
		}
	default:
		t := r.Roles[role]
		parent, _ := r.delegation(role)
		if t == nil || parent == nil {
			return fmt.Errorf("no role %s", role)
		}
		err = signAll(t, signers)
		if err == nil {
			err = parent.VerifyDelegate(role, t)
		}
	}
	if err != nil {
		return fmt.Errorf("sign %s: %w (are these the role's keys, enough of them?)", role, err)
	}
	r.dirty[role] = true
	return nil
}

func signAll[T metadata.Roles](md *metadata.Metadata[T], signers []signature.Signer) error {
	md.ClearSignatures()
	for _, s := range signers {
		if _, err := md.Sign(s); err != nil {
			return err
		}
	}
	return nil
}

// Write writes what was signed since the last Write: the roles, then the
// snapshot, then the timestamp, so that a client reading the directory
// meanwhile sees the old state or the new one.
func (r *Repository) Write() error {
	md := filepath.Join(r.dir, metadataDir)
	if err := os.MkdirAll(md, 0o755); err != nil {
		return err
	}
	write := func(data []byte, names ...string) error {
		for _, n := range names {
			if err := writeFileAtomic(filepath.Join(md, n), data, 0o644); err != nil {
				return err
			}
		}
		return nil
	}
	if r.dirty[metadata.ROOT] {
		data, err := r.Root.ToBytes(true)
		if err != nil {
			return err
		}
		if err := write(data, fmt.Sprintf("%d.root.json", r.Root.Signed.Version), "root.json"); err != nil {
			return err
		}
	}
	names := make([]string, 0, len(r.Roles))
	for n := range r.Roles {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		if !r.dirty[n] {
			continue
		}
		t := r.Roles[n]
		data, err := t.ToBytes(true)
		if err != nil {
			return err
		}
		if err := write(data, fmt.Sprintf("%d.%s.json", t.Signed.Version, n), n+".json"); err != nil {
			return err
		}
	}
	if r.dirty[metadata.SNAPSHOT] {
		data, err := r.Snapshot.ToBytes(true)
		if err != nil {
			return err
		}
		if err := write(data, fmt.Sprintf("%d.snapshot.json", r.Snapshot.Signed.Version), "snapshot.json"); err != nil {
			return err
		}
	}
	if r.dirty[metadata.TIMESTAMP] {
		data, err := r.Timestamp.ToBytes(true)
		if err != nil {
			return err
		}
		if err := write(data, "timestamp.json"); err != nil {
			return err
		}
	}
	if r.dirty[metadata.ROOT] {
		if w, err := metadata.Root().FromBytes(mustBytes(r.Root.ToBytes(false))); err == nil {
			r.written = w
		}
	}
	r.dirty = map[string]bool{}
	return nil
}

func mustBytes(b []byte, err error) []byte {
	if err != nil {
		return nil
	}
	return b
}

// PutTarget stores data as target p of role (which must be delegated p)
// and lists it in the role; the role must then be re-signed.
func (r *Repository) PutTarget(role, p string, data []byte) error {
	t := r.Roles[role]
	if t == nil {
		return fmt.Errorf("no role %s", role)
	}
	if role != metadata.TARGETS {
		_, d := r.delegation(role)
		if ok, _ := d.IsDelegatedPath(p); !ok {
			return fmt.Errorf("role %s is not delegated %s (its paths: %s)", role, p, strings.Join(d.Paths, ", "))
		}
	}
	tf, err := metadata.TargetFile().FromBytes(p, data, "sha256")
	if err != nil {
		return err
	}
	dir := filepath.Join(r.dir, targetsDir, filepath.FromSlash(path.Dir(p)))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	hashed := hex.EncodeToString(tf.Hashes["sha256"]) + "." + path.Base(p)
	for _, name := range []string{hashed, path.Base(p)} {
		if err := writeFileAtomic(filepath.Join(dir, name), data, 0o644); err != nil {
			return err
		}
	}
	t.Signed.Targets[p] = tf
	return nil
}

// target reads target p's current content (nil if there is none).
func (r *Repository) target(p string) ([]byte, error) {
	data, err := os.ReadFile(filepath.Join(r.dir, targetsDir, filepath.FromSlash(p)))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return data, err
}

// Recipients is namespace ns's allow list as the repository holds it.
func (r *Repository) Recipients(ns string) (RecipientList, error) {
	data, err := r.target(listPath(ns, RecipientsFile))
	if err != nil || data == nil {
		return RecipientList{Recipients: []Recipient{}}, err
	}
	return ParseRecipients(data)
}

// Revocations is namespace ns's deny list as the repository holds it.
func (r *Repository) Revocations(ns string) (RevocationList, error) {
	data, err := r.target(listPath(ns, RevocationsFile))
	if err != nil || data == nil {
		return RevocationList{Revocations: []Revocation{}}, err
	}
	return ParseRevocations(data)
}

// SetRecipients stores namespace ns's allow list, signed by role.
func (r *Repository) SetRecipients(role, ns string, l RecipientList) error {
	if l.Recipients == nil {
		l.Recipients = []Recipient{}
	}
	data, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return err
	}
	return r.PutTarget(role, listPath(ns, RecipientsFile), append(data, '\n'))
}

// SetRevocations stores namespace ns's deny list, signed by role.
func (r *Repository) SetRevocations(role, ns string, l RevocationList) error {
	if l.Revocations == nil {
		l.Revocations = []Revocation{}
	}
	data, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return err
	}
	return r.PutTarget(role, listPath(ns, RevocationsFile), append(data, '\n'))
}

// Files are the repository's files by their path in it
// ("metadata/1.root.json"), the titles of an OCI trust artifact.
func (r *Repository) Files() (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, top := range []string{metadataDir, targetsDir} {
		base := filepath.Join(r.dir, top)
		err := filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || strings.HasPrefix(d.Name(), ".tmp-") {
				return err
			}
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			rel, err := filepath.Rel(r.dir, p)
			if err != nil {
				return err
			}
			out[filepath.ToSlash(rel)] = data
			return nil
		})
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	return out, nil
}

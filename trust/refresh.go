package trust

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/config"
	"github.com/theupdateframework/go-tuf/v2/metadata/fetcher"
	"github.com/theupdateframework/go-tuf/v2/metadata/trustedmetadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/updater"
)

// errTargetAbsent: no role delegated for a list's path lists it.
var errTargetAbsent = errors.New("target absent")

// ErrDenyEntryDropped is why a deny list lacking an entry of the trusted
// one is refused.
var ErrDenyEntryDropped = errors.New("deny list drops entries of the trusted one")

// Refresh runs go-tuf's updater against the source (root rotation,
// timestamp, snapshot, targets, with every check of the TUF client
// workflow), then reads the lists of every namespace and checks on top
// that no deny list drops an entry shroud trusted. On success the new
// state is in force and persisted; on failure the last good one stays.
// Either way the outcome goes to OnEvent.
func (c *Checker) Refresh(ctx context.Context) error {
	c.refreshMu.Lock()
	defer c.refreshMu.Unlock()
	refTime := c.clock()

	c.mu.RLock()
	prev, floor := c.cur, c.floor.clone()
	c.mu.RUnlock()

	rec := &timestampRecorder{metadataURL: c.src.MetadataURL}
	var (
		next      *state
		nextFloor denyFloor
		r         result
	)
	up, err := c.newUpdater(rec.wrap(c.src.Fetcher(ctx)), refTime, c.metadataDir(), false)
	if err == nil {
		err = up.Refresh()
	}
	if err == nil {
		err = c.checkSharedFloor(ctx, up.GetTrustedMetadataSet())
	}
	if err == nil {
		next, nextFloor, r = c.build(up, refTime, prev, floor)
		if msg := rec.equivocation(up.GetTrustedMetadataSet()); msg != "" {
			r.refusals = append(r.refusals, msg)
		}
		nextFloor.RefreshedAt = refTime
		err = c.saveGood(up.GetTrustedMetadataSet())
		if err == nil {
			err = nextFloor.save(c.dir)
		}
	}
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}

	c.mu.Lock()
	c.lastAttempt = refTime
	if err != nil {
		c.lastOutcome, c.lastErr, c.lastRefusals = OutcomeFailed, err, nil
		versions := c.cur.versions()
		c.mu.Unlock()
		c.log.ErrorContext(ctx, "trust refresh failed: the last good documents stay in force", "err", err, "versions", versions)
		c.onEvent(Event{Kind: EventRefresh, Time: refTime, Source: c.src.Name, Outcome: OutcomeFailed, Versions: versions, Error: err.Error()})
		return fmt.Errorf("trust refresh from %s: %w", c.src.Name, err)
	}
	outcome := OutcomeOK
	if len(r.refusals) > 0 {
		outcome = OutcomeRefused
	}
	c.cur, c.floor = next, nextFloor
	c.lastSuccess, c.lastOutcome, c.lastErr, c.lastRefusals = refTime, outcome, nil, r.refusals
	versions := next.versions()
	c.mu.Unlock()
	c.raiseSharedFloor(ctx, up.GetTrustedMetadataSet())

	for _, w := range r.warnings {
		c.log.WarnContext(ctx, "trust documents: entry ignored", "detail", w)
	}
	if outcome == OutcomeRefused {
		for _, m := range r.refusals {
			c.log.ErrorContext(ctx, "trust refresh refused part of what the source offers", "detail", m)
		}
	} else {
		c.log.InfoContext(ctx, "trust refreshed", "versions", versions)
	}
	c.onEvent(Event{Kind: EventRefresh, Time: refTime, Source: c.src.Name, Outcome: outcome, Versions: versions,
		Refusals: r.refusals, Warnings: r.warnings})
	return nil
}

// restore loads the metadata persisted in the data dir as of the last
// accepted refresh, so that a restart serves the last good state (and
// freezes when it expires) before the source answers.
func (c *Checker) restore() {
	if c.floor.RefreshedAt.IsZero() {
		return
	}
	offline := fetchFunc(func(name string, _ int64) ([]byte, error) {
		return nil, fmt.Errorf("trust: %s: not fetched while restoring from the data dir", name)
	})
	up, err := c.newUpdater(offline, c.floor.RefreshedAt, c.goodDir(), true)
	if err == nil {
		err = up.Refresh()
	}
	if err != nil {
		c.log.Warn("trust: could not restore the persisted documents; refusing until a refresh succeeds", "err", err)
		return
	}
	next, floor, r := c.build(up, c.floor.RefreshedAt, c.cur, c.floor)
	c.cur, c.floor, c.lastSuccess, c.lastRefusals = next, floor, c.floor.RefreshedAt, r.refusals
	c.log.Info("trust: restored the documents persisted at the last refresh", "refreshed_at", c.floor.RefreshedAt, "versions", next.versions())
}

// saveGood copies the metadata of the state just accepted from go-tuf's
// directory (which a later failed refresh may advance part of the way:
// a new timestamp and snapshot, no targets) to the last-good directory a
// restart restores from.
func (c *Checker) saveGood(tm trustedmetadata.TrustedMetadata) error {
	versions := map[string]int64{
		metadata.ROOT: tm.Root.Signed.Version, metadata.TIMESTAMP: tm.Timestamp.Signed.Version,
		metadata.SNAPSHOT: tm.Snapshot.Signed.Version,
	}
	for name, t := range tm.Targets {
		versions[name] = t.Signed.Version
	}
	if err := os.MkdirAll(c.goodDir(), 0o700); err != nil {
		return fmt.Errorf("trust: %w", err)
	}
	keep := map[string]bool{}
	for name, v := range versions {
		file := url.PathEscape(name) + ".json"
		data, err := os.ReadFile(filepath.Join(c.metadataDir(), file))
		if err != nil {
			return fmt.Errorf("trust: last good %s: %w", name, err)
		}
		var probe struct {
			Signed struct {
				Version int64 `json:"version"`
			} `json:"signed"`
		}
		if err := json.Unmarshal(data, &probe); err != nil || probe.Signed.Version != v {
			return fmt.Errorf("trust: last good %s: persisted version is not the trusted %d", name, v)
		}
		if err := writeFileAtomic(filepath.Join(c.goodDir(), file), data, 0o600); err != nil {
			return fmt.Errorf("trust: last good %s: %w", name, err)
		}
		keep[file] = true
	}
	entries, err := os.ReadDir(c.goodDir())
	if err != nil {
		return fmt.Errorf("trust: %w", err)
	}
	for _, e := range entries {
		if !keep[e.Name()] {
			_ = os.Remove(filepath.Join(c.goodDir(), e.Name()))
		}
	}
	return nil
}

// trustedRoot is the persisted root (the newest trusted one) or, while
// there is none, the operator's initial root.
func (c *Checker) trustedRoot() ([]byte, error) {
	return c.rootIn(c.metadataDir())
}

func (c *Checker) rootIn(dir string) ([]byte, error) {
	data, err := os.ReadFile(filepath.Join(dir, "root.json"))
	if err == nil {
		return data, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("trust: %w", err)
	}
	if len(c.root) == 0 {
		return nil, errors.New("trust: no initial root (--trust-root) and none in the data dir")
	}
	return c.root, nil
}

func (c *Checker) newUpdater(f fetcher.Fetcher, refTime time.Time, metadataDir string, offline bool) (*updater.Updater, error) {
	root, err := c.rootIn(metadataDir)
	if err != nil {
		return nil, err
	}
	cfg, err := config.New(c.src.MetadataURL, root)
	if err != nil {
		return nil, fmt.Errorf("trust: %w", err)
	}
	cfg.RemoteTargetsURL = c.src.TargetsURL
	cfg.LocalMetadataDir = metadataDir
	cfg.LocalTargetsDir = c.targetsDir()
	cfg.Fetcher = f
	cfg.RootMaxLength = c.limits.Root
	cfg.TimestampMaxLength = c.limits.Timestamp
	cfg.SnapshotMaxLength = c.limits.Snapshot
	cfg.TargetsMaxLength = c.limits.Targets
	cfg.UnsafeLocalMode = offline
	up, err := updater.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("trust: trusted root: %w", err)
	}
	up.UnsafeSetRefTime(refTime)
	return up, nil
}

// result is what a build refused and ignored.
type result struct {
	refusals, warnings []string
}

// build reads the lists of every namespace from the refreshed metadata
// and makes the next state: a namespace whose lists fail (a role that
// does not verify, a list that does not parse, a deny list that drops an
// entry) keeps what prev trusted for it, bounded by prev's timestamp.
func (c *Checker) build(up *updater.Updater, refTime time.Time, prev *state, floor denyFloor) (*state, denyFloor, result) {
	tm := up.GetTrustedMetadataSet()
	s := &state{refreshedAt: refTime, namespaces: map[string]*namespaceState{}}
	s.top = []document{
		{Name: "root.json", Version: tm.Root.Signed.Version, Expires: tm.Root.Signed.Expires},
		{Name: "timestamp.json", Version: tm.Timestamp.Signed.Version, Expires: tm.Timestamp.Signed.Expires},
		{Name: "snapshot.json", Version: tm.Snapshot.Signed.Version, Expires: tm.Snapshot.Signed.Expires},
		{Name: "targets.json", Version: tm.Targets[metadata.TARGETS].Signed.Version, Expires: tm.Targets[metadata.TARGETS].Signed.Expires},
	}
	next := floor.clone()
	var r result

	queue, seen, harvested := []string{""}, map[string]bool{"": true}, map[string]bool{}
	harvest := func() {
		names := make([]string, 0, len(tm.Targets))
		for name := range tm.Targets {
			names = append(names, name)
		}
		slices.Sort(names)
		for _, name := range names {
			if harvested[name] {
				continue
			}
			harvested[name] = true
			d := tm.Targets[name].Signed.Delegations
			if d == nil {
				continue
			}
			if d.SuccinctRoles != nil {
				r.warnings = append(r.warnings, fmt.Sprintf("role %s: hash-bin (succinct) delegations name no namespace; not looked up", name))
			}
			for _, role := range d.Roles {
				for _, p := range role.Paths {
					ns, ok := namespaceOfPattern(p)
					if !ok {
						r.warnings = append(r.warnings, fmt.Sprintf("role %s: path %q names no namespace (want <namespace>/* or <namespace>/recipients.json); not looked up", role.Name, p))
						continue
					}
					if seen[ns] {
						continue
					}
					if len(queue) >= c.maxNames {
						r.warnings = append(r.warnings, fmt.Sprintf("more than %d namespaces: %s not looked up", c.maxNames, ns))
						continue
					}
					seen[ns] = true
					queue = append(queue, ns)
				}
			}
		}
	}
	harvest()
	for i := 0; i < len(queue); i++ {
		ns := queue[i]
		n, err := c.loadNamespace(up, ns, &r)
		harvest()
		if err == nil && n == nil && len(floor.Lists[ns]) > 0 {
			err = fmt.Errorf("%w: %s is gone, its %d entries stay in force", ErrDenyEntryDropped, listPath(ns, RevocationsFile), len(floor.Lists[ns]))
		}
		if err == nil && n != nil {
			if miss := floor.missing(ns, n.deny); len(miss) > 0 {
				err = fmt.Errorf("%w: %s lacks %s", ErrDenyEntryDropped, listPath(ns, RevocationsFile), strings.Join(miss, ", "))
			}
		}
		if err != nil {
			r.refusals = append(r.refusals, fmt.Sprintf("namespace %q: %v; the lists trusted before stay in force", ns, err))
			if old := prev.namespaces[ns]; old != nil {
				s.namespaces[ns] = old.keep(prev, err)
			} else {
				// Nothing trusted before to fall back on: the namespace is
				// frozen (wrapping and unwrapping, no grace) until its lists
				// verify.
				s.namespaces[ns] = &namespaceState{ns: ns, kept: err.Error(), docs: []document{{
					Name: listPath(ns, RevocationsFile), bound: true,
					detail: "refused with nothing trusted before: " + err.Error(),
				}}}
			}
			continue
		}
		if n == nil {
			continue
		}
		s.namespaces[ns] = n
		if len(n.deny) > 0 {
			next.Lists[ns] = slices.Clone(n.deny)
		}
	}
	for ns, entries := range floor.Lists {
		if !seen[ns] {
			r.refusals = append(r.refusals, fmt.Sprintf("namespace %q is no longer delegated: %v: its %d deny entries stay in force", ns, ErrDenyEntryDropped, len(entries)))
		}
	}
	s.index(next)
	return s, next, r
}

// keep is a namespace's previously trusted lists, carried into a state
// whose refresh refused the new ones: they are as fresh as the timestamp
// that vouched for them.
func (n *namespaceState) keep(prev *state, why error) *namespaceState {
	k := *n
	k.kept = why.Error()
	k.docs = slices.Clone(n.docs)
	if ts, ok := prev.document("timestamp.json"); ok && !n.hasBound() {
		k.docs = append(k.docs, document{
			Name: listPath(n.ns, RecipientsFile), Version: ts.Version, Expires: ts.Expires, bound: true,
			detail: fmt.Sprintf("kept from timestamp.json v%d after a refused update", ts.Version),
		})
	}
	return &k
}

func (n *namespaceState) hasBound() bool {
	return slices.ContainsFunc(n.docs, func(d document) bool { return d.bound })
}

// loadNamespace reads a namespace's lists through TUF: the role that
// signs "<ns>/recipients.json" is the one go-tuf's delegation walk finds
// for that path. nil, nil: the namespace publishes no list.
func (c *Checker) loadNamespace(up *updater.Updater, ns string, r *result) (*namespaceState, error) {
	n := &namespaceState{ns: ns}
	found := false
	for _, file := range []string{RecipientsFile, RevocationsFile} {
		p := listPath(ns, file)
		tf, role, err := findTarget(up, p)
		if errors.Is(err, errTargetAbsent) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		if tf.Length > c.limits.List {
			return nil, fmt.Errorf("%s: %w", p, tooLong(p, tf.Length, c.limits.List))
		}
		data, err := c.targetBytes(up, tf)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		if n.role == "" {
			n.role = role
		}
		for _, d := range chainDocs(up.GetTrustedMetadataSet(), role, p) {
			if !slices.ContainsFunc(n.docs, func(o document) bool { return o.Name == d.Name }) {
				n.docs = append(n.docs, d)
			}
		}
		found = true
		switch file {
		case RecipientsFile:
			l, err := ParseRecipients(data)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", p, err)
			}
			for _, e := range l.Recipients {
				if err := e.Validate(); err != nil {
					r.warnings = append(r.warnings, fmt.Sprintf("%s: %v: entry ignored", p, err))
					continue
				}
				a := allowEntry{Recipient: e, ns: ns}
				for _, sc := range e.Scopes {
					if !scopeWithin(sc, ns) {
						r.warnings = append(r.warnings, fmt.Sprintf("%s: %s: scope %q reaches beyond %s/**, the namespace role %s may sign for: it counts only there", p, e.KeyID, sc, ns, role))
					}
					g, _ := compileGlob(sc)
					a.scopes = append(a.scopes, g)
				}
				n.allow = append(n.allow, a)
			}
		case RevocationsFile:
			l, err := ParseRevocations(data)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", p, err)
			}
			for _, e := range l.Revocations {
				if e.KeyID == "" {
					r.warnings = append(r.warnings, fmt.Sprintf("%s: revocation without key_id ignored", p))
					continue
				}
				if err := e.Validate(); err != nil {
					// The key is revoked all the same.
					r.warnings = append(r.warnings, fmt.Sprintf("%s: %v (the key is revoked all the same)", p, err))
				}
				n.deny = append(n.deny, e)
			}
		}
	}
	if !found {
		return nil, nil
	}
	return n, nil
}

// findTarget asks go-tuf's delegation walk for path and says which role
// signed the answer.
func findTarget(up *updater.Updater, p string) (*metadata.TargetFiles, string, error) {
	tf, err := up.GetTargetInfo(p)
	if err != nil {
		// go-tuf reports a path no role lists with this plain error; any
		// other (a role that does not verify, a download) is a failure.
		if err.Error() == fmt.Sprintf("target %s not found", p) {
			return nil, "", errTargetAbsent
		}
		return nil, "", err
	}
	tm := up.GetTrustedMetadataSet()
	for name, md := range tm.Targets {
		if md.Signed.Targets[p] == tf {
			return tf, name, nil
		}
	}
	return nil, "", fmt.Errorf("no trusted role lists %s", p)
}

// chainDocs are the delegated roles a target of role rests on: role and
// every delegator of it for path p, up to (not including) targets.
func chainDocs(tm trustedmetadata.TrustedMetadata, role, p string) []document {
	var out []document
	todo, seen := []string{role}, map[string]bool{}
	for len(todo) > 0 {
		name := todo[0]
		todo = todo[1:]
		if name == metadata.TARGETS || seen[name] {
			continue
		}
		seen[name] = true
		md := tm.Targets[name]
		if md == nil {
			continue
		}
		out = append(out, document{Name: name + ".json", Version: md.Signed.Version, Expires: md.Signed.Expires})
		for parent, pm := range tm.Targets {
			if pm.Signed.Delegations == nil {
				continue
			}
			for _, dr := range pm.Signed.Delegations.Roles {
				if ok, _ := dr.IsDelegatedPath(p); ok && dr.Name == name {
					todo = append(todo, parent)
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b document) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// targetBytes is a list's content, verified by go-tuf against its signed
// length and hashes: the copy in the data dir if it still matches, else
// downloaded (and kept there).
func (c *Checker) targetBytes(up *updater.Updater, tf *metadata.TargetFiles) ([]byte, error) {
	local := filepath.Join(c.targetsDir(), url.PathEscape(tf.Path))
	if _, data, err := up.FindCachedTarget(tf, local); err == nil && data != nil {
		return data, nil
	}
	_, data, err := up.DownloadTarget(tf, local, "")
	if err != nil {
		return nil, err
	}
	return data, nil
}

func (s *state) versions() map[string]int64 {
	v := map[string]int64{}
	for _, d := range s.top {
		v[strings.TrimSuffix(d.Name, ".json")] = d.Version
	}
	for _, n := range s.namespaces {
		for _, d := range n.docs {
			if !d.bound {
				v[strings.TrimSuffix(d.Name, ".json")] = d.Version
			}
		}
	}
	return v
}

// timestampRecorder keeps the timestamp.json a refresh downloaded, to
// tell an equivocating source (a second, different timestamp of the
// version trusted) from one with nothing new: go-tuf keeps the trusted
// one in both cases and says nothing.
type timestampRecorder struct {
	metadataURL string
	data        []byte
}

func (t *timestampRecorder) wrap(f fetcher.Fetcher) fetcher.Fetcher {
	return fetchFunc(func(name string, maxLength int64) ([]byte, error) {
		data, err := f.DownloadFile(name, maxLength, 0)
		if err == nil && name == t.metadataURL+"timestamp.json" {
			t.data = bytes.Clone(data)
		}
		return data, err
	})
}

// equivocation describes the downloaded timestamp if it is validly
// signed, of the trusted version, and says something else.
func (t *timestampRecorder) equivocation(tm trustedmetadata.TrustedMetadata) string {
	if t.data == nil || tm.Timestamp == nil {
		return ""
	}
	got, err := metadata.Timestamp().FromBytes(t.data)
	if err != nil || got.Signed.Version != tm.Timestamp.Signed.Version {
		return ""
	}
	a, errA := json.Marshal(got.Signed)
	b, errB := json.Marshal(tm.Timestamp.Signed)
	if errA != nil || errB != nil || bytes.Equal(a, b) {
		return ""
	}
	if tm.Root.VerifyDelegate(metadata.TIMESTAMP, got) != nil {
		return ""
	}
	return fmt.Sprintf("equivocation: the source offers a second timestamp.json version %d that differs from the trusted one; refused, the trusted one stays (is the timestamp key misused?)", got.Signed.Version)
}

package trust

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// Operations Check decides.
const (
	OpWrap   = "wrap"
	OpUnwrap = "unwrap"
)

// Refusal reasons.
const (
	RefusedRevoked     = "revoked"
	RefusedNotAllowed  = "not-allowed"
	RefusedExpired     = "expired"
	RefusedNotYetValid = "not-yet-valid"
	RefusedFrozen      = "frozen"
)

// Refusal is Check's answer when a key may not be used.
type Refusal struct {
	Op, Repo, KeyID string
	// Reason is RefusedRevoked, RefusedNotAllowed, RefusedExpired,
	// RefusedNotYetValid or RefusedFrozen.
	Reason string
	// Document is the trust document the decision rests on: the deny or
	// allow list ("team-a/revocations.json"), or the expired document of a
	// freeze ("timestamp.json").
	Document string
	// Expires is the expiry of a freeze's document, or the not_after of
	// an expired entry.
	Expires time.Time
	// NotBefore is the not_before of an entry not yet valid.
	NotBefore time.Time
	// RevocationReason is the deny entry's reason ("keyCompromise").
	RevocationReason string
	// Grace is the unwrap grace a freeze was measured with.
	Grace time.Duration
	// Detail says more where the document alone does not.
	Detail string
}

// RefusalReason is Reason (proxy.KeyRefusal).
func (r *Refusal) RefusalReason() string { return r.Reason }

// RefusalDocument is Document (proxy.KeyRefusal).
func (r *Refusal) RefusalDocument() string { return r.Document }

// RefusalExpires is Expires (proxy.KeyRefusal).
func (r *Refusal) RefusalExpires() time.Time { return r.Expires }

func (r *Refusal) Error() string {
	head := fmt.Sprintf("trust: %s for repository %q with key %s refused: ", r.Op, r.Repo, r.KeyID)
	switch r.Reason {
	case RefusedRevoked:
		return head + fmt.Sprintf("revoked (%s) by %s", r.RevocationReason, r.Document)
	case RefusedNotAllowed:
		return head + fmt.Sprintf("not on the allow list (%s) for this repository", r.Document)
	case RefusedExpired:
		return head + fmt.Sprintf("expired at %s (not_after in %s)", r.Expires.Format(time.RFC3339), r.Document)
	case RefusedNotYetValid:
		return head + fmt.Sprintf("not valid before %s (not_before in %s)", r.NotBefore.Format(time.RFC3339), r.Document)
	case RefusedFrozen:
		msg := head + "frozen: "
		if r.Expires.IsZero() {
			msg += fmt.Sprintf("no trusted %s yet", r.Document)
		} else {
			msg += fmt.Sprintf("%s expired at %s", r.Document, r.Expires.Format(time.RFC3339))
		}
		if r.Op == OpUnwrap {
			msg += fmt.Sprintf(" (unwrap grace %s)", r.Grace)
		}
		if r.Detail != "" {
			msg += " (" + r.Detail + ")"
		}
		return msg
	}
	return head + r.Reason
}

// Limits bound the documents a refresh reads; zero fields take go-tuf's
// defaults (root 512000 bytes, timestamp 16384, snapshot 2000000, targets
// roles 5000000) and 1 MiB for each list.
type Limits struct {
	Root, Timestamp, Snapshot, Targets, List int64
}

// Options configure a Checker.
type Options struct {
	// Source is where the documents come from (required).
	Source Source
	// Root is the initial trusted root.json (the operator's --trust-root
	// file, never the network). It is used only while the data dir holds
	// no trusted root: after that the persisted, possibly rotated, root is.
	Root []byte
	// DataDir is shroud's data dir (required); the trusted metadata, the
	// lists and the deny floor are kept in DataDir/trust.
	DataDir string
	// Grace is how long after a freeze unwrapping is still allowed, per
	// repository; nil: no grace.
	Grace func(repo string) time.Duration
	// OnEvent receives every refresh outcome and every freeze; nil: none.
	// It is called synchronously and must not block.
	OnEvent func(Event)
	// Logger; nil: slog.Default().
	Logger *slog.Logger
	// Clock is the reference time of the expiry checks a refresh makes;
	// nil: time.Now. (Check takes its own now.)
	Clock func() time.Time
	// Limits bound document sizes.
	Limits Limits
	// MaxNamespaces bounds the namespaces a refresh looks up; 0: 1024.
	MaxNamespaces int
	// SharedFloor is the rollback floor replicas share (floor_shared.go);
	// nil: the data dir's alone.
	SharedFloor SharedFloor
	// PreviousFloors are the shared floors kept under previous
	// identities (identity rotation): read, never raised.
	PreviousFloors []SharedFloor
}

// Checker decides whether a key may wrap or unwrap layer keys for a
// repository, from the last successfully refreshed trust documents.
// Its methods are safe for concurrent use.
type Checker struct {
	src      Source
	root     []byte
	dir      string
	grace    func(string) time.Duration
	onEvent  func(Event)
	log      *slog.Logger
	clock    func() time.Time
	limits   Limits
	maxNames int
	shared   SharedFloor
	// previousFloors: Options.PreviousFloors.
	previousFloors []SharedFloor

	refreshMu sync.Mutex // one refresh at a time

	mu           sync.RWMutex
	cur          *state
	floor        denyFloor
	lastAttempt  time.Time
	lastSuccess  time.Time
	lastOutcome  string
	lastErr      error
	lastRefusals []string

	freezeMu   sync.Mutex
	freezeSeen map[string]time.Time
}

// New makes a Checker. It reads the data dir (the deny floor, and the
// metadata trusted at the last refresh, which it restores as of then)
// but nothing from the source: call Refresh or Run.
func New(opts Options) (*Checker, error) {
	if opts.Source.Fetcher == nil || opts.Source.MetadataURL == "" {
		return nil, errors.New("trust: no source")
	}
	if opts.DataDir == "" {
		return nil, errors.New("trust: no data dir")
	}
	c := &Checker{
		src:            opts.Source,
		root:           opts.Root,
		dir:            filepath.Join(opts.DataDir, "trust"),
		grace:          opts.Grace,
		onEvent:        opts.OnEvent,
		log:            opts.Logger,
		clock:          opts.Clock,
		limits:         opts.Limits,
		maxNames:       opts.MaxNamespaces,
		shared:         opts.SharedFloor,
		previousFloors: opts.PreviousFloors,
		freezeSeen:     map[string]time.Time{},
	}
	if c.grace == nil {
		c.grace = func(string) time.Duration { return 0 }
	}
	if c.onEvent == nil {
		c.onEvent = func(Event) {}
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	c.log = c.log.With("trust_source", c.src.Name)
	if c.clock == nil {
		c.clock = time.Now
	}
	if c.maxNames <= 0 {
		c.maxNames = 1024
	}
	c.limits = c.limits.withDefaults()
	for _, d := range []string{c.dir, c.metadataDir(), c.targetsDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("trust: %w", err)
		}
	}
	if _, err := c.trustedRoot(); err != nil {
		return nil, err
	}
	floor, err := loadFloor(c.dir)
	if err != nil {
		return nil, err
	}
	c.floor = floor
	c.cur = &state{namespaces: map[string]*namespaceState{}}
	c.cur.index(floor)
	c.restore()
	return c, nil
}

func (l Limits) withDefaults() Limits {
	def := func(v *int64, d int64) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&l.Root, 512000)
	def(&l.Timestamp, 16384)
	def(&l.Snapshot, 2000000)
	def(&l.Targets, 5000000)
	def(&l.List, 1<<20)
	return l
}

func (c *Checker) metadataDir() string { return filepath.Join(c.dir, "metadata") }
func (c *Checker) targetsDir() string  { return filepath.Join(c.dir, "targets") }

// goodDir holds a copy of the metadata of the state last accepted.
func (c *Checker) goodDir() string { return filepath.Join(c.dir, "last-good") }

// Check says whether key keyID may be used for op (OpWrap: wrap a layer
// key for it on push; OpUnwrap: unwrap with it on pull) in repository
// repo at time now: nil, or a *Refusal. repo may also be a scope, as
// shroud keyprovider asks: a repository glob, or "" for a wrap bound to
// no repository; then the deny lists and freezes of every namespace
// whose repositories the scope may match apply (every namespace for "":
// fail closed, see governs). In order:
//
//   - a deny entry of a namespace covering repo refuses both operations;
//   - a freeze (an expired root, timestamp, snapshot or targets, or an
//     expired delegated role the repository's lists rest on) refuses
//     wrapping at once and unwrapping once the grace for repo has passed
//     too; before any refresh succeeded, both are refused;
//   - wrapping needs an allow entry for the key whose scopes match repo
//     in a namespace covering it, valid at now;
//   - unwrapping with a key no allow entry for repo names is allowed
//     (decryption keys are configured locally; the allow list says whom
//     shroud encrypts for); a key the allow list names for repo must be
//     valid at now.
func (c *Checker) Check(ctx context.Context, op, repo, keyID string, now time.Time) error {
	if op != OpWrap && op != OpUnwrap {
		return fmt.Errorf("trust: unknown operation %q", op)
	}
	c.mu.RLock()
	s := c.cur
	c.mu.RUnlock()
	refuse := func(reason string) *Refusal {
		return &Refusal{Op: op, Repo: repo, KeyID: keyID, Reason: reason}
	}
	for _, d := range s.denyByKey[keyID] {
		if governs(d.ns, repo) {
			r := refuse(RefusedRevoked)
			r.Document, r.RevocationReason = listPath(d.ns, RevocationsFile), d.Reason
			return r
		}
	}
	if doc, frozen := s.frozen(repo, now); frozen {
		c.noteFreeze(doc)
		grace := c.grace(repo)
		if op == OpWrap || doc.Expires.IsZero() || now.After(doc.Expires.Add(grace)) {
			r := refuse(RefusedFrozen)
			r.Document, r.Expires, r.Detail = doc.Name, doc.Expires, doc.detail
			if op == OpUnwrap {
				r.Grace = grace
			}
			return r
		}
		c.log.DebugContext(ctx, "trust frozen: unwrapping in grace", "op", op, "repository", repo, "key_id", keyID,
			"document", doc.Name, "expires", doc.Expires, "grace", grace)
	}
	var entries []*allowEntry
	for _, e := range s.allowByKey[keyID] {
		if covers(e.ns, repo) && e.matches(repo) {
			entries = append(entries, e)
		}
	}
	if len(entries) == 0 {
		if op == OpUnwrap {
			return nil
		}
		r := refuse(RefusedNotAllowed)
		r.Document = s.allowDocument(repo)
		return r
	}
	var first *Refusal
	for _, e := range entries {
		switch {
		case !e.NotBefore.IsZero() && now.Before(e.NotBefore):
			if first == nil {
				first = refuse(RefusedNotYetValid)
				first.Document, first.NotBefore = listPath(e.ns, RecipientsFile), e.NotBefore
			}
		case !e.NotAfter.IsZero() && now.After(e.NotAfter):
			if first == nil || first.Reason != RefusedExpired {
				first = refuse(RefusedExpired)
				first.Document, first.Expires = listPath(e.ns, RecipientsFile), e.NotAfter
			}
		default:
			return nil
		}
	}
	return first
}

func (e *allowEntry) matches(repo string) bool {
	for _, s := range e.scopes {
		if s.MatchString(repo) {
			return true
		}
	}
	return false
}

// frozen finds the first expired document repo's decisions rest on.
func (s *state) frozen(repo string, now time.Time) (document, bool) {
	if len(s.top) == 0 {
		return document{Name: "timestamp.json"}, true
	}
	for _, d := range s.top {
		if now.After(d.Expires) {
			return d, true
		}
	}
	var found *document
	for _, n := range s.namespaces {
		if !governs(n.ns, repo) {
			continue
		}
		for i, d := range n.docs {
			if now.After(d.Expires) && (found == nil || d.Expires.Before(found.Expires)) {
				found = &n.docs[i]
			}
		}
	}
	if found != nil {
		return *found, true
	}
	return document{}, false
}

// allowDocument names the allow list a refused wrap was checked against:
// the deepest namespace covering repo that has one.
func (s *state) allowDocument(repo string) string {
	best := ""
	for ns := range s.namespaces {
		if covers(ns, repo) && len(ns) > len(best) {
			best = ns
		}
	}
	return listPath(best, RecipientsFile)
}

// noteFreeze reports a freeze once per document and expiry.
func (c *Checker) noteFreeze(doc document) {
	c.freezeMu.Lock()
	seen, ok := c.freezeSeen[doc.Name]
	if ok && seen.Equal(doc.Expires) {
		c.freezeMu.Unlock()
		return
	}
	c.freezeSeen[doc.Name] = doc.Expires
	c.freezeMu.Unlock()
	c.log.Error("trust frozen: wrapping refused, unwrapping refused after the grace", "document", doc.Name, "expires", doc.Expires, "detail", doc.detail)
	c.onEvent(Event{Kind: EventFreeze, Time: c.clock(), Source: c.src.Name, Document: doc.Name, Expires: doc.Expires})
}

// Status is what a Checker trusts, for `shroud trust status` and
// readiness.
type Status struct {
	Source string
	// Roles are the documents in force: root, timestamp, snapshot,
	// targets, then delegated roles.
	Roles []RoleStatus
	// Namespaces are the lists in force, "" first.
	Namespaces []NamespaceStatus
	// Allow and Deny count the entries in force (Deny counts every deny
	// entry ever trusted).
	Allow, Deny int
	// LastRefresh is the reference time of the last refresh attempt,
	// LastSuccess of the last one whose state is in force (restored from
	// the data dir on start-up).
	LastRefresh, LastSuccess time.Time
	LastOutcome, LastError   string
	// Refusals of the last refresh.
	Refusals []string
}

// RoleStatus is one document in force.
type RoleStatus struct {
	Name    string
	Version int64
	Expires time.Time
}

// NamespaceStatus is one namespace's lists (public keys left out).
type NamespaceStatus struct {
	Name string
	// Role signed the lists.
	Role string
	// Kept says why the lists are the previously trusted ones.
	Kept        string
	Recipients  []Recipient
	Revocations []Revocation
}

// Status reports what the Checker trusts and how its refreshes went.
func (c *Checker) Status() Status {
	c.mu.RLock()
	defer c.mu.RUnlock()
	s := c.cur
	st := Status{
		Source:      c.src.Name,
		LastRefresh: c.lastAttempt,
		LastSuccess: c.lastSuccess,
		LastOutcome: c.lastOutcome,
		Refusals:    slices.Clone(c.lastRefusals),
	}
	if c.lastErr != nil {
		st.LastError = c.lastErr.Error()
	}
	for _, d := range s.top {
		st.Roles = append(st.Roles, RoleStatus{Name: d.Name, Version: d.Version, Expires: d.Expires})
	}
	seen := map[string]bool{}
	names := make([]string, 0, len(s.namespaces))
	for ns := range s.namespaces {
		names = append(names, ns)
	}
	for ns := range c.floor.Lists {
		if s.namespaces[ns] == nil {
			names = append(names, ns)
		}
	}
	slices.Sort(names)
	for _, ns := range names {
		n := s.namespaces[ns]
		ns := NamespaceStatus{Name: ns, Revocations: slices.Clone(c.floor.Lists[ns])}
		if n != nil {
			ns.Role, ns.Kept = n.role, n.kept
			for _, e := range n.allow {
				r := e.Recipient
				r.PublicKey = ""
				ns.Recipients = append(ns.Recipients, r)
			}
			for _, d := range n.docs {
				if !seen[d.Name] && !d.bound {
					seen[d.Name] = true
					st.Roles = append(st.Roles, RoleStatus{Name: d.Name, Version: d.Version, Expires: d.Expires})
				}
			}
		} else {
			ns.Kept = "no longer published: its deny entries stay in force"
		}
		st.Allow += len(ns.Recipients)
		st.Deny += len(ns.Revocations)
		st.Namespaces = append(st.Namespaces, ns)
	}
	return st
}

// Run refreshes at once and then every interval until ctx ends; a failed
// refresh is logged and reported (the last good state stays in force).
func (c *Checker) Run(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		return fmt.Errorf("trust: refresh interval %s", interval)
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		_ = c.Refresh(ctx)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

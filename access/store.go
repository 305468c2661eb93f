package access

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	scrypto "github.com/shroud-oci/shroud/crypto"
)

// Bounds of the requests waiting for a decision: anyone who reaches
// shroud may submit one. One key, and one remote address, may have a few
// waiting; all of them together MaxPending.
const (
	MaxPending          = 1000
	MaxPendingPerKey    = 3
	MaxPendingPerRemote = 20
	// DeniedKept is how long a denied request stays, for its requester
	// to read the decision; a request that expired pending is dropped at
	// the next submission (the audit log keeps what happened).
	DeniedKept = 30 * 24 * time.Hour
)

// Errors of the store, classified with errors.Is.
var (
	ErrNotFound   = errors.New("no such access request")
	ErrTooMany    = errors.New("too many access requests are waiting for a decision already")
	ErrNotPending = errors.New("the request is not pending")
)

// Options configure a Store.
type Options struct {
	// Dir holds the requests, one file each (<data-dir>/access).
	Dir string
	// Keyring compiles granted keys into a rule's recipients; its
	// identity's key id is the audience requests must name.
	Keyring *scrypto.Keyring
	// Policy, when set, refuses requests for repositories no encrypt
	// rule matches: a key cannot be a recipient there, and a rewrap of
	// them cannot run.
	Policy *scrypto.Policy
	// Now is the clock; nil is time.Now.
	Now func() time.Time
}

// Store keeps access requests and serves their grants (proxy.Grants). It
// is safe for concurrent use.
type Store struct {
	dir      string
	keys     *scrypto.Keyring
	audience string
	now      func() time.Time
	policy   *scrypto.Policy

	mu   sync.Mutex
	reqs map[string]*entry
	// gen counts changes to the grants; compiled are the sets Extend
	// compiled at gen, by rule and the grants they add.
	gen      uint64
	compiled map[string]*scrypto.Recipients
}

// entry is a request and its key parsed as a recipient.
type entry struct {
	req Request
	rec scrypto.Recipient
}

// Open reads the requests kept in o.Dir (created if missing). A file
// that does not parse is an error: a grant would otherwise be forgotten.
func Open(o Options) (*Store, error) {
	if o.Dir == "" || o.Keyring == nil {
		return nil, errors.New("access: Dir and Keyring are required")
	}
	s := &Store{dir: o.Dir, keys: o.Keyring, audience: o.Keyring.Identity().KeyID(), now: o.Now, policy: o.Policy, reqs: map[string]*entry{}, compiled: map[string]*scrypto.Recipients{}}
	if s.now == nil {
		s.now = time.Now
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("access: %w", err)
	}
	files, err := filepath.Glob(filepath.Join(o.Dir, "*.json"))
	if err != nil {
		return nil, fmt.Errorf("access: %w", err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("access: %w", err)
		}
		var r Request
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("access: %s: %w", f, err)
		}
		if !validID(r.ID) || filepath.Base(f) != r.ID+".json" {
			return nil, fmt.Errorf("access: %s: the file does not hold the request it is named after", f)
		}
		rec, err := scrypto.ParseRecipientData("access:"+r.Name, r.Scheme, []byte(r.Key))
		if err != nil {
			return nil, fmt.Errorf("access: %s: %w", f, err)
		}
		s.reqs[r.ID] = &entry{req: r, rec: rec}
	}
	return s, nil
}

// Audience is the key id requests must name: shroud's identity's.
func (s *Store) Audience() string { return s.audience }

// Submit verifies a signed request (a compact JWS, Sign) from remote (the
// client's address, for the per-address bound) and keeps it pending. A
// request of the same key for the same repositories that is pending
// already is returned instead (created false). An InvalidError says what
// is wrong with the request; ErrTooMany that too many wait already.
func (s *Store) Submit(body []byte, remote string) (r Request, created bool, err error) {
	now := s.now()
	p, rec, err := verify(body, s.audience, now)
	if err != nil {
		return Request{}, false, err
	}
	if s.policy != nil {
		for _, repo := range p.Repositories {
			if rule := s.policy.Match(repo); rule == nil || rule.Action != scrypto.Encrypt {
				return Request{}, false, invalid("repository %q: no encrypt rule matches it, so no key can be a recipient there", repo)
			}
		}
	}
	repos := slices.Clone(p.Repositories)
	sort.Strings(repos)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.prune(now)
	pending, byKey, byRemote := 0, 0, 0
	for _, e := range s.reqs {
		if e.req.StateAt(now) != Pending {
			continue
		}
		pending++
		if e.req.KeyID == rec.KeyID() {
			if slices.Equal(e.req.Repositories, repos) {
				return e.req, false, nil
			}
			byKey++
		}
		if remote != "" && e.req.Remote == remote {
			byRemote++
		}
	}
	switch {
	case byKey >= MaxPendingPerKey:
		return Request{}, false, fmt.Errorf("%w: %d of this key's", ErrTooMany, byKey)
	case byRemote >= MaxPendingPerRemote:
		return Request{}, false, fmt.Errorf("%w: %d from this address", ErrTooMany, byRemote)
	case pending >= MaxPending:
		return Request{}, false, fmt.Errorf("%w: %d in all", ErrTooMany, pending)
	}
	r = Request{ID: newID(), Name: p.Name, Repositories: repos, Scheme: p.Scheme, Key: p.Key, KeyID: rec.KeyID(), Created: now.UTC(), State: Pending, Remote: remote}
	if err := s.write(r); err != nil {
		return Request{}, false, err
	}
	s.reqs[r.ID] = &entry{req: r, rec: rec}
	return r, true, nil
}

// prune drops the requests that expired pending, and the denied ones
// older than DeniedKept, with their files (s.mu held).
func (s *Store) prune(now time.Time) {
	for id, e := range s.reqs {
		st := e.req.StateAt(now)
		if (st == Expired && e.req.State == Pending) || (st == Denied && now.Sub(e.req.DecidedAt) > DeniedKept) {
			if err := os.Remove(filepath.Join(s.dir, id+".json")); err != nil && !errors.Is(err, os.ErrNotExist) {
				continue
			}
			delete(s.reqs, id)
		}
	}
}

// Get returns the request id names, its State as of now.
func (s *Store) Get(id string) (Request, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.reqs[id]
	if !ok {
		return Request{}, ErrNotFound
	}
	r := e.req
	r.State = r.StateAt(s.now())
	return r, nil
}

// List returns every request, the oldest first, their States as of now.
func (s *Store) List() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	out := make([]Request, 0, len(s.reqs))
	for _, e := range s.reqs {
		r := e.req
		r.State = r.StateAt(now)
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.Before(out[j].Created)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Approve grants a pending request: its key becomes a recipient of its
// repositories' rules until expires (zero: no end). by names the owner.
func (s *Store) Approve(id, by string, expires time.Time) (Request, error) {
	return s.decide(id, func(r *Request, rec scrypto.Recipient, now time.Time) error {
		if s.NeedsOwner(*r) {
			return invalid("the request names a repository of an encrypt-only rule, whose images shroud cannot open: a recipient of the rule approves it with its key on its own machine (shroud access approve --key)")
		}
		return approve(r, rec, now, by, expires)
	})
}

// approve grants r, pending, by by until expires (zero: no end), its key
// valid at now.
func approve(r *Request, rec scrypto.Recipient, now time.Time, by string, expires time.Time) error {
	if r.StateAt(now) != Pending {
		return fmt.Errorf("%w: it is %s", ErrNotPending, r.StateAt(now))
	}
	if err := validNow(rec, now); err != nil {
		return invalid("the request's key: %v", err)
	}
	if !expires.IsZero() && !expires.After(now) {
		return invalid("expires %s: in the past", expires.UTC().Format(time.RFC3339))
	}
	r.State, r.DecidedAt, r.DecidedBy, r.Expires = Approved, now.UTC(), by, expires.UTC()
	return nil
}

// Deny refuses a pending request, or ends an approved one's grant (an
// expired grant too: the denial's rewrap then takes the key back from the
// images stored while it held).
func (s *Store) Deny(id, by, reason string) (Request, error) {
	if !printable(reason, MaxReasonLen) {
		return Request{}, invalid("reason: want at most %d printable characters", MaxReasonLen)
	}
	return s.decide(id, func(r *Request, _ scrypto.Recipient, now time.Time) error {
		if st := r.StateAt(now); st != Pending && r.State != Approved {
			return fmt.Errorf("%w: it is %s", ErrNotPending, st)
		}
		r.WasGranted = r.State == Approved
		r.State, r.DecidedAt, r.DecidedBy, r.Reason = Denied, now.UTC(), by, reason
		return nil
	})
}

func (s *Store) decide(id string, f func(r *Request, rec scrypto.Recipient, now time.Time) error) (Request, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.reqs[id]
	if !ok {
		return Request{}, ErrNotFound
	}
	r := e.req
	if err := f(&r, e.rec, s.now()); err != nil {
		return Request{}, err
	}
	if err := s.write(r); err != nil {
		return Request{}, err
	}
	e.req = r
	s.gen++
	clear(s.compiled)
	return r, nil
}

// Extend is the recipients of rule for repo with the keys granted for
// repo added (proxy.Grants): rule.Recipients itself when none is.
func (s *Store) Extend(repo string, rule *scrypto.Rule) (*scrypto.Recipients, error) {
	if rule.Recipients == nil {
		return rule.Recipients, nil
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	var extra []scrypto.Recipient
	var ids []string
	for _, e := range s.reqs {
		if e.req.StateAt(now) == Approved && slices.Contains(e.req.Repositories, repo) {
			ids = append(ids, e.req.ID)
		}
	}
	if len(ids) == 0 {
		return rule.Recipients, nil
	}
	sort.Strings(ids)
	key := fmt.Sprintf("%d/%s", rule.Index, strings.Join(ids, ","))
	if rs, ok := s.compiled[key]; ok {
		return rs, nil
	}
	for _, id := range ids {
		extra = append(extra, s.reqs[id].rec)
	}
	rs, err := s.keys.Extend(rule.Recipients, extra)
	if err != nil {
		return nil, err
	}
	if len(s.compiled) < 256 {
		s.compiled[key] = rs
	}
	return rs, nil
}

// write keeps r in its file, atomically.
func (s *Store) write(r Request) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(s.dir, ".request-*")
	if err != nil {
		return fmt.Errorf("access: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("access: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("access: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("access: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(s.dir, r.ID+".json")); err != nil {
		return fmt.Errorf("access: %w", err)
	}
	return nil
}

func newID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// validID says whether id is a request id (32 lowercase hex digits).
func validID(id string) bool {
	if len(id) != 32 {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil && strings.ToLower(id) == id
}

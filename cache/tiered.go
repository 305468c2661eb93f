package cache

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/opencontainers/go-digest"
)

// DefaultBackoff is how long a Tiered leaves a failing shared tier alone
// by default.
const DefaultBackoff = time.Second

// TieredOptions configure a Tiered. The zero value is usable.
type TieredOptions struct {
	// OnError, if set, is called with each shared-tier failure (op names
	// the Store method), which the call then answers from the LRU alone:
	// where the proxy counts them.
	OnError func(op string, err error)
	// Backoff is how long after a failed shared call the shared tier is
	// skipped, calls answering from the LRU alone without waiting on it
	// (and without calling OnError), before it is tried again (zero:
	// DefaultBackoff; negative: never skipped). A Health that finds it
	// answering again ends the wait early. It keeps a hung Redis from
	// costing every call OpTimeout.
	Backoff time.Duration
}

// Tiered is a Store with the in-process LRU in front of a Shared: it reads
// the LRU and, on a miss, the shared tier, filling the LRU with what that
// finds; it writes both. The shared tier's failures are never the
// caller's: they go to OnError and the call answers from the LRU alone, so
// shroud stays correct, and only slower, while Redis is down.
//
// The LRU in front is not told of another replica's writes. Its entries
// carry no TTL: a mapping is a hint that the proxy checks against the
// upstream (it fetches or HEADs the upstream digest the mapping names),
// and when the upstream answers 404 for it (another replica deleted it,
// or stored the blob or manifest again under a new key) the proxy calls
// Stale, which drops the LRU's copy so the next lookup reads the shared
// tier. Deletions are marks in the shared tier (SetDeleted, Deleted),
// which every replica reads there, not from its LRU, while it answers. A
// TTL on the front would cost every hot entry a Redis read per period and
// buy no correctness, so there is none.
type Tiered struct {
	front   *LRU
	shared  *Shared
	onError func(op string, err error)
	backoff time.Duration
	now     func() time.Time

	mu        sync.Mutex
	lastErr   error     // the last shared call's, nil if it succeeded
	skipUntil time.Time // the shared tier is left alone until then

	// synced holds the keys whose LRU entry is known to be in the shared
	// tier as it is (read from it, or written to it): writing the same
	// entry again (every pull restores its manifest's mappings) costs no
	// Redis round trip.
	synced *lru.Cache[string, struct{}]
}

var _ Store = (*Tiered)(nil)

// NewTiered returns a Tiered of front in front of shared.
func NewTiered(front *LRU, shared *Shared, opts TieredOptions) (*Tiered, error) {
	if front == nil || shared == nil {
		return nil, errors.New("tiered cache: an LRU and a shared tier are needed")
	}
	synced, err := lru.New[string, struct{}](DefaultEntries)
	if err != nil {
		return nil, fmt.Errorf("tiered cache: %w", err)
	}
	t := &Tiered{front: front, shared: shared, onError: opts.OnError, backoff: opts.Backoff, now: time.Now, synced: synced}
	if t.backoff == 0 {
		t.backoff = DefaultBackoff
	}
	return t, nil
}

// useShared says whether to call the shared tier now.
func (t *Tiered) useShared() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lastErr == nil || t.backoff < 0 || !t.now().Before(t.skipUntil)
}

// record notes the outcome of a shared call, and says whether it
// succeeded.
func (t *Tiered) record(op string, err error) bool {
	t.mu.Lock()
	t.lastErr = err
	if err != nil {
		t.skipUntil = t.now().Add(t.backoff)
	}
	t.mu.Unlock()
	if err != nil && t.onError != nil {
		t.onError(op, err)
	}
	return err == nil
}

// Health reports the shared tier's state: nil when the last shared call
// succeeded or a PING succeeds now, else the error (the tier is degraded:
// calls answer from the LRU alone).
func (t *Tiered) Health(ctx context.Context) error {
	t.mu.Lock()
	err := t.lastErr
	t.mu.Unlock()
	if err == nil {
		return nil
	}
	err = t.shared.Ping(ctx)
	t.mu.Lock()
	t.lastErr = err
	if err != nil {
		t.skipUntil = t.now().Add(t.backoff)
	} else {
		t.skipUntil = time.Time{}
	}
	t.mu.Unlock()
	return err
}

// Blob implements Store.
func (t *Tiered) Blob(ctx context.Context, repo string, plainDigest digest.Digest) (Blob, bool, error) {
	if b, ok, err := t.front.Blob(ctx, repo, plainDigest); ok || err != nil {
		return b, ok, err
	}
	if !t.useShared() {
		return Blob{}, false, nil
	}
	b, ok, err := t.shared.Blob(ctx, repo, plainDigest)
	if !t.record("blob", err) || !ok {
		return Blob{}, false, nil
	}
	t.synced.Add("b"+key(repo, plainDigest), struct{}{})
	return b, true, t.front.PutBlob(ctx, b)
}

// PutBlob implements Store. An entry the shared tier already holds as it
// is is not written again.
func (t *Tiered) PutBlob(ctx context.Context, b Blob) error {
	k := "b" + key(b.Repository, b.PlainDigest)
	if old, ok, _ := t.front.Blob(ctx, b.Repository, b.PlainDigest); ok && t.synced.Contains(k) && sameBlob(old, b) {
		return nil
	}
	if err := t.front.PutBlob(ctx, b); err != nil {
		return err
	}
	t.synced.Remove(k)
	if t.useShared() && t.record("put blob", t.shared.PutBlob(ctx, b)) {
		t.synced.Add(k, struct{}{})
	}
	return nil
}

func sameBlob(a, b Blob) bool {
	return a.PlainDigest == b.PlainDigest && a.CipherDigest == b.CipherDigest && a.Size == b.Size &&
		a.Repository == b.Repository && a.Bound == b.Bound && a.Layer == b.Layer && a.Scope == b.Scope && maps.Equal(a.Annotations, b.Annotations)
}

// Origin implements Store: the LRU's, else the shared tier's. The LRU may
// know fewer origins of a digest than the shared tier (those recorded or
// looked up here), so an LRU miss within accept's scope still asks the
// shared tier, and an LRU hit is the most recent origin this replica
// knows of, not always the most recent of all: any bound origin serves a
// mount.
func (t *Tiered) Origin(ctx context.Context, scope string, plainDigest digest.Digest, accept func(repo string) bool) (Blob, bool, error) {
	if b, ok, err := t.front.Origin(ctx, scope, plainDigest, accept); ok || err != nil {
		return b, ok, err
	}
	if !t.useShared() {
		return Blob{}, false, nil
	}
	b, ok, err := t.shared.Origin(ctx, scope, plainDigest, accept)
	if !t.record("origin", err) || !ok {
		return Blob{}, false, nil
	}
	return b, true, t.front.PutBlob(ctx, b)
}

// Manifest implements Store.
func (t *Tiered) Manifest(ctx context.Context, repo string, plainDigest digest.Digest) (Manifest, bool, error) {
	if m, ok, err := t.front.Manifest(ctx, repo, plainDigest); ok || err != nil {
		return m, ok, err
	}
	if !t.useShared() {
		return Manifest{}, false, nil
	}
	m, ok, err := t.shared.Manifest(ctx, repo, plainDigest)
	if !t.record("manifest", err) || !ok {
		return Manifest{}, false, nil
	}
	t.synced.Add("m"+key(repo, plainDigest), struct{}{})
	return m, true, t.front.PutManifest(ctx, m)
}

// ManifestByUpstream implements Store.
func (t *Tiered) ManifestByUpstream(ctx context.Context, repo string, upstreamDigest digest.Digest) (Manifest, bool, error) {
	if m, ok, err := t.front.ManifestByUpstream(ctx, repo, upstreamDigest); ok || err != nil {
		return m, ok, err
	}
	if !t.useShared() {
		return Manifest{}, false, nil
	}
	m, ok, err := t.shared.ManifestByUpstream(ctx, repo, upstreamDigest)
	if !t.record("manifest by upstream", err) || !ok {
		return Manifest{}, false, nil
	}
	// Written with its entry by plaintext digest, in one pipeline: the
	// restoration that follows does not write the pair again.
	t.synced.Add("m"+key(repo, m.PlainDigest), struct{}{})
	return m, true, t.front.PutManifest(ctx, m)
}

// PutManifest implements Store. An entry the shared tier already holds as
// it is is not written again.
func (t *Tiered) PutManifest(ctx context.Context, m Manifest) error {
	k := "m" + key(m.Repository, m.PlainDigest)
	if old, ok, _ := t.front.Manifest(ctx, m.Repository, m.PlainDigest); ok && t.synced.Contains(k) && old == m {
		return nil
	}
	if err := t.front.PutManifest(ctx, m); err != nil {
		return err
	}
	t.synced.Remove(k)
	if t.useShared() && t.record("put manifest", t.shared.PutManifest(ctx, m)) {
		t.synced.Add(k, struct{}{})
	}
	return nil
}

// DeleteManifest implements Store: from both tiers; other replicas' LRUs
// keep theirs (see Tiered). A delete while the shared tier fails or is
// skipped reaches the LRU alone, so the shared tier keeps the mapping
// until its TTL: like a stale LRU entry, a hint the upstream's 404 answers.
func (t *Tiered) DeleteManifest(ctx context.Context, repo string, plainDigest digest.Digest) error {
	t.synced.Remove("m" + key(repo, plainDigest))
	if err := t.front.DeleteManifest(ctx, repo, plainDigest); err != nil {
		return err
	}
	if t.useShared() {
		t.record("delete manifest", t.shared.DeleteManifest(ctx, repo, plainDigest))
	}
	return nil
}

// SetDeleted implements Store: in both tiers. A mark the shared tier
// missed (it failed, or was skipped) is this replica's alone.
func (t *Tiered) SetDeleted(ctx context.Context, repo string, plainDigest digest.Digest, deleted bool) error {
	if err := t.front.SetDeleted(ctx, repo, plainDigest, deleted); err != nil {
		return err
	}
	if t.useShared() {
		op := "delete"
		if !deleted {
			op = "undelete"
		}
		t.record(op, t.shared.SetDeleted(ctx, repo, plainDigest, deleted))
	}
	return nil
}

// Deleted implements Store: the shared tier's answer, which every
// replica writes, so that a push on one replica clears what a delete on
// another marked; the LRU's only while the shared tier fails.
func (t *Tiered) Deleted(ctx context.Context, repo string, plainDigest digest.Digest) (bool, error) {
	if t.useShared() {
		d, err := t.shared.Deleted(ctx, repo, plainDigest)
		if t.record("deleted", err) {
			t.front.SetDeleted(ctx, repo, plainDigest, d)
			return d, nil
		}
	}
	return t.front.Deleted(ctx, repo, plainDigest)
}

// Stale implements Store: the LRU's copies go (and what it knew to be in
// the shared tier), so the next lookup reads the shared tier, where
// another replica may have written newer mappings.
func (t *Tiered) Stale(ctx context.Context, repo string, plainDigest digest.Digest) {
	t.synced.Remove("b" + key(repo, plainDigest))
	t.synced.Remove("m" + key(repo, plainDigest))
	t.front.Stale(ctx, repo, plainDigest)
}

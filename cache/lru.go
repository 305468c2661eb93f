package cache

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/opencontainers/go-digest"
)

// DefaultEntries is the default bound of each LRU table.
const DefaultEntries = 100_000

// OriginsPerDigest bounds the repositories remembered as origins of one
// plaintext digest: the most recent ones.
const OriginsPerDigest = 8

// LRU is an in-process Store bounded by entry count.
type LRU struct {
	mu         sync.Mutex // orders the read-modify-write of origins
	blobs      *lru.Cache[string, Blob]
	origins    *lru.Cache[string, []Blob] // by scope and plaintext digest
	byPlain    *lru.Cache[string, Manifest]
	byUpstream *lru.Cache[string, Manifest]
	deleted    *lru.Cache[string, struct{}]
}

// DeletedEntries bounds the deletions an LRU remembers.
const DeletedEntries = 10_000

var _ Store = (*LRU)(nil)

// NewLRU returns an LRU holding at most entries blobs and as many manifests
// (a non-positive entries means DefaultEntries).
func NewLRU(entries int) (*LRU, error) {
	if entries <= 0 {
		entries = DefaultEntries
	}
	b, err := lru.New[string, Blob](entries)
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	o, err := lru.New[string, []Blob](entries)
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	p, err := lru.New[string, Manifest](entries)
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	u, err := lru.New[string, Manifest](entries)
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	d, err := lru.New[string, struct{}](DeletedEntries)
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	return &LRU{blobs: b, origins: o, byPlain: p, byUpstream: u, deleted: d}, nil
}

func key(repo string, d digest.Digest) string { return repo + "@" + d.String() }

func originKey(scope string, d digest.Digest) string { return scope + "\x00" + d.String() }

// Blob implements Store.
func (l *LRU) Blob(_ context.Context, repo string, d digest.Digest) (Blob, bool, error) {
	b, ok := l.blobs.Get(key(repo, d))
	b.Annotations = maps.Clone(b.Annotations)
	return b, ok, nil
}

// PutBlob implements Store.
func (l *LRU) PutBlob(_ context.Context, b Blob) error {
	b.Annotations = maps.Clone(b.Annotations)
	l.blobs.Add(key(b.Repository, b.PlainDigest), b)
	if b.Bound {
		l.mu.Lock()
		prev, _ := l.origins.Peek(originKey(b.Scope, b.PlainDigest))
		next := []Blob{b}
		for _, o := range prev {
			if o.Repository != b.Repository && len(next) < OriginsPerDigest {
				next = append(next, o)
			}
		}
		l.origins.Add(originKey(b.Scope, b.PlainDigest), next)
		l.mu.Unlock()
	}
	return nil
}

// Origin implements Store: the most recently recorded of the (at most
// OriginsPerDigest) repositories that accept takes.
func (l *LRU) Origin(_ context.Context, scope string, d digest.Digest, accept func(repo string) bool) (Blob, bool, error) {
	os, _ := l.origins.Get(originKey(scope, d))
	for _, b := range os {
		if accept == nil || accept(b.Repository) {
			b.Annotations = maps.Clone(b.Annotations)
			return b, true, nil
		}
	}
	return Blob{}, false, nil
}

// Manifest implements Store.
func (l *LRU) Manifest(_ context.Context, repo string, d digest.Digest) (Manifest, bool, error) {
	m, ok := l.byPlain.Get(key(repo, d))
	return m, ok, nil
}

// ManifestByUpstream implements Store.
func (l *LRU) ManifestByUpstream(_ context.Context, repo string, d digest.Digest) (Manifest, bool, error) {
	m, ok := l.byUpstream.Get(key(repo, d))
	return m, ok, nil
}

// PutManifest implements Store.
func (l *LRU) PutManifest(_ context.Context, m Manifest) error {
	l.byPlain.Add(key(m.Repository, m.PlainDigest), m)
	l.byUpstream.Add(key(m.Repository, m.UpstreamDigest), m)
	return nil
}

// DeleteManifest implements Store.
func (l *LRU) DeleteManifest(_ context.Context, repo string, d digest.Digest) error {
	if m, ok := l.byPlain.Peek(key(repo, d)); ok {
		l.byUpstream.Remove(key(repo, m.UpstreamDigest))
	}
	l.byPlain.Remove(key(repo, d))
	return nil
}

// SetDeleted implements Store: the most recent DeletedEntries deletions
// are remembered.
func (l *LRU) SetDeleted(_ context.Context, repo string, d digest.Digest, deleted bool) error {
	if deleted {
		l.deleted.Add(key(repo, d), struct{}{})
	} else {
		l.deleted.Remove(key(repo, d))
	}
	return nil
}

// Deleted implements Store.
func (l *LRU) Deleted(_ context.Context, repo string, d digest.Digest) (bool, error) {
	return l.deleted.Contains(key(repo, d)), nil
}

// Stale implements Store: the blob mapping of repo and d goes, with repo
// from d's origins, and the manifest mapping with both its entries.
func (l *LRU) Stale(ctx context.Context, repo string, d digest.Digest) {
	b, ok := l.blobs.Peek(key(repo, d))
	l.blobs.Remove(key(repo, d))
	l.mu.Lock()
	if prev, found := l.origins.Peek(originKey(b.Scope, d)); ok && found {
		next := slices.DeleteFunc(slices.Clone(prev), func(o Blob) bool { return o.Repository == repo })
		if len(next) == 0 {
			l.origins.Remove(originKey(b.Scope, d))
		} else {
			l.origins.Add(originKey(b.Scope, d), next)
		}
	}
	l.mu.Unlock()
	l.DeleteManifest(ctx, repo, d)
}

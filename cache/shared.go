package cache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/redis/go-redis/v9"
)

// Namer computes the names of the shared tier's entries: a keyed hash
// (crypto.KeyedHash under crypto.PurposeSharedKey) of the parts, so the
// names reveal nothing of what they name and nobody without the key can
// compute them.
type Namer interface {
	Sum(parts ...string) string
}

// Sealer seals the shared tier's values (crypto.Box under
// crypto.PurposeSharedValue): Open fails for a value Seal did not make with
// the same ad.
type Sealer interface {
	Seal(plain, ad []byte) ([]byte, error)
	Open(sealed, ad []byte) ([]byte, error)
}

// Defaults of SharedOptions.
const (
	DefaultPrefix    = "shroud:"
	DefaultTTL       = 30 * 24 * time.Hour
	DefaultOpTimeout = 500 * time.Millisecond
)

// Kinds of entries: the letter after the prefix of every key.
const (
	kindBlob     = "b" // repository, plaintext digest -> Blob
	kindOrigins  = "o" // dedup scope, plaintext digest -> repositories holding a bound mapping
	kindManifest = "m" // repository, plaintext digest -> Manifest
	kindUpstream = "u" // repository, upstream digest -> Manifest
	kindLedger   = "l" // ledger name -> value
	kindDeleted  = "d" // repository, plaintext digest -> deleted through shroud
	kindTrust    = "t" // "floor" -> the trust documents' shared rollback floor
)

// SharedOptions configure a Shared. The zero value is usable.
type SharedOptions struct {
	// Prefix starts every key (zero: DefaultPrefix), so one Redis can
	// serve several deployments.
	Prefix string
	// TTL is how long an entry lives after its last write (zero:
	// DefaultTTL).
	TTL time.Duration
	// OpTimeout bounds each call, whatever the client's own timeouts
	// (zero: DefaultOpTimeout): a hung Redis costs a call this much at
	// most, then the call fails.
	OpTimeout time.Duration
	// OnForeign, if set, is called when an entry under one of shroud's
	// keys does not open, or opens to a mapping of something else than
	// the key names: a value damaged, copied under another key or written
	// by someone without the key. The call answers a miss.
	OnForeign func(op string)
}

// Shared is a Store on Redis or Valkey, the tier the replicas of one
// deployment share. It goes through redis.UniversalClient, so a single
// server, a sentinel set or a cluster all serve; it sends no command that
// names two keys, so a cluster's hash slots never matter.
//
// Redis learns nothing it could not learn from the traffic's timing: every
// key is Prefix, a kind letter and a keyed hash (Namer) of what it names
// (repository and digest); every value is sealed (Sealer) with its full
// key as associated data. A value copied under another key, changed, or
// written by someone without the key does not open and is a miss; what
// opens is checked again to name the repository and digest asked for. No
// plaintext digest, repository name or annotation (the wrapped layer keys
// among them) is readable in Redis.
//
// Every entry expires TTL after its last write. Run the Redis with
// `maxmemory-policy allkeys-lru` and a maxmemory that holds the working
// set: the entries are a cache (the upstream is the source of truth), so
// eviction only costs a rebuild. Measured with MEMORY USAGE on Redis 7.0
// (TestSharedMemoryUsage): a blob mapping with its layer key wrapped for
// shroud's identity alone takes 1,656 bytes, each further JWE recipient
// 512 more (2,168 with one, 3,192 with three), one without annotations
// 344; a bound blob's digest also has an origin list of 248 bytes (504
// with OriginsPerDigest repositories); a manifest takes two entries (by
// plaintext and by upstream digest) of 504 bytes each; a ledger entry 232.
// So a million distinct layers and a hundred thousand manifests take
// about 2 GiB, before Redis' own overhead.
//
// Give the client ContextTimeoutEnabled: true (redis.UniversalOptions),
// so that a call given up after OpTimeout also frees its connection then;
// without it go-redis keeps waiting for the reply up to its ReadTimeout,
// holding the connection, though the caller has its answer at OpTimeout.
type Shared struct {
	client    redis.UniversalClient
	names     Namer
	box       Sealer
	prefix    string
	ttl       time.Duration
	timeout   time.Duration
	onForeign func(op string)
}

var _ Store = (*Shared)(nil)

// NewShared returns a Shared over client, naming its keys with names and
// sealing its values with box.
func NewShared(client redis.UniversalClient, names Namer, box Sealer, opts SharedOptions) (*Shared, error) {
	if client == nil || names == nil || box == nil {
		return nil, errors.New("shared cache: a client, a namer and a sealer are needed")
	}
	if opts.TTL < 0 || opts.OpTimeout < 0 {
		return nil, fmt.Errorf("shared cache: negative TTL (%v) or op timeout (%v)", opts.TTL, opts.OpTimeout)
	}
	s := &Shared{client: client, names: names, box: box, prefix: opts.Prefix, ttl: opts.TTL, timeout: opts.OpTimeout, onForeign: opts.OnForeign}
	if s.prefix == "" {
		s.prefix = DefaultPrefix
	}
	if s.ttl == 0 {
		s.ttl = DefaultTTL
	}
	if s.timeout == 0 {
		s.timeout = DefaultOpTimeout
	}
	return s, nil
}

// key returns the Redis key of an entry of kind naming parts.
func (s *Shared) key(kind string, parts ...string) string {
	return s.prefix + kind + s.names.Sum(append([]string{kind}, parts...)...)
}

// call runs fn with a context that ends after OpTimeout, and returns by
// then whether or not fn has: go-redis heeds a context's deadline on the
// socket only with ContextTimeoutEnabled, which a caller's client may not
// have. A write given up on may still land later.
func (s *Shared) call(ctx context.Context, op string, fn func(ctx context.Context) error) error {
	_, err := do(ctx, s, op, func(ctx context.Context) (struct{}, error) { return struct{}{}, fn(ctx) })
	return err
}

// do is call for a function with a result.
func do[T any](ctx context.Context, s *Shared, op string, fn func(ctx context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := fn(ctx)
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return r.v, fmt.Errorf("shared cache %s: %w", op, r.err)
		}
		return r.v, nil
	case <-ctx.Done():
		var zero T
		return zero, fmt.Errorf("shared cache %s: %w", op, context.Cause(ctx))
	}
}

// getRaw reads the value under key: nil for none.
func (s *Shared) getRaw(ctx context.Context, op, key string) ([]byte, error) {
	return do(ctx, s, op, func(ctx context.Context) ([]byte, error) {
		b, err := s.client.Get(ctx, key).Bytes()
		if errors.Is(err, redis.Nil) {
			return nil, nil
		}
		return b, err
	})
}

// get reads and opens the value under key: (nil, nil) for a miss, a
// value that does not open among them.
func (s *Shared) get(ctx context.Context, op, key string) ([]byte, error) {
	sealed, err := s.getRaw(ctx, op, key)
	if err != nil || sealed == nil {
		return nil, err
	}
	plain, err := s.box.Open(sealed, []byte(key))
	if err != nil {
		s.foreign(op)
		return nil, nil
	}
	return plain, nil
}

// seal marshals v and seals it for key.
func (s *Shared) seal(key string, v any) ([]byte, error) {
	plain, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("shared cache: encode: %w", err)
	}
	sealed, err := s.box.Seal(plain, []byte(key))
	if err != nil {
		return nil, fmt.Errorf("shared cache: seal: %w", err)
	}
	return sealed, nil
}

func (s *Shared) foreign(op string) {
	if s.onForeign != nil {
		s.onForeign(op)
	}
}

// Ping checks that the Redis answers, within OpTimeout.
func (s *Shared) Ping(ctx context.Context) error {
	return s.call(ctx, "ping", func(ctx context.Context) error { return s.client.Ping(ctx).Err() })
}

// sharedBlob is a Blob as sealed into the shared tier: short names, since
// every byte is kept once per mapping; its fields are Blob's, in order, so
// each converts to the other.
type sharedBlob struct {
	PlainDigest  digest.Digest     `json:"p"`
	CipherDigest digest.Digest     `json:"c"`
	Size         int64             `json:"s"`
	Annotations  map[string]string `json:"a,omitempty"`
	Repository   string            `json:"r"`
	Bound        bool              `json:"b,omitempty"`
	Layer        bool              `json:"l,omitempty"`
	Scope        string            `json:"sc,omitempty"`
	Pending      []byte            `json:"pk,omitempty"`
	WrappedFor   []string          `json:"wf,omitempty"`
}

// Blob implements Store.
func (s *Shared) Blob(ctx context.Context, repo string, plainDigest digest.Digest) (Blob, bool, error) {
	plain, err := s.get(ctx, "blob", s.key(kindBlob, repo, plainDigest.String()))
	if err != nil || plain == nil {
		return Blob{}, false, err
	}
	var v sharedBlob
	if json.Unmarshal(plain, &v) != nil || v.Repository != repo || v.PlainDigest != plainDigest || v.CipherDigest.Validate() != nil {
		s.foreign("blob")
		return Blob{}, false, nil
	}
	return Blob(v), true, nil
}

// PutBlob implements Store. A bound b is also recorded as the most recent
// origin of its plaintext digest, by a read and a write of the digest's
// origin list: two replicas recording origins of one digest at the same
// moment may lose one of them. That is benign: an origin only saves an
// upload by a mount, and the next push of the blob records it again.
func (s *Shared) PutBlob(ctx context.Context, b Blob) error {
	key := s.key(kindBlob, b.Repository, b.PlainDigest.String())
	sealed, err := s.seal(key, sharedBlob(b))
	if err != nil {
		return err
	}
	if err := s.call(ctx, "put blob", func(ctx context.Context) error {
		return s.client.Set(ctx, key, sealed, s.ttl).Err()
	}); err != nil {
		return err
	}
	if !b.Bound {
		return nil
	}
	okey := s.key(kindOrigins, b.Scope, b.PlainDigest.String())
	prev, err := s.origins(ctx, "put origin", okey, b.PlainDigest)
	if err != nil {
		return err
	}
	next := sharedOrigins{PlainDigest: b.PlainDigest, Repositories: []string{b.Repository}}
	for _, r := range prev {
		if r != b.Repository && len(next.Repositories) < OriginsPerDigest {
			next.Repositories = append(next.Repositories, r)
		}
	}
	sealed, err = s.seal(okey, next)
	if err != nil {
		return err
	}
	return s.call(ctx, "put origin", func(ctx context.Context) error {
		return s.client.Set(ctx, okey, sealed, s.ttl).Err()
	})
}

// sharedOrigins lists the repositories that recorded a bound mapping of a
// plaintext digest, most recent first. The mappings themselves stay under
// their blob keys, so a blob's annotations are kept once.
type sharedOrigins struct {
	PlainDigest  digest.Digest `json:"p"`
	Repositories []string      `json:"r"`
}

func (s *Shared) origins(ctx context.Context, op, key string, plainDigest digest.Digest) ([]string, error) {
	plain, err := s.get(ctx, op, key)
	if err != nil || plain == nil {
		return nil, err
	}
	var v sharedOrigins
	if json.Unmarshal(plain, &v) != nil || v.PlainDigest != plainDigest || len(v.Repositories) > OriginsPerDigest {
		s.foreign(op)
		return nil, nil
	}
	return v.Repositories, nil
}

// Origin implements Store: the most recently recorded of the (at most
// OriginsPerDigest) repositories that accept takes and whose bound
// mapping is still there.
func (s *Shared) Origin(ctx context.Context, scope string, plainDigest digest.Digest, accept func(repo string) bool) (Blob, bool, error) {
	repos, err := s.origins(ctx, "origin", s.key(kindOrigins, scope, plainDigest.String()), plainDigest)
	if err != nil {
		return Blob{}, false, err
	}
	for _, r := range repos {
		if accept != nil && !accept(r) {
			continue
		}
		b, ok, err := s.Blob(ctx, r, plainDigest)
		if err != nil {
			return Blob{}, false, err
		}
		if ok && b.Bound && b.Scope == scope {
			return b, true, nil
		}
	}
	return Blob{}, false, nil
}

// sharedManifest is a Manifest as sealed into the shared tier.
type sharedManifest struct {
	Repository        string        `json:"r"`
	PlainDigest       digest.Digest `json:"p"`
	ContentType       string        `json:"t"`
	Size              int64         `json:"s"`
	UpstreamDigest    digest.Digest `json:"ud"`
	UpstreamMediaType string        `json:"ut"`
	UpstreamSize      int64         `json:"us"`
}

func (s *Shared) manifest(ctx context.Context, op, key, repo string, match func(sharedManifest) bool) (Manifest, bool, error) {
	plain, err := s.get(ctx, op, key)
	if err != nil || plain == nil {
		return Manifest{}, false, err
	}
	var v sharedManifest
	if json.Unmarshal(plain, &v) != nil || v.Repository != repo || !match(v) ||
		v.PlainDigest.Validate() != nil || v.UpstreamDigest.Validate() != nil {
		s.foreign(op)
		return Manifest{}, false, nil
	}
	return Manifest(v), true, nil
}

// Manifest implements Store.
func (s *Shared) Manifest(ctx context.Context, repo string, plainDigest digest.Digest) (Manifest, bool, error) {
	return s.manifest(ctx, "manifest", s.key(kindManifest, repo, plainDigest.String()), repo,
		func(v sharedManifest) bool { return v.PlainDigest == plainDigest })
}

// ManifestByUpstream implements Store.
func (s *Shared) ManifestByUpstream(ctx context.Context, repo string, upstreamDigest digest.Digest) (Manifest, bool, error) {
	return s.manifest(ctx, "manifest by upstream", s.key(kindUpstream, repo, upstreamDigest.String()), repo,
		func(v sharedManifest) bool { return v.UpstreamDigest == upstreamDigest })
}

// PutManifest implements Store: two entries, by plaintext and by upstream
// digest, written in one pipeline (not a transaction: each command names
// one key, so a cluster routes each to its own slot).
func (s *Shared) PutManifest(ctx context.Context, m Manifest) error {
	pkey := s.key(kindManifest, m.Repository, m.PlainDigest.String())
	ukey := s.key(kindUpstream, m.Repository, m.UpstreamDigest.String())
	psealed, err := s.seal(pkey, sharedManifest(m))
	if err != nil {
		return err
	}
	usealed, err := s.seal(ukey, sharedManifest(m))
	if err != nil {
		return err
	}
	return s.call(ctx, "put manifest", func(ctx context.Context) error {
		_, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, pkey, psealed, s.ttl)
			p.Set(ctx, ukey, usealed, s.ttl)
			return nil
		})
		return err
	})
}

// DeleteManifest implements Store: the entry by plaintext digest, and the
// one by upstream digest that it names.
func (s *Shared) DeleteManifest(ctx context.Context, repo string, plainDigest digest.Digest) error {
	pkey := s.key(kindManifest, repo, plainDigest.String())
	m, ok, err := s.Manifest(ctx, repo, plainDigest)
	if err != nil {
		return err
	}
	return s.call(ctx, "delete manifest", func(ctx context.Context) error {
		_, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
			if ok {
				p.Del(ctx, s.key(kindUpstream, repo, m.UpstreamDigest.String()))
			}
			p.Del(ctx, pkey)
			return nil
		})
		return err
	})
}

// sharedDeleted is a deletion mark as sealed into the shared tier.
type sharedDeleted struct {
	Repository  string        `json:"r"`
	PlainDigest digest.Digest `json:"p"`
}

// SetDeleted implements Store: a mark that lives TTL, as the mappings do.
func (s *Shared) SetDeleted(ctx context.Context, repo string, plainDigest digest.Digest, deleted bool) error {
	key := s.key(kindDeleted, repo, plainDigest.String())
	if !deleted {
		return s.call(ctx, "undelete", func(ctx context.Context) error { return s.client.Del(ctx, key).Err() })
	}
	sealed, err := s.seal(key, sharedDeleted{Repository: repo, PlainDigest: plainDigest})
	if err != nil {
		return err
	}
	return s.call(ctx, "delete", func(ctx context.Context) error {
		return s.client.Set(ctx, key, sealed, s.ttl).Err()
	})
}

// Deleted implements Store. A mark that does not open, or names something
// else, is no mark.
func (s *Shared) Deleted(ctx context.Context, repo string, plainDigest digest.Digest) (bool, error) {
	plain, err := s.get(ctx, "deleted", s.key(kindDeleted, repo, plainDigest.String()))
	if err != nil || plain == nil {
		return false, err
	}
	var v sharedDeleted
	if json.Unmarshal(plain, &v) != nil || v.Repository != repo || v.PlainDigest != plainDigest {
		s.foreign("deleted")
		return false, nil
	}
	return true, nil
}

// Stale implements Store: the shared tier holds no process-local copies.
func (s *Shared) Stale(context.Context, string, digest.Digest) {}

package cache

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Ledger is a register of compare-and-swap entries: what upload sessions
// use so that a sealed session state is used at most once, across
// replicas. Values are short strings the caller chooses, no secret.
type Ledger interface {
	// Get returns the value of name; ok is false when it has none.
	Get(ctx context.Context, name string) (value string, ok bool, err error)
	// Swap sets name to new if its value is old, and says whether it
	// did. An empty old means name must have no value yet; an empty new
	// deletes it. The value set expires after ttl (positive unless new is
	// empty).
	Swap(ctx context.Context, name, old, new string, ttl time.Duration) (swapped bool, err error)
}

// ErrLedgerFull is returned by a MemoryLedger's Swap that would create an
// entry when it holds as many unexpired entries as it may.
var ErrLedgerFull = errors.New("ledger full")

// MemoryLedger is an in-process Ledger, for a single replica: bounded by
// entry count, expired entries dropped. When full it refuses new entries
// (ErrLedgerFull) rather than forget a live one: forgetting would let a
// state that must be used once be used again.
type MemoryLedger struct {
	mu      sync.Mutex
	max     int
	entries map[string]*ledgerEntry
	expiry  expiryHeap
	now     func() time.Time
}

var _ Ledger = (*MemoryLedger)(nil)

// DefaultLedgerEntries is the default bound of a MemoryLedger.
const DefaultLedgerEntries = 100_000

// NewMemoryLedger returns a MemoryLedger of at most max entries (a
// non-positive max means DefaultLedgerEntries).
func NewMemoryLedger(max int) *MemoryLedger {
	if max <= 0 {
		max = DefaultLedgerEntries
	}
	return &MemoryLedger{max: max, entries: map[string]*ledgerEntry{}, now: time.Now}
}

type ledgerEntry struct {
	name    string
	value   string
	expires time.Time
	index   int // in the expiry heap
}

// expiryHeap orders entries by expiry, soonest first.
type expiryHeap []*ledgerEntry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].expires.Before(h[j].expires) }
func (h expiryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *expiryHeap) Push(x any) {
	e := x.(*ledgerEntry)
	e.index = len(*h)
	*h = append(*h, e)
}
func (h *expiryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return e
}

// expire drops the entries expired at now.
func (l *MemoryLedger) expire(now time.Time) {
	for len(l.expiry) > 0 && !l.expiry[0].expires.After(now) {
		e := heap.Pop(&l.expiry).(*ledgerEntry)
		delete(l.entries, e.name)
	}
}

// Get implements Ledger.
func (l *MemoryLedger) Get(_ context.Context, name string) (string, bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.expire(l.now())
	e, ok := l.entries[name]
	if !ok {
		return "", false, nil
	}
	return e.value, true, nil
}

// Swap implements Ledger.
func (l *MemoryLedger) Swap(_ context.Context, name, old, new string, ttl time.Duration) (bool, error) {
	if new != "" && ttl <= 0 {
		return false, fmt.Errorf("ledger swap: ttl %v is not positive", ttl)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	l.expire(now)
	e, ok := l.entries[name]
	switch {
	case old == "" && ok, old != "" && (!ok || e.value != old):
		return false, nil
	case new == "":
		if ok {
			heap.Remove(&l.expiry, e.index)
			delete(l.entries, name)
		}
		return true, nil
	case ok:
		e.value, e.expires = new, now.Add(ttl)
		heap.Fix(&l.expiry, e.index)
		return true, nil
	case len(l.entries) >= l.max:
		return false, fmt.Errorf("ledger swap: %w (%d entries)", ErrLedgerFull, l.max)
	default:
		e := &ledgerEntry{name: name, value: new, expires: now.Add(ttl)}
		heap.Push(&l.expiry, e)
		l.entries[name] = e
		return true, nil
	}
}

// RedisLedger is a Ledger in a Shared's Redis, for replicas that share it.
// A Swap is one Lua script, so atomic (and single-key, so any cluster slot
// serves it). Names are keyed hashes like the Shared's other keys; a
// value is kept as a keyed hash of (name, value), which the script
// compares, followed by the value sealed for its key, which Get opens.
// Errors are returned, never taken for a miss: a caller guarding a state
// that must be used once fails closed when the Redis is down. A Swap that
// failed by OpTimeout may still have been applied: the state is then
// spent, never used twice.
type RedisLedger struct {
	s    *Shared
	swap *redis.Script
}

var _ Ledger = (*RedisLedger)(nil)

// Ledger returns the Ledger kept in s's Redis, under s's prefix, keys and
// OpTimeout.
func (s *Shared) Ledger() *RedisLedger {
	return &RedisLedger{s: s, swap: redis.NewScript(swapScript)}
}

// swapScript is the Lua of a Swap: KEYS[1] the entry; ARGV[1] the keyed hash of the old value
// ("" for none), ARGV[2] the new stored value ("" to delete), ARGV[3] its
// ttl in milliseconds.
const swapScript = `
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == '' then
  if cur then return 0 end
elseif not cur or string.sub(cur, 1, 64) ~= ARGV[1] then
  return 0
end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
`

// valueHash is the keyed hash a stored value starts with (64 hex digits).
func (r *RedisLedger) valueHash(name, value string) string {
	return r.s.names.Sum("ledger-value", name, value)
}

// Get implements Ledger. A value that does not open, or not to what its
// hash says, is no value.
func (r *RedisLedger) Get(ctx context.Context, name string) (string, bool, error) {
	key := r.s.key(kindLedger, name)
	stored, err := r.s.getRaw(ctx, "ledger get", key)
	if err != nil || stored == nil {
		return "", false, err
	}
	if len(stored) > 64 {
		if plain, err := r.s.box.Open(stored[64:], []byte(key)); err == nil && string(stored[:64]) == r.valueHash(name, string(plain)) {
			return string(plain), true, nil
		}
	}
	r.s.foreign("ledger get")
	return "", false, nil
}

// Swap implements Ledger.
func (r *RedisLedger) Swap(ctx context.Context, name, old, new string, ttl time.Duration) (bool, error) {
	if new != "" && ttl <= 0 {
		return false, fmt.Errorf("ledger swap: ttl %v is not positive", ttl)
	}
	key := r.s.key(kindLedger, name)
	var oldHash, stored string
	if old != "" {
		oldHash = r.valueHash(name, old)
	}
	if new != "" {
		sealed, err := r.s.box.Seal([]byte(new), []byte(key))
		if err != nil {
			return false, fmt.Errorf("ledger swap: seal: %w", err)
		}
		stored = r.valueHash(name, new) + string(sealed)
	}
	ms := max(ttl.Milliseconds(), 1)
	n, err := do(ctx, r.s, "ledger swap", func(ctx context.Context) (int, error) {
		return r.swap.Run(ctx, r.s.client, []string{key}, oldHash, stored, ms).Int()
	})
	if err != nil {
		return false, err
	}
	return n == 1, nil
}

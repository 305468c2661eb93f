package cache

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shroud-oci/shroud/internal/redistest"
)

func ledgers(t *testing.T) map[string]Ledger {
	rs := redistest.Start(t)
	return map[string]Ledger{
		"memory": NewMemoryLedger(0),
		"redis":  newTestShared(t, rs.Client(), keysOf(t, testIdentity(t)), SharedOptions{}).Ledger(),
	}
}

func TestLedgerSwapSemantics(t *testing.T) {
	for name, l := range ledgers(t) {
		t.Run(name, func(t *testing.T) {
			ctx := ctxT(t)
			swap := func(old, new string, ttl time.Duration, want bool) {
				t.Helper()
				if got, err := l.Swap(ctx, "s", old, new, ttl); err != nil || got != want {
					t.Fatalf("Swap(%q -> %q) = %v %v, want %v", old, new, got, err, want)
				}
			}
			get := func(want string, wantOK bool) {
				t.Helper()
				if v, ok, err := l.Get(ctx, "s"); err != nil || ok != wantOK || v != want {
					t.Fatalf("Get = %q %v %v, want %q %v", v, ok, err, want, wantOK)
				}
			}
			get("", false)
			swap("x", "a", time.Minute, false) // compare against nothing
			swap("", "", time.Minute, true)    // delete of nothing, from nothing
			get("", false)
			swap("", "a", time.Minute, true) // create
			get("a", true)
			swap("", "b", time.Minute, false) // create-only: exists
			swap("x", "b", time.Minute, false)
			swap("a", "b", time.Minute, true)
			get("b", true)
			swap("a", "c", time.Minute, false) // the old state again: spent
			swap("b", "", 0, true)             // delete
			get("", false)
			swap("b", "", 0, false)
			if _, err := l.Swap(ctx, "s", "", "a", 0); err == nil {
				t.Fatal("Swap with no ttl succeeded")
			}
			swap("", "short", 100*time.Millisecond, true)
			get("short", true)
			time.Sleep(250 * time.Millisecond)
			get("", false)
			swap("short", "late", time.Minute, false)
			swap("", "again", time.Minute, true)
			if _, ok, _ := l.Get(ctx, "other"); ok {
				t.Fatal("another name has a value")
			}
		})
	}
}

// 16 replicas presenting the same state at once: exactly one goes on.
func TestLedgerSwapRaceHasOneWinner(t *testing.T) {
	for name, l := range ledgers(t) {
		t.Run(name, func(t *testing.T) {
			ctx := ctxT(t)
			for round, old := range []string{"", "state-1"} {
				if old != "" {
					if ok, err := l.Swap(ctx, "race", "", old, time.Minute); err != nil || !ok {
						t.Fatal(ok, err)
					}
				}
				name := fmt.Sprint("race", round)
				if old != "" {
					name = "race"
				}
				var wg sync.WaitGroup
				var mu sync.Mutex
				wins := 0
				for i := range 16 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						ok, err := l.Swap(ctx, name, old, fmt.Sprint("state-2-", i), time.Minute)
						if err != nil {
							t.Error(err)
						}
						if ok {
							mu.Lock()
							wins++
							mu.Unlock()
						}
					}()
				}
				wg.Wait()
				if wins != 1 {
					t.Fatalf("%d of 16 racing Swaps from %q won, want exactly 1", wins, old)
				}
			}
		})
	}
}

// A full MemoryLedger refuses new entries rather than forget live ones;
// expired entries make room.
func TestMemoryLedgerBound(t *testing.T) {
	ctx := ctxT(t)
	l := NewMemoryLedger(2)
	now := time.Now()
	l.now = func() time.Time { return now }
	l.Swap(ctx, "a", "", "1", time.Minute)
	l.Swap(ctx, "b", "", "1", time.Hour)
	if _, err := l.Swap(ctx, "c", "", "1", time.Minute); !errors.Is(err, ErrLedgerFull) {
		t.Fatalf("Swap into a full ledger = %v, want ErrLedgerFull", err)
	}
	if ok, err := l.Swap(ctx, "a", "1", "2", time.Minute); err != nil || !ok {
		t.Fatalf("Swap of a live entry in a full ledger = %v %v", ok, err)
	}
	now = now.Add(2 * time.Minute)
	if ok, err := l.Swap(ctx, "c", "", "1", time.Minute); err != nil || !ok {
		t.Fatalf("Swap once an entry expired = %v %v", ok, err)
	}
	if v, ok, _ := l.Get(ctx, "b"); !ok || v != "1" {
		t.Fatal("the live entry was dropped")
	}
}

// A ledger value in Redis is not readable, and one not written by shroud
// is no value and matches no compare.
func TestRedisLedgerForeignValues(t *testing.T) {
	rs := redistest.Start(t)
	c := rs.Client()
	s := newTestShared(t, c, keysOf(t, testIdentity(t)), SharedOptions{})
	l := s.Ledger()
	ctx := ctxT(t)
	if ok, err := l.Swap(ctx, "sess", "", "offset-42", time.Minute); err != nil || !ok {
		t.Fatal(ok, err)
	}
	key := s.key(kindLedger, "sess")
	raw := c.Get(ctx, key).Val()
	if strings.Contains(raw, "offset-42") || strings.Contains(key, "sess") {
		t.Fatalf("ledger entry %q = %q shows its name or value", key, raw)
	}
	// Copied from another name: no value there, no compare matches.
	l.Swap(ctx, "other", "", "offset-42", time.Minute)
	c.Set(ctx, key, c.Get(ctx, s.key(kindLedger, "other")).Val(), time.Minute)
	if _, ok, err := l.Get(ctx, "sess"); ok || err != nil {
		t.Fatalf("Get of a value copied from another name = %v %v, want none", ok, err)
	}
	if ok, err := l.Swap(ctx, "sess", "offset-42", "offset-43", time.Minute); ok || err != nil {
		t.Fatalf("Swap against a copied value = %v %v, want no swap", ok, err)
	}
	c.Set(ctx, key, "garbage", time.Minute)
	if _, ok, err := l.Get(ctx, "sess"); ok || err != nil {
		t.Fatalf("Get of garbage = %v %v", ok, err)
	}
}

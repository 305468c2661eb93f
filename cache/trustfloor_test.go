package cache

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"

	"github.com/shroud-oci/shroud/internal/redistest"
)

// Replicas raising the floor at once, each a read-modify-write of the
// one record: no raise is lost (the record ends at the highest), the
// value is sealed (Redis holds no plaintext of it), and a record damaged
// in Redis reads as none and is replaced by the next update.
func TestTrustFloorConcurrentRaisesAndDamage(t *testing.T) {
	rs := redistest.Start(t)
	id := testIdentity(t)
	c := rs.Client()
	ctx := ctxT(t)
	var wg sync.WaitGroup
	for r := range 4 {
		s := newTestShared(t, rs.Client(), keysOf(t, id), SharedOptions{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				v := r*25 + i
				err := s.UpdateFloor(ctx, func(cur []byte) ([]byte, error) {
					n, _ := strconv.Atoi(string(cur))
					return []byte(strconv.Itoa(max(n, v))), nil
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	s := newTestShared(t, c, keysOf(t, id), SharedOptions{})
	got, err := s.LoadFloor(ctx)
	if err != nil || string(got) != "99" {
		t.Fatalf("LoadFloor after 100 raises from 4 replicas = %q %v, want 99", got, err)
	}
	keys := c.Keys(ctx, DefaultPrefix+kindTrust+"*").Val()
	if len(keys) != 1 {
		t.Fatalf("trust floor keys %v", keys)
	}
	raw := c.Get(ctx, keys[0]).Val()
	if bytes.Contains([]byte(raw), []byte("99")) {
		t.Error("Redis holds the floor in the clear")
	}
	if ttl := c.TTL(ctx, keys[0]).Val(); ttl >= 0 {
		t.Errorf("the floor expires (TTL %v): it must outlive every mapping", ttl)
	}
	c.Set(ctx, keys[0], "damaged", 0)
	if got, err := s.LoadFloor(context.Background()); err != nil || got != nil {
		t.Fatalf("a damaged record = %q %v, want none", got, err)
	}
	if err := s.UpdateFloor(ctx, func(cur []byte) ([]byte, error) { return []byte(fmt.Sprint(cur == nil)), nil }); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.LoadFloor(ctx); string(got) != "true" {
		t.Fatalf("after the update over a damaged record: %q", got)
	}
}

package keyprovider

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestClientSlots: a client gets max slots, one more waits and is
// refused, another client is not affected, and a client with nothing in
// flight leaves nothing behind in the map.
func TestClientSlots(t *testing.T) {
	cs := newClientSlots(2, 10*time.Millisecond)
	ctx := context.Background()
	var releases []func()
	for range 2 {
		r, err := cs.acquire(ctx, "a")
		if err != nil {
			t.Fatal(err)
		}
		releases = append(releases, r)
	}
	if _, err := cs.acquire(ctx, "a"); !errors.Is(err, errBusy) {
		t.Fatalf("third slot of a: %v, want errBusy", err)
	}
	rb, err := cs.acquire(ctx, "b")
	if err != nil {
		t.Fatalf("b while a is full: %v", err)
	}
	rb()
	releases[0]()
	r, err := cs.acquire(ctx, "a")
	if err != nil {
		t.Fatalf("a after a release: %v", err)
	}
	r()
	releases[1]()
	if len(cs.m) != 0 {
		t.Fatalf("%d clients left in the map", len(cs.m))
	}
}

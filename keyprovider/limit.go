package keyprovider

import (
	"context"
	"errors"
	"sync"
	"time"
)

// DefaultMaxPerClient is how many requests one client may have in flight
// when Options.MaxPerClient is 0: a node unwraps a layer key per layer
// it pulls, a few at a time.
const DefaultMaxPerClient = 8

// clientWait is how long a request past its client's bound waits for a
// slot before it is refused.
const clientWait = time.Second

var errBusy = errors.New("too many requests in flight for this client")

// clientSlots bounds the requests each client (callerID.key) has in
// flight. A client's entry lives while it has requests in flight or
// waiting, so the map holds no more clients than there are requests.
type clientSlots struct {
	max  int
	wait time.Duration
	mu   sync.Mutex
	m    map[string]*slot
}

type slot struct {
	sem   chan struct{}
	users int // in flight and waiting
}

func newClientSlots(max int, wait time.Duration) *clientSlots {
	return &clientSlots{max: max, wait: wait, m: map[string]*slot{}}
}

// acquire takes one of key's slots, waiting up to cs.wait; errBusy when
// none frees in time. release gives it back.
func (cs *clientSlots) acquire(ctx context.Context, key string) (release func(), err error) {
	cs.mu.Lock()
	s := cs.m[key]
	if s == nil {
		s = &slot{sem: make(chan struct{}, cs.max)}
		cs.m[key] = s
	}
	s.users++
	cs.mu.Unlock()
	select {
	case s.sem <- struct{}{}:
		return func() { <-s.sem; cs.leave(key, s) }, nil
	default:
	}
	t := time.NewTimer(cs.wait)
	defer t.Stop()
	select {
	case s.sem <- struct{}{}:
		return func() { <-s.sem; cs.leave(key, s) }, nil
	case <-t.C:
		err = errBusy
	case <-ctx.Done():
		err = ctx.Err()
	}
	cs.leave(key, s)
	return nil, err
}

func (cs *clientSlots) leave(key string, s *slot) {
	cs.mu.Lock()
	if s.users--; s.users == 0 {
		delete(cs.m, key)
	}
	cs.mu.Unlock()
}

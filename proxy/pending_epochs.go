package proxy

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/shroud-oci/shroud/cache"
	"github.com/shroud-oci/shroud/crypto"
)

// pendingEpochs keeps the random secret of each time window (upload-ttl
// long) that encrypt-only pending keys are sealed under
// (crypto.PendingKeys): in the ledger, which replicas share when there is a
// shared tier, sealed with the upload-state key, with a TTL of two windows
// and then gone. A key sealed in a window opens until its expiry, within
// the next window; after that no copy of the data dir or the cache opens
// it. Without a shared tier each process keeps its own (a restart loses
// them: an upload whose manifest comes after it is pushed again).
type pendingEpochs struct {
	ledger cache.Ledger
	box    *crypto.Box
	window time.Duration
	now    func() time.Time

	mu   sync.Mutex
	seen map[int64][]byte // the secrets read or made, by epoch
}

func newPendingEpochs(ledger cache.Ledger, box *crypto.Box, window time.Duration, now func() time.Time) *pendingEpochs {
	if window <= 0 {
		window = time.Hour
	}
	return &pendingEpochs{ledger: ledger, box: box, window: window, now: now, seen: map[int64][]byte{}}
}

// epoch numbers t's window (in nanoseconds: a window under a second is
// one too; for whole seconds the same numbers as t.Unix()/seconds).
func (p *pendingEpochs) epoch(t time.Time) int64 { return t.UnixNano() / int64(p.window) }

func epochName(n int64) string { return "pending-epoch/" + strconv.FormatInt(n, 10) }

func epochAD(n int64) []byte {
	return []byte("shroud pending epoch secret\x00" + strconv.FormatInt(n, 10))
}

// current returns the epoch of now and its secret, made if it has none.
func (p *pendingEpochs) current(ctx context.Context) (int64, []byte, error) {
	n := p.epoch(p.now())
	if s, err := p.secret(ctx, n); err != nil || s != nil {
		return n, s, err
	}
	fresh := make([]byte, 32)
	if _, err := rand.Read(fresh); err != nil {
		return 0, nil, err
	}
	sealed, err := p.box.Seal(fresh, epochAD(n))
	if err != nil {
		return 0, nil, err
	}
	ok, err := p.ledger.Swap(ctx, epochName(n), "", base64.StdEncoding.EncodeToString(sealed), 2*p.window+time.Minute)
	if err != nil {
		return 0, nil, fmt.Errorf("pending epoch secret: %w", err)
	}
	if !ok { // another replica made it first
		s, err := p.secret(ctx, n)
		if err == nil && s == nil {
			err = fmt.Errorf("pending epoch secret %d: made elsewhere and gone", n)
		}
		return n, s, err
	}
	p.remember(n, fresh)
	return n, fresh, nil
}

// secret returns epoch n's secret, nil when it is gone (or n is not the
// current window or the one before).
func (p *pendingEpochs) secret(ctx context.Context, n int64) ([]byte, error) {
	cur := p.epoch(p.now())
	if n > cur || n < cur-1 {
		return nil, nil
	}
	p.mu.Lock()
	s, ok := p.seen[n]
	p.mu.Unlock()
	if ok {
		return s, nil
	}
	v, ok, err := p.ledger.Get(ctx, epochName(n))
	if err != nil || !ok {
		return nil, err
	}
	b, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		return nil, fmt.Errorf("pending epoch secret %d: %w", n, err)
	}
	if s, err = p.box.Open(b, epochAD(n)); err != nil {
		return nil, fmt.Errorf("pending epoch secret %d: %w", n, err)
	}
	p.remember(n, s)
	return s, nil
}

// remember keeps s as epoch n's, and forgets the epochs past.
func (p *pendingEpochs) remember(n int64, s []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seen[n] = s
	for e := range p.seen {
		if e < n-1 {
			clear(p.seen[e])
			delete(p.seen, e)
		}
	}
}

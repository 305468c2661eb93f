package proxy

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/metric/noop"

	"github.com/shroud-oci/shroud/cache"
	"github.com/shroud-oci/shroud/crypto"
)

func testSessions(t *testing.T, shared cache.Ledger) *sessions {
	t.Helper()
	box, err := crypto.NewBox(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return newSessions(box, cache.NewMemoryLedger(100), shared, time.Hour, noop.Int64UpDownCounter{}, nil)
}

func testUpload(t *testing.T) *upload {
	t.Helper()
	key, _ := crypto.NewLayerKey()
	enc, err := crypto.NewEncrypter(key)
	if err != nil {
		t.Fatal(err)
	}
	return &upload{id: newID(16), repo: "r", owner: "alice", location: "http://upstream/v2/r/blobs/uploads/x", enc: enc}
}

func noCheck(t *testing.T) func(context.Context) (int64, error) {
	return func(context.Context) (int64, error) {
		t.Helper()
		t.Fatal("the upstream was asked for the offset of a session the ledger knows")
		return 0, nil
	}
}

// A session's state is taken once per step: after a chunk moved it on,
// the state from before is stale (416), and while a request writes to it
// a second one is refused (409), never a fork of the key stream.
func TestUploadStateTakenOncePerStep(t *testing.T) {
	ctx := context.Background()
	s := testSessions(t, nil)
	u := testUpload(t)
	if err := s.open(ctx, u); err != nil {
		t.Fatal(err)
	}
	first := u.token
	a, err := s.unseal(u.id, "r", first, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.claim(ctx, a, false, noCheck(t)); err != nil {
		t.Fatal(err)
	}
	b, _ := s.unseal(u.id, "r", first, "alice")
	if err := s.claim(ctx, b, false, noCheck(t)); statusOf(err) != http.StatusConflict {
		t.Fatalf("a second request on a busy session: %v", err)
	}
	a.enc.XOR(make([]byte, 10))
	if err := s.advance(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := s.claim(ctx, b, false, noCheck(t)); statusOf(err) != http.StatusRequestedRangeNotSatisfiable {
		t.Fatalf("the state from before a later chunk was taken: %v", err)
	}
	c, err := s.unseal(u.id, "r", a.token, "alice")
	if err != nil || c.offset() != 10 || c.step != 1 {
		t.Fatalf("the next state: %+v %v", c, err)
	}
	if err := s.claim(ctx, c, false, noCheck(t)); err != nil {
		t.Fatal(err)
	}
	s.end(ctx, c, "done")
	d, _ := s.unseal(u.id, "r", a.token, "alice")
	if err := s.claim(ctx, d, false, noCheck(t)); statusOf(err) != http.StatusNotFound {
		t.Fatalf("a finished session was taken again: %v", err)
	}
}

// A state is refused, as if the session did not exist, when it was
// changed, moved to another session id or repository, expired, or is
// presented by another client.
func TestUploadStateForgedMovedExpiredOrForeign(t *testing.T) {
	ctx := context.Background()
	s := testSessions(t, nil)
	now := time.Unix(1_000_000, 0)
	s.now = func() time.Time { return now }
	u := testUpload(t)
	if err := s.open(ctx, u); err != nil {
		t.Fatal(err)
	}
	raw, _ := base64.RawURLEncoding.DecodeString(u.token)
	raw[len(raw)/2] ^= 1
	cases := map[string]func() (*upload, error){
		"changed": func() (*upload, error) {
			return s.unseal(u.id, "r", base64.RawURLEncoding.EncodeToString(raw), "alice")
		},
		"other id":         func() (*upload, error) { return s.unseal(newID(16), "r", u.token, "alice") },
		"other repository": func() (*upload, error) { return s.unseal(u.id, "other", u.token, "alice") },
		"other client":     func() (*upload, error) { return s.unseal(u.id, "r", u.token, "mallory") },
		"empty":            func() (*upload, error) { return s.unseal(u.id, "r", "", "alice") },
		"not base64":       func() (*upload, error) { return s.unseal(u.id, "r", "%%%", "alice") },
	}
	for name, f := range cases {
		if _, err := f(); statusOf(err) != http.StatusNotFound {
			t.Errorf("%s state: %v", name, err)
		}
	}
	now = now.Add(time.Hour + time.Second)
	if _, err := s.unseal(u.id, "r", u.token, "alice"); statusOf(err) != http.StatusNotFound {
		t.Errorf("a state older than the TTL: %v", err)
	}
}

// A replica whose ledger does not know a session (another replica opened
// it, no shared tier) takes no request with a body for it: nothing vouches
// that no other replica writes at that offset now. A request without one
// (the final PUT) goes on only if the upstream holds the state's offset.
func TestUploadStateUnknownToLedgerCheckedUpstream(t *testing.T) {
	ctx := context.Background()
	opener, other := testSessions(t, nil), testSessions(t, nil)
	u := testUpload(t)
	if err := opener.open(ctx, u); err != nil {
		t.Fatal(err)
	}
	a, _ := opener.unseal(u.id, "r", u.token, "alice")
	at := func(n int64) func(context.Context) (int64, error) {
		return func(context.Context) (int64, error) { return n, nil }
	}
	if err := opener.claim(ctx, a, true, at(0)); err != nil {
		t.Fatal(err)
	}
	a.enc.XOR(make([]byte, 100))
	opener.advance(ctx, a)

	body, _ := other.unseal(u.id, "r", a.token, "alice")
	if err := other.claim(ctx, body, true, at(100)); statusOf(err) != http.StatusNotFound {
		t.Fatalf("a chunk on a session this replica's ledger does not know: %v", err)
	}
	stale, _ := other.unseal(u.id, "r", u.token, "alice")
	if err := other.claim(ctx, stale, false, at(100)); statusOf(err) != http.StatusRequestedRangeNotSatisfiable {
		t.Fatalf("a state at 0 when the upstream holds 100 bytes: %v", err)
	}
	next, _ := other.unseal(u.id, "r", a.token, "alice")
	if err := other.claim(ctx, next, false, at(100)); err != nil {
		t.Fatalf("the final PUT of the current state on another replica: %v", err)
	}
	if err := other.claim(ctx, next, false, noCheck(t)); statusOf(err) != http.StatusConflict {
		t.Fatalf("once taken there, the same state again: %v", err)
	}
	if err := other.claim(ctx, stale, false, func(context.Context) (int64, error) { return -1, errors.New("down") }); err == nil {
		t.Fatalf("a state that could not be checked was taken")
	}
}

// Attack: whoever can write to the shared tier rolls a session's record
// back to an earlier step and replays that step's state. The ledger takes
// it, but the upstream holds more than the state says: the chunk is
// refused and the session closed before a byte is encrypted.
func TestUploadStateSharedLedgerRolledBack(t *testing.T) {
	ctx := context.Background()
	shared := cache.NewMemoryLedger(100)
	s := testSessions(t, shared)
	u := testUpload(t)
	if err := s.open(ctx, u); err != nil {
		t.Fatal(err)
	}
	old, _, _ := shared.Get(ctx, ledgerName(u.id))
	x, _ := s.unseal(u.id, "r", u.token, "alice")
	if err := s.claim(ctx, x, true, func(context.Context) (int64, error) { return 0, nil }); err != nil {
		t.Fatal(err)
	}
	x.enc.XOR(make([]byte, 50))
	s.advance(ctx, x)
	cur, _, _ := shared.Get(ctx, ledgerName(u.id))
	if ok, _ := shared.Swap(ctx, ledgerName(u.id), cur, old, time.Hour); !ok {
		t.Fatal("rollback")
	}
	replay, _ := s.unseal(u.id, "r", u.token, "alice")
	if err := s.claim(ctx, replay, true, func(context.Context) (int64, error) { return 50, nil }); statusOf(err) != http.StatusRequestedRangeNotSatisfiable {
		t.Fatalf("a replay after a rollback: %v", err)
	}
	if v, _, _ := shared.Get(ctx, ledgerName(u.id)); !strings.HasPrefix(v, "failed:") {
		t.Fatalf("the session is %q after the replay, want failed", v)
	}
}

// A session recorded in the shared ledger is never taken from this
// process's ledger while the shared one fails: 503, retry.
func TestUploadStateSharedSessionWaitsForSharedLedger(t *testing.T) {
	ctx := context.Background()
	fl := &flakyLedger{Ledger: cache.NewMemoryLedger(100)}
	s := testSessions(t, fl)
	u := testUpload(t)
	if err := s.open(ctx, u); err != nil {
		t.Fatal(err)
	}
	fl.down = true
	x, _ := s.unseal(u.id, "r", u.token, "alice")
	if err := s.claim(ctx, x, true, func(context.Context) (int64, error) { return 0, nil }); statusOf(err) != http.StatusServiceUnavailable {
		t.Fatalf("a shared session while the shared ledger is down: %v", err)
	}
	fl.down = false
	if err := s.claim(ctx, x, true, func(context.Context) (int64, error) { return 0, nil }); err != nil {
		t.Fatalf("once it is back: %v", err)
	}
}

type flakyLedger struct {
	cache.Ledger
	down bool
}

func (f *flakyLedger) Get(ctx context.Context, name string) (string, bool, error) {
	if f.down {
		return "", false, errors.New("down")
	}
	return f.Ledger.Get(ctx, name)
}

func (f *flakyLedger) Swap(ctx context.Context, name, old, new string, ttl time.Duration) (bool, error) {
	if f.down {
		return false, errors.New("down")
	}
	return f.Ledger.Swap(ctx, name, old, new, ttl)
}

// With a shared ledger, a state taken on one replica is stale on every
// other, whatever the upstream says of its offset: a lying upstream
// cannot make shroud encrypt two chunks under one key stream.
func TestUploadStateSharedLedgerBeatsLyingUpstream(t *testing.T) {
	ctx := context.Background()
	shared := cache.NewMemoryLedger(100)
	a, b := testSessions(t, shared), testSessions(t, shared)
	u := testUpload(t)
	if err := a.open(ctx, u); err != nil {
		t.Fatal(err)
	}
	x, _ := a.unseal(u.id, "r", u.token, "alice")
	if err := a.claim(ctx, x, false, noCheck(t)); err != nil {
		t.Fatal(err)
	}
	x.enc.XOR(make([]byte, 5))
	a.advance(ctx, x)
	replay, _ := b.unseal(u.id, "r", u.token, "alice")
	lie := func(context.Context) (int64, error) { return 0, nil }
	if err := b.claim(ctx, replay, false, lie); statusOf(err) != http.StatusRequestedRangeNotSatisfiable {
		t.Fatalf("a replayed state on another replica: %v", err)
	}
	cur, _ := b.unseal(u.id, "r", x.token, "alice")
	if err := b.claim(ctx, cur, false, noCheck(t)); err != nil {
		t.Fatalf("the current state on another replica: %v", err)
	}
}

// A shared ledger that fails is counted and the session goes on with
// this process's ledger and the upstream's offset.
func TestUploadStateSharedLedgerDown(t *testing.T) {
	ctx := context.Background()
	var failures int
	box, _ := crypto.NewBox(bytes.Repeat([]byte{7}, 32))
	s := newSessions(box, cache.NewMemoryLedger(100), downLedger{}, time.Hour, noop.Int64UpDownCounter{},
		func(context.Context, error) { failures++ })
	u := testUpload(t)
	if err := s.open(ctx, u); err != nil {
		t.Fatal(err)
	}
	x, _ := s.unseal(u.id, "r", u.token, "alice")
	if err := s.claim(ctx, x, false, noCheck(t)); err != nil {
		t.Fatal(err)
	}
	if err := s.advance(ctx, x); err != nil {
		t.Fatal(err)
	}
	if failures == 0 {
		t.Fatalf("the failing shared ledger was not reported")
	}
}

type downLedger struct{}

func (downLedger) Get(context.Context, string) (string, bool, error) {
	return "", false, errors.New("connection refused")
}
func (downLedger) Swap(context.Context, string, string, string, time.Duration) (bool, error) {
	return false, errors.New("connection refused")
}

// FuzzUnsealUploadState: whatever a client puts in _state, unseal refuses
// it as an unknown session or opens a state shroud sealed, never panics.
func FuzzUnsealUploadState(f *testing.F) {
	s := testSessions(&testing.T{}, nil)
	u := testUpload(&testing.T{})
	if err := s.open(context.Background(), u); err != nil {
		f.Fatal(err)
	}
	f.Add(u.id, u.token)
	f.Add(u.id, u.token[:len(u.token)/2])
	f.Add("00", "")
	f.Add(u.id, "AAAA")
	f.Fuzz(func(t *testing.T, id, token string) {
		got, err := s.unseal(id, "r", token, "alice")
		if err != nil {
			if statusOf(err) != http.StatusNotFound {
				t.Fatalf("a refused state answered %v, want 404", err)
			}
			return
		}
		// Only a state sealed for this session id opens (the seeds are
		// made anew in each fuzzing process, so no one token is "the"
		// valid one here).
		if got.id != id || got.repo != "r" || got.owner != "alice" {
			t.Fatalf("a state for session %q, %q, %q opened as %q", got.id, got.repo, got.owner, id)
		}
	})
}

package proxy

import (
	"context"
	"io"
	"sync"
	"time"

	"go.opentelemetry.io/otel/metric"

	"github.com/shroud-oci/shroud/crypto"
)

// upload is one client upload session. Its state (upstream location,
// cipher and hash state) is all a later request needs, so a session could
// be sealed into the Location URL for stateless replicas.
type upload struct {
	mu    sync.Mutex // held by the one request working on the session
	id    string
	repo  string
	ns    string // the backend (mirror origin) the session was opened on
	owner string // backend.principal of the client that opened it
	// accepted is the backend.auth (the credentials) the upstream last
	// accepted for this session: other credentials of the same principal
	// (a refreshed token) are checked upstream before they may touch it.
	accepted string
	location string // the upstream session's current location
	enc      *crypto.Encrypter
	failed   error // set when the session can no longer complete
	// busy counts the requests holding the session (guarded by
	// sessions.mu); a busy session does not expire, an idle one expires
	// a TTL after its last request ended.
	busy    int
	expires time.Time
}

// offset is the number of bytes the session holds.
func (u *upload) offset() int64 { return u.enc.Size() }

// sessions holds upload sessions in memory, keyed by an unguessable id.
type sessions struct {
	mu    sync.Mutex
	m     map[string]*upload
	ttl   time.Duration
	now   func() time.Time
	gauge metric.Int64UpDownCounter // sessions open
}

func newSessions(ttl time.Duration, gauge metric.Int64UpDownCounter) *sessions {
	if ttl <= 0 {
		ttl = time.Hour
	}
	return &sessions{m: map[string]*upload{}, ttl: ttl, now: time.Now, gauge: gauge}
}

func (s *sessions) add(u *upload) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweepLocked()
	u.expires = s.now().Add(s.ttl)
	s.m[u.id] = u
	s.gauge.Add(context.Background(), 1)
}

// get returns the session id of repo, or nil, for a request to work on;
// the request calls done when it ends.
func (s *sessions) get(id, repo string) *upload {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.m[id]
	if u == nil || u.repo != repo || (u.busy == 0 && s.now().After(u.expires)) {
		return nil
	}
	u.busy++
	return u
}

// done ends a request's hold on a session got from get.
func (s *sessions) done(u *upload) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u.busy--
	u.expires = s.now().Add(s.ttl)
}

func (s *sessions) remove(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropLocked(id)
}

func (s *sessions) dropLocked(id string) {
	if _, ok := s.m[id]; ok {
		delete(s.m, id)
		s.gauge.Add(context.Background(), -1)
	}
}

// sweepLocked drops expired sessions; one a request still works on (a
// PATCH streaming for longer than the TTL) is not expired. The upstream
// sessions of those dropped expire on the upstream's own schedule: shroud
// does not keep the client's credentials to cancel them.
func (s *sessions) sweepLocked() {
	now := s.now()
	for id, u := range s.m {
		if u.busy == 0 && now.After(u.expires) {
			s.dropLocked(id)
		}
	}
}

// gate passes reads through until closed; after close a read fails. It
// keeps a reader (and the Encrypter behind it) from being touched by an
// HTTP transport that still holds it after the request returned.
type gate struct {
	mu     sync.Mutex
	r      io.Reader
	closed bool
}

func (g *gate) Read(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return 0, io.ErrClosedPipe
	}
	return g.r.Read(p)
}

// WriteTo lets io.Copy in the HTTP transport use the encrypting reader's
// chunked, two-core WriteTo.
func (g *gate) WriteTo(w io.Writer) (int64, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return 0, io.ErrClosedPipe
	}
	if wt, ok := g.r.(io.WriterTo); ok {
		return wt.WriteTo(w)
	}
	return io.Copy(w, struct{ io.Reader }{g.r})
}

func (g *gate) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}

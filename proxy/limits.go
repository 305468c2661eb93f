package proxy

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"time"
)

// What clients may hold of shroud, and for how long (DESIGN.md §10:
// resource use is bounded).
//
//   - A blob stream (a blob GET, an upload request with a body) takes one
//     of MaxStreams slots for as long as it runs; a stream beyond them is
//     answered 429 TOOMANYREQUESTS with a Retry-After at once, never
//     queued.
//   - Every response and request body is cut once it makes no progress for
//     StallTimeout: the deadline of each write (of at most stallPiece
//     bytes) and of each read is renewed as it starts. Nothing bounds a
//     stream's length: a multi-GiB pull that keeps moving runs as long as
//     it needs, where the server's WriteTimeout or ReadTimeout would cut
//     it.
//   - A stalled pull holds one decryption chunk (crypto's decChunkSize),
//     not the buffers it used while it moved.

// Defaults of the Options that bound streams.
const (
	defaultStallTimeout = 2 * time.Minute
	defaultMaxStreams   = 256
)

// retryAfter is the wait a client refused a stream is told to take: a slot
// is freed when some stream ends.
const retryAfter = 5 * time.Second

// stallPiece is the most a stream writes under one deadline: a response
// is cut when less than this moves within the stall timeout (512 KiB in
// the default 2 minutes: under 4.3 KiB/s). It is one decryption chunk,
// so that a pull's chunk goes out in one write: measured on loopback, a
// sender's CPU per GiB is ~15 % lower in 512 KiB writes than in 64 KiB
// ones (BENCHMARKS.md).
const stallPiece = 512 << 10

// errStalled is a stream that made no progress within the stall timeout.
var errStalled = errors.New("no progress within the stall timeout")

// Paths of blob streams: a blob (GET) and an upload (a body).
var (
	blobPath   = regexp.MustCompile(`^/v2/` + namePattern + `/blobs/` + digestPattern + `$`)
	uploadPath = regexp.MustCompile(`^/v2/` + namePattern + `/blobs/uploads/`)
)

// limits bounds the streams of a Handler.
type limits struct {
	slots chan struct{} // one token per stream running; nil: no bound
	stall time.Duration // zero: no stall timeout
}

func newLimits(maxStreams int, stall time.Duration) *limits {
	l := &limits{stall: stall}
	if maxStreams == 0 {
		maxStreams = defaultMaxStreams
	}
	if maxStreams > 0 {
		l.slots = make(chan struct{}, maxStreams)
	}
	switch {
	case stall == 0:
		l.stall = defaultStallTimeout
	case stall < 0:
		l.stall = 0
	}
	return l
}

// isStream says whether r streams a blob: to the client (a blob GET) or
// from it (an upload request with a body).
func isStream(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet:
		return blobPath.MatchString(r.URL.Path)
	case http.MethodPatch, http.MethodPut, http.MethodPost:
		return r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody && uploadPath.MatchString(r.URL.Path)
	}
	return false
}

// serve runs next for r within the limits.
func (l *limits) serve(w http.ResponseWriter, r *http.Request, next http.Handler) {
	rc := http.NewResponseController(w)
	// An earlier response on this connection may have left its write
	// deadline behind (the server resets only the read deadline).
	rc.SetWriteDeadline(time.Time{})
	if l.slots != nil && isStream(r) {
		select {
		case l.slots <- struct{}{}:
			defer func() { <-l.slots }()
		default:
			e := apiErr(http.StatusTooManyRequests, codeTooManyRequests, "shroud is serving %d blob streams, as many as it serves at once; retry later", cap(l.slots))
			e.header = http.Header{"Retry-After": {strconv.Itoa(int(retryAfter / time.Second))}}
			writeAPIError(w, r, e)
			return
		}
	}
	if l.stall <= 0 {
		next.ServeHTTP(w, r)
		return
	}
	var body *stallReader
	if r.Body != nil && r.Body != http.NoBody {
		body = &stallReader{ReadCloser: r.Body, rc: rc, stall: l.stall}
		r.Body = body
	}
	sw := &stallWriter{ResponseWriter: w, rc: rc, stall: l.stall}
	defer func() {
		var cut string
		if body != nil && body.finish() {
			cut = "request body"
		}
		if sw.finish() {
			cut = "response"
		}
		if cut != "" {
			logger(r.Context()).Warn("stream cut: the client made no progress", "stalled", cut, "stall_timeout", l.stall)
		}
	}()
	next.ServeHTTP(sw, r)
}

// stalledBody says whether body is a request body cut for making no
// progress.
func stalledBody(body io.Reader) bool {
	s, ok := body.(*stallReader)
	if !ok {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stalled
}

// timedOut says whether err came once deadline had passed: whatever the
// protocol makes of it (HTTP/1 an i/o timeout, HTTP/2 a reset stream).
func timedOut(err error, deadline time.Time) bool {
	return err != nil && !deadline.IsZero() && !time.Now().Before(deadline)
}

// stallWriter is a response that fails once a write makes no progress for
// stall: each piece of at most stallPiece bytes gets a deadline of its own.
type stallWriter struct {
	http.ResponseWriter
	rc       *http.ResponseController
	stall    time.Duration
	deadline time.Time
	off      bool // the connection has no deadlines
	stalled  bool
}

func (s *stallWriter) Write(p []byte) (int, error) {
	var n int
	for len(p) > 0 {
		piece := p[:min(len(p), stallPiece)]
		s.renew()
		m, err := s.ResponseWriter.Write(piece)
		n += m
		if err != nil {
			if timedOut(err, s.deadline) {
				s.stalled = true
				err = fmt.Errorf("response: %w: %w", errStalled, err)
			}
			return n, err
		}
		p = p[m:]
	}
	return n, nil
}

func (s *stallWriter) renew() {
	if s.off {
		return
	}
	s.deadline = time.Now().Add(s.stall)
	if err := s.rc.SetWriteDeadline(s.deadline); errors.Is(err, http.ErrNotSupported) {
		s.off, s.deadline = true, time.Time{}
	}
}

// finish says whether the response was cut. What the server still writes
// after the handler (the last buffered bytes, in a final flush even when
// the handler aborted) gets the stall timeout too, or none if the client
// already stalled. The deadline is left in place: serve clears it when
// the connection's next request comes.
func (s *stallWriter) finish() bool {
	if !s.stalled {
		s.renew()
	}
	return s.stalled
}

// Unwrap lets http.ResponseController reach the connection.
func (s *stallWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// stallReader is a request body that fails once a read makes no progress
// for stall. The HTTP transport may read it from a goroutine of its own,
// even after the handler is done with it, hence the lock.
type stallReader struct {
	io.ReadCloser
	rc    *http.ResponseController
	stall time.Duration

	mu       sync.Mutex
	deadline time.Time
	off      bool // the connection has no deadlines
	done     bool // the body ended or the handler returned: no renewals
	stalled  bool
}

func (s *stallReader) Read(p []byte) (int, error) {
	s.mu.Lock()
	if !s.done && !s.off {
		s.deadline = time.Now().Add(s.stall)
		if err := s.rc.SetReadDeadline(s.deadline); errors.Is(err, http.ErrNotSupported) {
			s.off, s.deadline = true, time.Time{}
		}
	}
	s.mu.Unlock()
	n, err := s.ReadCloser.Read(p)
	if err == nil {
		return n, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.done:
	case errors.Is(err, io.EOF):
		// At its end the body keeps no deadline, which would cut the
		// request while the handler still works (a commit upstream).
		// (HTTP/1's server clears it itself for its background read.)
		if !s.off {
			s.rc.SetReadDeadline(time.Time{})
		}
	case timedOut(err, s.deadline):
		s.stalled = true
		err = fmt.Errorf("request body: %w: %w", errStalled, err)
	}
	s.done = true
	return n, err
}

// finish says whether the body was cut, as the handler returns. A body
// the handler left unread keeps a deadline of stall: the server discards
// what is left of it before the connection's next request.
func (s *stallReader) finish() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.done && !s.off {
		s.rc.SetReadDeadline(time.Now().Add(s.stall))
	}
	s.done = true
	return s.stalled
}

package shroudtest

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/shroud-oci/shroud/crypto"
)

// Behind returns an upstream that serves up's registry through mw: the
// front an attack test puts before the registry to count, rewrite or
// refuse the requests shroud sends it. Dir is up's, so the storage can
// still be scanned.
func Behind(t testing.TB, up Upstream, mw func(http.Handler) http.Handler) Upstream {
	t.Helper()
	target, err := url.Parse(up.URL)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(mw(httputil.NewSingleHostReverseProxy(target)))
	t.Cleanup(srv.Close)
	return Upstream{Name: up.Name + "+mw", URL: srv.URL, Dir: up.Dir}
}

// Chain applies middlewares in order, the first outermost.
func Chain(mws ...func(http.Handler) http.Handler) func(http.Handler) http.Handler {
	return func(h http.Handler) http.Handler {
		for i := len(mws) - 1; i >= 0; i-- {
			h = mws[i](h)
		}
		return h
	}
}

// Request is one request an upstream received.
type Request struct {
	Method string
	// Path is the decoded path, RequestURI the path and query as they
	// came on the wire.
	Path       string
	RequestURI string
	Query      url.Values
	Authorized bool // an Authorization header came with it
}

// Recorder records the requests an upstream receives.
type Recorder struct {
	mu   sync.Mutex
	reqs []Request
}

// Middleware records each request before passing it on.
func (rec *Recorder) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.mu.Lock()
		rec.reqs = append(rec.reqs, Request{Method: r.Method, Path: r.URL.Path, RequestURI: r.RequestURI,
			Query: r.URL.Query(), Authorized: r.Header.Get("Authorization") != ""})
		rec.mu.Unlock()
		next.ServeHTTP(w, r)
	})
}

// Requests returns what was recorded so far.
func (rec *Recorder) Requests() []Request {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]Request(nil), rec.reqs...)
}

// Count counts the recorded requests match accepts (all with nil).
func (rec *Recorder) Count(match func(Request) bool) int {
	n := 0
	for _, r := range rec.Requests() {
		if match == nil || match(r) {
			n++
		}
	}
	return n
}

// Reset forgets what was recorded.
func (rec *Recorder) Reset() {
	rec.mu.Lock()
	rec.reqs = nil
	rec.mu.Unlock()
}

// IsWrite says whether a method changes the registry.
func IsWrite(method string) bool {
	switch method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		return true
	}
	return false
}

// RequireAuth answers 401 UNAUTHORIZED, with the challenge
// `Basic realm="x"`, to requests that carry no Authorization header: every
// request when all is true, else only writes (POST, PUT, PATCH, DELETE).
// Any credentials are accepted.
func RequireAuth(all bool) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") == "" && (all || IsWrite(r.Method)) {
				io.Copy(io.Discard, r.Body)
				w.Header().Set("WWW-Authenticate", `Basic realm="x"`)
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusUnauthorized)
				if r.Method != http.MethodHead {
					io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
				}
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// PathContains matches requests whose decoded path or raw request URI
// contains s (case-insensitive).
func PathContains(s string) func(Request) bool {
	s = strings.ToLower(s)
	return func(r Request) bool {
		return strings.Contains(strings.ToLower(r.Path), s) || strings.Contains(strings.ToLower(r.RequestURI), s)
	}
}

// StartWithIdentity runs shroud in front of up with an existing keyring
// and data dir (another replica, or a restart with another policy) and
// opts; key options are ignored, the keyring is kept as it is.
func StartWithIdentity(t testing.TB, up Upstream, kr *crypto.Keyring, dir string, opts ...Option) Shroud {
	t.Helper()
	var o options
	for _, f := range opts {
		f(&o)
	}
	return start(t, up, kr, dir, o)
}

package proxy_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/opencontainers/go-digest"

	"github.com/shroud-oci/shroud/internal/shroudtest"
)

// pullUpstream is a registry whose blob GETs are counted and slowed to a
// trickle for the first bytes (so that concurrent pulls overlap), and
// whose blob bodies can be tampered with (one byte flipped in the
// middle).
type pullUpstream struct {
	gets   atomic.Int64
	tamper atomic.Bool
}

func startPullUpstream(t *testing.T) (shroudtest.Upstream, *pullUpstream) {
	p := &pullUpstream{}
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") {
			p.gets.Add(1)
			rec := httptest.NewRecorder()
			inner.ServeHTTP(rec, r)
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			body := rec.Body.Bytes()
			if p.tamper.Load() && len(body) > 0 {
				body = bytes.Clone(body)
				body[len(body)/2] ^= 1
			}
			w.WriteHeader(rec.Code)
			// The first MiB slowly, the rest at once.
			for off := 0; off < len(body); {
				n := min(len(body)-off, 64<<10)
				if off >= 1<<20 {
					n = len(body) - off
				}
				if _, err := w.Write(body[off : off+n]); err != nil {
					return
				}
				w.(http.Flusher).Flush()
				off += n
				if off < 1<<20 {
					time.Sleep(25 * time.Millisecond)
				}
			}
			return
		}
		inner.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return shroudtest.Upstream{Name: "ggcr", URL: srv.URL}, p
}

// pullAll pulls blob d through s with n concurrent clients, released at
// once; each gets its body (nil where the pull failed) and error.
func pullAll(s shroudtest.Shroud, d digest.Digest, n int, auth func(i int) string) ([][]byte, []error) {
	bodies, errs := make([][]byte, n), make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			req, _ := http.NewRequest("GET", s.URL+"/v2/conc/app/blobs/"+d.String(), nil)
			if a := auth(i); a != "" {
				req.Header.Set("Authorization", a)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				errs[i] = err
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				errs[i] = errors.New(resp.Status)
				return
			}
			bodies[i], errs[i] = io.ReadAll(resp.Body)
		}()
	}
	close(start)
	wg.Wait()
	return bodies, errs
}

func pushRandomBlob(t *testing.T, s shroudtest.Shroud, size int) ([]byte, digest.Digest) {
	b := make([]byte, size)
	rand.Read(b)
	d := digest.FromBytes(b)
	call{t, s.URL}.do("POST", "/v2/conc/app/blobs/uploads/?digest="+d.String(), bytes.NewReader(b)).want(t, 201, "")
	return b, d
}

// Sixteen clients pulling one blob at once cost the upstream two fetches
// (the first pull streams alone, the others share one spooled fetch:
// BENCHMARKS.md says why the first is not spooled too), and all get the
// same bytes, the plaintext; a client with other credentials gets a fetch
// of its own; nothing is left running after.
func TestConcurrentPullsShareOneFetch(t *testing.T) {
	noLeaks(t)
	up, counts := startPullUpstream(t)
	s := shroudtest.Start(t, up)
	b, d := pushRandomBlob(t, s, 8<<20)
	counts.gets.Store(0)

	bodies, errs := pullAll(s, d, 17, func(i int) string {
		if i == 16 {
			return "Basic b3RoZXI6dXNlcg=="
		}
		return ""
	})
	for i := range bodies {
		if errs[i] != nil || !bytes.Equal(bodies[i], b) {
			t.Fatalf("client %d: %d bytes, %v", i, len(bodies[i]), errs[i])
		}
	}
	if n := counts.gets.Load(); n != 3 {
		t.Fatalf("16 concurrent pulls with one credential and one with another made %d upstream fetches, want 3", n)
	}
	// Later, alone: a fetch of its own, nothing left from the shared one.
	counts.gets.Store(0)
	if bodies, errs := pullAll(s, d, 1, func(int) string { return "" }); errs[0] != nil || !bytes.Equal(bodies[0], b) {
		t.Fatalf("a later pull: %v", errs[0])
	}
	if n := counts.gets.Load(); n != 1 {
		t.Fatalf("a later pull made %d upstream fetches, want 1", n)
	}
}

// A client that hangs up in the middle of a pull, the first one (which
// streams alone) included, ends nothing for the others: they all get the
// whole blob from the shared fetch.
func TestSharedFetchOutlivesAClientThatLeaves(t *testing.T) {
	noLeaks(t)
	up, counts := startPullUpstream(t)
	s := shroudtest.Start(t, up)
	b, d := pushRandomBlob(t, s, 8<<20)
	counts.gets.Store(0)

	// The first client leaves after its first bytes, while the others
	// are joined.
	first, err := http.Get(s.URL + "/v2/conc/app/blobs/" + d.String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(first.Body, make([]byte, 4096)); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var bodies [][]byte
	var errs []error
	wg.Add(1)
	go func() { defer wg.Done(); bodies, errs = pullAll(s, d, 15, func(int) string { return "" }) }()
	time.Sleep(100 * time.Millisecond) // joined, mid-stream
	first.Body.Close()
	wg.Wait()
	for i := range bodies {
		if errs[i] != nil || !bytes.Equal(bodies[i], b) {
			t.Fatalf("client %d after the first left: %d bytes, %v", i, len(bodies[i]), errs[i])
		}
	}
	if n := counts.gets.Load(); n != 2 {
		t.Fatalf("16 overlapping pulls, one of which left, made %d upstream fetches, want 2", n)
	}
}

// A tampered blob fails every client joined to the fetch loudly: none
// gets a clean, complete response.
func TestSharedFetchOfATamperedBlobFailsEveryClient(t *testing.T) {
	noLeaks(t)
	up, counts := startPullUpstream(t)
	s := shroudtest.Start(t, up)
	_, d := pushRandomBlob(t, s, 4<<20)
	counts.gets.Store(0)
	counts.tamper.Store(true)

	bodies, errs := pullAll(s, d, 16, func(int) string { return "" })
	for i := range bodies {
		if errs[i] == nil {
			t.Fatalf("client %d got a clean response of %d bytes from a tampered blob", i, len(bodies[i]))
		}
	}
	if n := counts.gets.Load(); n != 2 {
		t.Fatalf("16 concurrent pulls made %d upstream fetches, want 2", n)
	}
}

package proxy_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/opencontainers/go-digest"

	"github.com/shroud-oci/shroud/internal/shroudtest"
)

// pullUpstream is a registry whose blob GETs are counted (whole GETs
// and Range GETs apart, with the length each Range asked for) and slowed
// to a trickle for the first bytes (so that concurrent pulls overlap),
// whose blob bodies can be tampered with (one byte flipped in the
// middle: of every answer, or of Range answers only), and which can
// ignore Range (rangeStatus 200: the whole blob) or refuse it (any other
// rangeStatus).
type pullUpstream struct {
	gets, ranges atomic.Int64
	tamper       atomic.Bool
	tamperRange  atomic.Bool
	rangeStatus  atomic.Int64

	mu        sync.Mutex
	rangeLens []int64
}

// rangeLengths are the lengths the Range GETs so far asked for.
func (p *pullUpstream) rangeLengths() []int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.rangeLens)
}

func (p *pullUpstream) reset() {
	p.gets.Store(0)
	p.ranges.Store(0)
	p.mu.Lock()
	p.rangeLens = nil
	p.mu.Unlock()
}

// want fails t unless the upstream had gets whole blob GETs and at most
// maxRanges Range GETs, and logs the Range lengths.
func (p *pullUpstream) want(t *testing.T, what string, gets, maxRanges int64) {
	t.Helper()
	g, r, lens := p.gets.Load(), p.ranges.Load(), p.rangeLengths()
	t.Logf("%s: %d whole blob GETs, %d Range GETs of %v bytes", what, g, r, lens)
	if g != gets || r > maxRanges {
		t.Fatalf("%s made %d whole blob GETs and %d Range GETs (of %v bytes), want %d and at most %d", what, g, r, lens, gets, maxRanges)
	}
}

func startPullUpstream(t *testing.T) (shroudtest.Upstream, *pullUpstream) {
	p := &pullUpstream{}
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") {
			ranged := r.Header.Get("Range") != ""
			if ranged {
				p.ranges.Add(1)
				var a, b int64
				fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-%d", &a, &b)
				p.mu.Lock()
				p.rangeLens = append(p.rangeLens, b-a+1)
				p.mu.Unlock()
				switch st := int(p.rangeStatus.Load()); st {
				case 0:
				case http.StatusOK:
					r.Header.Del("Range")
				default:
					http.Error(w, "no ranges here", st)
					return
				}
			} else {
				p.gets.Add(1)
			}
			rec := httptest.NewRecorder()
			inner.ServeHTTP(rec, r)
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			body := rec.Body.Bytes()
			if (p.tamper.Load() || ranged && p.tamperRange.Load()) && len(body) > 0 {
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

// stalledPull starts a pull of d through s and reads its first n bytes,
// then stops reading (a small socket buffer, so that the pull stalls
// close to there): a pull under way, at some MiB. The caller reads the
// rest, or closes it.
func stalledPull(t *testing.T, s shroudtest.Shroud, d digest.Digest, n int) (*http.Response, []byte) {
	t.Helper()
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err == nil {
			c.(*net.TCPConn).SetReadBuffer(64 << 10)
		}
		return c, err
	}}
	t.Cleanup(tr.CloseIdleConnections)
	resp, err := (&http.Client{Transport: tr}).Get(s.URL + "/v2/conc/app/blobs/" + d.String())
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the first pull: %s", resp.Status)
	}
	head := make([]byte, n)
	if _, err := io.ReadFull(resp.Body, head); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // read from the upstream as far as the buffers let it
	return resp, head
}

// finish reads the rest of a stalled pull and checks it got want.
func finish(t *testing.T, what string, resp *http.Response, head, want []byte) {
	t.Helper()
	defer resp.Body.Close()
	rest, err := io.ReadAll(resp.Body)
	if err != nil || !bytes.Equal(append(head, rest...), want) {
		t.Fatalf("%s: %d bytes, %v", what, len(head)+len(rest), err)
	}
}

// Sixteen clients pulling one blob at once cost the upstream one fetch of
// the blob, and at most one Range request of what the first had read when
// the others joined; all get the same bytes, the plaintext. A client
// with other credentials gets a fetch of its own; nothing is left
// running after.
func TestConcurrentPullsShareOneFetch(t *testing.T) {
	noLeaks(t)
	up, counts := startPullUpstream(t)
	s := shroudtest.Start(t, up)
	b, d := pushRandomBlob(t, s, 8<<20)
	counts.reset()

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
	counts.want(t, "16 concurrent pulls with one credential and one with another", 2, 1)
	// Later, alone: a fetch of its own, nothing left from the shared one.
	counts.reset()
	if bodies, errs := pullAll(s, d, 1, func(int) string { return "" }); errs[0] != nil || !bytes.Equal(bodies[0], b) {
		t.Fatalf("a later pull: %v", errs[0])
	}
	counts.want(t, "a later pull", 1, 0)
}

// A pull that comes while the first is some MiB into the blob (stalled by
// its client) joins it: the bytes the first had read come once with a
// Range request of exactly them, the rest from the first pull's own
// upstream body. Both clients get the blob.
func TestJoinerMidStream(t *testing.T) {
	noLeaks(t)
	up, counts := startPullUpstream(t)
	s := shroudtest.Start(t, up)
	b, d := pushRandomBlob(t, s, 16<<20)
	counts.reset()

	first, head := stalledPull(t, s, d, 2<<20)
	bodies, errs := pullAll(s, d, 3, func(int) string { return "" })
	for i := range bodies {
		if errs[i] != nil || !bytes.Equal(bodies[i], b) {
			t.Fatalf("joiner %d: %d bytes, %v", i, len(bodies[i]), errs[i])
		}
	}
	finish(t, "the first pull", first, head, b)
	counts.want(t, "a pull and three joiners", 1, 1)
	lens := counts.rangeLengths()
	if len(lens) != 1 || lens[0] < 2<<20 || lens[0] >= int64(len(b)) {
		t.Fatalf("Range GETs of %v bytes, want one of the prefix the first pull had read (at least 2 MiB, less than the blob)", lens)
	}
}

// A client that hangs up in the middle of a pull, the first one (whose
// upstream body the joiners then read) included, ends nothing for the
// others: they all get the whole blob.
func TestSharedFetchOutlivesAClientThatLeaves(t *testing.T) {
	noLeaks(t)
	up, counts := startPullUpstream(t)
	s := shroudtest.Start(t, up)
	b, d := pushRandomBlob(t, s, 8<<20)
	counts.reset()

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
	counts.want(t, "16 overlapping pulls, the first of which left", 1, 1)
}

// The first pull stalls some MiB in and its client then leaves for good,
// while a joiner is reading: the joiner still gets the whole blob, from
// the first pull's upstream body.
func TestJoinerOutlivesTheFirstPull(t *testing.T) {
	noLeaks(t)
	up, counts := startPullUpstream(t)
	s := shroudtest.Start(t, up)
	b, d := pushRandomBlob(t, s, 16<<20)
	counts.reset()

	first, _ := stalledPull(t, s, d, 2<<20)
	resp, err := http.Get(s.URL + "/v2/conc/app/blobs/" + d.String())
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("joiner: %v %v", resp, err)
	}
	defer resp.Body.Close()
	head := make([]byte, 1<<20)
	if _, err := io.ReadFull(resp.Body, head); err != nil {
		t.Fatal(err)
	}
	first.Body.Close() // the first client leaves mid-stream
	time.Sleep(50 * time.Millisecond)
	finish(t, "the joiner after the first left", resp, head, b)
	counts.want(t, "a pull and a joiner, the first of which left", 1, 1)
}

// A tampered blob fails every client joined to the fetch loudly: none
// gets a clean, complete response.
func TestSharedFetchOfATamperedBlobFailsEveryClient(t *testing.T) {
	noLeaks(t)
	up, counts := startPullUpstream(t)
	s := shroudtest.Start(t, up)
	_, d := pushRandomBlob(t, s, 4<<20)
	counts.reset()
	counts.tamper.Store(true)

	bodies, errs := pullAll(s, d, 16, func(int) string { return "" })
	for i := range bodies {
		if errs[i] == nil {
			t.Fatalf("client %d got a clean response of %d bytes from a tampered blob", i, len(bodies[i]))
		}
	}
	counts.want(t, "16 concurrent pulls", 1, 1)
}

// An upstream that answers the Range request of the prefix with other
// bytes fails the joiners loudly (the HMAC of the whole ciphertext each
// checks), never the first pull, which read its own prefix; a later pull
// starts afresh and gets the blob.
func TestTamperedPrefixFailsTheJoiners(t *testing.T) {
	noLeaks(t)
	up, counts := startPullUpstream(t)
	s := shroudtest.Start(t, up)
	b, d := pushRandomBlob(t, s, 16<<20)
	counts.reset()
	counts.tamperRange.Store(true)

	first, head := stalledPull(t, s, d, 2<<20)
	bodies, errs := pullAll(s, d, 3, func(int) string { return "" })
	for i := range bodies {
		if errs[i] == nil {
			t.Fatalf("joiner %d got a clean response of %d bytes over a tampered prefix", i, len(bodies[i]))
		}
		t.Logf("joiner %d: %v after %d bytes", i, errs[i], len(bodies[i]))
	}
	finish(t, "the first pull", first, head, b)
	counts.want(t, "a pull and three joiners", 1, 1)
	counts.tamperRange.Store(false)
	if bodies, errs := pullAll(s, d, 1, func(int) string { return "" }); errs[0] != nil || !bytes.Equal(bodies[0], b) {
		t.Fatalf("a later pull: %v", errs[0])
	}
}

// An upstream that ignores Range and answers the prefix request with the
// whole blob (200) still serves the joiners: the first bytes are taken,
// the rest dropped with the connection.
func TestPrefixFromAnUpstreamThatIgnoresRange(t *testing.T) {
	noLeaks(t)
	up, counts := startPullUpstream(t)
	s := shroudtest.Start(t, up)
	b, d := pushRandomBlob(t, s, 16<<20)
	counts.reset()
	counts.rangeStatus.Store(http.StatusOK)

	first, head := stalledPull(t, s, d, 2<<20)
	bodies, errs := pullAll(s, d, 3, func(int) string { return "" })
	for i := range bodies {
		if errs[i] != nil || !bytes.Equal(bodies[i], b) {
			t.Fatalf("joiner %d: %d bytes, %v", i, len(bodies[i]), errs[i])
		}
	}
	finish(t, "the first pull", first, head, b)
	counts.want(t, "a pull and three joiners", 1, 1)
}

// An upstream that refuses the Range request of the prefix fails the
// joiners with a clear error before any byte (a 502 that says so, not
// the upstream's 416 for a range the client never asked for); the first
// pull is not touched, and a later pull starts afresh.
func TestPrefixRefusedFailsTheJoinersCleanly(t *testing.T) {
	for _, status := range []int{http.StatusRequestedRangeNotSatisfiable, http.StatusInternalServerError} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			noLeaks(t)
			up, counts := startPullUpstream(t)
			s := shroudtest.Start(t, up)
			b, d := pushRandomBlob(t, s, 16<<20)
			counts.reset()
			counts.rangeStatus.Store(int64(status))

			first, head := stalledPull(t, s, d, 2<<20)
			got := call{t, s.URL}.do("GET", "/v2/conc/app/blobs/"+d.String(), nil)
			if got.status != http.StatusBadGateway || got.errorCode() != "UNAVAILABLE" || !strings.Contains(string(got.body), "Range") {
				t.Fatalf("a joiner when the upstream answers the prefix with %d: %d %s", status, got.status, got.body)
			}
			finish(t, "the first pull", first, head, b)
			counts.want(t, "a pull and a refused joiner", 1, 1)
			counts.reset()
			if bodies, errs := pullAll(s, d, 1, func(int) string { return "" }); errs[0] != nil || !bytes.Equal(bodies[0], b) {
				t.Fatalf("a later pull: %v", errs[0])
			}
			counts.want(t, "a later pull", 1, 0)
		})
	}
}

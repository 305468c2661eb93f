package proxy_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/opencontainers/go-digest"

	"github.com/shroud-oci/shroud/cache"
	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/shroudtest"
	"github.com/shroud-oci/shroud/proxy"
	"github.com/shroud-oci/shroud/proxy/upstream"
)

// limitedShroud runs shroud in front of the registry at upURL with o's
// limits, encrypting every repository for its identity alone.
func limitedShroud(t *testing.T, upURL string, o proxy.Options) string {
	t.Helper()
	dir := t.TempDir()
	id, _, err := crypto.LoadOrCreateIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	kr, err := crypto.NewKeyring(id, nil)
	if err != nil {
		t.Fatal(err)
	}
	set, err := kr.Recipients(nil)
	if err != nil {
		t.Fatal(err)
	}
	pol, err := crypto.NewPolicy([]crypto.Rule{{Pattern: "**", Action: crypto.Encrypt, Recipients: set}})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := upstream.New(upURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	store, err := cache.NewLRU(0)
	if err != nil {
		t.Fatal(err)
	}
	o.Upstream, o.Cache, o.Keyring, o.Policy, o.SpoolDir = cl, store, kr, pol, t.TempDir()
	if os.Getenv("SHROUD_TEST_LOG") != "" {
		o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	h, err := proxy.New(o)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

// heapInuse is the heap in use once garbage (and sync.Pool's idle
// buffers, which take two cycles) is collected.
func heapInuse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// rawRequest sends a request on a connection of its own whose receive
// buffer is small, reads the status line and headers byte by byte and no
// byte of the body: a client that stops reading.
func rawRequest(t *testing.T, base, method, path string, hdr ...string) (net.Conn, int, http.Header) {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.(*net.TCPConn).SetReadBuffer(64 << 10)
	req := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: %s\r\n", method, path, u.Host)
	for i := 0; i+1 < len(hdr); i += 2 {
		req += hdr[i] + ": " + hdr[i+1] + "\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		t.Fatal(err)
	}
	if method != "GET" {
		return c, 0, nil
	}
	status, h := readHead(t, c)
	return c, status, h
}

// readHead reads a response's status line and headers, not a byte more.
func readHead(t *testing.T, c net.Conn) (int, http.Header) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	var head []byte
	b := make([]byte, 1)
	for !bytes.HasSuffix(head, []byte("\r\n\r\n")) {
		if _, err := c.Read(b); err != nil {
			t.Fatalf("read response head %q: %v", head, err)
		}
		head = append(head, b[0])
	}
	lines := strings.Split(strings.TrimSuffix(string(head), "\r\n\r\n"), "\r\n")
	f := strings.Fields(lines[0])
	if len(f) < 2 {
		t.Fatalf("status line %q", lines[0])
	}
	status, _ := strconv.Atoi(f[1])
	h := http.Header{}
	for _, l := range lines[1:] {
		k, v, _ := strings.Cut(l, ":")
		h.Add(k, strings.TrimSpace(v))
	}
	return status, h
}

// pushBlob uploads a random blob of n bytes to repo.
func pushBlob(t *testing.T, base, repo string, n int) ([]byte, digest.Digest) {
	t.Helper()
	b, d := randBlob(t, n)
	call{t, base}.do("POST", "/v2/"+repo+"/blobs/uploads/?digest="+d.String(), bytes.NewReader(b)).want(t, 201, "")
	return b, d
}

// Stalled readers: clients open blob GETs and never read a byte of the
// bodies. Each pins at most a fraction of a MiB of shroud's heap while it
// waits (not the 5 MiB of buffers it took before), and once it has made
// no progress for the stall timeout its stream is cut, so it pins nothing
// for longer.
func TestStalledReadersPinLittleMemoryAndAreCut(t *testing.T) {
	const (
		n     = 32
		size  = 24 << 20
		stall = 3 * time.Second
	)
	base := limitedShroud(t, shroudtest.GGCR(t).URL, proxy.Options{StallTimeout: stall})
	_, d := pushBlob(t, base, "stall/app", size)
	path := "/v2/stall/app/blobs/" + d.String()
	// One complete pull first: whatever is built once is built.
	if got := (call{t, base}).do("GET", path, nil); got.status != 200 || len(got.body) != size {
		t.Fatalf("pull: %d, %d bytes", got.status, len(got.body))
	}

	before := heapInuse()
	conns := make([]net.Conn, n)
	for i := range conns {
		c, status, _ := rawRequest(t, base, "GET", path)
		if status != 200 {
			t.Fatalf("stalled GET %d: status %d", i, status)
		}
		conns[i] = c
	}
	opened := time.Now()
	time.Sleep(time.Second) // the streams fill the sockets' buffers and block
	after := heapInuse()
	if time.Since(opened) >= stall {
		t.Fatalf("the heap was measured %s after the streams opened, past the stall timeout", time.Since(opened))
	}
	perStream := (float64(after) - float64(before)) / n / (1 << 20)
	t.Logf("heap in use: %d MiB before, %d MiB with %d stalled streams: %.2f MiB each", before>>20, after>>20, n, perStream)
	if perStream > 1.5 {
		t.Errorf("each stalled stream holds %.2f MiB of heap, want at most 1.5 MiB", perStream)
	}

	// Past the stall timeout every stream has been cut: what a client
	// reads now is what was in the sockets' buffers, then the end of the
	// connection, never the whole blob.
	time.Sleep(time.Until(opened.Add(stall + time.Second)))
	var wg sync.WaitGroup
	got := make([]int64, n)
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			got[i], _ = io.Copy(io.Discard, io.LimitReader(c, size))
		}()
	}
	wg.Wait()
	for i, m := range got {
		if m >= size {
			t.Fatalf("stalled stream %d was not cut: the client could still read all %d bytes after %s without reading", i, m, stall)
		}
	}
}

// slowReader reads a body step bytes at a time with a pause between reads.
func slowCopy(dst io.Writer, src io.Reader, step int, pause time.Duration) (int64, error) {
	buf := make([]byte, step)
	var total int64
	for {
		n, err := io.ReadFull(src, buf)
		dst.Write(buf[:n])
		total += int64(n)
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
		time.Sleep(pause)
	}
}

// A slow reader that keeps reading is no stalled one: its pull takes many
// times the stall timeout and is not cut (a whole-request deadline would
// cut it).
func TestSlowButSteadyReaderIsNotCut(t *testing.T) {
	const (
		size  = 12 << 20
		stall = time.Second
	)
	base := limitedShroud(t, shroudtest.GGCR(t).URL, proxy.Options{StallTimeout: stall})
	b, d := pushBlob(t, base, "slow/app", size)
	resp, err := http.Get(base + "/v2/slow/app/blobs/" + d.String())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	start := time.Now()
	h := sha256.New()
	n, err := slowCopy(h, resp.Body, 256<<10, 100*time.Millisecond)
	took := time.Since(start)
	if err != nil || n != size {
		t.Fatalf("slow pull cut after %s: %d of %d bytes: %v", took, n, size, err)
	}
	if got := digest.NewDigest(digest.SHA256, h); got != digest.FromBytes(b) {
		t.Fatalf("slow pull got %s, want %s", got, d)
	}
	if took < 3*stall {
		t.Logf("the slow pull took only %s; the test proves less than it should", took)
	}
}

// A slow uploader that keeps sending is not cut either.
func TestSlowButSteadyUploadIsNotCut(t *testing.T) {
	const (
		size  = 6 << 20
		stall = time.Second
	)
	base := limitedShroud(t, shroudtest.GGCR(t).URL, proxy.Options{StallTimeout: stall})
	b, d := randBlob(t, size)
	pr, pw := io.Pipe()
	go func() {
		_, err := slowCopy(pw, bytes.NewReader(b), 256<<10, 100*time.Millisecond)
		pw.CloseWithError(err)
	}()
	start := time.Now()
	c := call{t, base}
	c.do("POST", "/v2/slowup/app/blobs/uploads/?digest="+d.String(), unsized{pr}).want(t, 201, "")
	if took := time.Since(start); took < 2*stall {
		t.Logf("the slow upload took only %s; the test proves less than it should", took)
	}
	if got := c.do("GET", "/v2/slowup/app/blobs/"+d.String(), nil); !bytes.Equal(got.body, b) {
		t.Fatal("the slow upload did not store the blob")
	}
}

// Stalled uploader: a client starts a PATCH, sends part of its body and
// stops. Once the body has made no progress for the stall timeout shroud
// cuts it and abandons the upload, instead of holding it open for ever.
func TestStalledUploadBodyIsCut(t *testing.T) {
	const stall = time.Second
	base := limitedShroud(t, shroudtest.GGCR(t).URL, proxy.Options{StallTimeout: stall})
	c := call{t, base}
	start := c.do("POST", "/v2/stallup/app/blobs/uploads/", nil)
	start.want(t, 202, "")
	loc := start.header.Get("Location")

	conn, _, _ := rawRequest(t, base, "PATCH", loc, "Content-Type", "application/octet-stream", "Transfer-Encoding", "chunked")
	chunk := bytes.Repeat([]byte{1}, 1<<20)
	if _, err := fmt.Fprintf(conn, "%x\r\n%s\r\n", len(chunk), chunk); err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	// Nothing more is sent: shroud answers or hangs up after the stall.
	conn.SetReadDeadline(time.Now().Add(stall + 10*time.Second))
	answer := make([]byte, 512)
	n, err := conn.Read(answer)
	waited := time.Since(sent)
	t.Logf("%s after the last byte: %q, %v", waited, answer[:n], err)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("a stalled upload body was still held open %s after its last byte (stall timeout %s)", waited, stall)
	}
	if waited < stall/2 {
		t.Fatalf("the upload was cut %s after its last byte, before the stall timeout %s", waited, stall)
	}
	if n > 0 && !bytes.HasPrefix(answer, []byte("HTTP/1.1 408 ")) {
		t.Fatalf("a cut upload was answered %q, want 408 or nothing", answer[:n])
	}
	// The upload is abandoned: nothing can be added to it any more.
	c.do("PUT", withQuery(loc, "digest", digest.FromBytes(chunk).String()), bytes.NewReader(nil)).want(t, 404, "BLOB_UPLOAD_UNKNOWN")
}

// Stream flood: beyond the cap on concurrent blob streams a client gets
// 429 TOOMANYREQUESTS with a Retry-After at once, for pulls and uploads
// alike, instead of another stream queued without bound; requests that
// stream nothing are still served, and a slot freed is usable again.
func TestStreamFloodBeyondCapGetsTooManyRequests(t *testing.T) {
	const capacity = 4
	base := limitedShroud(t, shroudtest.GGCR(t).URL, proxy.Options{MaxStreams: capacity, StallTimeout: time.Minute})
	b, d := pushBlob(t, base, "flood/app", 16<<20)
	path := "/v2/flood/app/blobs/" + d.String()
	var conns []net.Conn
	for i := 0; i < capacity; i++ {
		conn, status, _ := rawRequest(t, base, "GET", path)
		if status != 200 {
			t.Fatalf("GET %d of %d within the cap: %d", i+1, capacity, status)
		}
		conns = append(conns, conn)
	}
	c := call{t, base}
	over := c.do("GET", path, nil)
	if over.status != 429 || over.errorCode() != "TOOMANYREQUESTS" {
		t.Fatalf("GET %d beyond a cap of %d: %d %s, want 429 TOOMANYREQUESTS", capacity+1, capacity, over.status, over.errorCode())
	}
	if s, err := strconv.Atoi(over.header.Get("Retry-After")); err != nil || s <= 0 {
		t.Fatalf("429 with Retry-After %q, want a number of seconds", over.header.Get("Retry-After"))
	}
	up := c.do("POST", "/v2/flood/app/blobs/uploads/", nil) // no body: no stream
	up.want(t, 202, "")
	c.do("PATCH", up.header.Get("Location"), bytes.NewReader(b[:1<<20])).want(t, 429, "TOOMANYREQUESTS")
	c.do("HEAD", path, nil).want(t, 200, "")

	for _, conn := range conns {
		conn.Close()
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := c.do("GET", path, nil)
		if got.status == 200 {
			if !bytes.Equal(got.body, b) {
				t.Fatal("the pull after the flood got other bytes")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the slots of closed streams were not freed: %d %s", got.status, got.errorCode())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Hostile upstream: asked for a blob, or a range of it, it sends the
// ciphertext and then bytes without end, with no Content-Length. A shared
// fetch spools no more than the mapping's size (the tail, from the first
// pull's body) and the prefix it asked for (the Range request); before,
// it filled the disk for as long as a reader stayed.
func TestHostileUpstreamCannotOverfillTheSpool(t *testing.T) {
	// Larger than the socket buffers between shroud and a client that
	// reads nothing (the kernel's send buffer grows to 4 MiB): a smaller
	// blob could go out whole to the first client, its fetch ending
	// before the second joins it, which then fetches again.
	const size = 32 << 20
	var hostile atomic.Bool
	var mu sync.Mutex
	var served []*atomic.Int64 // bytes written per blob GET
	var ranges []string        // the Range of each blob GET
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !hostile.Load() || r.Method != "GET" || !strings.Contains(r.URL.Path, "/blobs/sha256:") {
			inner.ServeHTTP(w, r)
			return
		}
		n := &atomic.Int64{}
		mu.Lock()
		served = append(served, n)
		ranges = append(ranges, r.Header.Get("Range"))
		mu.Unlock()
		cw := &countingWriter{ResponseWriter: w, n: n}
		inner.ServeHTTP(cw, r)
		junk := make([]byte, 64<<10)
		for r.Context().Err() == nil {
			if _, err := cw.Write(junk); err != nil {
				return
			}
		}
	}))
	t.Cleanup(up.Close)
	base := limitedShroud(t, up.URL, proxy.Options{StallTimeout: time.Minute})
	_, d := pushBlob(t, base, "hostile/app", size)
	hostile.Store(true)
	path := "/v2/hostile/app/blobs/" + d.String()

	// The first pull fetches alone and stalls; the second, while it is
	// under way, makes it a shared, spooled fetch (the first pull's body
	// drained into the spool, the bytes it had read asked for with a
	// Range request) and stalls too.
	for i := 0; i < 2; i++ {
		if _, status, _ := rawRequest(t, base, "GET", path); status != 200 {
			t.Fatalf("GET %d: %d", i, status)
		}
	}
	const slack = 16 << 20 // socket buffers, copy buffers
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		for i, n := range served {
			if m := n.Load(); m > size+slack {
				mu.Unlock()
				t.Fatalf("upstream blob GET %d was read for %d MiB, the blob has %d MiB: the spool takes whatever the upstream sends", i, m>>20, size>>20)
			}
		}
		mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	whole := 0
	for i, r := range ranges {
		t.Logf("upstream blob GET %d, Range %q: read for %d KiB", i, r, served[i].Load()>>10)
		if r == "" {
			whole++
		}
	}
	if whole != 1 || len(ranges) > 2 {
		t.Fatalf("upstream blob GETs with Range %q, want one whole (the first pull's, shared) and at most one Range of a prefix", ranges)
	}
}

// countingWriter counts what a handler writes, and hides the length so
// that the response goes out chunked.
type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (c *countingWriter) WriteHeader(status int) {
	c.Header().Del("Content-Length")
	c.ResponseWriter.WriteHeader(status)
}

func (c *countingWriter) Write(b []byte) (int, error) {
	c.Header().Del("Content-Length")
	n, err := c.ResponseWriter.Write(b)
	c.n.Add(int64(n))
	return n, err
}

// A stream's deadlines do not outlive it: a request that comes on the same
// kept-alive connection long after a pull is answered, and an upload whose
// body is all in while the upstream takes its time to commit it (the
// server reads the connection in the background then) is not cut.
func TestStallDeadlinesEndWithTheirStream(t *testing.T) {
	const stall = 500 * time.Millisecond
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "PUT" && strings.Contains(r.URL.RawQuery, "digest=") {
			time.Sleep(4 * stall) // a slow commit
		}
		inner.ServeHTTP(w, r)
	}))
	t.Cleanup(up.Close)
	base := limitedShroud(t, up.URL, proxy.Options{StallTimeout: stall})
	b, d := pushBlob(t, base, "dl/app", 1<<20)

	tr := &http.Transport{MaxConnsPerHost: 1}
	t.Cleanup(tr.CloseIdleConnections)
	cl := &http.Client{Transport: tr}
	get := func(path string) (int, []byte) {
		resp, err := cl.Get(base + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		return resp.StatusCode, body
	}
	if status, got := get("/v2/dl/app/blobs/" + d.String()); status != 200 || !bytes.Equal(got, b) {
		t.Fatalf("pull: %d", status)
	}
	time.Sleep(3 * stall)
	if status, _ := get("/v2/"); status != 200 {
		t.Fatalf("a request on the connection of an earlier pull, %s later: %d", 3*stall, status)
	}
}

package proxy_test

import (
	"bytes"
	"crypto/rand"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/opencontainers/go-digest"
	"go.uber.org/goleak"

	"github.com/shroud-oci/shroud/internal/shroudtest"
)

// noLeaks fails the test if goroutines started during it outlive it (its
// servers are closed first: cleanups run last-registered first).
func noLeaks(t *testing.T) {
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		http.DefaultTransport.(*http.Transport).CloseIdleConnections()
		goleak.VerifyNone(t, before)
	})
}

// blobCounter is go-containerregistry's registry counting blob GETs, and
// those whose request was cancelled before it answered in full.
type blobCounter struct {
	gets, cancelled atomic.Int32
}

// countingUpstream starts it; delay holds each blob GET back first.
func countingUpstream(t *testing.T, delay time.Duration) (shroudtest.Upstream, *blobCounter) {
	c := &blobCounter{}
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		isBlobGet := r.Method == "GET" && strings.Contains(r.URL.Path, "/blobs/sha256:")
		if isBlobGet {
			c.gets.Add(1)
			time.Sleep(delay)
		}
		inner.ServeHTTP(w, r)
		if isBlobGet && r.Context().Err() != nil {
			c.cancelled.Add(1)
		}
	}))
	t.Cleanup(up.Close)
	return shroudtest.Upstream{Name: "ggcr", URL: up.URL}, c
}

// The client hangs up in the middle of a pull: shroud cancels its upstream
// request, and no goroutine is left behind.
func TestClientHangsUpMidPull(t *testing.T) {
	noLeaks(t)
	up, counts := countingUpstream(t, 0)
	s := shroudtest.Start(t, up)

	b := make([]byte, 64<<20)
	rand.Read(b)
	d := digest.FromBytes(b)
	c := call{t, s.URL}
	c.do("POST", "/v2/hangup/app/blobs/uploads/?digest="+d.String(), bytes.NewReader(b)).want(t, 201, "")

	resp, err := http.Get(s.URL + "/v2/hangup/app/blobs/" + d.String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close() // hang up with 63 MiB still to come

	deadline := time.Now().Add(10 * time.Second)
	for counts.cancelled.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if counts.cancelled.Load() != 1 || counts.gets.Load() != 1 {
		t.Fatalf("upstream blob GETs %d, cancelled %d; want the one GET cancelled", counts.gets.Load(), counts.cancelled.Load())
	}
}

package e2e

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/shroud-oci/shroud/internal/shroudtest"
)

// The upstream dies in the middle of an upload: the client gets an error,
// nothing is recorded as uploaded, and once the upstream is back a retry
// succeeds.
func TestUpstreamDiesMidUpload(t *testing.T) {
	up, proc := startRegistry(t, "distribution-v3", tool("registry"), "")
	s := shroudtest.Start(t, up)
	p := pusher{t: t, base: s.URL, repo: "faults/app"}
	b := make([]byte, 3<<20)
	rand.Read(b)
	d := digest.FromBytes(b)

	loc := p.start()
	half := len(b) / 2
	resp := p.do("PATCH", loc, bytes.NewReader(b[:half]), int64(half), "Content-Range", fmt.Sprintf("0-%d", half-1))
	resp.Body.Close()
	if resp.StatusCode != 202 {
		t.Fatalf("first chunk: %d", resp.StatusCode)
	}
	next, _ := url.Parse(resp.Header.Get("Location"))

	proc.stop()
	resp = p.do("PATCH", s.URL+next.String(), bytes.NewReader(b[half:]), int64(len(b)-half), "Content-Range", fmt.Sprintf("%d-%d", half, len(b)-1))
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("chunk with the upstream down: %d %s, want 502", resp.StatusCode, body)
	}
	resp = p.do("PUT", withDigest(s.URL+next.String(), d), nil, 0)
	resp.Body.Close()
	if resp.StatusCode < 400 {
		t.Fatalf("completing an upload whose upstream died: %d", resp.StatusCode)
	}

	proc.start()
	resp = p.do("HEAD", "/v2/faults/app/blobs/"+d.String(), nil, 0)
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("HEAD after the failed upload: %d, want 404 (nothing recorded)", resp.StatusCode)
	}
	p.containerd(b)
	resp = p.do("GET", "/v2/faults/app/blobs/"+d.String(), nil, 0)
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(got, b) {
		t.Fatalf("retry after the upstream came back: GET %d, %d bytes", resp.StatusCode, len(got))
	}
}

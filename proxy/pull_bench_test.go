package proxy_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/opencontainers/go-digest"

	"github.com/shroud-oci/shroud/internal/shroudtest"
)

// BenchmarkPullBlob is the whole pull path in one process, for a CPU
// profile: a client GET through shroud (limits, access log, the shared
// fetch, decryption, the response writes) of a blob shroud encrypted,
// from go-containerregistry's in-memory registry. The client reads into
// a 1 MiB buffer and drops it.
//
//	go test -run xxx -bench PullBlob -benchtime 8x -cpuprofile /tmp/pull.prof ./proxy/
//	go tool pprof -top -focus 'proxy|crypto|net/http' /tmp/pull.prof
func BenchmarkPullBlob(b *testing.B) {
	up := httptest.NewServer(registry.New())
	b.Cleanup(up.Close)
	s := shroudtest.Start(b, shroudtest.Upstream{Name: "ggcr", URL: up.URL})
	blob := make([]byte, 128<<20)
	rand.Read(blob)
	d := digest.FromBytes(blob)
	resp, err := http.Post(s.URL+"/v2/bench/pull/blobs/uploads/?digest="+d.String(), "application/octet-stream", bytes.NewReader(blob))
	if err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		b.Fatalf("push: %d", resp.StatusCode)
	}
	client := &http.Client{Transport: &http.Transport{ReadBufferSize: 1 << 20, DisableCompression: true}}
	buf := make([]byte, 1<<20)
	b.SetBytes(int64(len(blob)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resp, err := client.Get(s.URL + "/v2/bench/pull/blobs/" + d.String())
		if err != nil {
			b.Fatal(err)
		}
		var n int64
		for {
			k, err := resp.Body.Read(buf)
			n += int64(k)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
		resp.Body.Close()
		if n != int64(len(blob)) {
			b.Fatalf("pulled %d of %d bytes", n, len(blob))
		}
	}
}

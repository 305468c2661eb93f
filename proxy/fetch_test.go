package proxy_test

import (
	"bytes"
	"crypto/rand"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shroud-oci/shroud/internal/shroudtest"
)

// Concurrent pulls of one blob share the upstream fetch: eight clients
// that arrive while a pull is under way cost the upstream two fetches,
// every client gets the plaintext, a client with other credentials gets a
// fetch of its own, and nothing is left running afterwards.
func TestConcurrentPullsShareOneFetch(t *testing.T) {
	noLeaks(t)
	up, counts := countingUpstream(t, 300*time.Millisecond) // a slow upstream: the pulls overlap
	blobGets := &counts.gets
	s := shroudtest.Start(t, up)

	b := make([]byte, 8<<20)
	rand.Read(b)
	d := digest.FromBytes(b)
	call{t, s.URL}.do("POST", "/v2/conc/app/blobs/uploads/?digest="+d.String(), bytes.NewReader(b)).want(t, 201, "")
	blobGets.Store(0)

	pull := func(auth string) error {
		req, _ := http.NewRequest("GET", s.URL+"/v2/conc/app/blobs/"+d.String(), nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		got, err := io.ReadAll(resp.Body)
		if err != nil || !bytes.Equal(got, b) {
			return io.ErrUnexpectedEOF
		}
		return nil
	}
	var wg sync.WaitGroup
	errs := make(chan error, 9)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); errs <- pull("") }()
		time.Sleep(20 * time.Millisecond)
	}
	wg.Add(1)
	go func() { defer wg.Done(); errs <- pull("Basic b3RoZXI6dXNlcg==") }()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a concurrent pull failed: %v", err)
		}
	}
	// 3: the first alone, one shared by the 7 that overlapped it, one for
	// the other credential; 4 if a loaded machine let a pull arrive after
	// the shared fetch ended.
	if n := blobGets.Load(); n < 3 || n > 4 {
		t.Fatalf("9 concurrent pulls (8 with one credential) made %d upstream fetches, want 3 (4 at most)", n)
	}
	// Later, alone: a fetch of its own, nothing left from the shared one.
	if err := pull(""); err != nil {
		t.Fatal(err)
	}
}

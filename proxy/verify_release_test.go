package proxy_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/shroudtest"
)

// pulled is what a client got from a GET: status, headers, the body bytes
// that arrived and how the body ended.
type pulled struct {
	status  int
	header  http.Header
	body    []byte
	readErr error
}

func pull(t *testing.T, url string, hdr ...string) pulled {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return pulled{readErr: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return pulled{status: resp.StatusCode, header: resp.Header, body: b, readErr: err}
}

// Under verify-before-release a pull of a small (held in memory) and a
// large (spooled) layer gives back the bytes pushed, a Range exactly its
// plaintext, and nothing is left in the spool.
func TestVerifyBeforeReleaseRoundTrip(t *testing.T) {
	up := shroudtest.Distribution(t)
	s := shroudtest.Start(t, up, shroudtest.WithPolicy(shroudtest.Rule{Pattern: "**", Action: crypto.Encrypt, VerifyBeforeRelease: true}))
	for _, n := range []int{300_000, 3 << 20} {
		layer := atkRandBytes(t, n)
		repo := fmt.Sprintf("vbr/app%d", n)
		if err := remote.Write(ref(t, s.Host(), repo+":1"), atkStaticImage(t, layer)); err != nil {
			t.Fatal(err)
		}
		url := s.URL + "/v2/" + repo + "/blobs/" + digest.FromBytes(layer).String()
		if g := pull(t, url); g.status != 200 || !bytes.Equal(g.body, layer) || g.readErr != nil {
			t.Fatalf("%d bytes: %d, %d bytes back, %v; want the layer", n, g.status, len(g.body), g.readErr)
		}
		g := pull(t, url, "Range", "bytes=1000-1999")
		if g.status != 206 || !bytes.Equal(g.body, layer[1000:2000]) || g.header.Get("Content-Range") != fmt.Sprintf("bytes 1000-1999/%d", n) {
			t.Fatalf("%d bytes, Range 1000-1999: %d %q, %d bytes; want 206 and exactly that range", n, g.status, g.header.Get("Content-Range"), len(g.body))
		}
	}
}

// Attack: a tampered blob releases plaintext before the check fails.
// Without verify-before-release a pull streams the plaintext and aborts
// only at the end (the client holds most of the bytes, unverified); with
// it, a user checks that a client gets a clean error status with an OCI
// error body and not one byte of the blob, for a small and a large blob,
// whole or as a range.
func TestVerifyBeforeReleaseTamperedBlobReleasesNothing(t *testing.T) {
	up := shroudtest.Distribution(t)
	s := shroudtest.Start(t, up, shroudtest.WithPolicy(
		shroudtest.Rule{Pattern: "vbr/**", Action: crypto.Encrypt, VerifyBeforeRelease: true},
		shroudtest.Rule{Pattern: "**", Action: crypto.Encrypt}))
	for _, n := range []int{300_000, 3 << 20} {
		layer := atkRandBytes(t, n)
		for _, repo := range []string{"vbr/app", "stream/app"} {
			if err := remote.Write(ref(t, s.Host(), repo+":1"), atkStaticImage(t, layer)); err != nil {
				t.Fatal(err)
			}
			tamper(t, up, repo+":1")
		}
		d := digest.FromBytes(layer).String()
		plain := pull(t, s.URL+"/v2/stream/app/blobs/"+d)
		if plain.readErr == nil || len(plain.body) == 0 {
			t.Errorf("%d bytes without the rule: %d, %d bytes, %v; want bytes then an aborted connection", n, plain.status, len(plain.body), plain.readErr)
		}
		for _, hdr := range [][]string{nil, {"Range", "bytes=0-99"}, {"Range", "bytes=1000-"}} {
			g := pull(t, s.URL+"/v2/vbr/app/blobs/"+d, hdr...)
			what := fmt.Sprintf("%d bytes %v", n, hdr)
			if g.status != 502 || g.readErr != nil || !bytes.Contains(g.body, []byte(`"errors"`)) || !bytes.Contains(g.body, []byte("integrity")) {
				t.Errorf("%s under the rule: %d %.200s (%v); want 502 with an OCI error naming the integrity check", what, g.status, g.body, g.readErr)
			}
			for _, needle := range atkPlaintextNeedles(layer) {
				if bytes.Contains(g.body, needle) {
					t.Errorf("%s under the rule: plaintext of the blob released", what)
				}
			}
		}
	}
}

// A blob larger than the memory bound is held in an unlinked file of the
// spool directory, which is gone when the request ends.
func TestVerifyBeforeReleaseSpoolsLargeBlobs(t *testing.T) {
	spool := t.TempDir()
	up := shroudtest.Distribution(t)
	s := shroudtest.Start(t, up, shroudtest.WithSpoolDir(spool),
		shroudtest.WithPolicy(shroudtest.Rule{Pattern: "**", Action: crypto.Encrypt, VerifyBeforeRelease: true}))
	layer := atkRandBytes(t, 3<<20)
	if err := remote.Write(ref(t, s.Host(), "big/app:1"), atkStaticImage(t, layer)); err != nil {
		t.Fatal(err)
	}
	url := s.URL + "/v2/big/app/blobs/" + digest.FromBytes(layer).String()
	req, _ := http.NewRequest("GET", url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 10)
	io.ReadFull(resp.Body, head)
	// Mid-stream: the spool file is open but already unlinked.
	if ents, _ := os.ReadDir(spool); len(ents) != 0 {
		t.Errorf("spool holds %d named files mid-stream, want none (unlinked)", len(ents))
	}
	rest, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(append(head, rest...), layer) {
		t.Fatal("the spooled blob did not come back intact")
	}
	if ents, _ := os.ReadDir(spool); len(ents) != 0 {
		names := []string{}
		for _, e := range ents {
			names = append(names, filepath.Join(spool, e.Name()))
		}
		t.Errorf("spool holds %v after the pull", names)
	}
}

package proxy_test

import (
	"bytes"
	"io"
	"net/http"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/shroudtest"
)

// atkRangeGet is one blob GET with a Range header, read to its end.
type atkRangeGet struct {
	status  int
	header  http.Header
	length  int64 // Content-Length
	body    []byte
	readErr error
}

func atkGetRange(t *testing.T, url, rng string) atkRangeGet {
	t.Helper()
	req := must[*http.Request](t)(http.NewRequest("GET", url, nil))
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return atkRangeGet{readErr: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return atkRangeGet{status: resp.StatusCode, header: resp.Header, length: resp.ContentLength, body: b, readErr: err}
}

// completed says whether an answer was a success delivered in full: a 2xx
// whose body was read to its end without error.
func (g atkRangeGet) completed() bool {
	return g.status/100 == 2 && g.readErr == nil && (g.length < 0 || int64(len(g.body)) == g.length)
}

// Attack: "Range: bytes=0-" is the whole blob without its check. A GET of
// a blob is verified (HMAC, plaintext digest) and aborted on a mismatch;
// the same GET with "Range: bytes=0-" is served as a range, decrypted
// unverified, and completes as a 206 of the whole tampered blob. A user
// checks that after the upstream's ciphertext is tampered with, a
// bytes=0- GET never completes as a success (the stream is aborted, or
// refused), as a plain GET does not.
func TestRangeFromZeroOfTamperedBlob(t *testing.T) {
	up := shroudtest.Distribution(t)
	s := shroudtest.Start(t, up)
	layer := atkRandBytes(t, 300_000)
	if err := remote.Write(ref(t, s.Host(), "tamper/app:1"), atkStaticImage(t, layer)); err != nil {
		t.Fatal(err)
	}
	url := s.URL + "/v2/tamper/app/blobs/" + digest.FromBytes(layer).String()
	if g := atkGetRange(t, url, "bytes=0-"); !g.completed() || !bytes.Equal(g.body, layer) {
		t.Fatalf("untampered bytes=0-: %d, %d bytes, %v; want the whole blob", g.status, len(g.body), g.readErr)
	}
	tamper(t, up, "tamper/app:1")
	if g := atkGetRange(t, url, ""); g.completed() {
		t.Fatalf("a plain GET of the tampered blob completed: %d", g.status)
	}
	for _, rng := range []string{"bytes=0-", "bytes=0-299999", "bytes=0-999999"} {
		if g := atkGetRange(t, url, rng); g.completed() {
			t.Errorf("GET Range %s of a tampered blob completed as a success: %d, %d of %d bytes (Content-Range %q)",
				rng, g.status, len(g.body), len(layer), g.header.Get("Content-Range"))
		}
	}
}

// Attack: an unverified range under verify-ranges. A rule with
// VerifyRanges promises that no byte is released before it was verified:
// a Range request is answered with the whole blob, verified (200), never
// a decrypted, unverified 206. A user checks that a middle range gets 200
// and the whole blob when the blob is intact, and that the stream is
// aborted (never a completed success) once the ciphertext is tampered.
func TestVerifyRangesServesWholeVerifiedBlob(t *testing.T) {
	up := shroudtest.Distribution(t)
	s := shroudtest.Start(t, up, shroudtest.WithPolicy(
		shroudtest.Rule{Pattern: "verified/**", Action: crypto.Encrypt, VerifyRanges: true},
		shroudtest.Rule{Pattern: "**", Action: crypto.Encrypt},
	))
	layer := atkRandBytes(t, 300_000)
	if err := remote.Write(ref(t, s.Host(), "verified/app:1"), atkStaticImage(t, layer)); err != nil {
		t.Fatal(err)
	}
	url := s.URL + "/v2/verified/app/blobs/" + digest.FromBytes(layer).String()
	g := atkGetRange(t, url, "bytes=100000-199999")
	if !g.completed() || g.status != 200 || !bytes.Equal(g.body, layer) {
		t.Errorf("verify-ranges, intact blob, Range 100000-199999: %d, %d bytes (Content-Range %q), %v; want 200 and the whole blob",
			g.status, len(g.body), g.header.Get("Content-Range"), g.readErr)
	}
	tamper(t, up, "verified/app:1")
	for _, rng := range []string{"bytes=100000-199999", "bytes=0-", "bytes=-1000"} {
		if g := atkGetRange(t, url, rng); g.completed() {
			t.Errorf("verify-ranges, tampered blob, Range %s: completed as %d with %d bytes; want an aborted stream", rng, g.status, len(g.body))
		}
	}
}

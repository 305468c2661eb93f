package upstream

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"
)

// internalSecret is what a service reachable only from shroud's host
// answers; it must never come back through shroud.
const internalSecret = "INTERNAL-ONLY-SECRET"

// internalService is a loopback service the hostile upstream would like
// shroud to fetch for it. It counts the requests that reached it.
type internalService struct {
	*httptest.Server
	hits atomic.Int32
	mu   sync.Mutex
	auth []string // the Authorization headers it saw
}

func startInternal(t *testing.T) *internalService {
	t.Helper()
	s := &internalService{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		s.mu.Lock()
		s.auth = append(s.auth, r.Header.Get("Authorization"))
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
		io.WriteString(w, internalSecret)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *internalService) authSeen() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.auth...)
}

// hostile is an upstream that answers every request with h.
func hostile(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s
}

// redirectTo answers every request with a 307 to target.
func redirectTo(target string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", target)
		w.WriteHeader(http.StatusTemporaryRedirect)
	}
}

func newClient(t *testing.T, base string, hc *http.Client) *Client {
	t.Helper()
	c, err := New(base, hc)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var blobDigest = digest.FromString("some layer")

// readAll reads and closes a response body, if there is one.
func readAll(resp *http.Response) string {
	if resp == nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// The upstream answers a blob download with a redirect to a service on
// shroud's own loopback (a different host:port than the upstream's):
// shroud must not fetch it, so the service's answer cannot come back as
// the blob. A redirect to the upstream's own host:port (its storage
// path) is followed, as registries redirect blob downloads.
func TestBlobRedirectToLoopbackServiceIsNotFollowed(t *testing.T) {
	internal := startInternal(t)
	var up *httptest.Server
	up = hostile(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/storage/"):
			io.WriteString(w, "ciphertext from the upstream's storage")
		case strings.Contains(r.URL.Path, "/v2/own/"):
			http.Redirect(w, r, up.URL+"/storage/"+blobDigest.Encoded(), http.StatusTemporaryRedirect)
		default:
			http.Redirect(w, r, internal.URL+"/latest/meta-data/iam", http.StatusTemporaryRedirect)
		}
	})
	c := newClient(t, up.URL, nil).WithAuthorization("Bearer client-token")
	ctx := t.Context()

	resp, err := c.GetBlob(ctx, "evil/repo", blobDigest, "")
	if body := readAll(resp); err == nil || strings.Contains(body, internalSecret) {
		t.Fatalf("GetBlob followed a redirect to %s: err %v, body %q", internal.URL, err, body)
	}
	if _, exists, err := c.HeadBlob(ctx, "evil/repo", blobDigest); err == nil || exists {
		t.Fatalf("HeadBlob followed a redirect to %s: exists %v, err %v", internal.URL, exists, err)
	}
	if n := internal.hits.Load(); n != 0 {
		t.Fatalf("the internal service was reached %d times", n)
	}

	resp, err = c.GetBlob(ctx, "own/repo", blobDigest, "")
	if err != nil {
		t.Fatalf("a redirect to the upstream's own storage was not followed: %v", err)
	}
	if body := readAll(resp); body != "ciphertext from the upstream's storage" {
		t.Fatalf("blob body %q", body)
	}
}

// Only blob downloads are redirected by registries: a redirect of a
// manifest, a tag list, the catalog, referrers, the ping or an upload
// step is an error, never followed, and never handed back as an answer
// (Do's callers relay whatever status they get).
func TestRedirectOfAnythingButABlobReadIsAnError(t *testing.T) {
	internal := startInternal(t)
	up := hostile(t, redirectTo(internal.URL+"/admin"))
	c := newClient(t, up.URL, nil).WithAuthorization("Bearer client-token")
	ctx := t.Context()
	loc := up.URL + "/v2/evil/repo/blobs/uploads/u1"

	if m, err := c.GetManifest(ctx, "evil/repo", "latest"); err == nil {
		t.Errorf("GetManifest: %q", m.Body)
	}
	if _, _, _, err := c.HeadManifest(ctx, "evil/repo", "latest"); err == nil {
		t.Error("HeadManifest succeeded")
	}
	for _, path := range []string{"/v2/evil/repo/tags/list", "/v2/_catalog", "/v2/evil/repo/referrers/" + blobDigest.String(), "/v2/", "/v2/evil/repo/blobs/" + blobDigest.String()} {
		resp, err := c.Do(ctx, http.MethodGet, path, nil, nil)
		if err == nil {
			t.Errorf("Do %s: %d %q relayed", path, resp.StatusCode, readAll(resp))
			continue
		}
		// Not a *StatusError, which the proxy hands back with its body.
		var te *TransportError
		if !errors.As(err, &te) || !errors.Is(err, ErrRedirectRefused) {
			t.Errorf("Do %s: %v, want a TransportError wrapping ErrRedirectRefused", path, err)
		}
	}
	if err := c.Ping(ctx); err == nil {
		t.Error("Ping succeeded")
	}
	if _, err := c.StartUpload(ctx, "evil/repo"); err == nil {
		t.Error("StartUpload succeeded")
	}
	if err := c.CommitUpload(ctx, loc, blobDigest); err == nil {
		t.Error("CommitUpload succeeded")
	}
	if err := c.CancelUpload(ctx, loc); err == nil {
		t.Error("CancelUpload succeeded")
	}
	if err := c.DeleteBlob(ctx, "evil/repo", blobDigest); err == nil {
		t.Error("DeleteBlob succeeded")
	}
	if err := c.DeleteManifest(ctx, "evil/repo", "latest"); err == nil {
		t.Error("DeleteManifest succeeded")
	}
	if n := internal.hits.Load(); n != 0 {
		t.Fatalf("the internal service was reached %d times, with %q", n, internal.authSeen())
	}
}

// A 3xx Go's client does not follow (no Location, or 300) is not handed
// back by Do either: the proxy would relay it to the client as the tag
// list or catalog.
func TestUnfollowedRedirectFromDoIsAnError(t *testing.T) {
	up := hostile(t, func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/tags/list") {
			w.WriteHeader(http.StatusFound) // no Location
		} else {
			w.WriteHeader(http.StatusMultipleChoices)
		}
		io.WriteString(w, internalSecret)
	})
	c := newClient(t, up.URL, nil)
	for _, path := range []string{"/v2/evil/repo/tags/list", "/v2/_catalog"} {
		resp, err := c.Do(t.Context(), http.MethodGet, path, nil, nil)
		if err == nil {
			t.Errorf("Do %s: %d %q relayed", path, resp.StatusCode, readAll(resp))
		}
	}
}

// A blob redirect chain is bounded well below Go's ten hops, even on the
// upstream's own host.
func TestBlobRedirectChainIsBounded(t *testing.T) {
	var up *httptest.Server
	up = hostile(t, func(w http.ResponseWriter, r *http.Request) {
		n := len(r.URL.Query()["hop"])
		if n == maxRedirectsForTest+1 {
			io.WriteString(w, "after too many hops")
			return
		}
		q := r.URL.Query()
		q.Add("hop", "x")
		http.Redirect(w, r, up.URL+r.URL.Path+"?"+q.Encode(), http.StatusFound)
	})
	c := newClient(t, up.URL, nil)
	resp, err := c.GetBlob(t.Context(), "evil/repo", blobDigest, "")
	if body := readAll(resp); err == nil {
		t.Fatalf("%d redirects were followed: %q", maxRedirectsForTest+1, body)
	}
}

// maxRedirectsForTest is the number of hops a blob read may take.
const maxRedirectsForTest = 3

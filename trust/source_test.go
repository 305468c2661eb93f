package trust

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// pushArtifact stores tr's files as the trust artifact repo:tag in the
// registry at base, through the distribution API.
func pushArtifact(t *testing.T, base, repo, tag string, tr *testRepo) {
	t.Helper()
	files, err := tr.repo.Files()
	if err != nil {
		t.Fatal(err)
	}
	empty := []byte("{}")
	putBlob(t, base, repo, empty)
	m := ocispec.Manifest{
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: ArtifactType,
		Config:       ocispec.Descriptor{MediaType: ocispec.MediaTypeEmptyJSON, Digest: digest.FromBytes(empty), Size: 2},
	}
	m.SchemaVersion = 2
	for name, data := range files {
		putBlob(t, base, repo, data)
		m.Layers = append(m.Layers, ArtifactLayer(name, data))
	}
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPut, base+"/v2/"+repo+"/manifests/"+tag, bytes.NewReader(raw))
	req.Header.Set("Content-Type", ocispec.MediaTypeImageManifest)
	do(t, req, http.StatusCreated)
}

func putBlob(t *testing.T, base, repo string, data []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/v2/"+repo+"/blobs/uploads/", nil)
	resp := do(t, req, http.StatusAccepted)
	loc := resp.Header.Get("Location")
	if !strings.HasPrefix(loc, "http") {
		loc = base + loc
	}
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	req, _ = http.NewRequest(http.MethodPut, loc+sep+"digest="+digest.FromBytes(data).String(), bytes.NewReader(data))
	do(t, req, http.StatusCreated)
}

func do(t *testing.T, req *http.Request, want int) *http.Response {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != want {
		t.Fatalf("%s %s: %s; want %d", req.Method, req.URL, resp.Status, want)
	}
	return resp
}

// registryFetch is the RegistryFetch the proxy will supply, played here
// by plain HTTP against the registry.
func registryFetch(base string) RegistryFetch {
	return func(ctx context.Context, name string) ([]byte, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v2/"+name, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Accept", ocispec.MediaTypeImageManifest)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("GET %s: %s", name, resp.Status)
		}
		return io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	}
}

func TestOCISourceFromInMemoryRegistry(t *testing.T) {
	srv := httptest.NewServer(registry.New())
	defer srv.Close()
	tr := newTestRepo(t)
	k, bad := newRecipientKey(t), newRecipientKey(t)
	tr.allow(metadata.TARGETS, "", k.entry("**"), bad.entry("**"))
	tr.revoke(metadata.TARGETS, "", bad.revocation(ReasonKeyCompromise))
	tr.publish(metadata.TARGETS)
	pushArtifact(t, srv.URL, "ops/trust", "trust", tr)

	fetch := registryFetch(srv.URL)
	var tamper bool
	env := newChecker(t, tr, "", func(o *Options) {
		o.Source = OCISource("ops/trust", "trust", func(ctx context.Context, name string) ([]byte, error) {
			data, err := fetch(ctx, name)
			if err == nil && tamper && strings.Contains(name, "/blobs/") {
				data = append(bytes.Clone(data), ' ')
			}
			return data, err
		})
	})
	env.refreshed(t)
	env.allowed(t, OpWrap, "a/b", k.id, t0)
	env.refused(t, OpWrap, "a/b", bad.id, t0, RefusedRevoked)

	// A new version pushed to the registry is picked up.
	later := newRecipientKey(t)
	tr.allow(metadata.TARGETS, "", later.entry("team-a/**"))
	tr.publish(metadata.TARGETS)
	pushArtifact(t, srv.URL, "ops/trust", "trust", tr)
	env.refreshed(t)
	env.allowed(t, OpWrap, "team-a/b", later.id, t0)

	// The registry is not trusted: a blob that does not match its
	// descriptor is refused before TUF sees it.
	tr.publish()
	pushArtifact(t, srv.URL, "ops/trust", "trust", tr)
	tamper = true
	err := env.refreshFails(t, nil)
	if !strings.Contains(err.Error(), "does not match its descriptor") {
		t.Fatalf("refresh: %v", err)
	}
	env.refused(t, OpWrap, "a/b", bad.id, t0, RefusedRevoked)
	tamper = false

	// A missing artifact fails the refresh (and is not "no newer root").
	env2 := newChecker(t, tr, "", func(o *Options) { o.Source = OCISource("ops/none", "trust", fetch) })
	if err := env2.Refresh(context.Background()); err == nil || !strings.Contains(err.Error(), "ops/none") {
		t.Fatalf("refresh of a missing artifact: %v", err)
	}
}

func TestOCISourceRefusesOversizedFileBeforeFetching(t *testing.T) {
	srv := httptest.NewServer(registry.New())
	defer srv.Close()
	tr := newTestRepo(t)
	tr.repo.Timestamp.Signed.UnrecognizedFields = map[string]any{"padding": strings.Repeat("x", 20000)}
	tr.publish()
	pushArtifact(t, srv.URL, "ops/trust", "trust", tr)
	fetch := registryFetch(srv.URL)
	var blobs int
	env := newChecker(t, tr, "", func(o *Options) {
		o.Source = OCISource("ops/trust", "trust", func(ctx context.Context, name string) ([]byte, error) {
			if strings.Contains(name, "/blobs/") {
				blobs++
			}
			return fetch(ctx, name)
		})
	})
	env.refreshFails(t, &metadata.ErrDownloadLengthMismatch{})
	if blobs != 0 {
		t.Errorf("%d blobs fetched; the oversized timestamp should be refused from its descriptor", blobs)
	}
}

func TestHTTPSource(t *testing.T) {
	tr := newTestRepo(t)
	k := newRecipientKey(t)
	tr.allow(metadata.TARGETS, "", k.entry("**"))
	tr.publish(metadata.TARGETS)
	srv := httptest.NewTLSServer(http.FileServer(http.Dir(tr.repo.Dir())))
	defer srv.Close()
	src, err := HTTPSource(srv.URL+"/", srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	env := newChecker(t, tr, "", func(o *Options) { o.Source = src })
	env.refreshed(t)
	env.allowed(t, OpWrap, "a/b", k.id, t0)
	if _, err := HTTPSource("http://example.com", nil); err == nil {
		t.Error("HTTPSource accepted plain http")
	}
}

func TestDirSourceStaysInItsDirectory(t *testing.T) {
	dir := t.TempDir()
	src, err := DirSource(dir)
	if err != nil {
		t.Fatal(err)
	}
	f := src.Fetcher(context.Background())
	if _, err := f.DownloadFile("../../etc/passwd", 1<<20, 0); err == nil {
		t.Fatal("read outside the directory")
	}
	_, err = f.DownloadFile("metadata/2.root.json", 1<<20, 0)
	var e *metadata.ErrDownloadHTTP
	if !asErr(err, &e) || e.StatusCode != http.StatusNotFound {
		t.Fatalf("missing file: %v; want a 404 download error", err)
	}
}

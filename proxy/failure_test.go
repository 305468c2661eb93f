package proxy_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/shroudtest"
)

// tamper flips one byte in the middle of the ciphertext of the first layer
// of repoTag in the upstream's storage and returns the tampered bytes.
func tamper(t *testing.T, up shroudtest.Upstream, repoTag string) []byte {
	t.Helper()
	upImg := must[v1.Image](t)(remote.Image(ref(t, up.Host(), repoTag)))
	cipherDigest := must[v1.Hash](t)(must[[]v1.Layer](t)(upImg.Layers())[0].Digest())
	path := up.Dir + "/docker/registry/v2/blobs/sha256/" + cipherDigest.Hex[:2] + "/" + cipherDigest.Hex + "/data"
	b := must[[]byte](t)(os.ReadFile(path))
	b[len(b)/2] ^= 0x01
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return b
}

// One flipped byte of a ciphertext blob in the upstream's storage makes the
// pull through shroud fail at the client; it never completes as a success.
func TestTamperedBlobFailsThePull(t *testing.T) {
	up := shroudtest.Distribution(t)
	s := shroudtest.Start(t, up)
	img := must[v1.Image](t)(random.Image(500_000, 1))
	r := ref(t, s.Host(), "tamper/app:1")
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	b := tamper(t, up, "tamper/app:1")
	plainDigest := must[v1.Hash](t)(must[[]v1.Layer](t)(img.Layers())[0].Digest())

	// Raw: the connection is cut before the last byte.
	resp, err := http.Get(s.URL + "/v2/tamper/app/blobs/" + plainDigest.String())
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil {
		t.Fatalf("tampered blob read completed: %d of %d bytes, no error", len(got), len(b))
	}
	if int64(len(got)) >= resp.ContentLength {
		t.Fatalf("client received all %d bytes of a tampered blob", len(got))
	}

	// A real client: the layer cannot be read.
	pulled := must[v1.Image](t)(remote.Image(r))
	l := must[[]v1.Layer](t)(pulled.Layers())[0]
	rc, err := l.Compressed()
	if err == nil {
		_, err = io.ReadAll(rc)
		rc.Close()
	}
	if err == nil {
		t.Fatal("go-containerregistry pulled a tampered layer without error")
	}
}

// Auth passes through: the client's credentials go upstream, the upstream's
// challenge comes back unchanged, and a wrong password gets nothing.
func TestAuthPassthrough(t *testing.T) {
	up := shroudtest.Distribution(t)
	target, _ := url.Parse(up.URL)
	rp := httputil.NewSingleHostReverseProxy(target)
	guarded := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "alice" || p != "s3cret" {
			w.Header().Set("WWW-Authenticate", `Basic realm="upstream-realm"`)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(guarded.Close)
	s := shroudtest.Start(t, shroudtest.Upstream{Name: "guarded", URL: guarded.URL})

	resp := must[*http.Response](t)(http.Get(s.URL + "/v2/"))
	resp.Body.Close()
	if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != `Basic realm="upstream-realm"` {
		t.Fatalf("anonymous /v2/: %d %q, want the upstream's 401 challenge", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	img := must[v1.Image](t)(random.Image(100_000, 2))
	r := ref(t, s.Host(), "private/app:1")
	good := remote.WithAuth(&authn.Basic{Username: "alice", Password: "s3cret"})
	if err := remote.Write(r, img, good); err != nil {
		t.Fatalf("push with the right credentials: %v", err)
	}
	if got := must[v1.Image](t)(remote.Image(r, good)); must[v1.Hash](t)(got.Digest()) != must[v1.Hash](t)(img.Digest()) {
		t.Fatal("pull with the right credentials returned another image")
	}
	plainLayer := must[v1.Hash](t)(must[[]v1.Layer](t)(img.Layers())[0].Digest())
	for _, path := range []string{"/v2/private/app/manifests/1", "/v2/private/app/blobs/" + plainLayer.String()} {
		req, _ := http.NewRequest("GET", s.URL+path, nil)
		req.SetBasicAuth("alice", "wrong")
		resp := must[*http.Response](t)(http.DefaultClient.Do(req))
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 401 || bytes.Contains(body, []byte("layers")) || len(body) > 200 {
			t.Fatalf("GET %s with a wrong password: %d, %d bytes; want 401 and no content", path, resp.StatusCode, len(body))
		}
	}
}

// A dead upstream is a 502 with an OCI error, not a hang or a 500.
func TestDeadUpstream(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	s := shroudtest.Start(t, shroudtest.Upstream{Name: "dead", URL: "http://" + addr})
	c := call{t, s.URL}
	c.do("GET", "/v2/", nil).want(t, 502, "UNAVAILABLE")
	c.do("POST", "/v2/app/blobs/uploads/", nil).want(t, 502, "UNAVAILABLE")
	c.do("GET", "/v2/app/manifests/latest", nil).want(t, 502, "UNAVAILABLE")
}

// Malformed manifests get MANIFEST_INVALID (or MANIFEST_BLOB_UNKNOWN), and
// nothing reaches the upstream.
func TestBadManifests(t *testing.T) {
	for _, up := range shroudtest.Upstreams(t) {
		t.Run(up.Name, func(t *testing.T) {
			s := shroudtest.Start(t, up)
			c := call{t, s.URL}
			unknown := digest.FromString("never pushed")
			layerless := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` + unknown.String() + `","size":2},"layers":[]}`
			for _, tc := range []struct {
				name, body, code string
				status           int
			}{
				{"not JSON", "{not json", "MANIFEST_INVALID", 400},
				{"schema 1", `{"schemaVersion":1,"name":"app","tag":"1","fsLayers":[]}`, "MANIFEST_INVALID", 400},
				{"no config", `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}`, "MANIFEST_INVALID", 400},
				{"bad digest", `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"digest":"sha256:xyz","size":1},"layers":[]}`, "MANIFEST_INVALID", 400},
				{"unknown config", layerless, "MANIFEST_BLOB_UNKNOWN", 400},
			} {
				a := c.do("PUT", "/v2/bad/app/manifests/1", strings.NewReader(tc.body), "Content-Type", "application/vnd.oci.image.manifest.v1+json")
				if a.status != tc.status || a.errorCode() != tc.code {
					t.Errorf("%s: %d %s, want %d %s", tc.name, a.status, a.body, tc.status, tc.code)
				}
			}
			body := `{"schemaVersion":2,"manifests":[]}`
			c.do("PUT", "/v2/bad/app/manifests/"+digest.FromString("other").String(), strings.NewReader(body), "Content-Type", ocispec.MediaTypeImageIndex).want(t, 400, "DIGEST_INVALID")
			resp := must[*http.Response](t)(http.Get(up.URL + "/v2/bad/app/manifests/1"))
			resp.Body.Close()
			if resp.StatusCode != 404 {
				t.Fatalf("upstream has a manifest after only bad pushes: %d", resp.StatusCode)
			}
		})
	}
}

// A manifest whose layer was never pushed is refused.
func TestManifestWithUnknownLayer(t *testing.T) {
	for _, up := range shroudtest.Upstreams(t) {
		t.Run(up.Name, func(t *testing.T) {
			s := shroudtest.Start(t, up)
			c := call{t, s.URL}
			cfg := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
			cd := digest.FromBytes(cfg)
			c.do("POST", "/v2/x/app/blobs/uploads/?digest="+cd.String(), bytes.NewReader(cfg)).want(t, 201, "")
			m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest,
				Config: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: cd, Size: int64(len(cfg))},
				Layers: []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromString("missing"), Size: 7}}}
			m.SchemaVersion = 2
			body, _ := json.Marshal(m)
			c.do("PUT", "/v2/x/app/manifests/1", bytes.NewReader(body), "Content-Type", ocispec.MediaTypeImageManifest).want(t, 400, "MANIFEST_BLOB_UNKNOWN")
		})
	}
}

// A layer whose media type says +encrypted but which carries no wrapped
// key is plaintext under an encrypted name: the manifest is refused, and
// the plaintext (pushed around shroud, as such a client would) is not
// named upstream by any manifest.
func TestFakeEncryptedLayerIsRefused(t *testing.T) {
	up := shroudtest.Distribution(t)
	s := shroudtest.Start(t, up)
	c := call{t, s.URL}
	cfg := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	cd := digest.FromBytes(cfg)
	c.do("POST", "/v2/edge/app/blobs/uploads/?digest="+cd.String(), bytes.NewReader(cfg)).want(t, 201, "")
	plain := []byte("plaintext layer, not encrypted at all")
	pd := digest.FromBytes(plain)
	repo := must[name.Repository](t)(name.NewRepository(up.Host() + "/edge/app"))
	if err := remote.WriteLayer(repo, static.NewLayer(plain, types.OCILayer)); err != nil {
		t.Fatal(err)
	}
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest,
		Config: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: cd, Size: int64(len(cfg))},
		Layers: []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageLayerGzip + "+encrypted", Digest: pd, Size: int64(len(plain)),
			Annotations: map[string]string{crypto.AnnotationPubOpts: "e30="}}}}
	m.SchemaVersion = 2
	body, _ := json.Marshal(m)
	a := c.do("PUT", "/v2/edge/app/manifests/1", bytes.NewReader(body), "Content-Type", ocispec.MediaTypeImageManifest)
	a.want(t, 400, "MANIFEST_INVALID")
	if !strings.Contains(string(a.body), "no wrapped key") {
		t.Fatalf("the refusal does not say why: %s", a.body)
	}
	call{t, up.URL}.do("GET", "/v2/edge/app/manifests/1", nil).want(t, 404, "MANIFEST_UNKNOWN")
}

// An image shroud cannot decrypt is DENIED, naming why: sealed to another
// identity, or a layer wrapped for keys shroud does not hold.
func TestUndecryptableIsDenied(t *testing.T) {
	up := shroudtest.Distribution(t)
	a := shroudtest.Start(t, up)
	b := shroudtest.Start(t, up)
	img := must[v1.Image](t)(random.Image(50_000, 1))
	if err := remote.Write(ref(t, a.Host(), "denied/app:1"), img); err != nil {
		t.Fatal(err)
	}
	ans := call{t, b.URL}.do("GET", "/v2/denied/app/manifests/1", nil)
	ans.want(t, 403, "DENIED")
	if !strings.Contains(string(ans.body), "not sealed by this shroud") {
		t.Fatalf("DENIED does not say why: %s", ans.body)
	}
	_, err := remote.Image(ref(t, b.Host(), "denied/app:1"))
	var te interface{ Error() string }
	if err == nil || !errors.As(err, &te) {
		t.Fatal("pull through a shroud without the key succeeded")
	}
}

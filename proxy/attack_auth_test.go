package proxy_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shroud-oci/shroud/internal/shroudtest"
)

// Attack: an unauthenticated manifest PUT makes shroud do all the work
// first. The upstream wants credentials for writes; an anonymous client
// PUTs a manifest naming one (known) layer 3,000 times, and shroud checks
// and rewraps every descriptor (an upstream request and a key wrap each)
// before the upstream's 401 on the final PUT. A user checks that the
// anonymous PUT gets the 401 UNAUTHORIZED having cost the upstream at
// most 3 requests.
func TestUnauthenticatedManifestPutDoesNoWork(t *testing.T) {
	dist := shroudtest.Distribution(t)
	rec := &shroudtest.Recorder{}
	up := shroudtest.Behind(t, dist, shroudtest.Chain(rec.Middleware, shroudtest.RequireAuth(false)))
	s := shroudtest.Start(t, up)
	c := call{t, s.URL}
	auth := []string{"Authorization", atkBasicAuth("alice", "s3cret")}

	// With credentials: the config and the layer, and an image of them.
	cd := atkPushBlob(t, c, "dos/app", atkPlainConfig, auth...)
	layer := atkRandBytes(t, 10_000)
	atkPushBlob(t, c, "dos/app", layer, auth...)
	cfg := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: cd, Size: int64(len(atkPlainConfig))}
	a := c.do("PUT", "/v2/dos/app/manifests/1", bytes.NewReader(atkImageManifest(t, cfg, atkLayerDesc(layer))),
		append([]string{"Content-Type", ocispec.MediaTypeImageManifest}, auth...)...)
	if a.status != 201 {
		t.Fatalf("push with credentials: %d %s", a.status, a.body)
	}
	anon := c.do("PUT", "/v2/dos/app/manifests/small", bytes.NewReader(atkImageManifest(t, cfg, atkLayerDesc(layer))), "Content-Type", ocispec.MediaTypeImageManifest)
	if anon.status != 401 {
		t.Fatalf("anonymous PUT of a one-layer manifest: %d, want the upstream's 401", anon.status)
	}

	layers := make([]ocispec.Descriptor, 3000)
	for i := range layers {
		layers[i] = atkLayerDesc(layer)
	}
	body := atkImageManifest(t, cfg, layers...)
	rec.Reset()
	start := time.Now()
	a = c.do("PUT", "/v2/dos/app/manifests/big", bytes.NewReader(body), "Content-Type", ocispec.MediaTypeImageManifest)
	n := rec.Count(nil)
	t.Logf("anonymous PUT of %d bytes: %d after %v, %d upstream requests", len(body), a.status, time.Since(start), n)
	if a.status != 401 || a.errorCode() != "UNAUTHORIZED" {
		t.Errorf("anonymous PUT of a 3,000-layer manifest: %d %.200s, want 401 UNAUTHORIZED", a.status, a.body)
	}
	if got := a.header.Get("WWW-Authenticate"); got != `Basic realm="x"` {
		t.Errorf("anonymous PUT: challenge %q, want the upstream's", got)
	}
	if n > 3 {
		t.Errorf("an anonymous PUT shroud could not store cost the upstream %d requests, want at most 3", n)
	}
	call{t, dist.URL}.do("GET", "/v2/dos/app/manifests/big", nil).want(t, 404, "MANIFEST_UNKNOWN")
}

// Attack: an upload session is anyone's. shroud keeps upload sessions
// itself, keyed by the id in the Location URL; another client (other
// credentials, or none) who learns that URL reads its progress or cancels
// it, although the upstream would refuse it the write. A user checks that
// client B and an anonymous client get 404 BLOB_UPLOAD_UNKNOWN (or 401)
// for GET and DELETE of A's session, and that A then completes the upload
// and the blob pulls back byte for byte.
func TestUploadSessionOfAnotherClient(t *testing.T) {
	up := shroudtest.Behind(t, shroudtest.Distribution(t), shroudtest.RequireAuth(false))
	s := shroudtest.Start(t, up)
	c := call{t, s.URL}
	alice := []string{"Authorization", atkBasicAuth("alice", "a-secret")}
	bob := []string{"Authorization", atkBasicAuth("bob", "b-secret")}
	b, d := randBlob(t, 60_000)

	a := c.do("POST", "/v2/up/app/blobs/uploads/", nil, alice...)
	if a.status != 202 || a.header.Get("Location") == "" {
		t.Fatalf("alice opens an upload: %d %s", a.status, a.body)
	}
	loc := a.header.Get("Location")
	a = c.do("PATCH", loc, bytes.NewReader(b[:30_000]), append([]string{"Content-Type", "application/octet-stream"}, alice...)...)
	if a.status != 202 {
		t.Fatalf("alice's chunk: %d %s", a.status, a.body)
	}
	if a.header.Get("Location") != "" {
		loc = a.header.Get("Location")
	}
	if st := c.do("GET", loc, nil, alice...); st.status != 204 {
		t.Fatalf("alice's own status GET: %d, want 204", st.status)
	}

	refused := func(what string, a answer) {
		t.Helper()
		if !(a.status == 404 && a.errorCode() == "BLOB_UPLOAD_UNKNOWN") && a.status != 401 {
			t.Errorf("%s of alice's upload: %d %s (Range %q), want 404 BLOB_UPLOAD_UNKNOWN or 401", what, a.status, a.body, a.header.Get("Range"))
		}
	}
	refused("bob's GET", c.do("GET", loc, nil, bob...))
	refused("an anonymous GET", c.do("GET", loc, nil))
	refused("bob's DELETE", c.do("DELETE", loc, nil, bob...))
	refused("an anonymous DELETE", c.do("DELETE", loc, nil))

	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	fin := c.do("PUT", loc+sep+"digest="+d.String(), bytes.NewReader(b[30_000:]), append([]string{"Content-Type", "application/octet-stream"}, alice...)...)
	if fin.status != 201 {
		t.Fatalf("alice completes her upload: %d %s", fin.status, fin.body)
	}
	got := c.do("GET", "/v2/up/app/blobs/"+d.String(), nil, alice...)
	if got.status != 200 || !bytes.Equal(got.body, b) {
		t.Fatalf("alice's blob pulls back: %d, %d bytes; want 200 and %s", got.status, len(got.body), fmt.Sprint(len(b)))
	}
}

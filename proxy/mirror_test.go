package proxy_test

import (
	"bytes"
	"net/http"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/shroud-oci/shroud/internal/shroudtest"
)

// withNS adds containerd's ?ns=<origin> to every request.
type withNS struct {
	origin string
	next   http.RoundTripper
}

func (n withNS) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	q := r.URL.Query()
	q.Set("ns", n.origin)
	r.URL.RawQuery = q.Encode()
	return n.next.RoundTrip(r)
}

// containerdAccept is the Accept header containerd's resolver sends.
const containerdAccept = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, */*"

// shroud as containerd's mirror: ?ns= picks the upstream; the flow
// containerd follows (HEAD by tag, GET by digest, blobs by digest) gets the
// image back as pushed, from the upstream mapped to that origin.
func TestMirrorNamespace(t *testing.T) {
	def, hub := shroudtest.Distribution(t), shroudtest.Distribution(t)
	s := shroudtest.Start(t, def, shroudtest.WithMirror("docker.io", hub))
	img := must[v1.Image](t)(random.Image(100_000, 2))
	tr := remote.WithTransport(withNS{"docker.io", http.DefaultTransport})
	if err := remote.Write(ref(t, s.Host(), "library/app:1"), img, tr); err != nil {
		t.Fatalf("push with ?ns=docker.io: %v", err)
	}
	c := call{t, s.URL}
	head := c.do("HEAD", "/v2/library/app/manifests/1?ns=docker.io", nil, "Accept", containerdAccept)
	wantDigest := must[v1.Hash](t)(img.Digest()).String()
	if head.status != 200 || head.header.Get("Docker-Content-Digest") != wantDigest {
		t.Fatalf("HEAD by tag: %d %q, want 200 %s", head.status, head.header.Get("Docker-Content-Digest"), wantDigest)
	}
	get := c.do("GET", "/v2/library/app/manifests/"+wantDigest+"?ns=docker.io", nil, "Accept", containerdAccept)
	if get.status != 200 || !bytes.Equal(get.body, must[[]byte](t)(img.RawManifest())) {
		t.Fatalf("GET by digest: %d", get.status)
	}
	for d, b := range layerBytes(t, img) {
		if got := c.do("GET", "/v2/library/app/blobs/"+d.String()+"?ns=docker.io", nil); !bytes.Equal(got.body, b) {
			t.Fatalf("blob %s: %d", d, got.status)
		}
	}
	// The origin's upstream holds the encrypted image; the default none.
	checkUpstreamEncryptedManifest(t, hub, "library/app:1")
	c.do("GET", "/v2/library/app/manifests/1", nil).want(t, 404, "MANIFEST_UNKNOWN")
	// An origin with no upstream of its own falls back to the default.
	c.do("GET", "/v2/library/app/manifests/1?ns=quay.io", nil).want(t, 404, "MANIFEST_UNKNOWN")
}

package proxy_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shroud-oci/shroud/internal/shroudtest"
)

// atkIndexOf is an OCI index of children (and a subject, if any).
func atkIndexOf(t *testing.T, children []ocispec.Descriptor, subject *ocispec.Descriptor, ann map[string]string) []byte {
	t.Helper()
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: children, Subject: subject, Annotations: ann}
	idx.SchemaVersion = 2
	if subject != nil {
		idx.ArtifactType = "application/vnd.example.signature"
	}
	return must[[]byte](t)(json.Marshal(idx))
}

// Attack: index fan-out. Anyone who may write the upstream pushes an index
// that lists one child manifest 10,000 times (1.4 MB, under every
// registry's limit); each GET of it through shroud fetches the child from
// the upstream 10,000 times. A user checks that a GET through shroud costs
// the upstream at most 3 manifest GETs, a second GET at most 2, and that
// the index comes back as the upstream holds it.
func TestIndexFanOut(t *testing.T) {
	ggcr := shroudtest.GGCR(t)
	rec := &shroudtest.Recorder{}
	up := shroudtest.Behind(t, ggcr, rec.Middleware)
	s := shroudtest.Start(t, up)

	// A plain child and the index, straight at the upstream.
	cd := atkPushUpstreamBlob(t, ggcr, "fan/app", atkPlainConfig)
	layer := atkRandBytes(t, 1000)
	atkPushUpstreamBlob(t, ggcr, "fan/app", layer)
	child := atkImageManifest(t, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: cd, Size: int64(len(atkPlainConfig))}, atkLayerDesc(layer))
	atkPutUpstream(t, ggcr, "fan/app", digest.FromBytes(child).String(), ocispec.MediaTypeImageManifest, child)
	children := make([]ocispec.Descriptor, 10_000)
	for i := range children {
		children[i] = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(child), Size: int64(len(child))}
	}
	index := atkIndexOf(t, children, nil, nil)
	if len(index) >= 4<<20 {
		t.Fatalf("index of %d bytes is over 4 MiB", len(index))
	}
	atkPutUpstream(t, ggcr, "fan/app", "many", ocispec.MediaTypeImageIndex, index)

	c := call{t, s.URL}
	for i, budget := range []int{3, 2} {
		rec.Reset()
		start := time.Now()
		a := c.do("GET", "/v2/fan/app/manifests/many", nil, "Accept", ocispec.MediaTypeImageIndex)
		n := rec.Count(atkIsManifestGet)
		t.Logf("GET %d of the index: %d in %v, %d upstream manifest GETs (%d requests)", i+1, a.status, time.Since(start), n, rec.Count(nil))
		if a.status != 200 || !bytes.Equal(a.body, index) {
			t.Errorf("GET %d of the index: %d, %d bytes; want 200 and the index as stored", i+1, a.status, len(a.body))
		}
		if n > budget {
			t.Fatalf("GET %d of an index listing one child 10,000 times cost %d upstream manifest GETs, want at most %d", i+1, n, budget)
		}
	}
}

// Attack: referrers fan-out. 20 referrers of an image, each an index of
// 20 children: one referrers GET through shroud restores each referrer,
// and each child of each referrer, from the upstream. Anyone may add
// referrers to an image straight at the upstream. A user checks that one
// referrers GET costs the upstream at most 25 requests, for referrers
// pushed through shroud and for referrers pushed straight at the upstream,
// and still lists all 20.
func TestReferrersFanOut(t *testing.T) {
	for _, via := range []string{"shroud", "upstream"} {
		t.Run(via, func(t *testing.T) {
			ggcr := shroudtest.GGCR(t)
			rec := &shroudtest.Recorder{}
			up := shroudtest.Behind(t, ggcr, rec.Middleware)
			s := shroudtest.Start(t, up)
			img := atkStaticImage(t, atkRandBytes(t, 2000))
			if err := remote.Write(ref(t, s.Host(), "refs/app:1"), img); err != nil {
				t.Fatal(err)
			}
			imgDigest := must[v1.Hash](t)(img.Digest())
			subject := &ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.Digest(imgDigest.String()), Size: must[int64](t)(img.Size())}
			pushTo := call{t, s.URL}
			if via == "upstream" {
				pushTo = call{t, ggcr.URL}
				upImg := must[*remote.Descriptor](t)(remote.Get(ref(t, ggcr.Host(), "refs/app:1")))
				subject = &ocispec.Descriptor{MediaType: string(upImg.MediaType), Digest: digest.Digest(upImg.Digest.String()), Size: upImg.Size}
			}

			cd := atkPushBlob(t, pushTo, "refs/app", []byte("{}"))
			layer := atkRandBytes(t, 500)
			atkPushBlob(t, pushTo, "refs/app", layer)
			put := func(body []byte, mt string) digest.Digest {
				d := digest.FromBytes(body)
				a := pushTo.do("PUT", "/v2/refs/app/manifests/"+d.String(), bytes.NewReader(body), "Content-Type", mt)
				if a.status != 201 {
					t.Fatalf("PUT %s: %d %s", d, a.status, a.body)
				}
				return d
			}
			var children []ocispec.Descriptor
			for i := range 20 {
				m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: "application/vnd.example.part",
					Config:      ocispec.Descriptor{MediaType: "application/vnd.oci.empty.v1+json", Digest: cd, Size: 2},
					Layers:      []ocispec.Descriptor{{MediaType: "application/vnd.example.part", Digest: digest.FromBytes(layer), Size: int64(len(layer))}},
					Annotations: map[string]string{"part": fmt.Sprint(i)}}
				m.SchemaVersion = 2
				b := must[[]byte](t)(json.Marshal(m))
				children = append(children, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: put(b, ocispec.MediaTypeImageManifest), Size: int64(len(b))})
			}
			for i := range 20 {
				put(atkIndexOf(t, children, subject, map[string]string{"signature": fmt.Sprint(i)}), ocispec.MediaTypeImageIndex)
			}

			rec.Reset()
			a := call{t, s.URL}.do("GET", "/v2/refs/app/referrers/"+imgDigest.String(), nil)
			n := rec.Count(nil)
			t.Logf("referrers GET: %d, %d upstream requests (%d manifest GETs)", a.status, n, rec.Count(atkIsManifestGet))
			var idx ocispec.Index
			if err := json.Unmarshal(a.body, &idx); err != nil || a.status != 200 || len(idx.Manifests) != 20 {
				t.Errorf("referrers: %d, %d referrers (%v); want 200 and 20", a.status, len(idx.Manifests), err)
			}
			if n > 25 {
				t.Errorf("one referrers GET cost the upstream %d requests, want at most 25", n)
			}
		})
	}
}

// Attack: a GET by an unknown digest scans the tags, every time. A
// manifest digest shroud had no mapping for sent it through the
// repository's tags (a tags/list and up to 256 manifest GETs); anyone could
// ask for random digests as fast as they liked. Pointers replaced the
// scan: a user checks that a GET of an unknown digest costs the upstream
// no tags/list and a bounded few requests, however many tags there are:
// three (its pointer, the digest itself, and the revocation marker that
// would make its 404 a 410 had a re-encrypt job replaced it).
func TestUnknownDigestCostsNoTagScan(t *testing.T) {
	rec := &shroudtest.Recorder{}
	up := shroudtest.Behind(t, shroudtest.Distribution(t), rec.Middleware)
	s := shroudtest.Start(t, up)
	for _, tag := range []string{"a", "b", "c"} {
		if err := remote.Write(ref(t, s.Host(), "scan/app:"+tag), atkStaticImage(t, atkRandBytes(t, 1000))); err != nil {
			t.Fatal(err)
		}
	}
	unknown := digest.FromString("never pushed anywhere")
	c := call{t, s.URL}
	rec.Reset()
	for i := range 2 {
		c.do("GET", "/v2/scan/app/manifests/"+unknown.String(), nil).want(t, 404, "MANIFEST_UNKNOWN")
		t.Logf("after GET %d: %d upstream requests", i+1, rec.Count(nil))
	}
	if rec.Count(func(r shroudtest.Request) bool { return strings.Contains(r.Path, unknown.Encoded()) }) == 0 {
		t.Fatal("the upstream was never asked for the digest: the recorder sees nothing")
	}
	lists := rec.Count(func(r shroudtest.Request) bool {
		return r.Method == http.MethodGet && strings.HasSuffix(r.Path, "/tags/list")
	})
	if lists > 0 || rec.Count(nil) > 6 {
		t.Errorf("two GETs of one unknown digest cost the upstream %d tags/list requests (%d requests in all), want none and at most 6 requests", lists, rec.Count(nil))
	}
}

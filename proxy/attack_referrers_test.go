package proxy_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shroud-oci/shroud/internal/shroudtest"
)

// A hostile upstream answers "referrers of X" with the referrers of Y: an
// approval pushed through shroud for Y (sealed for this repository, so
// every check of the seal passes) must not be listed as X's. X's own
// referrer still is.
func TestAttackReferrersOfAnotherSubject(t *testing.T) {
	var from, to string // upstream digests: the referrers of from are answered with to's
	mw := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if from != "" && strings.HasSuffix(r.URL.Path, "/referrers/"+from) {
				r.URL.Path = strings.TrimSuffix(r.URL.Path, from) + to
				r.RequestURI = r.URL.RequestURI()
			}
			next.ServeHTTP(w, r)
		})
	}
	inner := shroudtest.GGCR(t)
	s := shroudtest.Start(t, shroudtest.Behind(t, inner, mw))
	c := call{t, s.URL}
	imgX := must[v1.Image](t)(random.Image(1000, 1))
	imgY := must[v1.Image](t)(random.Image(1000, 1))
	for tag, img := range map[string]v1.Image{"x": imgX, "y": imgY} {
		if err := remote.Write(ref(t, s.Host(), "art/app:"+tag), img); err != nil {
			t.Fatal(err)
		}
	}
	emptyCfg := atkPushBlob(t, c, "art/app", []byte("{}"))
	approval := func(subject v1.Image, statement string) digest.Digest {
		sig := []byte(`{"payload":"` + statement + `"}`)
		sigD := atkPushBlob(t, c, "art/app", sig)
		m := ocispec.Manifest{
			MediaType: ocispec.MediaTypeImageManifest, ArtifactType: "application/vnd.example.approval",
			Config:  ocispec.Descriptor{MediaType: "application/vnd.oci.empty.v1+json", Digest: emptyCfg, Size: 2},
			Layers:  []ocispec.Descriptor{{MediaType: "application/json", Digest: sigD, Size: int64(len(sig))}},
			Subject: &ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.Digest(must[v1.Hash](t)(subject.Digest()).String()), Size: must[int64](t)(subject.Size())},
		}
		m.SchemaVersion = 2
		body := must[[]byte](t)(json.Marshal(m))
		d := digest.FromBytes(body)
		c.do("PUT", "/v2/art/app/manifests/"+d.String(), bytes.NewReader(body), "Content-Type", ocispec.MediaTypeImageManifest).want(t, 201, "")
		return d
	}
	ofY := approval(imgY, "approves Y only")
	listed := func(subject v1.Image) []ocispec.Descriptor {
		a := c.do("GET", "/v2/art/app/referrers/"+must[v1.Hash](t)(subject.Digest()).String(), nil)
		a.want(t, http.StatusOK, "")
		var idx ocispec.Index
		if err := json.Unmarshal(a.body, &idx); err != nil {
			t.Fatal(err)
		}
		return idx.Manifests
	}
	if got := listed(imgY); len(got) != 1 || got[0].Digest != ofY {
		t.Fatalf("Y's referrers: %v, want its approval %s", got, ofY)
	}

	// The upstream now answers the referrers of X with Y's.
	from = must[*remote.Descriptor](t)(remote.Get(ref(t, inner.Host(), "art/app:x"))).Digest.String()
	to = must[*remote.Descriptor](t)(remote.Get(ref(t, inner.Host(), "art/app:y"))).Digest.String()
	for _, m := range listed(imgX) {
		if m.Digest == ofY {
			t.Errorf("shroud lists the approval of Y %s (artifactType %s) as a referrer of X %s", m.Digest, m.ArtifactType, must[v1.Hash](t)(imgX.Digest()))
		}
	}

	// Answered honestly, X's own referrer is listed.
	from = ""
	ofX := approval(imgX, "approves X")
	if got := listed(imgX); len(got) != 1 || got[0].Digest != ofX {
		t.Fatalf("X's referrers: %v, want its approval %s", got, ofX)
	}
}

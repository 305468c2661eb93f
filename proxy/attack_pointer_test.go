package proxy_test

import (
	"bytes"
	"encoding/json"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/shroudtest"
)

// Attack: the upstream repoints a manifest's pointer tag. A pull by a
// digest the cache forgot reads the pointer tag, which the registry can
// set to any manifest: another one shroud sealed for the repository,
// one sealed for another repository, one sealed for P but sent stripped
// of its seal, or one no seal covers. A user pushes v1 and v2 under one
// tag and, for each, checks that a restarted shroud answers a pull of v1
// by digest with MANIFEST_UNKNOWN and never with other bytes, and finds
// v1 again once the pointer is put back.
func TestAttackPointerRepointed(t *testing.T) {
	up := shroudtest.GGCR(t) // checks no blobs: a manifest copied across repositories is stored
	s := shroudtest.Start(t, up)
	const repo = "atk/ptr"
	v1img := must[v1.Image](t)(random.Image(5000, 1))
	v2img := must[v1.Image](t)(random.Image(5000, 1))
	for _, img := range []v1.Image{v1img, v2img} {
		if err := remote.Write(ref(t, s.Host(), repo+":latest"), img); err != nil {
			t.Fatal(err)
		}
	}
	other := must[v1.Image](t)(random.Image(5000, 1))
	if err := remote.Write(ref(t, s.Host(), "atk/other:1"), other); err != nil {
		t.Fatal(err)
	}
	// The same v1, sealed for another repository: the right bytes, by a
	// seal that does not vouch for them here.
	if err := remote.Write(ref(t, s.Host(), "atk/other:v1"), v1img); err != nil {
		t.Fatal(err)
	}
	plain := must[v1.Image](t)(random.Image(5000, 1))
	if err := remote.Write(ref(t, up.Host(), repo+":plain"), plain); err != nil {
		t.Fatal(err)
	}
	d1 := digest.Digest(must[v1.Hash](t)(v1img.Digest()).String())
	raw1 := must[[]byte](t)(v1img.RawManifest())
	tag := pointerTagOf(t, s, repo, d1)
	honest := atkUpstreamRaw(t, up, repo+":"+tag)
	wantManifest(t, call{t, restarted(t, up, s).URL}, repo, d1, raw1)

	stripped := atkRawJSON(t, honest)
	var ann map[string]string
	json.Unmarshal(stripped["annotations"], &ann)
	delete(ann, crypto.AnnotationOriginal)
	stripped["annotations"] = must[[]byte](t)(json.Marshal(ann))
	// v2's seal in v1's manifest: the seal is shroud's, the layers it
	// pairs are not in the manifest.
	swapped := atkRawJSON(t, honest)
	var ann2 map[string]string
	json.Unmarshal(atkRawJSON(t, atkUpstreamRaw(t, up, repo+":latest"))["annotations"], &ann2)
	json.Unmarshal(swapped["annotations"], &ann)
	ann[crypto.AnnotationOriginal] = ann2[crypto.AnnotationOriginal]
	swapped["annotations"] = must[[]byte](t)(json.Marshal(ann))

	for _, tc := range []struct {
		name string
		body []byte
		leak []byte // the manifest the attack would have served
	}{
		{"another manifest sealed for the repository (v2)", atkUpstreamRaw(t, up, repo+":latest"), must[[]byte](t)(v2img.RawManifest())},
		{"a manifest sealed for another repository", atkUpstreamRaw(t, up, "atk/other:1"), must[[]byte](t)(other.RawManifest())},
		{"v1 sealed for another repository", atkUpstreamRaw(t, up, "atk/other:v1"), nil},
		{"v1 without its seal", must[[]byte](t)(json.Marshal(stripped)), nil},
		{"v1 with v2's seal", must[[]byte](t)(json.Marshal(swapped)), must[[]byte](t)(v2img.RawManifest())},
		{"an unsealed plaintext manifest", atkUpstreamRaw(t, up, repo+":plain"), must[[]byte](t)(plain.RawManifest())},
	} {
		t.Run(tc.name, func(t *testing.T) {
			atkPutUpstream(t, up, repo, tag, ocispec.MediaTypeImageManifest, tc.body)
			c := call{t, restarted(t, up, s).URL}
			for _, method := range []string{"GET", "HEAD"} {
				a := c.do(method, "/v2/"+repo+"/manifests/"+d1.String(), nil)
				if len(tc.leak) > 0 && bytes.Contains(a.body, tc.leak) {
					t.Errorf("%s: the answer carries the manifest the pointer was turned to", method)
				}
				if a.status != 404 || (method == "GET" && a.errorCode() != "MANIFEST_UNKNOWN") {
					t.Errorf("%s v1 by digest with its pointer turned to %s: %d %.200s, want 404 MANIFEST_UNKNOWN", method, tc.name, a.status, a.body)
				}
			}
			// The shroud that served v1 before keeps its mapping; a
			// replica with an empty cache finds v1 again once the
			// pointer is back.
			atkPutUpstream(t, up, repo, tag, ocispec.MediaTypeImageManifest, honest)
			wantManifest(t, call{t, restarted(t, up, s).URL}, repo, d1, raw1)
		})
	}
}

// Attack: the upstream learns plaintext digests from shroud's tags. Every
// manifest shroud stores gets a pointer tag; its name must not be, or
// hold, the digest the client pushed. A user pushes images by tag and by
// digest and an index, and checks no upstream tag holds any plaintext
// manifest digest, while the pointers are there.
func TestAttackPointerTagsShowNoPlaintextDigest(t *testing.T) {
	up := shroudtest.Distribution(t)
	s := shroudtest.Start(t, up)
	var plain []digest.Digest
	img := must[v1.Image](t)(random.Image(2000, 1))
	if err := remote.Write(ref(t, s.Host(), "atk/names:1"), img); err != nil {
		t.Fatal(err)
	}
	plain = append(plain, digest.Digest(must[v1.Hash](t)(img.Digest()).String()))
	idx := must[v1.ImageIndex](t)(random.Index(2000, 1, 2))
	idxDigest := must[v1.Hash](t)(idx.Digest())
	if err := remote.WriteIndex(ref(t, s.Host(), "atk/names@"+idxDigest.String()), idx); err != nil {
		t.Fatal(err)
	}
	plain = append(plain, digest.Digest(idxDigest.String()))
	for _, m := range must[*v1.IndexManifest](t)(idx.IndexManifest()).Manifests {
		plain = append(plain, digest.Digest(m.Digest.String()))
	}
	tags := upstreamTags(t, up, "atk/names")
	for _, d := range plain {
		if !contains(tags, pointerTagOf(t, s, "atk/names", d)) {
			t.Errorf("no pointer tag for %s upstream (tags %v)", d, tags)
		}
	}
	wantNoPlainDigestIn(t, tags, plain...)
}

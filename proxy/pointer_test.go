package proxy_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/shroudtest"
)

// pointerTagOf computes the pointer tag shroud (with s's identity, default
// upstream) names plainDigest of repo by, as a replica would.
func pointerTagOf(t *testing.T, s shroudtest.Shroud, repo string, plainDigest digest.Digest) string {
	t.Helper()
	k := must[[]byte](t)(s.Keyring.Identity().DeriveKey(crypto.PurposeManifestPointer))
	return "shroud-" + must[*crypto.KeyedHash](t)(crypto.NewKeyedHash(k)).Sum("", repo, plainDigest.String())
}

// upstreamTags lists a repository's tags straight from the upstream.
func upstreamTags(t *testing.T, up shroudtest.Upstream, repo string) []string {
	t.Helper()
	return must[[]string](t)(remote.List(ref(t, up.Host(), repo).Context()))
}

// restarted is a fresh shroud with s's identity and an empty cache in front
// of up: a restart, or another replica.
func restarted(t *testing.T, up shroudtest.Upstream, s shroudtest.Shroud) shroudtest.Shroud {
	return shroudtest.StartWithKeyring(t, up, s.Keyring, s.DataDir, nil)
}

// wantManifest GETs a manifest by digest and wants the bytes pushed.
func wantManifest(t *testing.T, c call, repo string, d digest.Digest, raw []byte) {
	t.Helper()
	a := c.do("GET", "/v2/"+repo+"/manifests/"+d.String(), nil, "Accept", ocispec.MediaTypeImageManifest+","+ocispec.MediaTypeImageIndex+",application/vnd.docker.distribution.manifest.v2+json")
	a.want(t, 200, "")
	if !bytes.Equal(a.body, raw) || a.header.Get("Docker-Content-Digest") != d.String() {
		t.Fatalf("GET %s@%s: digest %s, %d bytes; want the %d bytes pushed", repo, d, a.header.Get("Docker-Content-Digest"), len(a.body), len(raw))
	}
}

// Issue 10: push app:latest (v1), push app:latest again (v2), restart
// shroud: v1 is found by its digest through its pointer, byte for byte,
// though no tag names it any more; by its pointer tag alone, not by the
// plaintext digest, which no upstream tag shows.
func TestPointerFindsOverwrittenTagAfterRestart(t *testing.T) {
	for _, up := range shroudtest.Upstreams(t) {
		t.Run(up.Name, func(t *testing.T) {
			s := shroudtest.Start(t, up)
			v1img := must[v1.Image](t)(random.Image(20_000, 2))
			v2img := must[v1.Image](t)(random.Image(20_000, 2))
			for _, img := range []v1.Image{v1img, v2img} {
				if err := remote.Write(ref(t, s.Host(), "ptr/app:latest"), img); err != nil {
					t.Fatal(err)
				}
			}
			d1 := digest.Digest(must[v1.Hash](t)(v1img.Digest()).String())
			raw1 := must[[]byte](t)(v1img.RawManifest())
			s2 := restarted(t, up, s)
			wantManifest(t, call{t, s2.URL}, "ptr/app", d1, raw1)
			a := call{t, s2.URL}.do("HEAD", "/v2/ptr/app/manifests/"+d1.String(), nil)
			if a.status != 200 || a.header.Get("Docker-Content-Digest") != d1.String() {
				t.Fatalf("HEAD v1 after restart: %d %s", a.status, a.header.Get("Docker-Content-Digest"))
			}
			// Its layers come back too (the restoration recorded them).
			got := layerBytes(t, must[v1.Image](t)(remote.Image(ref(t, restarted(t, up, s).Host(), "ptr/app@"+d1.String()))))
			for d, b := range layerBytes(t, v1img) {
				if !bytes.Equal(got[d], b) {
					t.Fatalf("layer %s of v1 differs after restart", d)
				}
			}
			tags := upstreamTags(t, up, "ptr/app")
			if !contains(tags, pointerTagOf(t, s, "ptr/app", d1)) {
				t.Fatalf("upstream tags %v hold no pointer for v1", tags)
			}
			wantNoPlainDigestIn(t, tags, d1, digest.Digest(must[v1.Hash](t)(v2img.Digest()).String()))
		})
	}
}

// wantNoPlainDigestIn fails if any tag holds (a part of) a plaintext digest.
func wantNoPlainDigestIn(t *testing.T, tags []string, plain ...digest.Digest) {
	t.Helper()
	for _, tag := range tags {
		for _, d := range plain {
			if strings.Contains(tag, d.Encoded()[:12]) {
				t.Errorf("upstream tag %s shows plaintext digest %s", tag, d)
			}
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// A multi-platform index pushed with its children by digest only (no tag
// anywhere): after a restart, the index and each child are found by
// digest; an index pushed through the restarted shroud naming children
// pushed before the restart is stored with their encrypted digests.
func TestPointerFindsIndexChildrenPushedByDigest(t *testing.T) {
	for _, up := range shroudtest.Upstreams(t) {
		t.Run(up.Name, func(t *testing.T) {
			s := shroudtest.Start(t, up)
			idx := must[v1.ImageIndex](t)(random.Index(20_000, 1, 2))
			idxDigest := must[v1.Hash](t)(idx.Digest())
			if err := remote.WriteIndex(ref(t, s.Host(), "ptr/multi@"+idxDigest.String()), idx); err != nil {
				t.Fatal(err)
			}
			im := must[*v1.IndexManifest](t)(idx.IndexManifest())
			s2 := restarted(t, up, s)
			c := call{t, s2.URL}
			wantManifest(t, c, "ptr/multi", digest.Digest(idxDigest.String()), must[[]byte](t)(idx.RawManifest()))
			s3 := restarted(t, up, s)
			for _, child := range im.Manifests {
				img := must[v1.Image](t)(idx.Image(child.Digest))
				wantManifest(t, call{t, s3.URL}, "ptr/multi", digest.Digest(child.Digest.String()), must[[]byte](t)(img.RawManifest()))
			}
			// A new index through a cold shroud, naming the old children.
			newIdx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: ociDescs(im)}
			newIdx.SchemaVersion = 2
			body := must[[]byte](t)(json.Marshal(newIdx))
			s4 := restarted(t, up, s)
			call{t, s4.URL}.do("PUT", "/v2/ptr/multi/manifests/again", bytes.NewReader(body), "Content-Type", ocispec.MediaTypeImageIndex).want(t, 201, "")
			var upIdx ocispec.Index
			json.Unmarshal(atkUpstreamRaw(t, up, "ptr/multi:again"), &upIdx)
			for i, c := range upIdx.Manifests {
				if c.Digest.String() == im.Manifests[i].Digest.String() {
					t.Fatalf("the index pushed after the restart names plaintext child %s upstream", c.Digest)
				}
			}
			wantManifest(t, call{t, restarted(t, up, s).URL}, "ptr/multi", digest.FromBytes(body), body)
		})
	}
}

// ociDescs are an index's children as OCI descriptors.
func ociDescs(im *v1.IndexManifest) []ocispec.Descriptor {
	var out []ocispec.Descriptor
	for _, m := range im.Manifests {
		d := ocispec.Descriptor{MediaType: string(m.MediaType), Digest: digest.Digest(m.Digest.String()), Size: m.Size}
		if m.Platform != nil {
			d.Platform = &ocispec.Platform{OS: m.Platform.OS, Architecture: m.Platform.Architecture}
		}
		out = append(out, d)
	}
	return out
}

// An artifact pushed through a restarted shroud names its subject (pushed
// before the restart) by the subject's encrypted digest upstream.
func TestPointerMapsSubjectAfterRestart(t *testing.T) {
	for _, up := range shroudtest.Upstreams(t) {
		t.Run(up.Name, func(t *testing.T) { testPointerMapsSubjectAfterRestart(t, up) })
	}
}

func testPointerMapsSubjectAfterRestart(t *testing.T, up shroudtest.Upstream) {
	s := shroudtest.Start(t, up)
	img := must[v1.Image](t)(random.Image(10_000, 1))
	if err := remote.Write(ref(t, s.Host(), "ptr/subj:1"), img); err != nil {
		t.Fatal(err)
	}
	imgDigest := digest.Digest(must[v1.Hash](t)(img.Digest()).String())
	upImg := digest.FromBytes(atkUpstreamRaw(t, up, "ptr/subj:1"))
	c := call{t, restarted(t, up, s).URL}
	cfg := atkPushBlob(t, c, "ptr/subj", []byte("{}"))
	art := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: "application/example",
		Config:  ocispec.Descriptor{MediaType: "application/vnd.oci.empty.v1+json", Digest: cfg, Size: 2},
		Layers:  []ocispec.Descriptor{},
		Subject: &ocispec.Descriptor{MediaType: must[string](t)(mediaType(img)), Digest: imgDigest, Size: must[int64](t)(img.Size())}}
	art.SchemaVersion = 2
	body := must[[]byte](t)(json.Marshal(art))
	artDigest := digest.FromBytes(body)
	c.do("PUT", "/v2/ptr/subj/manifests/"+artDigest.String(), bytes.NewReader(body), "Content-Type", ocispec.MediaTypeImageManifest).want(t, 201, "")
	var upArt ocispec.Manifest
	json.Unmarshal(atkUpstreamRaw(t, up, "ptr/subj:"+pointerTagOf(t, s, "ptr/subj", artDigest)), &upArt)
	if upArt.Subject == nil || upArt.Subject.Digest != upImg {
		t.Fatalf("the artifact's subject upstream is %v, want the encrypted image %s", upArt.Subject, upImg)
	}
	wantManifest(t, call{t, restarted(t, up, s).URL}, "ptr/subj", artDigest, body)

	if up.Name != "ggcr" {
		return // distribution v3 has no referrers API
	}
	// Another restart: the referrers of the image are found through its
	// pointer, listed by the digest the client pushed.
	a := call{t, restarted(t, up, s).URL}.do("GET", "/v2/ptr/subj/referrers/"+imgDigest.String(), nil)
	a.want(t, 200, "")
	var idx ocispec.Index
	if err := json.Unmarshal(a.body, &idx); err != nil || len(idx.Manifests) != 1 || idx.Manifests[0].Digest != artDigest {
		t.Fatalf("referrers after a restart: %s, want the artifact %s", a.body, artDigest)
	}
}

// Tag lists through shroud show the client's tags only, the pointer tags
// (one per manifest, many pushed by digest) hidden, and every page size
// walks them all through the Links.
func TestTagListHidesPointers(t *testing.T) {
	for _, up := range shroudtest.Upstreams(t) {
		t.Run(up.Name, func(t *testing.T) {
			s := shroudtest.Start(t, up)
			want := []string{"a", "b", "c", "t", "z"}
			for _, tag := range want {
				if err := remote.Write(ref(t, s.Host(), "ptr/tags:"+tag), must[v1.Image](t)(random.Image(1000, 1))); err != nil {
					t.Fatal(err)
				}
			}
			for range 5 {
				img := must[v1.Image](t)(random.Image(1000, 1))
				if err := remote.Write(ref(t, s.Host(), "ptr/tags@"+must[v1.Hash](t)(img.Digest()).String()), img); err != nil {
					t.Fatal(err)
				}
			}
			pointers := 0
			for _, tag := range upstreamTags(t, up, "ptr/tags") {
				if strings.HasPrefix(tag, "shroud-") {
					pointers++
				}
			}
			// One per manifest and one per blob (each image's config and
			// layer): 10 + 20.
			if pointers != 30 {
				t.Fatalf("the upstream holds %d pointer tags, want 30", pointers)
			}
			c := call{t, s.URL}
			paths := []string{"/v2/ptr/tags/tags/list"}
			if up.Name == "distribution" { // ggcr's registry sends no Link
				paths = append(paths, "/v2/ptr/tags/tags/list?n=1", "/v2/ptr/tags/tags/list?n=2", "/v2/ptr/tags/tags/list?n=5")
			}
			for _, p := range paths {
				if got := collectPages(t, c, p, "tags", up.Host()); fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("%s: tags %v, want %v", p, got, want)
				}
			}
			// last names where a page starts, as at the upstream.
			if got := collectPages(t, c, "/v2/ptr/tags/tags/list?last=c", "tags", up.Host()); fmt.Sprint(got) != "[t z]" {
				t.Errorf("tags after c: %v", got)
			}
		})
	}
}

// With pointer tags only between two client tags (more than an upstream
// page holds), a page of n=1 may come back empty but its Link leads on.
func TestTagListWalksPastPagesOfPointers(t *testing.T) {
	up := shroudtest.Distribution(t)
	s := shroudtest.Start(t, up)
	for _, tag := range []string{"a", "zz"} {
		if err := remote.Write(ref(t, s.Host(), "ptr/many:"+tag), must[v1.Image](t)(random.Image(100, 1))); err != nil {
			t.Fatal(err)
		}
	}
	// Pointers straight at the upstream (cheaper than 1,000 pushes): any
	// tag of the pointer form is hidden.
	raw := atkUpstreamRaw(t, up, "ptr/many:a")
	mt := ocispec.MediaTypeImageManifest
	for i := range 1000 {
		atkPutUpstream(t, up, "ptr/many", fmt.Sprintf("shroud-%064x", i), mt, raw)
	}
	c := call{t, s.URL}
	for _, p := range []string{"/v2/ptr/many/tags/list?n=1", "/v2/ptr/many/tags/list"} {
		if got := collectPages(t, c, p, "tags", up.Host()); fmt.Sprint(got) != "[a zz]" {
			t.Fatalf("%s: %d tags (first %.3q), want [a zz]", p, len(got), got[:min(len(got), 3)])
		}
	}
}

// A delete by digest through a restarted shroud deletes the manifest and
// its pointer: no replica finds it again. Deleting a client tag leaves the
// pointer: the manifest is still found by digest.
func TestPointerDeletes(t *testing.T) {
	for _, up := range shroudtest.Upstreams(t) {
		t.Run(up.Name, func(t *testing.T) {
			s := shroudtest.Start(t, up)
			img := must[v1.Image](t)(random.Image(10_000, 1))
			if err := remote.Write(ref(t, s.Host(), "ptr/del:1"), img); err != nil {
				t.Fatal(err)
			}
			d := digest.Digest(must[v1.Hash](t)(img.Digest()).String())
			raw := must[[]byte](t)(img.RawManifest())
			if up.Name == "distribution" {
				// distribution v3 deletes tags; the pointer stays.
				call{t, s.URL}.do("DELETE", "/v2/ptr/del/manifests/1", nil).want(t, 202, "")
				wantManifest(t, call{t, restarted(t, up, s).URL}, "ptr/del", d, raw)
			}
			call{t, restarted(t, up, s).URL}.do("DELETE", "/v2/ptr/del/manifests/"+d.String(), nil).want(t, 202, "")
			call{t, restarted(t, up, s).URL}.do("GET", "/v2/ptr/del/manifests/"+d.String(), nil).want(t, 404, "MANIFEST_UNKNOWN")
			if contains(upstreamTags(t, up, "ptr/del"), pointerTagOf(t, s, "ptr/del", d)) {
				t.Fatal("the pointer tag is still upstream after the delete")
			}
		})
	}
}

// Pointer tags are shroud's: a client may not push, read or delete one by
// name.
func TestPointerTagsAreReserved(t *testing.T) {
	up := shroudtest.Distribution(t)
	s := shroudtest.Start(t, up)
	img := must[v1.Image](t)(random.Image(1000, 1))
	if err := remote.Write(ref(t, s.Host(), "ptr/res:1"), img); err != nil {
		t.Fatal(err)
	}
	d := digest.Digest(must[v1.Hash](t)(img.Digest()).String())
	tag := pointerTagOf(t, s, "ptr/res", d)
	c := call{t, s.URL}
	c.do("PUT", "/v2/ptr/res/manifests/"+tag, bytes.NewReader(must[[]byte](t)(img.RawManifest())), "Content-Type", ocispec.MediaTypeImageManifest).want(t, 403, "DENIED")
	c.do("GET", "/v2/ptr/res/manifests/"+tag, nil).want(t, 404, "MANIFEST_UNKNOWN")
	c.do("DELETE", "/v2/ptr/res/manifests/"+tag, nil).want(t, 404, "MANIFEST_UNKNOWN")
	wantManifest(t, call{t, restarted(t, up, s).URL}, "ptr/res", d, must[[]byte](t)(img.RawManifest()))
}

package proxy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shroud-oci/shroud/cache"
	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/shroudtest"
	"github.com/shroud-oci/shroud/proxy"
)

// Signatures, SBOMs and attestations through shroud: one encrypted copy
// per manifest, so that referrers stay attached across re-tags; the
// referrers API on every upstream; digest tags under keyed names.

const sigType = "application/vnd.example.signature"

// sigPusher pushes referrers through shroud.
type sigPusher struct {
	t    *testing.T
	c    call
	repo string
	cfg  digest.Digest
}

func newSigPusher(t *testing.T, s shroudtest.Shroud, repo string) *sigPusher {
	c := call{t, s.URL}
	return &sigPusher{t: t, c: c, repo: repo, cfg: atkPushBlob(t, c, repo, []byte("{}"))}
}

// attach pushes, by digest, an artifact of artifactType whose one layer is
// payload, naming subject; it returns the artifact's digest and the
// push's answer.
func (p *sigPusher) attach(subject v1.Image, artifactType, payload string) (digest.Digest, answer) {
	t := p.t
	layer := []byte(payload)
	ld := atkPushBlob(t, p.c, p.repo, layer)
	m := ocispec.Manifest{
		MediaType: ocispec.MediaTypeImageManifest, ArtifactType: artifactType,
		Config:      ocispec.Descriptor{MediaType: "application/vnd.oci.empty.v1+json", Digest: p.cfg, Size: 2},
		Layers:      []ocispec.Descriptor{{MediaType: "application/octet-stream", Digest: ld, Size: int64(len(layer))}},
		Annotations: map[string]string{"org.example.payload": payload},
	}
	if subject != nil {
		m.Subject = &ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: imgDigest(t, subject), Size: must[int64](t)(subject.Size())}
	}
	m.SchemaVersion = 2
	body := must[[]byte](t)(json.Marshal(m))
	d := digest.FromBytes(body)
	a := p.c.do("PUT", "/v2/"+p.repo+"/manifests/"+d.String(), bytes.NewReader(body), "Content-Type", ocispec.MediaTypeImageManifest)
	a.want(t, http.StatusCreated, "")
	return d, a
}

// referrers lists subject's referrers through shroud (query: "" or
// "?artifactType=...").
func (p *sigPusher) referrers(subject digest.Digest, query string) ([]ocispec.Descriptor, answer) {
	p.t.Helper()
	a := p.c.do("GET", "/v2/"+p.repo+"/referrers/"+subject.String()+query, nil)
	a.want(p.t, http.StatusOK, "")
	var idx ocispec.Index
	if err := json.Unmarshal(a.body, &idx); err != nil {
		p.t.Fatal(err)
	}
	if idx.Manifests == nil {
		p.t.Fatalf("referrers answer with no manifests array: %s", a.body)
	}
	return idx.Manifests, a
}

func imgDigest(t *testing.T, img v1.Image) digest.Digest {
	return digest.Digest(must[v1.Hash](t)(img.Digest()).String())
}

func digestsOf(ds []ocispec.Descriptor) []digest.Digest {
	var out []digest.Digest
	for _, d := range ds {
		out = append(out, d.Digest)
	}
	slices.Sort(out)
	return out
}

// upstreamDigest is what tag names straight at the upstream.
func upstreamDigest(t *testing.T, up shroudtest.Upstream, repoTag string) digest.Digest {
	t.Helper()
	return digest.Digest(must[*v1.Descriptor](t)(remote.Head(ref(t, up.Host(), repoTag))).Digest.String())
}

// upstreamTagList lists repo's tags straight at the upstream.
func upstreamTagList(t *testing.T, up shroudtest.Upstream, repo string) []string {
	t.Helper()
	return must[[]string](t)(remote.List(must[name.Repository](t)(name.NewRepository(up.Host()+"/"+repo, name.Insecure))))
}

// twoKeyShroud is shroud in front of up encrypting sig/** for keys A and
// B, under key checks a test may make refuse one, and an image pushed
// through it.
type twoKeyShroud struct {
	s          shroudtest.Shroud
	check      *checker
	recA, recB crypto.Recipient
	keyA, keyB crypto.DecryptionKey
	img        v1.Image
}

func newTwoKeyShroud(t *testing.T, up shroudtest.Upstream, repoTag string) twoKeyShroud {
	t.Helper()
	f := twoKeyShroud{check: newChecker()}
	f.recA, f.keyA = keyPair(t, "ec")
	f.recB, f.keyB = keyPair(t, "ec")
	f.s = shroudtest.Start(t, up, shroudtest.WithKeyCheck(f.check),
		shroudtest.WithPolicy(shroudtest.Rule{Pattern: "sig/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{f.recA, f.recB}}))
	f.img = must[v1.Image](t)(random.Image(3000, 2))
	if err := remote.Write(ref(t, f.s.Host(), repoTag), f.img); err != nil {
		t.Fatal(err)
	}
	return f
}

var plaintextDigestTag = regexp.MustCompile(`(?i)sha(256|384|512)-[0-9a-f]{32}`)

// The same image pushed again under other tags is stored once upstream:
// every tag names the same encrypted manifest, and a referrer attached
// through one tag is listed through every other, on an upstream with the
// referrers API and on one without.
func TestRepushReusesTheEncryptedManifest(t *testing.T) {
	for _, up := range shroudtest.Upstreams(t) {
		t.Run(up.Name, func(t *testing.T) {
			s := shroudtest.Start(t, up)
			img := must[v1.Image](t)(random.Image(3000, 2))
			if err := remote.Write(ref(t, s.Host(), "sig/app:a"), img); err != nil {
				t.Fatal(err)
			}
			p := newSigPusher(t, s, "sig/app")
			sig, a := p.attach(img, sigType, "signed a")
			if got := a.header.Get("OCI-Subject"); got != imgDigest(t, img).String() {
				t.Errorf("the referrer's push answered OCI-Subject %q, want %s: clients would fall back to a digest tag", got, imgDigest(t, img))
			}
			first := upstreamDigest(t, up, "sig/app:a")
			for _, tag := range []string{"b", "c"} {
				if err := remote.Write(ref(t, s.Host(), "sig/app:"+tag), img); err != nil {
					t.Fatal(err)
				}
				if got := upstreamDigest(t, up, "sig/app:"+tag); got != first {
					t.Errorf("tag %s names upstream manifest %s, tag a %s: the same manifest was encrypted again", tag, got, first)
				}
				got := must[*remote.Descriptor](t)(remote.Get(ref(t, s.Host(), "sig/app:"+tag)))
				if got.Digest.String() != imgDigest(t, img).String() {
					t.Errorf("tag %s pulls %s through shroud, pushed %s", tag, got.Digest, imgDigest(t, img))
				}
			}
			// Pushed again by digest, too.
			raw := must[[]byte](t)(img.RawManifest())
			p.c.do("PUT", "/v2/sig/app/manifests/"+imgDigest(t, img).String(), bytes.NewReader(raw), "Content-Type", string(must[types.MediaType](t)(img.MediaType()))).want(t, http.StatusCreated, "")
			if got := upstreamDigest(t, up, "sig/app:a"); got != first {
				t.Errorf("after a push by digest tag a names %s, was %s", got, first)
			}
			listed, _ := p.referrers(imgDigest(t, img), "")
			if got := digestsOf(listed); !slices.Equal(got, []digest.Digest{sig}) {
				t.Errorf("referrers after re-pushes: %v, want [%s]", got, sig)
			}
			// The referrer pushed again is the same referrer, listed once.
			p.attach(img, sigType, "signed a")
			if listed, _ := p.referrers(imgDigest(t, img), ""); len(listed) != 1 {
				t.Errorf("after the referrer was pushed again: %d referrers, want 1", len(listed))
			}
		})
	}
}

// A key refused since the first push (revoked) is not carried over by
// reuse: the push makes a new copy whose layers it no longer opens, and
// the referrers attached to the earlier copy are still listed.
func TestRepushAfterRevocationEncryptsAnew(t *testing.T) {
	for _, up := range shroudtest.Upstreams(t) {
		t.Run(up.Name, func(t *testing.T) {
			f := newTwoKeyShroud(t, up, "sig/app:a")
			s, check, recA, keyA, keyB, img := f.s, f.check, f.recA, f.keyA, f.keyB, f.img
			p := newSigPusher(t, s, "sig/app")
			sig, _ := p.attach(img, sigType, "before the revocation")
			first := upstreamDigest(t, up, "sig/app:a")
			for _, l := range upstreamManifest(t, up, "sig/app:a").Layers {
				if !opens(t, keyA, l) || !opens(t, keyB, l) {
					t.Fatal("before the revocation a layer does not open with both keys")
				}
			}
			check.set(proxy.OpWrap, recA.KeyID(), "revoked")
			if err := remote.Write(ref(t, s.Host(), "sig/app:b"), img); err != nil {
				t.Fatal(err)
			}
			second := upstreamDigest(t, up, "sig/app:b")
			if second == first {
				t.Fatalf("pushed again after A was revoked, tag b names the copy whose layers A opens (%s)", first)
			}
			for _, l := range upstreamManifest(t, up, "sig/app:b").Layers {
				if opens(t, keyA, l) {
					t.Errorf("layer %s of the copy pushed after A's revocation opens with A's key", l.Digest)
				}
				if !opens(t, keyB, l) {
					t.Errorf("layer %s of the copy pushed after A's revocation does not open with B's key", l.Digest)
				}
			}
			// The referrer attached to the first copy, and one attached
			// now, through either tag.
			sig2, _ := p.attach(img, sigType, "after the revocation")
			want := []digest.Digest{sig, sig2}
			slices.Sort(want)
			listed, _ := p.referrers(imgDigest(t, img), "")
			if got := digestsOf(listed); !slices.Equal(got, want) {
				t.Errorf("referrers across the two copies: %v, want %v", got, want)
			}
			// A third push reuses the second copy.
			if err := remote.Write(ref(t, s.Host(), "sig/app:c"), img); err != nil {
				t.Fatal(err)
			}
			if got := upstreamDigest(t, up, "sig/app:c"); got != second {
				t.Errorf("tag c names %s, want the copy made after the revocation %s", got, second)
			}
		})
	}
}

// On an upstream without the referrers API (distribution), shroud keeps
// the referrers itself: a referrer's push is answered OCI-Subject, the
// referrers API lists it (with the artifactType filter), and the
// upstream's tag list holds no tag naming a plaintext digest.
func TestReferrersKeptWithoutReferrersAPI(t *testing.T) {
	up := shroudtest.Distribution(t)
	s := shroudtest.Start(t, up)
	img := must[v1.Image](t)(random.Image(3000, 1))
	if err := remote.Write(ref(t, s.Host(), "sig/app:v1"), img); err != nil {
		t.Fatal(err)
	}
	// The upstream itself has no referrers API.
	if st, _, _ := atkRawRequest(t, up.Host(), "GET", "/v2/sig/app/referrers/"+upstreamDigest(t, up, "sig/app:v1").String()); st != http.StatusNotFound {
		t.Fatalf("distribution answers the referrers API with %d; this test wants one that does not", st)
	}
	p := newSigPusher(t, s, "sig/app")
	sig, a := p.attach(img, sigType, "a signature")
	sbom, _ := p.attach(img, "application/vnd.example.sbom", "an sbom")
	if got := a.header.Get("OCI-Subject"); got != imgDigest(t, img).String() {
		t.Errorf("OCI-Subject %q, want %s", got, imgDigest(t, img))
	}
	want := []digest.Digest{sig, sbom}
	slices.Sort(want)
	listed, _ := p.referrers(imgDigest(t, img), "")
	if got := digestsOf(listed); !slices.Equal(got, want) {
		t.Fatalf("referrers %v, want %v", got, want)
	}
	for _, d := range listed {
		if d.Digest == sig && (d.ArtifactType != sigType || d.Annotations["org.example.payload"] != "a signature" || d.MediaType != ocispec.MediaTypeImageManifest) {
			t.Errorf("the signature is listed as %+v, not as it was pushed", d)
		}
	}
	filtered, fa := p.referrers(imgDigest(t, img), "?artifactType="+sigType)
	if got := digestsOf(filtered); !slices.Equal(got, []digest.Digest{sig}) {
		t.Errorf("referrers of type %s: %v, want [%s]", sigType, got, sig)
	}
	if fa.header.Get("OCI-Filters-Applied") != "artifactType" {
		t.Errorf("OCI-Filters-Applied %q, want artifactType", fa.header.Get("OCI-Filters-Applied"))
	}
	// The image pushed again under another tag: the same referrers.
	if err := remote.Write(ref(t, s.Host(), "sig/app:v2"), img); err != nil {
		t.Fatal(err)
	}
	if listed, _ := p.referrers(imgDigest(t, img), ""); !slices.Equal(digestsOf(listed), want) {
		t.Errorf("after a re-push: referrers %v, want %v", digestsOf(listed), want)
	}
	// Deleted through shroud, a referrer leaves the list.
	p.c.do("DELETE", "/v2/sig/app/manifests/"+sbom.String(), nil).want(t, http.StatusAccepted, "")
	if listed, _ := p.referrers(imgDigest(t, img), ""); !slices.Equal(digestsOf(listed), []digest.Digest{sig}) {
		t.Errorf("after the sbom's deletion: referrers %v, want [%s]", digestsOf(listed), sig)
	}
	// A subject with none: an empty list, not a 404.
	other := must[v1.Image](t)(random.Image(100, 1))
	if listed, _ := p.referrers(imgDigest(t, other), ""); len(listed) != 0 {
		t.Errorf("an unknown subject lists %v", listed)
	}
	for _, tag := range upstreamTagList(t, up, "sig/app") {
		if plaintextDigestTag.MatchString(tag) {
			t.Errorf("the upstream holds tag %s, which names a digest", tag)
		}
	}
}

// A client's own digest tags (the referrers tag schema's "sha256-<hex>",
// cosign's "sha256-<hex>.sig") are stored under keyed names: read back,
// listed by nothing upstream, deleted under the client's name.
func TestDigestTagsAreStoredUnderKeyedNames(t *testing.T) {
	for _, up := range shroudtest.Upstreams(t) {
		t.Run(up.Name, func(t *testing.T) {
			s := shroudtest.Start(t, up)
			img := must[v1.Image](t)(random.Image(3000, 1))
			if err := remote.Write(ref(t, s.Host(), "sig/app:v1"), img); err != nil {
				t.Fatal(err)
			}
			hex := imgDigest(t, img).Encoded()
			for _, tag := range []string{"sha256-" + hex, "sha256-" + hex + ".sig", "sha256-" + hex + ".att"} {
				sigImg := must[v1.Image](t)(random.Image(200, 1))
				if err := remote.Write(ref(t, s.Host(), "sig/app:"+tag), sigImg); err != nil {
					t.Fatalf("push %s: %v", tag, err)
				}
				got := must[*remote.Descriptor](t)(remote.Get(ref(t, s.Host(), "sig/app:"+tag)))
				if got.Digest.String() != imgDigest(t, sigImg).String() {
					t.Errorf("tag %s reads back %s, pushed %s", tag, got.Digest, imgDigest(t, sigImg))
				}
				if _, err := remote.Head(ref(t, up.Host(), "sig/app:"+tag)); err == nil {
					t.Errorf("the upstream holds tag %s", tag)
				}
			}
			for _, tag := range upstreamTagList(t, up, "sig/app") {
				if strings.Contains(tag, hex[:32]) {
					t.Errorf("the upstream holds tag %s, which names the image's digest", tag)
				}
			}
			p := call{t, s.URL}
			p.do("DELETE", "/v2/sig/app/manifests/sha256-"+hex+".sig", nil).want(t, http.StatusAccepted, "")
			p.do("GET", "/v2/sig/app/manifests/sha256-"+hex+".sig", nil).want(t, http.StatusNotFound, "MANIFEST_UNKNOWN")
			p.do("GET", "/v2/sig/app/manifests/sha256-"+hex+".att", nil).want(t, http.StatusOK, "")
		})
	}
}

// A passthrough rule narrowed to signatures keeps their layers readable
// upstream, their subject the encrypted image's; the image stays
// encrypted.
func TestArtifactTypesPassthroughKeepsSignaturesReadable(t *testing.T) {
	for _, up := range shroudtest.Upstreams(t) {
		t.Run(up.Name, func(t *testing.T) {
			recA, _ := keyPair(t, "ec")
			s := shroudtest.Start(t, up, shroudtest.WithPolicy(
				shroudtest.Rule{Pattern: "sig/**", Action: crypto.Passthrough, ArtifactTypes: []string{sigType}},
				shroudtest.Rule{Pattern: "sig/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{recA}},
			))
			img := must[v1.Image](t)(random.Image(3000, 1))
			if err := remote.Write(ref(t, s.Host(), "sig/app:v1"), img); err != nil {
				t.Fatal(err)
			}
			p := newSigPusher(t, s, "sig/app")
			payload := "a signature readable upstream " + string(atkRandBytes(t, 8))
			sig, _ := p.attach(img, sigType, payload)
			sbom, _ := p.attach(img, "application/vnd.example.sbom", "an sbom, encrypted "+string(atkRandBytes(t, 8)))
			up1 := upstreamManifest(t, up, "sig/app:v1")
			for _, l := range up1.Layers {
				if !crypto.IsEncryptedMediaType(l.MediaType) {
					t.Errorf("the image's layer is stored as %s", l.MediaType)
				}
			}
			listed, _ := p.referrers(imgDigest(t, img), "")
			if len(listed) != 2 {
				t.Fatalf("referrers %v, want the signature and the sbom", digestsOf(listed))
			}
			// Straight at the upstream: the signature's layer is its
			// plaintext; the sbom's is not there in plaintext.
			if st, _, body := atkRawRequest(t, up.Host(), "GET", "/v2/sig/app/blobs/"+digest.FromString(payload).String()); st != http.StatusOK || string(body) != payload {
				t.Errorf("the signature's layer upstream: %d %q, want its plaintext", st, body)
			}
			if st, _, _ := atkRawRequest(t, up.Host(), "GET", "/v2/sig/app/blobs/"+digest.FromString("an sbom").String()); st == http.StatusOK {
				t.Error("the sbom is in plaintext upstream")
			}
			_ = sig
			_ = sbom
		})
	}
}

// An artifact of the type a rule keeps in plaintext names, as its layer,
// the encrypted layer of an image: storing it "as pushed" would put the
// image's plaintext upstream. It is refused, and nothing leaks.
func TestAttackPlaintextArtifactTypeLaundersEncryptedLayer(t *testing.T) {
	for _, up := range shroudtest.Upstreams(t) {
		t.Run(up.Name, func(t *testing.T) {
			recA, _ := keyPair(t, "ec")
			s := shroudtest.Start(t, up, shroudtest.WithPolicy(
				shroudtest.Rule{Pattern: "sig/**", Action: crypto.Passthrough, ArtifactTypes: []string{sigType}},
				shroudtest.Rule{Pattern: "sig/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{recA}},
			))
			c := call{t, s.URL}
			secret := atkRandBytes(t, 4096)
			secretD := atkPushBlob(t, c, "sig/app", secret)
			cfg := atkPushBlob(t, c, "sig/app", []byte(`{"architecture":"amd64","os":"linux"}`))
			image := atkImageManifest(t, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: cfg, Size: int64(len(`{"architecture":"amd64","os":"linux"}`))}, atkLayerDesc(secret))
			c.do("PUT", "/v2/sig/app/manifests/v1", bytes.NewReader(image), "Content-Type", ocispec.MediaTypeImageManifest).want(t, http.StatusCreated, "")
			empty := atkPushBlob(t, c, "sig/app", []byte("{}"))
			m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: sigType,
				Config: ocispec.Descriptor{MediaType: "application/vnd.oci.empty.v1+json", Digest: empty, Size: 2},
				Layers: []ocispec.Descriptor{{MediaType: "application/octet-stream", Digest: secretD, Size: int64(len(secret))}}}
			m.SchemaVersion = 2
			body := must[[]byte](t)(json.Marshal(m))
			a := c.do("PUT", "/v2/sig/app/manifests/launder", bytes.NewReader(body), "Content-Type", ocispec.MediaTypeImageManifest)
			a.want(t, http.StatusBadRequest, "MANIFEST_INVALID")
			if st, _, _ := atkRawRequest(t, up.Host(), "GET", "/v2/sig/app/blobs/"+secretD.String()); st == http.StatusOK {
				t.Error("the image's layer is in plaintext upstream")
			}
			if up.Dir != "" {
				if where := atkStorageHolding(t, up, atkPlaintextNeedles(secret)...); where != "" {
					t.Errorf("the upstream's storage holds the layer's plaintext: %s", where)
				}
			}
		})
	}
}

// Copies made before pushes reused them: each push stored a copy of its
// own, the pointer naming the newest, and a referrer attached to an
// older copy is known by that copy's tag alone (no seal lists it). The
// referrers API still lists it, through every tag. (ggcr: distribution
// has no referrers API, and shroud's own list is by plaintext subject.)
func TestReferrersOfCopiesPushedBeforeReuse(t *testing.T) {
	up := shroudtest.GGCR(t)
	f := newTwoKeyShroud(t, up, "sig/app:old")
	s, check, recA, recB, img := f.s, f.check, f.recA, f.recB, f.img
	p := newSigPusher(t, s, "sig/app")
	sig, _ := p.attach(img, sigType, "attached to the old copy")
	old := upstreamDigest(t, up, "sig/app:old")
	// What an earlier version left: the pointer names whatever copy was
	// pushed last, and no seal names the old one. Here the pointer goes,
	// and the next push (another key set, so not a reuse) starts a chain
	// of its own.
	for _, tag := range upstreamTagList(t, up, "sig/app") {
		if strings.HasPrefix(tag, "shroud-") && upstreamDigest(t, up, "sig/app:"+tag) == old {
			if st, _, body := atkRawRequest(t, up.Host(), "DELETE", "/v2/sig/app/manifests/"+tag); st != http.StatusAccepted {
				t.Fatalf("delete the pointer %s upstream: %d %s", tag, st, body)
			}
		}
	}
	check.set(proxy.OpWrap, recA.KeyID(), "revoked")
	// Another replica, with no cache of the first copy.
	s2 := shroudtest.StartWithIdentity(t, up, s.Keyring, t.TempDir(), shroudtest.WithKeyCheck(check),
		shroudtest.WithPolicy(shroudtest.Rule{Pattern: "sig/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{recA, recB}}))
	if err := remote.Write(ref(t, s2.Host(), "sig/app:new"), img); err != nil {
		t.Fatal(err)
	}
	if upstreamDigest(t, up, "sig/app:new") == old {
		t.Fatal("the second push reused the old copy; the test wants two")
	}
	p2 := newSigPusher(t, s2, "sig/app")
	sig2, _ := p2.attach(img, sigType, "attached to the new copy")
	want := []digest.Digest{sig, sig2}
	slices.Sort(want)
	if listed, _ := p2.referrers(imgDigest(t, img), ""); !slices.Equal(digestsOf(listed), want) {
		t.Errorf("referrers of the image with two copies: %v, want %v", digestsOf(listed), want)
	}
}

// Identity rotation keeps a client's digest tags: they are stored under
// names keyed by the identity, so the rotation job must rename them as it
// renames the pointers, or once the old identity is retired cosign's
// signatures (sha256-<hex>.sig) and the referrers index shroud keeps
// vanish.
func TestIdentityRotationKeepsDigestTags(t *testing.T) {
	up := shroudtest.Distribution(t)
	recB, _ := keyPair(t, "ec")
	pol := shroudtest.WithPolicy(shroudtest.Rule{Pattern: "sig/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{recB}})
	first := shroudtest.Start(t, up, pol)
	img := must[v1.Image](t)(random.Image(3000, 1))
	if err := remote.Write(ref(t, first.Host(), "sig/app:v1"), img); err != nil {
		t.Fatal(err)
	}
	sigTag := "sha256-" + imgDigest(t, img).Encoded() + ".sig"
	sigImg := must[v1.Image](t)(random.Image(200, 1))
	if err := remote.Write(ref(t, first.Host(), "sig/app:"+sigTag), sigImg); err != nil {
		t.Fatal(err)
	}
	referrer, _ := newSigPusher(t, first, "sig/app").attach(img, sigType, "kept by shroud")

	old := first.Keyring.Identity()
	next := newIdentity(t)
	both := must[*crypto.Keyring](t)(crypto.NewKeyring(next, nil, crypto.WithPreviousIdentities(old)))
	rotating := shroudtest.StartWithIdentity(t, up, both, t.TempDir(), pol)
	rep, err := rotating.Handler.Rewrap(context.Background(), "sig/app", proxy.RewrapOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("rotation: %+v", rep)

	after := shroudtest.StartWithIdentity(t, up, must[*crypto.Keyring](t)(crypto.NewKeyring(next, nil)), t.TempDir(), pol)
	got, err := remote.Get(ref(t, after.Host(), "sig/app:"+sigTag))
	if err != nil {
		t.Fatalf("after the rotation, through the new identity alone, %s: %v", sigTag, err)
	}
	if got.Digest.String() != imgDigest(t, sigImg).String() {
		t.Errorf("%s reads %s, pushed %s", sigTag, got.Digest, imgDigest(t, sigImg))
	}
	listed, _ := newSigPusher(t, after, "sig/app").referrers(imgDigest(t, img), "")
	if !slices.Equal(digestsOf(listed), []digest.Digest{referrer}) {
		t.Errorf("after the rotation the referrers are %v, want [%s]", digestsOf(listed), referrer)
	}
}

// Referrers of one subject pushed at once through two replicas, on an
// upstream without the referrers API: each push reads shroud's index and
// writes it back, and without a lock the replicas shared one write would
// drop another's referrer. Every one is listed.
func TestConcurrentReferrersThroughTwoReplicasAreAllListed(t *testing.T) {
	up := shroudtest.Distribution(t)
	ledger := cache.NewMemoryLedger(0) // the shared tier's ledger, as redis is to real replicas
	a := shroudtest.Start(t, up, shroudtest.WithLedger(ledger))
	b := shroudtest.StartWithIdentity(t, up, a.Keyring, t.TempDir(), shroudtest.WithLedger(ledger))
	img := must[v1.Image](t)(random.Image(3000, 1))
	if err := remote.Write(ref(t, a.Host(), "sig/app:v1"), img); err != nil {
		t.Fatal(err)
	}
	pa, pb := newSigPusher(t, a, "sig/app"), newSigPusher(t, b, "sig/app")
	const n = 12
	got := make([]digest.Digest, n)
	var wg sync.WaitGroup
	for i := range n {
		p := pa
		if i%2 == 1 {
			p = pb
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], _ = p.attach(img, sigType, fmt.Sprintf("signature %d", i))
		}()
	}
	wg.Wait()
	slices.Sort(got)
	if listed, _ := pa.referrers(imgDigest(t, img), ""); !slices.Equal(digestsOf(listed), got) {
		t.Errorf("%d referrers pushed at once through two replicas, %d listed", n, len(listed))
	}
}

package proxy_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/keyprovidertest"
	"github.com/shroud-oci/shroud/internal/shroudtest"
)

// atkSigUpstreamManifest reads repoTag's manifest straight at the upstream.
func atkSigUpstreamManifest(t *testing.T, up shroudtest.Upstream, repoTag string) (ocispec.Manifest, string) {
	t.Helper()
	d := must[*remote.Descriptor](t)(remote.Get(ref(t, up.Host(), repoTag)))
	var m ocispec.Manifest
	if err := json.Unmarshal(d.Manifest, &m); err != nil {
		t.Fatal(err)
	}
	return m, d.Digest.String()
}

// atkSigProviderKids lists the test provider's key ids every layer of m is
// wrapped for (the "kid" of each provider-wrapped key).
func atkSigProviderKids(t *testing.T, m ocispec.Manifest) []string {
	t.Helper()
	var kids []string
	for _, l := range m.Layers {
		v := l.Annotations[atkProviderKeysAnnotation]
		for _, part := range strings.Split(v, ",") {
			if part == "" {
				continue
			}
			raw := must[[]byte](t)(base64.StdEncoding.DecodeString(part))
			var w struct {
				KeyID string `json:"kid"`
			}
			if err := json.Unmarshal(raw, &w); err != nil {
				t.Fatalf("provider wrap %q: %v", raw, err)
			}
			if !slices.Contains(kids, w.KeyID) {
				kids = append(kids, w.KeyID)
			}
		}
	}
	slices.Sort(kids)
	return kids
}

// Key ids of provider: recipients are "provider:<name>", whatever the
// argument (the KMS key the provider wraps with). A policy that replaces
// provider:testkms:key-a (a retired or compromised KMS key) by
// provider:testkms:key-b has the same WrappedIDs, so the next push of the
// same manifest reuses the copy whose layer keys are wrapped for key-a
// alone: the retired key opens the new tag, the new key does not. Before
// reuse, the new tag got a copy wrapped for key-b.
func TestAttackReuseKeepsReplacedProviderRecipient(t *testing.T) {
	up := shroudtest.Distribution(t)
	_, providers := atkStartCountingProvider(t)
	recA := must[crypto.Recipient](t)(crypto.ParseRecipient("provider:" + keyprovidertest.Name + ":key-a"))
	recB := must[crypto.Recipient](t)(crypto.ParseRecipient("provider:" + keyprovidertest.Name + ":key-b"))
	s := shroudtest.Start(t, up, shroudtest.WithKeyProviders(providers),
		shroudtest.WithPolicy(shroudtest.Rule{Pattern: "p/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{recA}}))
	img := must[v1.Image](t)(random.Image(2000, 1))
	if err := remote.Write(ref(t, s.Host(), "p/app:v1"), img); err != nil {
		t.Fatal(err)
	}
	m1, d1 := atkSigUpstreamManifest(t, up, "p/app:v1")
	t.Logf("v1 (recipient key-a): upstream %s, layers wrapped for %v", d1, atkSigProviderKids(t, m1))

	// key-a replaced by key-b (same identity, another process, as after
	// a config change and a restart).
	s2 := shroudtest.StartWithIdentity(t, up, s.Keyring, t.TempDir(),
		shroudtest.WithPolicy(shroudtest.Rule{Pattern: "p/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{recB}}))
	if err := remote.Write(ref(t, s2.Host(), "p/app:v2"), img); err != nil {
		t.Fatal(err)
	}
	m2, d2 := atkSigUpstreamManifest(t, up, "p/app:v2")
	kids2 := atkSigProviderKids(t, m2)
	t.Logf("v2 (recipient key-b alone): upstream %s, layers wrapped for %v", d2, kids2)
	if !slices.Contains(kids2, "key-b") || slices.Contains(kids2, "key-a") {
		t.Errorf("the tag pushed with recipient key-b alone names a copy wrapped for %v (reused the key-a copy: %v)", kids2, d1 == d2)
	}
}

// A deny rule narrowed to an artifact type, ahead of a passthrough rule
// for the same repositories: ServeHTTP hands the repository to the raw
// passthrough by Match (which skips narrowed rules) and the deny rule is
// never consulted. Config accepts the policy.
func TestAttackDenyArtifactTypeIgnoredOnPassthroughRepository(t *testing.T) {
	up := shroudtest.Distribution(t)
	const denied = "application/vnd.example.denied"
	s := shroudtest.Start(t, up, shroudtest.WithPolicy(
		shroudtest.Rule{Pattern: "pub/**", Action: crypto.Deny, ArtifactTypes: []string{denied}},
		shroudtest.Rule{Pattern: "pub/**", Action: crypto.Passthrough},
	))
	c := call{t, s.URL}
	empty := atkSigPushBlob(t, c, "pub/app", []byte("{}"))
	payload := []byte("a denied artifact")
	ld := atkSigPushBlob(t, c, "pub/app", payload)
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: denied,
		Config: ocispec.Descriptor{MediaType: "application/vnd.oci.empty.v1+json", Digest: empty, Size: 2},
		Layers: []ocispec.Descriptor{{MediaType: "application/octet-stream", Digest: ld, Size: int64(len(payload))}}}
	m.SchemaVersion = 2
	body := must[[]byte](t)(json.Marshal(m))
	a := c.do("PUT", "/v2/pub/app/manifests/x", bytes.NewReader(body), "Content-Type", ocispec.MediaTypeImageManifest)
	if a.status != http.StatusForbidden {
		t.Errorf("an artifact of the denied type %s pushed to a passthrough repository: %d %s, want 403 DENIED", denied, a.status, a.body)
	}
	// The same with an encrypt rule behind the deny is refused:
	recA, _ := keyPair(t, "ec")
	s2 := shroudtest.Start(t, up, shroudtest.WithPolicy(
		shroudtest.Rule{Pattern: "enc/**", Action: crypto.Deny, ArtifactTypes: []string{denied}},
		shroudtest.Rule{Pattern: "enc/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{recA}},
	))
	c2 := call{t, s2.URL}
	atkPushBlob(t, c2, "enc/app", []byte("{}"))
	atkPushBlob(t, c2, "enc/app", payload)
	a2 := c2.do("PUT", "/v2/enc/app/manifests/x", bytes.NewReader(body), "Content-Type", ocispec.MediaTypeImageManifest)
	t.Logf("same artifact to an encrypt repository: %d %s", a2.status, bytes.TrimSpace(a2.body))
}

// A passthrough rule narrowed to a config media type that images use
// (cosign's tag-scheme .sig manifests have config type
// application/vnd.oci.image.config.v1+json, so an operator who wants them
// readable might list it) would make every ordinary image of the
// repositories plaintext upstream: the policy is refused.
func TestAttackArtifactTypeImageConfigTypeMakesImagesPlaintext(t *testing.T) {
	for _, typ := range []string{ocispec.MediaTypeImageConfig, "application/vnd.docker.container.image.v1+json", "Application/Vnd.OCI.Image.Config.v1+JSON"} {
		_, err := crypto.NewPolicy([]crypto.Rule{{Pattern: "sig/**", Action: crypto.Passthrough, ArtifactTypes: []string{typ}}})
		if err == nil || !strings.Contains(err.Error(), "config type of every container image") {
			t.Errorf("a passthrough rule narrowed to %s: %v, want it refused", typ, err)
		}
	}
}

// atkSigPushBlob uploads b to repo with a POST and a PUT (a passthrough
// repository answers as the upstream does).
func atkSigPushBlob(t *testing.T, c call, repo string, b []byte) digest.Digest {
	t.Helper()
	d := digest.FromBytes(b)
	a := c.do("POST", "/v2/"+repo+"/blobs/uploads/", nil)
	if a.status != http.StatusAccepted {
		t.Fatalf("start upload to %s: %d %s", repo, a.status, a.body)
	}
	loc := a.header.Get("Location")
	u := must[*url.URL](t)(url.Parse(loc))
	if !u.IsAbs() {
		u = must[*url.URL](t)(url.Parse(c.base)).ResolveReference(u)
	}
	q := u.Query()
	q.Set("digest", d.String())
	u.RawQuery = q.Encode()
	p := c.do("PUT", u.String(), bytes.NewReader(b), "Content-Type", "application/octet-stream")
	if p.status != http.StatusCreated {
		t.Fatalf("put blob %s to %s: %d %s", d, repo, p.status, p.body)
	}
	return d
}

// Upstream requests one referrers GET and one referrer push cost on an
// upstream without the referrers API, with n referrers kept: both grow
// linearly in n (each entry is resolved or checked for being gone, with a
// budget of its own), so a subject at maxReferrers (1024) costs thousands
// of upstream requests per client request, and filling it costs a number
// quadratic in n.
func TestAttackKeptReferrersUpstreamFanOut(t *testing.T) {
	var count atomic.Int64
	up := shroudtest.Behind(t, shroudtest.Distribution(t), func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			count.Add(1)
			next.ServeHTTP(w, r)
		})
	})
	s := shroudtest.Start(t, up)
	img := must[v1.Image](t)(random.Image(500, 1))
	if err := remote.Write(ref(t, s.Host(), "sig/app:v1"), img); err != nil {
		t.Fatal(err)
	}
	p := newSigPusher(t, s, "sig/app")
	const n = 64
	var lastPush int64
	for i := range n {
		before := count.Load()
		p.attach(img, sigType, fmt.Sprintf("signature %d", i))
		lastPush = count.Load() - before
	}
	before := count.Load()
	listed, _ := p.referrers(imgDigest(t, img), "")
	get := count.Load() - before
	t.Logf("%d referrers listed; the %dth referrer push cost %d upstream requests, one referrers GET %d", len(listed), n, lastPush, get)
	// A replica with a cold cache (another process, same identity).
	s2 := shroudtest.StartWithIdentity(t, up, s.Keyring, t.TempDir())
	p2 := &sigPusher{t: t, c: call{t, s2.URL}, repo: "sig/app", cfg: p.cfg}
	before = count.Load()
	listed2, _ := p2.referrers(imgDigest(t, img), "")
	cold := count.Load() - before
	t.Logf("cold replica: %d referrers listed, one referrers GET %d upstream requests", len(listed2), cold)
	if perPush := float64(lastPush) / n; perPush*1024 > 2048 {
		t.Errorf("one referrer push costs ~%.1f upstream requests per kept referrer: ~%.0f at maxReferrers, ~%.0f to fill a subject's index", perPush, perPush*1024, perPush*1024*1024/2)
	}
	if perEntry := float64(cold) / n; perEntry*1024 > 2048 {
		t.Errorf("one referrers GET costs ~%.1f upstream requests per kept referrer: ~%.0f at maxReferrers", perEntry, perEntry*1024)
	}
}

// The upstream points the keyed tag of subject A's referrers index at
// subject B's index (both sealed by shroud for the repository): nothing
// binds an index to its subject but the filter on what its entries name.
func TestAttackKeptReferrersIndexSwapped(t *testing.T) {
	up := shroudtest.Distribution(t)
	s := shroudtest.Start(t, up)
	imgA := must[v1.Image](t)(random.Image(500, 1))
	imgB := must[v1.Image](t)(random.Image(500, 1))
	for tag, img := range map[string]v1.Image{"a": imgA, "b": imgB} {
		if err := remote.Write(ref(t, s.Host(), "sig/app:"+tag), img); err != nil {
			t.Fatal(err)
		}
	}
	p := newSigPusher(t, s, "sig/app")
	sigA, _ := p.attach(imgA, sigType, "signs A")
	sigB, _ := p.attach(imgB, sigType, "signs B")
	upA, upB := upstreamDigest(t, up, "sig/app:a"), upstreamDigest(t, up, "sig/app:b")
	// Find the kept indexes' keyed tags straight at the upstream.
	indexTag := map[string]string{} // "a"/"b" -> a tag naming that subject's index
	var bodyB []byte
	for _, tag := range upstreamTagList(t, up, "sig/app") {
		d := must[*remote.Descriptor](t)(remote.Get(ref(t, up.Host(), "sig/app:"+tag)))
		if d.MediaType != types.OCIImageIndex {
			continue
		}
		var idx ocispec.Index
		must[struct{}](t)(struct{}{}, json.Unmarshal(d.Manifest, &idx))
		for _, e := range idx.Manifests {
			cm, _ := atkSigUpstreamManifest(t, up, "sig/app@"+e.Digest.String())
			if cm.Subject == nil {
				continue
			}
			switch cm.Subject.Digest.String() {
			case upA.String():
				indexTag["a"] = indexTag["a"] + " " + tag
			case upB.String():
				indexTag["b"] = indexTag["b"] + " " + tag
				bodyB = d.Manifest
			}
		}
	}
	t.Logf("index tags: A:%s B:%s", indexTag["a"], indexTag["b"])
	if bodyB == nil || indexTag["a"] == "" {
		t.Fatal("kept indexes not found upstream")
	}
	for _, tag := range strings.Fields(indexTag["a"]) {
		req := must[*http.Request](t)(http.NewRequest("PUT", up.URL+"/v2/sig/app/manifests/"+tag, bytes.NewReader(bodyB)))
		req.Header.Set("Content-Type", ocispec.MediaTypeImageIndex)
		resp := must[*http.Response](t)(http.DefaultClient.Do(req))
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("swap %s: %d", tag, resp.StatusCode)
		}
	}
	s2 := shroudtest.StartWithIdentity(t, up, s.Keyring, t.TempDir()) // cold cache
	p2 := &sigPusher{t: t, c: call{t, s2.URL}, repo: "sig/app", cfg: p.cfg}
	la, _ := p2.referrers(imgDigest(t, imgA), "")
	t.Logf("after the swap, referrers of A: %v (sigA %s, sigB %s)", digestsOf(la), sigA, sigB)
	if slices.Contains(digestsOf(la), sigB) {
		t.Error("B's signature listed as A's")
	}
	sigA2, _ := p2.attach(imgA, sigType, "signs A again")
	la, _ = p2.referrers(imgDigest(t, imgA), "")
	lb, _ := p2.referrers(imgDigest(t, imgB), "")
	t.Logf("after another push: referrers of A: %v (sigA2 %s), of B: %v", digestsOf(la), sigA2, digestsOf(lb))
	if slices.Contains(digestsOf(la), sigB) || !slices.Contains(digestsOf(la), sigA2) || !slices.Contains(digestsOf(lb), sigB) {
		t.Error("the swapped index mixed the subjects' referrers")
	}
	// What the client reading the tag schema itself gets for A's tag.
	tagA := "sha256-" + imgDigest(t, imgA).Encoded()
	ga := call{t, s2.URL}.do("GET", "/v2/sig/app/manifests/"+tagA, nil, "Accept", ocispec.MediaTypeImageIndex)
	var idx ocispec.Index
	json.Unmarshal(ga.body, &idx)
	t.Logf("GET %s through shroud: %d, lists %v", tagA, ga.status, digestsOf(idx.Manifests))
}

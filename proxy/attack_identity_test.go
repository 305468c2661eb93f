package proxy_test

// Review: identity rotation when the old identity is what leaked (the
// reason an operator rotates it). The README's model: "A stolen identity
// key: it opens every image shroud encrypted"; a seal is "signed with
// shroud's identity" so that "a forged seal (anyone can encrypt to a
// public key) ... [is] foreign". Whoever holds the old identity's private
// key signs seals the servers of the rotation accept.

import (
	"encoding/json"

	"context"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/shroudtest"
	"github.com/shroud-oci/shroud/proxy"
)

// reviewIdentity writes a new identity and returns it with its public
// key's path.
func reviewIdentity(t *testing.T) (*crypto.Identity, string) {
	t.Helper()
	id := newIdentity(t)
	return id, filepath.Join(filepath.Dir(id.Path()), crypto.IdentityPublicFile)
}

// pullAll pulls repo:tag through s and reads every layer (ggcr checks
// each layer's digest).
func reviewPullAll(t *testing.T, s shroudtest.Shroud, repoTag string) (v1.Hash, error) {
	t.Helper()
	img, err := remote.Image(ref(t, s.Host(), repoTag))
	if err != nil {
		return v1.Hash{}, err
	}
	ls, err := img.Layers()
	if err != nil {
		return v1.Hash{}, err
	}
	for _, l := range ls {
		rc, err := l.Compressed()
		if err != nil {
			return v1.Hash{}, err
		}
		rc.Close()
	}
	return img.Digest()
}

// The old identity A leaked; the operator rotates to B and, as the deny
// list is for, revokes A (keyCompromise) at once. The servers keep A as
// --previous-identity until the job is done (README step 1). The thief,
// who can write to the registry, pushes an image of its own sealed by A
// (its own shroud, identity A, in front of the same registry), the layer
// keys wrapped for B's public key. A server holding B alone refuses it
// (a seal B did not sign: foreign, and B may not open unsealed layers).
// A server holding B with A as a previous identity serves it as an image
// shroud sealed for the repository: the deny list stops A unwrapping
// layer keys, not A vouching for seals (Keyring.OpenSeal is not gated).
func TestAttackRevokedPreviousIdentityStillVouchesForForgedSeals(t *testing.T) {
	up := shroudtest.Distribution(t)
	a, _ := reviewIdentity(t)
	b, bPub := reviewIdentity(t)
	recR, _ := keyPair(t, "ec")
	pol := shroudtest.WithPolicy(shroudtest.Rule{Pattern: "team/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{recR}})

	recB := must[crypto.Recipient](t)(crypto.ParseRecipient("jwe:" + bPub))
	thief := shroudtest.StartWithIdentity(t, up, must[*crypto.Keyring](t)(crypto.NewKeyring(a, nil)), t.TempDir(),
		shroudtest.WithPolicy(shroudtest.Rule{Pattern: "team/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{recB}}))
	evil := must[v1.Image](t)(random.Image(5000, 2))
	if err := remote.Write(ref(t, thief.Host(), "team/app:evil"), evil); err != nil {
		t.Fatal(err)
	}

	revoked := newChecker()
	revoked.set(proxy.OpUnwrap, a.KeyID(), "revoked")
	revoked.set(proxy.OpWrap, a.KeyID(), "revoked")

	alone := shroudtest.StartWithIdentity(t, up, must[*crypto.Keyring](t)(crypto.NewKeyring(b, nil)), t.TempDir(), pol, shroudtest.WithKeyCheck(revoked))
	if _, err := reviewPullAll(t, alone, "team/app:evil"); err == nil {
		t.Fatal("control: a server holding B alone serves the thief's image")
	}
	both := shroudtest.StartWithIdentity(t, up, must[*crypto.Keyring](t)(crypto.NewKeyring(b, nil, crypto.WithPreviousIdentities(a))), t.TempDir(), pol,
		shroudtest.WithKeyCheck(revoked))
	if d, err := reviewPullAll(t, both, "team/app:evil"); err == nil {
		t.Errorf("a server holding B, with A (revoked: keyCompromise) as its previous identity, serves the thief's image %s as one shroud sealed for team/app", d)
	}
}

// The same thief, and the rotation job: the job takes every manifest A
// sealed for the repository for shroud's own, opens its layer keys with
// A (checkSealedLayer: UnwrapWith(IsIdentityKey), no key check, so A's
// revocation does not stop it either), wraps them for B and the rule's
// recipients and re-seals the original with B. After the job and step 3
// (A dropped from the servers, revoked), the forgery is an image B
// sealed: every server serves it, and the rule's recipient opens it
// straight from the registry.
func TestAttackRotateIdentityLaundersSealsForgedWithTheLeakedIdentity(t *testing.T) {
	up := shroudtest.Distribution(t)
	a, _ := reviewIdentity(t)
	b, _ := reviewIdentity(t)
	recR, _ := keyPair(t, "ec")
	pol := shroudtest.WithPolicy(shroudtest.Rule{Pattern: "team/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{recR}})
	keysA := must[*crypto.Keyring](t)(crypto.NewKeyring(a, nil))

	// Genuine images, pushed before the leak.
	genuine := must[v1.Image](t)(random.Image(5000, 2))
	before := shroudtest.StartWithIdentity(t, up, keysA, t.TempDir(), pol)
	if err := remote.Write(ref(t, before.Host(), "team/app:1"), genuine); err != nil {
		t.Fatal(err)
	}
	// The thief's, sealed by A as any server of A's would seal it.
	thief := shroudtest.StartWithIdentity(t, up, keysA, t.TempDir(), pol)
	evil := must[v1.Image](t)(random.Image(5000, 2))
	if err := remote.Write(ref(t, thief.Host(), "team/app:evil"), evil); err != nil {
		t.Fatal(err)
	}

	revoked := newChecker()
	revoked.set(proxy.OpUnwrap, a.KeyID(), "revoked")
	revoked.set(proxy.OpWrap, a.KeyID(), "revoked")
	rotating := shroudtest.StartWithIdentity(t, up, must[*crypto.Keyring](t)(crypto.NewKeyring(b, nil, crypto.WithPreviousIdentities(a))), t.TempDir(), pol,
		shroudtest.WithKeyCheck(revoked))
	rep, err := rotating.Handler.Rewrap(context.Background(), "team/app", proxy.RewrapOptions{})
	t.Logf("rotation with A revoked: %+v %v", rep, err)
	if err == nil || !strings.Contains(err.Error(), "previous identity") {
		t.Errorf("the rotation job re-sealed what a revoked previous identity sealed: %v", err)
	}

	after := shroudtest.StartWithIdentity(t, up, must[*crypto.Keyring](t)(crypto.NewKeyring(b, nil)), t.TempDir(), pol)
	if d, err := reviewPullAll(t, after, "team/app:evil"); err == nil {
		t.Errorf("after the rotation, a server holding B alone serves the thief's image %s (sealed by the leaked identity A, re-sealed by the job with B)", d)
	}
}

// Held: pulls during the identity job through a server holding both
// identities always succeed with the digests pushed; through a server
// still holding the old identity alone (a replica step 1 missed), a pull
// either gives the digests pushed or fails: never other bytes.
func TestReviewPullsDuringIdentityJobThroughOldOnlyServer(t *testing.T) {
	up := shroudtest.Distribution(t)
	f := newRewrapFixture(t, up)
	pol := reviewRuleB(t, f)
	old := f.first.Keyring.Identity()
	next, _ := reviewIdentity(t)
	both := shroudtest.StartWithIdentity(t, up, must[*crypto.Keyring](t)(crypto.NewKeyring(next, nil, crypto.WithPreviousIdentities(old))), t.TempDir(), pol)
	oldOnly := shroudtest.StartWithIdentity(t, up, f.first.Keyring, t.TempDir(), pol)
	wantImg := must[v1.Hash](t)(f.img.Digest())
	failedOld, okOld := 0, 0
	check := func() {
		for _, s := range []shroudtest.Shroud{both, oldOnly} {
			for _, r := range []string{rewrapRepo + ":1", rewrapRepo + ":2", rewrapRepo + "@" + wantImg.String()} {
				d, err := reviewPullAll(t, s, r)
				switch {
				case err != nil && s.URL == both.URL:
					t.Errorf("through the server holding both identities, %s: %v", r, err)
				case err != nil:
					failedOld++
				case d != wantImg:
					t.Errorf("%s through %s: digest %s, pushed %s", r, s.URL, d, wantImg)
				case s.URL == oldOnly.URL:
					okOld++
				}
			}
		}
	}
	check()
	rep, err := both.Handler.Rewrap(context.Background(), rewrapRepo, proxy.RewrapOptions{Progress: func(proxy.JobProgress) { check() }})
	if err != nil {
		t.Fatal(err)
	}
	check()
	t.Logf("report %+v; the old-identity-only server: %d pulls ok, %d failed (closed)", rep, okOld, failedOld)
}

// Held: during the rotation, a server holding B (A previous) mounts into
// team/app a layer team/other stored under A: the blob pointer it writes
// in team/app carries the layer key wrapped for B alone (not A, not the
// recipients of team/other's manifest).
func TestReviewMountDuringRotationIsForTheNewIdentityAlone(t *testing.T) {
	up := shroudtest.Distribution(t)
	recR, keyR := keyPair(t, "ec")
	pol := shroudtest.WithPolicy(shroudtest.Rule{Pattern: "team/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{recR}})
	first := shroudtest.Start(t, up, pol)
	img := must[v1.Image](t)(random.Image(30_000, 2))
	if err := remote.Write(ref(t, first.Host(), "team/other:1"), img); err != nil {
		t.Fatal(err)
	}
	a := first.Keyring.Identity()
	keyA := must[crypto.DecryptionKey](t)(crypto.ParseDecryptionKey(first.IdentityFile()))
	b, _ := reviewIdentity(t)
	both := shroudtest.StartWithIdentity(t, up, must[*crypto.Keyring](t)(crypto.NewKeyring(b, nil, crypto.WithPreviousIdentities(a))), t.TempDir(), pol)
	if err := remote.Write(ref(t, both.Host(), "team/app:1"), img); err != nil {
		t.Fatal(err)
	}
	keyB := must[crypto.DecryptionKey](t)(crypto.ParseDecryptionKey(b.Path()))
	var tl struct{ Tags []string }
	json.Unmarshal(call{t, up.URL}.do("GET", "/v2/team/app/tags/list", nil).body, &tl)
	pointers := 0
	for _, tag := range tl.Tags {
		var m ocispec.Manifest
		json.Unmarshal(atkUpstreamRaw(t, up, "team/app:"+tag), &m)
		for _, l := range m.Layers {
			if !crypto.IsEncryptedMediaType(l.MediaType) {
				continue
			}
			if m.ArtifactType == "application/vnd.dev.shroud.blob-pointer.v1" {
				pointers++
				if opens(t, keyA, l) || opens(t, keyR, l) || !opens(t, keyB, l) {
					t.Errorf("blob pointer %s: A %v, recipient %v, B %v; want B alone", tag, opens(t, keyA, l), opens(t, keyR, l), opens(t, keyB, l))
				}
			} else if opens(t, keyA, l) {
				t.Errorf("manifest %s: layer %s opens with the previous identity A", tag, l.Digest)
			}
		}
	}
	t.Logf("%d blob pointers in team/app", pointers)
}

// A thief who holds the old identity A's key and read the registry once
// (or the hostile registry itself, which keeps every manifest it was
// sent) keeps every layer after `shroud rotate identity` alone: the job
// rewraps, so the layer keys and ciphertext stay, and A's wrapped key in
// a manifest of before opens the ciphertext. For a leaked identity the
// README says to re-encrypt away from it too (with both identities, before
// revoking it): then A opens nothing the registry serves.
func TestAttackLeakedIdentityStillOpensEveryLayerAfterRotation(t *testing.T) {
	up := shroudtest.Distribution(t)
	f := newRewrapFixture(t, up)
	keyA := must[crypto.DecryptionKey](t)(crypto.ParseDecryptionKey(f.first.IdentityFile()))
	saved := upstreamManifest(t, up, rewrapRepo+":1") // what the thief read before the rotation
	b, _ := reviewIdentity(t)
	both := shroudtest.StartWithIdentity(t, up, must[*crypto.Keyring](t)(crypto.NewKeyring(b, nil, crypto.WithPreviousIdentities(f.first.Keyring.Identity()))), t.TempDir(), reviewRuleB(t, f))
	if _, err := both.Handler.Rewrap(context.Background(), rewrapRepo, proxy.RewrapOptions{}); err != nil {
		t.Fatal(err)
	}
	re := proxy.NewReencryption(proxy.Revocation{KeyID: f.first.Keyring.Identity().KeyID(), Reason: "keyCompromise"})
	if _, err := both.Handler.Rewrap(context.Background(), rewrapRepo, proxy.RewrapOptions{Reencrypt: re}); err != nil {
		t.Fatal(err)
	}
	now := map[string]bool{}
	for _, d := range upstreamLayers(t, up, rewrapRepo+":1") {
		now[d.String()] = true
	}
	opened := 0
	for _, l := range saved.Layers {
		if now[l.Digest.String()] && opens(t, keyA, l) {
			opened++
		}
	}
	if opened > 0 {
		t.Errorf("after the identity rotation, %d of the %d layers team/app:1 names upstream are the same ciphertext, whose key A opens from a manifest of before", opened, len(saved.Layers))
	}
}

// Held: while a server holds B with A as previous identity, the registry
// points the old-name pointer tag of the image (the one A named) at
// another manifest A sealed for the repository (the index): a pull of
// the image by digest through a server new to it never gets the index,
// and the image is still found once the job renamed the pointer.
func TestReviewOldNamePointerRetaggedToAnotherManifest(t *testing.T) {
	up := shroudtest.Distribution(t)
	f := newRewrapFixture(t, up)
	var tl struct{ Tags []string }
	json.Unmarshal(call{t, up.URL}.do("GET", "/v2/"+rewrapRepo+"/tags/list", nil).body, &tl)
	var imgPointer string
	for _, tag := range tl.Tags {
		d := must[*v1.Descriptor](t)(remote.Head(ref(t, up.Host(), rewrapRepo+":"+tag)))
		if len(tag) > 7 && tag[:7] == "shroud-" && d.Digest.String() == f.before["2"].String() {
			imgPointer = tag
		}
	}
	if imgPointer == "" {
		t.Fatal("no pointer tag names the image")
	}
	idxRaw := atkUpstreamRaw(t, up, rewrapRepo+":multi")
	atkPutUpstream(t, up, rewrapRepo, imgPointer, ocispec.MediaTypeImageIndex, idxRaw)
	b, _ := reviewIdentity(t)
	keys := must[*crypto.Keyring](t)(crypto.NewKeyring(b, nil, crypto.WithPreviousIdentities(f.first.Keyring.Identity())))
	fresh := shroudtest.StartWithIdentity(t, up, keys, t.TempDir(), reviewRuleB(t, f))
	want := must[v1.Hash](t)(f.img.Digest())
	a := call{t, fresh.URL}.do("GET", "/v2/"+rewrapRepo+"/manifests/"+want.String(), nil, "Accept", ocispec.MediaTypeImageManifest+","+ocispec.MediaTypeImageIndex)
	if a.status == 200 && digestOf(a.body) != want.String() {
		t.Fatalf("by digest %s, the server serves %s", want, digestOf(a.body))
	}
	t.Logf("pull by digest with the old-name pointer moved: %d", a.status)
}

func digestOf(b []byte) string { return "sha256:" + sha256Hex(b) }

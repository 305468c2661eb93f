package proxy_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/shroudtest"
	"github.com/shroud-oci/shroud/proxy"
)

// newIdentity writes a new identity key pair and loads it.
func newIdentity(t *testing.T) *crypto.Identity {
	t.Helper()
	priv, pub, err := crypto.GenerateKeyPair("ec")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, crypto.IdentityFile), priv, 0o600)
	os.WriteFile(filepath.Join(dir, crypto.IdentityPublicFile), pub, 0o644)
	return must[*crypto.Identity](t)(crypto.LoadIdentity(filepath.Join(dir, crypto.IdentityFile)))
}

// Identity rotation: a new identity takes over, the old one kept as a
// previous identity while the job runs. Through a server holding both,
// every image pulls before the job; after it, a server holding the new
// identity alone pulls every tag and digest pushed (the index's too),
// answers 410 for the ciphertext an earlier re-encryption revoked, and
// nothing upstream is sealed by the old identity or named by its pointer
// keys any more; the rule's recipient still opens every layer.
func TestIdentityRotationLeavesEveryImagePullableWithTheNewIdentityAlone(t *testing.T) {
	up := shroudtest.Distribution(t)
	f := newRewrapFixture(t, up)
	recB := must[crypto.Recipient](t)(crypto.ParseRecipient("jwe:" + strings.TrimSuffix(f.keyB.Path, ".pem") + ".pub.pem"))
	pol := shroudtest.WithPolicy(shroudtest.Rule{Pattern: "team/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{recB}})
	old := f.first.Keyring.Identity()
	// An earlier re-encryption left revocation markers (410 for the old
	// ciphertext), sealed and named by the old identity.
	reenc := shroudtest.StartWithIdentity(t, up, f.first.Keyring, f.first.DataDir, pol)
	re := proxy.NewReencryption(proxy.Revocation{KeyID: "sha256:28bd9de4d356be55efc3e39b4b27e7b7e5d4208492506d97072f7ebd2bbdf905", Reason: "keyCompromise", At: time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)})
	if _, err := reenc.Handler.Rewrap(context.Background(), rewrapRepo, proxy.RewrapOptions{Reencrypt: re}); err != nil {
		t.Fatal(err)
	}
	tagsBefore := f.upstreamTags(t)

	next := newIdentity(t)
	both := must[*crypto.Keyring](t)(crypto.NewKeyring(next, nil, crypto.WithPreviousIdentities(old)))
	rotating := shroudtest.StartWithIdentity(t, up, both, t.TempDir(), pol)
	checkPulls(t, f, rotating, "a server holding both identities, before the job")
	rep, err := rotating.Handler.Rewrap(context.Background(), rewrapRepo, proxy.RewrapOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("rotation: %+v", rep)
	if rep.Resealed == 0 || rep.Foreign != 0 {
		t.Fatalf("the job re-sealed %d manifests (left %d as not its own)", rep.Resealed, rep.Foreign)
	}

	alone := must[*crypto.Keyring](t)(crypto.NewKeyring(next, nil))
	after := shroudtest.StartWithIdentity(t, up, alone, t.TempDir(), pol)
	checkPulls(t, f, after, "a server holding the new identity alone, after the job")
	a := call{t, after.URL}.do("GET", "/v2/"+rewrapRepo+"/blobs/"+f.layers[0].String(), nil)
	if a.status != http.StatusGone || !strings.Contains(string(a.body), "sha256:28bd9de4d356be55efc3e39b4b27e7b7e5d4208492506d97072f7ebd2bbdf905") {
		t.Errorf("ciphertext revoked before the rotation, through the new identity alone: %d %s, want 410 naming the revocation", a.status, a.body)
	}
	// Upstream: every manifest any tag names is sealed by the new
	// identity (none by the old), and each layer opens with B.
	var tl struct{ Tags []string }
	json.Unmarshal(call{t, up.URL}.do("GET", "/v2/"+rewrapRepo+"/tags/list", nil).body, &tl)
	live := 0
	for _, tag := range tl.Tags {
		resp := call{t, up.URL}.do("GET", "/v2/"+rewrapRepo+"/manifests/"+tag, nil, "Accept", ocispec.MediaTypeImageManifest+","+ocispec.MediaTypeImageIndex)
		if resp.status == http.StatusNotFound {
			continue // a tag of a deleted manifest, on a registry that keeps tags
		}
		live++
		var m ocispec.Manifest
		json.Unmarshal(resp.body, &m)
		sealed := m.Annotations[crypto.AnnotationOriginal]
		if _, err := old.Open(sealed); err == nil {
			t.Errorf("tag %s names a manifest the old identity sealed", tag)
		}
		if _, err := next.Open(sealed); err != nil {
			t.Errorf("tag %s names a manifest the new identity does not open: %v", tag, err)
		}
		for _, l := range m.Layers {
			if crypto.IsEncryptedMediaType(l.MediaType) && m.ArtifactType == "" && !opens(t, f.keyB, l) {
				t.Errorf("tag %s: layer %s no longer opens with the rule's recipient", tag, l.Digest)
			}
		}
	}
	if live == 0 {
		t.Fatal("no manifest upstream: the test proves nothing")
	}
	for tag, d := range tagsBefore {
		if now := f.upstreamTags(t)[tag]; now == d {
			t.Errorf("tag %s still names the manifest of before the rotation", tag)
		}
	}
}

// checkPulls pulls the fixture through s by the digests pushed (first:
// a server new to them finds them through their pointers) and by every
// tag, and checks the digests and the layers (ggcr verifies each
// layer's bytes against its digest as it reads).
func checkPulls(t *testing.T, f *rewrapFixture, s shroudtest.Shroud, who string) {
	t.Helper()
	wantImg := must[v1.Hash](t)(f.img.Digest())
	wantIdx := must[v1.Hash](t)(f.idx.Digest())
	for _, r := range []string{rewrapRepo + "@" + wantImg.String(), rewrapRepo + ":1", rewrapRepo + ":2"} {
		img, err := remote.Image(ref(t, s.Host(), r))
		if err != nil {
			t.Fatalf("%s: pull %s: %v", who, r, err)
		}
		if d, _ := img.Digest(); d != wantImg {
			t.Fatalf("%s: %s has digest %s, pushed %s", who, r, d, wantImg)
		}
		ls, _ := img.Layers()
		for _, l := range ls {
			rc, err := l.Compressed()
			if err != nil {
				t.Fatalf("%s: %s: layer: %v", who, r, err)
			}
			if _, err := digest.SHA256.FromReader(rc); err != nil {
				t.Fatalf("%s: %s: layer read: %v", who, r, err)
			}
			rc.Close()
		}
	}
	for _, r := range []string{rewrapRepo + "@" + wantIdx.String(), rewrapRepo + ":multi"} {
		idx, err := remote.Index(ref(t, s.Host(), r))
		if err != nil {
			t.Fatalf("%s: pull %s: %v", who, r, err)
		}
		if d, _ := idx.Digest(); d != wantIdx {
			t.Fatalf("%s: %s has digest %s, pushed %s", who, r, d, wantIdx)
		}
		im, _ := idx.IndexManifest()
		for _, c := range im.Manifests {
			if _, err := remote.Image(ref(t, s.Host(), rewrapRepo+"@"+c.Digest.String())); err != nil {
				t.Fatalf("%s: child %s: %v", who, c.Digest, err)
			}
		}
	}
}

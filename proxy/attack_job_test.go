package proxy_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/shroudtest"
	"github.com/shroud-oci/shroud/jobs"
	"github.com/shroud-oci/shroud/proxy"
)

// Attacks on the key-rotation jobs: what a job took away must stay away,
// and a job must not hand new keys to the key it was run against.

// Two rewrap runs months apart, with the default checkpoint path
// (<data-dir>/jobs/rewrap.checkpoint): January takes A away, March takes
// B away and adds C. Were the checkpoint a record of "done" for any
// later run, the second would skip every manifest the first wrote, and
// B, retired, would keep opening every layer.
func TestAttackSecondRewrapMonthsLaterSkipsNothing(t *testing.T) {
	up := shroudtest.Distribution(t)
	f := newRewrapFixture(t, up)
	recB := must[crypto.Recipient](t)(crypto.ParseRecipient("jwe:" + strings.TrimSuffix(f.keyB.Path, ".pem") + ".pub.pem"))
	recC, keyC := keyPair(t, "ec")
	path := filepath.Join(t.TempDir(), "rewrap.checkpoint")
	run := func(rs ...crypto.Recipient) proxy.JobReport {
		t.Helper()
		s := shroudtest.StartWithIdentity(t, up, f.first.Keyring, f.first.DataDir,
			shroudtest.WithPolicy(shroudtest.Rule{Pattern: "team/**", Action: crypto.Encrypt, Recipients: rs}))
		id := must[string](t)(s.Handler.JobID(context.Background(), []string{rewrapRepo}, nil))
		cp := must[*jobs.Checkpoint](t)(jobs.OpenCheckpoint(path, id))
		defer cp.Close()
		rep, err := s.Handler.Rewrap(context.Background(), rewrapRepo, proxy.RewrapOptions{Checkpoint: cp})
		if err != nil {
			t.Fatal(err)
		}
		if err := cp.Finish(); err != nil {
			t.Fatal(err)
		}
		return rep
	}
	rep1 := run(recB)
	rep2 := run(recC)
	t.Logf("January (A retired): %+v; March (B retired): %+v", rep1, rep2)
	if rep2.Resumed != 0 || rep2.Rewritten != rep1.Rewritten {
		t.Errorf("the March run took %d manifests for done and rewrote %d (January rewrote %d)", rep2.Resumed, rep2.Rewritten, rep1.Rewritten)
	}
	for _, tag := range []string{"1", "2", "multi"} {
		for _, l := range f.encryptedLayers(t, tag) {
			if opens(t, f.keyB, l) {
				t.Errorf("tag %s: layer %s still opens with B, retired before the March run", tag, l.Digest)
			}
			if !opens(t, keyC, l) {
				t.Errorf("tag %s: layer %s does not open with C, the rule's recipient now", tag, l.Digest)
			}
		}
	}
}

// A serving replica restored team/app:1 before the rewrap job: its
// mapping of each layer holds the layer's annotations of then, wrapped
// for A and B. After the job took A away, a push to a sibling repository
// HEADs a layer, and the replica mounts it there and writes the blob's
// pointer upstream from that mapping. A pointer carrying the mapping's
// annotations would put A's wrapped layer key back upstream, in a
// manifest the job takes for "identity alone".
func TestAttackMountAfterRewrapRepublishesRetiredKey(t *testing.T) {
	up := shroudtest.Distribution(t)
	f := newRewrapFixture(t, up)
	recB := must[crypto.Recipient](t)(crypto.ParseRecipient("jwe:" + strings.TrimSuffix(f.keyB.Path, ".pem") + ".pub.pem"))
	pol := shroudtest.WithPolicy(shroudtest.Rule{Pattern: "team/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{recB}})
	serving := shroudtest.StartWithIdentity(t, up, f.first.Keyring, f.first.DataDir, pol)
	img := must[v1.Image](t)(remote.Image(ref(t, serving.Host(), rewrapRepo+":1")))
	plain := must[v1.Hash](t)(must[[]v1.Layer](t)(img.Layers())[0].Digest())

	job := shroudtest.StartWithIdentity(t, up, f.first.Keyring, f.first.DataDir, pol)
	if _, err := job.Handler.Rewrap(context.Background(), rewrapRepo, proxy.RewrapOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, l := range f.encryptedLayers(t, "1") {
		if opens(t, f.keyA, l) {
			t.Fatal("the job left A a layer")
		}
	}
	a := call{t, serving.URL}.do("HEAD", "/v2/team/other/blobs/"+plain.String(), nil)
	if a.status != 200 {
		t.Fatalf("HEAD of the layer in a sibling repository of the rule: %d, want 200 (mounted)", a.status)
	}
	var tags struct{ Tags []string }
	json.Unmarshal(call{t, up.URL}.do("GET", "/v2/team/other/tags/list", nil).body, &tags)
	if len(tags.Tags) == 0 {
		t.Fatal("no blob pointer written for the mount: the test proves nothing")
	}
	for _, tag := range tags.Tags {
		var m ocispec.Manifest
		json.Unmarshal(atkUpstreamRaw(t, up, "team/other:"+tag), &m)
		for _, l := range m.Layers {
			if crypto.IsEncryptedMediaType(l.MediaType) && opens(t, f.keyA, l) {
				t.Errorf("upstream team/other:%s holds layer %s's key wrapped for A, which the job took away", tag, l.Digest)
			}
		}
	}
}

// The re-encrypt job is told A is compromised while the rule (and no
// trust document yet) still lists A. Going on would wrap every new layer
// key for A: the job refuses, naming the key and the rule, and writes
// nothing.
func TestAttackReencryptWrapsForTheKeyItNames(t *testing.T) {
	up := shroudtest.Distribution(t)
	f := newRewrapFixture(t, up)
	recA := must[crypto.Recipient](t)(crypto.ParseRecipient("jwe:" + strings.TrimSuffix(f.keyA.Path, ".pem") + ".pub.pem"))
	recB := must[crypto.Recipient](t)(crypto.ParseRecipient("jwe:" + strings.TrimSuffix(f.keyB.Path, ".pem") + ".pub.pem"))
	job := shroudtest.StartWithIdentity(t, up, f.first.Keyring, f.first.DataDir,
		shroudtest.WithPolicy(shroudtest.Rule{Pattern: "team/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{recA, recB}}))
	re := proxy.NewReencryption(proxy.Revocation{KeyID: recA.KeyID(), Reason: "keyCompromise"})
	rep, err := job.Handler.Rewrap(context.Background(), rewrapRepo, proxy.RewrapOptions{Reencrypt: re})
	if err == nil || !strings.Contains(err.Error(), recA.KeyID()) || !strings.Contains(err.Error(), "still a recipient") {
		t.Errorf("re-encrypt away from a key the rule still lists: %+v, %v", rep, err)
	}
	if after := f.upstreamTags(t); after["1"] != f.before["1"] || after["multi"] != f.before["multi"] {
		t.Error("the refused job moved tags")
	}
	// The identity is no key a re-encryption takes away.
	re = proxy.NewReencryption(proxy.Revocation{KeyID: f.first.Keyring.Identity().KeyID(), Reason: "keyCompromise"})
	if _, err := job.Handler.Rewrap(context.Background(), rewrapRepo, proxy.RewrapOptions{Reencrypt: re}); err == nil || !strings.Contains(err.Error(), "identity") {
		t.Errorf("re-encrypt away from shroud's identity: %v", err)
	}
	for _, l := range f.encryptedLayers(t, "1") {
		if !opens(t, f.keyA, l) {
			t.Fatal("the refused job changed the layers")
		}
	}
}

// A blob pointer written by an earlier version from a restored mapping
// carries the wrapped keys of every recipient of the manifest it was
// restored from (the mount above, before it was fixed). The rewrap job
// rewrites every blob pointer for the identity alone, so that a key it
// takes away is not left in one, and every tag pulls back as it was.
func TestRewrapTakesTheRetiredKeyOffBlobPointersOfOlderVersions(t *testing.T) {
	up := shroudtest.Distribution(t)
	f := newRewrapFixture(t, up)
	// Make the pointers look as an older version left them: each
	// pointer's layer carries the annotations the image manifest's
	// layer of the same ciphertext has (wrapped for A and B).
	wrapped := map[string]map[string]string{}
	for _, l := range f.encryptedLayers(t, "1") {
		wrapped[l.Digest.String()] = l.Annotations
	}
	var tags struct{ Tags []string }
	json.Unmarshal(call{t, up.URL}.do("GET", "/v2/"+rewrapRepo+"/tags/list", nil).body, &tags)
	var pointers []string
	for _, tag := range tags.Tags {
		var m ocispec.Manifest
		json.Unmarshal(atkUpstreamRaw(t, up, rewrapRepo+":"+tag), &m)
		if m.ArtifactType != "application/vnd.dev.shroud.blob-pointer.v1" || len(m.Layers) != 1 || wrapped[m.Layers[0].Digest.String()] == nil {
			continue
		}
		m.Layers[0].Annotations = wrapped[m.Layers[0].Digest.String()]
		body := must[[]byte](t)(json.Marshal(m))
		atkPutUpstream(t, up, rewrapRepo, tag, ocispec.MediaTypeImageManifest, body)
		if !opens(t, f.keyA, m.Layers[0]) {
			t.Fatal("the forged old pointer does not open with A")
		}
		pointers = append(pointers, tag)
	}
	if len(pointers) != len(wrapped) {
		t.Fatalf("found %d pointers of the image's %d layers", len(pointers), len(wrapped))
	}
	recB := must[crypto.Recipient](t)(crypto.ParseRecipient("jwe:" + strings.TrimSuffix(f.keyB.Path, ".pem") + ".pub.pem"))
	second := shroudtest.StartWithIdentity(t, up, f.first.Keyring, f.first.DataDir,
		shroudtest.WithPolicy(shroudtest.Rule{Pattern: "team/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{recB}}))
	rep, err := second.Handler.Rewrap(context.Background(), rewrapRepo, proxy.RewrapOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("report: %+v", rep)
	if rep.Pointers < len(pointers) {
		t.Errorf("the job rewrote %d blob pointers, want at least %d", rep.Pointers, len(pointers))
	}
	for _, tag := range pointers {
		var m ocispec.Manifest
		json.Unmarshal(atkUpstreamRaw(t, up, rewrapRepo+":"+tag), &m)
		if opens(t, f.keyA, m.Layers[0]) || opens(t, f.keyB, m.Layers[0]) {
			t.Errorf("pointer %s still opens with a recipient's key: it should hold the identity's alone", tag)
		}
	}
	f.checkAfter(t, second)
}

package proxy_test

// Review: what clients push while a rotation job runs. The job lists the
// repository's tags once, at its start, and then, manifest by manifest,
// PUTs its rewrite under every tag the old manifest had then, and at its
// end deletes every old manifest it replaced. Nothing guards either step
// against a client's push that landed in between.

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/shroudtest"
	"github.com/shroud-oci/shroud/proxy"
)

func reviewRuleB(t *testing.T, f *rewrapFixture) shroudtest.Option {
	recB := must[crypto.Recipient](t)(crypto.ParseRecipient("jwe:" + strings.TrimSuffix(f.keyB.Path, ".pem") + ".pub.pem"))
	return shroudtest.WithPolicy(shroudtest.Rule{Pattern: "team/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{recB}})
}

// A CI job pushes a new image to team/app:multi while a rewrap job runs
// (after the job listed the tags, before it reached the index that tag
// named). The job then PUTs its rewrite of the old index under "multi":
// the tag silently goes back to the image of before (a security fix
// pushed during a key rotation is undone).
func TestAttackRewrapJobRevertsATagPushedDuringTheJob(t *testing.T) {
	up := shroudtest.Distribution(t)
	f := newRewrapFixture(t, up)
	job := shroudtest.StartWithIdentity(t, up, f.first.Keyring, f.first.DataDir, reviewRuleB(t, f))
	newer := must[v1.Image](t)(random.Image(10_000, 1))
	pushed := false
	rep, err := job.Handler.Rewrap(context.Background(), rewrapRepo, proxy.RewrapOptions{Progress: func(p proxy.JobProgress) {
		if pushed {
			return
		}
		pushed = true
		if err := remote.Write(ref(t, f.first.Host(), rewrapRepo+":multi"), newer); err != nil {
			t.Fatalf("the client's push during the job: %v", err)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("report %+v", rep)
	fresh := shroudtest.StartWithIdentity(t, up, f.first.Keyring, t.TempDir(), reviewRuleB(t, f))
	want := must[v1.Hash](t)(newer.Digest())
	got := must[*v1.Descriptor](t)(remote.Head(ref(t, fresh.Host(), rewrapRepo+":multi")))
	if got.Digest != want {
		t.Errorf("after the job, team/app:multi is %s (%s); the client pushed %s to it during the job", got.Digest, got.MediaType, want)
	}
}

// pushRaw PUTs a manifest through s by its digest (or under tag).
func pushRaw(t *testing.T, s shroudtest.Shroud, repo, tag, mediaType string, body []byte) digest.Digest {
	t.Helper()
	d := digest.FromBytes(body)
	refName := d.String()
	if tag != "" {
		refName = tag
	}
	call{t, s.URL}.do("PUT", "/v2/"+repo+"/manifests/"+refName, bytes.NewReader(body), "Content-Type", mediaType).want(t, 201, "")
	return d
}

// reviewReferrers lists the referrers of d through s.
func reviewReferrers(t *testing.T, s shroudtest.Shroud, d digest.Digest) (int, []ocispec.Descriptor) {
	t.Helper()
	a := call{t, s.URL}.do("GET", "/v2/"+rewrapRepo+"/referrers/"+d.String(), nil)
	var ri ocispec.Index
	json.Unmarshal(a.body, &ri)
	return a.status, ri.Manifests
}

// A signature (a referrer of team/app's image) pushed through a serving
// replica while the rewrap job runs: the replica maps the image's digest
// to the encrypted copy of before the job (its cache), so the referrer's
// subject upstream is that copy, which the job deletes at its end. After
// the job the referrer is no longer listed for the image through shroud:
// the signature silently vanished. (ggcr's registry: the embedded
// distribution has no referrers API.)
func TestAttackReferrerPushedDuringRewrapLosesItsSubject(t *testing.T) {
	up := shroudtest.GGCR(t)
	f := newRewrapFixture(t, up)
	job := shroudtest.StartWithIdentity(t, up, f.first.Keyring, f.first.DataDir, reviewRuleB(t, f))
	imgD := digest.Digest(must[v1.Hash](t)(f.img.Digest()).String())
	imgSize := must[int64](t)(f.img.Size())
	c := call{t, f.first.URL}
	var sigD digest.Digest
	pushed := false
	rep, err := job.Handler.Rewrap(context.Background(), rewrapRepo, proxy.RewrapOptions{Progress: func(p proxy.JobProgress) {
		if pushed {
			return
		}
		pushed = true
		emptyCfg := atkPushBlob(t, c, rewrapRepo, []byte("{}"))
		sig := []byte(`{"payload":"signed by release"}`)
		sigBlob := atkPushBlob(t, c, rewrapRepo, sig)
		m := ocispec.Manifest{
			MediaType: ocispec.MediaTypeImageManifest, ArtifactType: "application/vnd.example.signature",
			Config:  ocispec.Descriptor{MediaType: ocispec.MediaTypeEmptyJSON, Digest: emptyCfg, Size: 2},
			Layers:  []ocispec.Descriptor{{MediaType: "application/json", Digest: sigBlob, Size: int64(len(sig))}},
			Subject: &ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: imgD, Size: imgSize},
		}
		m.SchemaVersion = 2
		sigD = pushRaw(t, f.first, rewrapRepo, "", ocispec.MediaTypeImageManifest, must[[]byte](t)(json.Marshal(m)))
		// Control: listed while the job runs, through a replica new to it.
		probe := shroudtest.StartWithIdentity(t, up, f.first.Keyring, t.TempDir(), reviewRuleB(t, f))
		st, ms := reviewReferrers(t, probe, imgD)
		if st != http.StatusOK || len(ms) != 1 || ms[0].Digest != sigD {
			t.Fatalf("control: the referrers of %s just after the push: %d %v", imgD, st, ms)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("report %+v", rep)
	fresh := shroudtest.StartWithIdentity(t, up, f.first.Keyring, t.TempDir(), reviewRuleB(t, f))
	st, ms := reviewReferrers(t, fresh, imgD)
	found := false
	for _, m := range ms {
		found = found || m.Digest == sigD
	}
	if st != http.StatusOK || !found {
		t.Errorf("after the job, the referrers of %s through shroud: %d %v; the signature %s pushed during the job is gone", imgD, st, ms, sigD)
	}
}

// An index naming team/app's image, pushed through a serving replica
// while the rewrap job runs, names upstream the encrypted copy of the
// image of before the job (the replica's cache), which the job deletes
// at its end: a client reading the registry straight (skopeo
// --decryption-key, ctr-enc, the nodes of a cluster not using shroud)
// cannot pull it any more.
func TestAttackIndexPushedDuringRewrapNamesADeletedChild(t *testing.T) {
	up := shroudtest.Distribution(t)
	f := newRewrapFixture(t, up)
	job := shroudtest.StartWithIdentity(t, up, f.first.Keyring, f.first.DataDir, reviewRuleB(t, f))
	imgD := digest.Digest(must[v1.Hash](t)(f.img.Digest()).String())
	imgSize := must[int64](t)(f.img.Size())
	var idxD digest.Digest
	pushed := false
	rep, err := job.Handler.Rewrap(context.Background(), rewrapRepo, proxy.RewrapOptions{Progress: func(p proxy.JobProgress) {
		if pushed {
			return
		}
		pushed = true
		idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex,
			Manifests: []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageManifest, Digest: imgD, Size: imgSize,
				Platform: &ocispec.Platform{OS: "linux", Architecture: "amd64"}}}}
		idx.SchemaVersion = 2
		idxD = pushRaw(t, f.first, rewrapRepo, "during", ocispec.MediaTypeImageIndex, must[[]byte](t)(json.Marshal(idx)))
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("report %+v", rep)
	var ui ocispec.Index
	json.Unmarshal(atkUpstreamRaw(t, up, rewrapRepo+":during"), &ui)
	for _, ch := range ui.Manifests {
		st := call{t, up.URL}.do("HEAD", "/v2/"+rewrapRepo+"/manifests/"+ch.Digest.String(), nil,
			"Accept", ocispec.MediaTypeImageManifest).status
		if st != http.StatusOK {
			t.Errorf("upstream, the index %s pushed during the job names child %s, which answers %d (deleted by the job)", idxD, ch.Digest, st)
		}
	}
	fresh := shroudtest.StartWithIdentity(t, up, f.first.Keyring, t.TempDir(), reviewRuleB(t, f))
	if idx, err := remote.Index(ref(t, fresh.Host(), rewrapRepo+":during")); err != nil {
		t.Errorf("pull the index pushed during the job through shroud: %v", err)
	} else if im, err := idx.IndexManifest(); err == nil {
		for _, ch := range im.Manifests {
			if _, err := remote.Image(ref(t, fresh.Host(), rewrapRepo+"@"+ch.Digest.String())); err != nil {
				t.Errorf("through shroud, child %s of the index pushed during the job: %v", ch.Digest, err)
			}
		}
	}
}

// After the job is over, a serving replica that knew the image before
// the job still maps its digest to the deleted copy (its LRU has no
// expiry, and nothing tells it): an index naming the image, pushed
// through it, is refused by the registry (distribution:
// MANIFEST_BLOB_UNKNOWN; ggcr: MANIFEST_UNKNOWN) until the replica
// restarts or evicts the entry.
func TestAttackIndexPushedAfterRewrapThroughAReplicaThatKnewTheOldCopy(t *testing.T) {
	for _, up := range shroudtest.Upstreams(t) {
		t.Run(up.Name, func(t *testing.T) {
			f := newRewrapFixture(t, up)
			job := shroudtest.StartWithIdentity(t, up, f.first.Keyring, f.first.DataDir, reviewRuleB(t, f))
			if _, err := job.Handler.Rewrap(context.Background(), rewrapRepo, proxy.RewrapOptions{}); err != nil {
				t.Fatal(err)
			}
			imgD := digest.Digest(must[v1.Hash](t)(f.img.Digest()).String())
			idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex,
				Manifests: []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageManifest, Digest: imgD, Size: must[int64](t)(f.img.Size()),
					Platform: &ocispec.Platform{OS: "linux", Architecture: "amd64"}}}}
			idx.SchemaVersion = 2
			body := must[[]byte](t)(json.Marshal(idx))
			a := call{t, f.first.URL}.do("PUT", "/v2/"+rewrapRepo+"/manifests/after", bytes.NewReader(body), "Content-Type", ocispec.MediaTypeImageIndex)
			if a.status != http.StatusCreated {
				t.Fatalf("push of an index naming the image, after the job, through the replica that pushed the image: %d %s", a.status, a.body)
			}
			var ui ocispec.Index
			json.Unmarshal(atkUpstreamRaw(t, up, rewrapRepo+":after"), &ui)
			for _, ch := range ui.Manifests {
				st := call{t, up.URL}.do("HEAD", "/v2/"+rewrapRepo+"/manifests/"+ch.Digest.String(), nil, "Accept", ocispec.MediaTypeImageManifest).status
				if st != http.StatusOK {
					t.Errorf("upstream, the index pushed after the job names child %s, which answers %d (deleted by the job)", ch.Digest, st)
				}
			}
		})
	}
}

// The same stale mapping makes a signature pushed after the job, through
// a replica that knew the image before it, the referrer of the deleted
// copy: the push succeeds, and the signature is never listed.
func TestAttackReferrerPushedAfterRewrapThroughAReplicaThatKnewTheOldCopy(t *testing.T) {
	up := shroudtest.GGCR(t)
	f := newRewrapFixture(t, up)
	job := shroudtest.StartWithIdentity(t, up, f.first.Keyring, f.first.DataDir, reviewRuleB(t, f))
	if _, err := job.Handler.Rewrap(context.Background(), rewrapRepo, proxy.RewrapOptions{}); err != nil {
		t.Fatal(err)
	}
	imgD := digest.Digest(must[v1.Hash](t)(f.img.Digest()).String())
	c := call{t, f.first.URL}
	emptyCfg := atkPushBlob(t, c, rewrapRepo, []byte("{}"))
	sig := []byte(`{"payload":"signed after the rotation"}`)
	sigBlob := atkPushBlob(t, c, rewrapRepo, sig)
	m := ocispec.Manifest{
		MediaType: ocispec.MediaTypeImageManifest, ArtifactType: "application/vnd.example.signature",
		Config:  ocispec.Descriptor{MediaType: ocispec.MediaTypeEmptyJSON, Digest: emptyCfg, Size: 2},
		Layers:  []ocispec.Descriptor{{MediaType: "application/json", Digest: sigBlob, Size: int64(len(sig))}},
		Subject: &ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: imgD, Size: must[int64](t)(f.img.Size())},
	}
	m.SchemaVersion = 2
	sigD := pushRaw(t, f.first, rewrapRepo, "", ocispec.MediaTypeImageManifest, must[[]byte](t)(json.Marshal(m)))
	for _, s := range []shroudtest.Shroud{f.first, shroudtest.StartWithIdentity(t, up, f.first.Keyring, t.TempDir(), reviewRuleB(t, f))} {
		st, ms := reviewReferrers(t, s, imgD)
		found := false
		for _, m := range ms {
			found = found || m.Digest == sigD
		}
		if st != http.StatusOK || !found {
			t.Errorf("the referrers of %s through %s: %d %v; the signature %s pushed after the job is not listed", imgD, s.URL, st, ms, sigD)
		}
	}
}

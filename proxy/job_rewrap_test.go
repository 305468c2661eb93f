package proxy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shroud-oci/shroud/audit"
	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/shroudtest"
	"github.com/shroud-oci/shroud/jobs"
	"github.com/shroud-oci/shroud/proxy"
)

// rewrapFixture is a repository pushed through shroud while its rule named
// recipients a and b: an image under two tags (one encrypted copy: the
// second push reuses the first's), a multi-platform index, and what the
// upstream held then.
type rewrapFixture struct {
	up         shroudtest.Upstream
	first      shroudtest.Shroud
	keyA, keyB crypto.DecryptionKey
	img        v1.Image
	idx        v1.ImageIndex
	before     map[string]digest.Digest // tag -> upstream digest before the job
	layers     []digest.Digest          // the image's ciphertext digests upstream
}

const rewrapRepo = "team/app"

func newRewrapFixture(t *testing.T, up shroudtest.Upstream, opts ...shroudtest.Option) *rewrapFixture {
	t.Helper()
	recA, keyA := keyPair(t, "ec")
	recB, keyB := keyPair(t, "rsa")
	f := &rewrapFixture{up: up, keyA: keyA, keyB: keyB}
	f.first = shroudtest.Start(t, up, append(opts, shroudtest.WithPolicy(shroudtest.Rule{Pattern: "team/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{recA, recB}}))...)
	f.img = must[v1.Image](t)(random.Image(40_000, 3))
	f.idx = must[v1.ImageIndex](t)(random.Index(20_000, 2, 2))
	for _, tag := range []string{"1", "2"} {
		if err := remote.Write(ref(t, f.first.Host(), rewrapRepo+":"+tag), f.img); err != nil {
			t.Fatal(err)
		}
	}
	if err := remote.WriteIndex(ref(t, f.first.Host(), rewrapRepo+":multi"), f.idx); err != nil {
		t.Fatal(err)
	}
	f.before = f.upstreamTags(t)
	f.layers = upstreamLayers(t, up, rewrapRepo+":1")
	for _, l := range upstreamManifest(t, up, rewrapRepo+":1").Layers {
		if !opens(t, keyA, l) || !opens(t, keyB, l) {
			t.Fatal("before the job, a layer does not open with both recipients' keys")
		}
	}
	return f
}

// upstreamTags maps the client's tags to the upstream digests they name.
func (f *rewrapFixture) upstreamTags(t *testing.T) map[string]digest.Digest {
	t.Helper()
	out := map[string]digest.Digest{}
	for _, tag := range []string{"1", "2", "multi"} {
		d := must[*v1.Descriptor](t)(remote.Head(ref(t, f.up.Host(), rewrapRepo+":"+tag)))
		out[tag] = digest.Digest(d.Digest.String())
	}
	return out
}

// encryptedLayers are every encrypted layer of every manifest the tag
// names upstream (an index's children's too).
func (f *rewrapFixture) encryptedLayers(t *testing.T, tag string) []ocispec.Descriptor {
	t.Helper()
	raw := atkUpstreamRaw(t, f.up, rewrapRepo+":"+tag)
	var m struct {
		Layers    []ocispec.Descriptor `json:"layers"`
		Manifests []ocispec.Descriptor `json:"manifests"`
	}
	json.Unmarshal(raw, &m)
	out := m.Layers
	for _, c := range m.Manifests {
		var cm ocispec.Manifest
		json.Unmarshal(atkUpstreamRaw(t, f.up, rewrapRepo+"@"+c.Digest.String()), &cm)
		out = append(out, cm.Layers...)
	}
	return out
}

// checkAfter asserts what a user checks after a job that took recipient a
// away: no layer upstream opens with a's key, every one with b's, the
// layer blobs are those of before, the old manifests are gone, and
// through shroud (a process that knew the old ones, and a new one) every
// tag pulls back the digests pushed.
func (f *rewrapFixture) checkAfter(t *testing.T, second shroudtest.Shroud) {
	t.Helper()
	f.check(t, second, false)
}

// check is checkAfter, for a job that re-encrypted the layers (new blobs,
// the old ones gone) when reencrypted.
func (f *rewrapFixture) check(t *testing.T, second shroudtest.Shroud, reencrypted bool) {
	t.Helper()
	after := f.upstreamTags(t)
	for _, tag := range []string{"1", "2", "multi"} {
		if after[tag] == f.before[tag] {
			t.Errorf("tag %s still names the manifest of before the job", tag)
		}
		ls := f.encryptedLayers(t, tag)
		if len(ls) == 0 {
			t.Fatalf("tag %s: no layers upstream", tag)
		}
		for _, l := range ls {
			if opens(t, f.keyA, l) {
				t.Errorf("tag %s: layer %s still opens with the key taken away", tag, l.Digest)
			}
			if !opens(t, f.keyB, l) {
				t.Errorf("tag %s: layer %s does not open with the remaining recipient's key", tag, l.Digest)
			}
		}
		a := call{t, f.up.URL}.do("GET", "/v2/"+rewrapRepo+"/manifests/"+f.before[tag].String(), nil, "Accept", ocispec.MediaTypeImageManifest+","+ocispec.MediaTypeImageIndex)
		if a.status == http.StatusOK {
			t.Errorf("the upstream still serves tag %s's old manifest %s", tag, f.before[tag])
		}
	}
	got := upstreamLayers(t, f.up, rewrapRepo+":1")
	switch {
	case !reencrypted && strings.Join(digestStrings(got), ",") != strings.Join(digestStrings(f.layers), ","):
		t.Errorf("layer blobs changed: %v, were %v", got, f.layers)
	case reencrypted:
		for _, old := range f.layers {
			if slices.Contains(got, old) {
				t.Errorf("layer %s was not re-encrypted", old)
			}
			if a := (call{t, f.up.URL}).do("GET", "/v2/"+rewrapRepo+"/blobs/"+old.String(), nil); a.status == http.StatusOK {
				t.Errorf("the upstream still serves the old ciphertext %s", old)
			}
		}
	}
	for name, s := range map[string]shroudtest.Shroud{"the shroud that pushed": f.first, "the shroud that ran the job": second} {
		for _, tag := range []string{"1", "2"} {
			img := must[v1.Image](t)(remote.Image(ref(t, s.Host(), rewrapRepo+":"+tag)))
			if must[v1.Hash](t)(img.Digest()) != must[v1.Hash](t)(f.img.Digest()) {
				t.Errorf("%s: tag %s pulls another digest", name, tag)
			}
			for i, l := range must[[]v1.Layer](t)(img.Layers()) {
				want := must[[]v1.Layer](t)(f.img.Layers())[i]
				if must[v1.Hash](t)(l.Digest()) != must[v1.Hash](t)(want.Digest()) {
					t.Errorf("%s: tag %s layer %d: another digest", name, tag, i)
				}
				rc := must[io.ReadCloser](t)(l.Compressed())
				h := digest.SHA256.Digester()
				if _, err := io.Copy(h.Hash(), rc); err != nil {
					t.Errorf("%s: tag %s layer %d: %v", name, tag, i, err)
				}
				rc.Close()
				if h.Digest().String() != must[v1.Hash](t)(want.Digest()).String() {
					t.Errorf("%s: tag %s layer %d: the bytes pulled are not the layer's", name, tag, i)
				}
			}
		}
		idx := must[v1.ImageIndex](t)(remote.Index(ref(t, s.Host(), rewrapRepo+":multi")))
		if must[v1.Hash](t)(idx.Digest()) != must[v1.Hash](t)(f.idx.Digest()) {
			t.Errorf("%s: the index pulls another digest", name)
		}
		im := must[*v1.IndexManifest](t)(f.idx.IndexManifest())
		for _, c := range im.Manifests {
			child := must[v1.Image](t)(remote.Image(ref(t, s.Host(), rewrapRepo+"@"+c.Digest.String())))
			if must[v1.Hash](t)(child.Digest()) != c.Digest {
				t.Errorf("%s: child %s pulls another digest", name, c.Digest)
			}
			for _, l := range must[[]v1.Layer](t)(child.Layers()) {
				if _, err := l.Compressed(); err != nil {
					t.Errorf("%s: child %s: %v", name, c.Digest, err)
				}
			}
		}
	}
}

func digestStrings(ds []digest.Digest) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.String()
	}
	return out
}

// A recipient taken off the rule (superseded, retired): the rewrap job
// takes its wrapped keys out of every manifest already stored, so its
// key opens none of them straight from the upstream, while the remaining
// recipient's still opens all; tags move, blobs stay, old manifests go,
// and clients pulling through shroud see the same digests throughout.
func TestRewrapTakesARecipientAway(t *testing.T) {
	for _, up := range shroudtest.Upstreams(t) {
		t.Run(up.Name, func(t *testing.T) {
			f := newRewrapFixture(t, up)
			recB := must[crypto.Recipient](t)(crypto.ParseRecipient("jwe:" + strings.TrimSuffix(f.keyB.Path, ".pem") + ".pub.pem"))
			second := shroudtest.StartWithIdentity(t, up, f.first.Keyring, f.first.DataDir,
				shroudtest.WithPolicy(shroudtest.Rule{Pattern: "team/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{recB}}))
			var steps []proxy.JobProgress
			rep, err := second.Handler.Rewrap(context.Background(), rewrapRepo, proxy.RewrapOptions{Progress: func(p proxy.JobProgress) { steps = append(steps, p) }})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("report: %+v", rep)
			// The image (one copy under two tags), the index and its
			// two children; the pointer tags of the blobs are left alone.
			if rep.Rewritten != 4 || len(rep.KeptOld) != 0 {
				t.Fatalf("report %+v: want 4 manifests rewritten, none kept", rep)
			}
			if len(steps) != rep.Manifests {
				t.Errorf("%d progress steps for %d manifests", len(steps), rep.Manifests)
			}
			f.checkAfter(t, second)
		})
	}
}

// A job killed halfway (here: its context cancelled as it moves the
// index's tag, its children written) and run again with the same checkpoint
// finishes: nothing is left that opens with the key taken away (the old
// manifests the killed run replaced are deleted by the next), every tag
// pulls back what was pushed, and what the first run wrote is not
// rewritten.
func TestRewrapKilledHalfwayResumes(t *testing.T) {
	up := shroudtest.Distribution(t)
	var puts atomic.Int32
	ctx, kill := context.WithCancel(context.Background())
	defer kill()
	f := newRewrapFixture(t, up)
	recB := must[crypto.Recipient](t)(crypto.ParseRecipient("jwe:" + strings.TrimSuffix(f.keyB.Path, ".pem") + ".pub.pem"))
	killer := shroudtest.Behind(t, up, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPut && strings.HasSuffix(r.URL.Path, "/manifests/multi") && puts.Add(1) == 1 {
				kill()
			}
			next.ServeHTTP(w, r)
		})
	})
	second := shroudtest.StartWithIdentity(t, killer, f.first.Keyring, f.first.DataDir,
		shroudtest.WithPolicy(shroudtest.Rule{Pattern: "team/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{recB}}))
	path := filepath.Join(t.TempDir(), "rewrap.checkpoint")
	cp := must[*jobs.Checkpoint](t)(jobs.OpenCheckpoint(path, "rewrap"))
	rep, err := second.Handler.Rewrap(ctx, rewrapRepo, proxy.RewrapOptions{Checkpoint: cp})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("the killed run: %+v, %v", rep, err)
	}
	cp.Close()
	t.Logf("killed run: %+v", rep)

	cp = must[*jobs.Checkpoint](t)(jobs.OpenCheckpoint(path, "rewrap"))
	defer cp.Close()
	rep2, err := second.Handler.Rewrap(context.Background(), rewrapRepo, proxy.RewrapOptions{Checkpoint: cp})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("resumed run: %+v", rep2)
	// The manifest whose write the kill cut is written again (its
	// half-moved tags name two copies, both rewritten); nothing else is.
	if n := rep.Rewritten + rep2.Rewritten; rep2.Resumed == 0 || n < 4 || n > 5 {
		t.Errorf("the resumed run rewrote %d (the killed one %d) and took %d from the checkpoint: want 4 in all (5 with the one cut), some resumed", rep2.Rewritten, rep.Rewritten, rep2.Resumed)
	}
	if p := cp.Pending(rewrapRepo); len(p) != 0 {
		t.Errorf("old manifests still pending after the resumed run: %v", p)
	}
	f.checkAfter(t, second)
}

// A key that could open layer keys is compromised: the re-encrypt job
// gives every layer of the repositories named a new key and new
// ciphertext (a layer shared by two repositories is re-encrypted once and
// mounted into the second), deletes the old ciphertext upstream, and
// leaves markers so that a request for an old encrypted digest through
// shroud answers 410 Gone naming the revocation; clients pulling through
// shroud get the digests and bytes they pushed, before and after.
func TestReencryptLeavesTheCompromisedKeyNothing(t *testing.T) {
	up := shroudtest.Distribution(t)
	f := newRewrapFixture(t, up)
	if err := remote.Write(ref(t, f.first.Host(), "team/other:1"), f.img); err != nil {
		t.Fatal(err)
	}
	if got := upstreamLayers(t, up, "team/other:1"); strings.Join(digestStrings(got), ",") != strings.Join(digestStrings(f.layers), ",") {
		t.Fatal("the test means the second repository to hold the first's ciphertext (a mount)")
	}
	recB := must[crypto.Recipient](t)(crypto.ParseRecipient("jwe:" + strings.TrimSuffix(f.keyB.Path, ".pem") + ".pub.pem"))
	second := shroudtest.StartWithIdentity(t, up, f.first.Keyring, f.first.DataDir,
		shroudtest.WithPolicy(shroudtest.Rule{Pattern: "team/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{recB}}))
	re := proxy.NewReencryption(proxy.Revocation{KeyID: "sha256:28bd9de4d356be55efc3e39b4b27e7b7e5d4208492506d97072f7ebd2bbdf905", Reason: "keyCompromise", At: time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC)})
	for _, repo := range []string{rewrapRepo, "team/other"} {
		rep, err := second.Handler.Rewrap(context.Background(), repo, proxy.RewrapOptions{Reencrypt: re})
		if err != nil {
			t.Fatalf("re-encrypt %s: %v", repo, err)
		}
		t.Logf("%s: %+v", repo, rep)
		if len(rep.KeptOld) != 0 {
			t.Fatalf("%s: the upstream kept %v", repo, rep.KeptOld)
		}
	}
	f.check(t, second, true)
	if a, b := upstreamLayers(t, up, rewrapRepo+":1"), upstreamLayers(t, up, "team/other:1"); strings.Join(digestStrings(a), ",") != strings.Join(digestStrings(b), ",") {
		t.Errorf("the shared layers were re-encrypted twice: %v and %v", a, b)
	}
	for _, s := range []shroudtest.Shroud{f.first, second} {
		a := call{t, s.URL}.do("GET", "/v2/"+rewrapRepo+"/blobs/"+f.layers[0].String(), nil)
		if a.status != http.StatusGone || !strings.Contains(string(a.body), "keyCompromise") || !strings.Contains(string(a.body), "sha256:28bd9de4d356be55efc3e39b4b27e7b7e5d4208492506d97072f7ebd2bbdf905") {
			t.Errorf("the old ciphertext through shroud: %d %s, want 410 naming the revocation", a.status, a.body)
		}
		a = call{t, s.URL}.do("GET", "/v2/"+rewrapRepo+"/manifests/"+f.before["1"].String(), nil, "Accept", ocispec.MediaTypeImageManifest)
		if a.status != http.StatusGone {
			t.Errorf("the old encrypted manifest through shroud: %d %s, want 410", a.status, a.body)
		}
	}
	// Never pushed: still a plain 404.
	call{t, second.URL}.do("GET", "/v2/"+rewrapRepo+"/blobs/"+digest.FromString("never").String(), nil).want(t, 404, "BLOB_UNKNOWN")
}

// Prove it: clients pulling through shroud while the job runs (paced, so
// that their pulls fall between its steps) get, every time, the digests
// they pushed and layers that verify, from the replica that runs the job
// and from one that only knew the manifests of before.
func TestRewrapIsInvisibleToPullsDuringTheJob(t *testing.T) {
	for _, job := range []string{"rewrap", "reencrypt", "identity"} {
		t.Run(job, func(t *testing.T) {
			up := shroudtest.Distribution(t)
			f := newRewrapFixture(t, up)
			recB := must[crypto.Recipient](t)(crypto.ParseRecipient("jwe:" + strings.TrimSuffix(f.keyB.Path, ".pem") + ".pub.pem"))
			pol := shroudtest.WithPolicy(shroudtest.Rule{Pattern: "team/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{recB}})
			second := shroudtest.StartWithIdentity(t, up, f.first.Keyring, f.first.DataDir, pol)
			servers := []shroudtest.Shroud{f.first, second}
			if job == "identity" {
				// Every server holds the new identity and the old one
				// (step 1 of a rotation) while the job runs.
				both := must[*crypto.Keyring](t)(crypto.NewKeyring(newIdentity(t), nil, crypto.WithPreviousIdentities(f.first.Keyring.Identity())))
				servers = []shroudtest.Shroud{shroudtest.StartWithIdentity(t, up, both, t.TempDir(), pol), shroudtest.StartWithIdentity(t, up, both, t.TempDir(), pol)}
				second = servers[1]
			}
			wantImg := must[v1.Hash](t)(f.img.Digest())
			wantIdx := must[v1.Hash](t)(f.idx.Digest())
			done := make(chan struct{})
			var pulls, failures atomic.Int32
			var firstErr atomic.Value
			for _, s := range servers {
				go func() {
					for {
						select {
						case <-done:
							return
						default:
						}
						err := func() error {
							img, err := remote.Image(ref(t, s.Host(), rewrapRepo+":1"))
							if err != nil {
								return err
							}
							if d, _ := img.Digest(); d != wantImg {
								return errors.New("tag 1 pulled another digest")
							}
							ls, err := img.Layers()
							if err != nil {
								return err
							}
							for _, l := range ls {
								rc, err := l.Compressed()
								if err != nil {
									return err
								}
								_, err = io.Copy(io.Discard, rc)
								rc.Close()
								if err != nil {
									return err
								}
							}
							idx, err := remote.Index(ref(t, s.Host(), rewrapRepo+"@"+wantIdx.String()))
							if err != nil {
								return err
							}
							if d, _ := idx.Digest(); d != wantIdx {
								return errors.New("the index pulled another digest")
							}
							for _, c := range must[*v1.IndexManifest](t)(idx.IndexManifest()).Manifests {
								if _, err := remote.Image(ref(t, s.Host(), rewrapRepo+"@"+c.Digest.String())); err != nil {
									return err
								}
							}
							return nil
						}()
						pulls.Add(1)
						if err != nil {
							failures.Add(1)
							firstErr.CompareAndSwap(nil, err.Error())
						}
					}
				}()
			}
			o := proxy.RewrapOptions{Pace: 150 * time.Millisecond}
			if job == "reencrypt" {
				o.Reencrypt = proxy.NewReencryption(proxy.Revocation{KeyID: "sha256:8254c329a92850f6d539dd376f4816ee2764517da5e0235514af433164480d7a", Reason: "keyCompromise", At: time.Now()})
			}
			rep, err := second.Handler.Rewrap(context.Background(), rewrapRepo, o)
			time.Sleep(300 * time.Millisecond) // pulls after the job, too
			close(done)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("report %+v; %d pulls during the job, %d failed", rep, pulls.Load(), failures.Load())
			if pulls.Load() < 4 {
				t.Fatalf("only %d pulls ran during the job", pulls.Load())
			}
			if failures.Load() > 0 {
				t.Fatalf("%d of %d pulls during the job failed; the first: %v", failures.Load(), pulls.Load(), firstErr.Load())
			}
		})
	}
}

// A recipient the key checks now refuse (revoked as superseded, say,
// while the rule still names it): the rewrap job wraps for the rule's
// recipients that pass, as a push would, and every step goes to the
// audit log.
func TestRewrapDropsARecipientTheKeyChecksRefuse(t *testing.T) {
	up := shroudtest.Distribution(t)
	f := newRewrapFixture(t, up)
	recA := must[crypto.Recipient](t)(crypto.ParseRecipient("jwe:" + strings.TrimSuffix(f.keyA.Path, ".pem") + ".pub.pem"))
	recB := must[crypto.Recipient](t)(crypto.ParseRecipient("jwe:" + strings.TrimSuffix(f.keyB.Path, ".pem") + ".pub.pem"))
	c := newChecker()
	c.set(proxy.OpWrap, recA.KeyID(), "revoked")
	var log bytes.Buffer
	second := shroudtest.StartWithIdentity(t, up, f.first.Keyring, f.first.DataDir, shroudtest.WithKeyCheck(c), shroudtest.WithAudit(audit.New(&log)),
		shroudtest.WithPolicy(shroudtest.Rule{Pattern: "team/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{recA, recB}}))
	rep, err := second.Handler.Rewrap(context.Background(), rewrapRepo, proxy.RewrapOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f.checkAfter(t, second)
	steps := strings.Count(log.String(), `"kind":"job-step"`)
	if steps != rep.Manifests || !strings.Contains(log.String(), `"outcome":"rewritten"`) {
		t.Fatalf("%d job-step audit lines for %d manifests:\n%s", steps, rep.Manifests, log.String())
	}
	if !strings.Contains(log.String(), `"kind":"wrap-refused"`) || !strings.Contains(log.String(), recA.KeyID()) {
		t.Fatalf("the refused recipient is not in the audit log:\n%s", log.String())
	}

	// Every recipient refused: the job refuses, as a push would, and
	// writes nothing.
	c.set(proxy.OpWrap, recB.KeyID(), "revoked")
	before := f.upstreamTags(t)
	if _, err := second.Handler.Rewrap(context.Background(), rewrapRepo, proxy.RewrapOptions{}); err == nil || !strings.Contains(err.Error(), "no recipient") {
		t.Fatalf("a job whose rule has no recipient left: %v", err)
	}
	if after := f.upstreamTags(t); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatal("a refused job moved tags")
	}
}

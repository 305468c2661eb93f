package trust

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// memRegistry is a registry in memory: the distribution API paths a
// RegistryFetch is asked for, and what they answer.
type memRegistry map[string][]byte

// put stores a as repo:tag.
func (m memRegistry) put(repo, tag string, a *Artifact) {
	for _, b := range a.Blobs() {
		m[repo+"/blobs/"+b.Digest.String()] = b.Data
	}
	m[repo+"/manifests/"+tag] = a.Manifest
}

func (m memRegistry) fetch(_ context.Context, name string) ([]byte, error) {
	if b, ok := m[name]; ok {
		return b, nil
	}
	return nil, notFound(name)
}

func buildArtifact(t *testing.T, dir string) *Artifact {
	t.Helper()
	a, err := BuildArtifact(dir)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func titles(t *testing.T, a *Artifact) []string {
	t.Helper()
	var m ocispec.Manifest
	if err := json.Unmarshal(a.Manifest, &m); err != nil {
		t.Fatal(err)
	}
	if m.MediaType != ocispec.MediaTypeImageManifest || m.ArtifactType != ArtifactType || m.Config.Digest != ocispec.DescriptorEmptyJSON.Digest {
		t.Fatalf("manifest %s", a.Manifest)
	}
	var out []string
	for _, l := range m.Layers {
		out = append(out, l.Annotations[ocispec.AnnotationTitle])
	}
	return out
}

func TestArtifactIsDeterministic(t *testing.T) {
	tr := newTestRepo(t)
	k := newRecipientKey(t)
	tr.allow(metadata.TARGETS, "", k.entry("**"))
	tr.publish(metadata.TARGETS)

	a, b := buildArtifact(t, tr.repo.Dir()), buildArtifact(t, tr.repo.Dir())
	if !bytes.Equal(a.Manifest, b.Manifest) || a.Digest() != b.Digest() || a.Digest() != digest.FromBytes(b.Manifest) {
		t.Fatalf("two builds of one directory differ:\n%s\n%s", a.Manifest, b.Manifest)
	}
	got := titles(t, a)
	if !slices.IsSorted(got) {
		t.Errorf("layers not sorted by path: %q", got)
	}
	files, err := tr.repo.Files()
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for n := range files {
		want = append(want, n)
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("published %q; want every file of the repository %q", got, want)
	}
	// A file and its copy (root.json and 1.root.json, a list and its
	// hash-prefixed copy) are one blob; the config is one more.
	distinct := map[digest.Digest]bool{}
	for _, data := range files {
		distinct[digest.FromBytes(data)] = true
	}
	if n := len(a.Blobs()); n != len(distinct)+1 || n >= len(want) {
		t.Errorf("%d blobs for %d files of %d distinct contents", n, len(want), len(distinct))
	}

	tr.publish()
	if c := buildArtifact(t, tr.repo.Dir()); c.Digest() == a.Digest() {
		t.Error("a new timestamp leaves the manifest as it was")
	}
}

// TestArtifactLeavesOutKeys models an operator who keeps the signing
// keys next to (or, by mistake, inside) the repository directory, and an
// attacker who plants a link: no private key gets into the artifact.
func TestArtifactLeavesOutKeys(t *testing.T) {
	tr := newTestRepo(t)
	dir := tr.repo.Dir()
	key := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte("not really a key")})
	for _, p := range []string{"root.pem", "keys/targets.pem", "metadata/timestamp.pem", "metadata/keys/snapshot.json", "targets/team-a/team-a.pem", "targets/team-a/recipients.json.pem"} {
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		tr.writeFile(p, key)
	}
	outside := filepath.Join(t.TempDir(), "outside.pem")
	if err := os.WriteFile(outside, key, 0o600); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{
		"metadata/2.root.json":            filepath.Join("..", "keys", "targets.pem"),
		"targets/revocations.json":        outside,
		"targets/team-b":                  filepath.Join("..", "keys"),
		"metadata/3.targets.json":         filepath.Join("..", "root.pem"),
		"targets/team-a/revocations.json": filepath.Join("..", "..", "root.pem"),
	} {
		if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
			t.Fatal(err)
		}
	}

	a := buildArtifact(t, dir)
	for name, data := range a.Files {
		if bytes.Contains(data, []byte("PRIVATE KEY")) {
			t.Errorf("%s published with a private key in it", name)
		}
		if !strings.HasPrefix(name, "metadata/") && !strings.HasPrefix(name, "targets/") {
			t.Errorf("%s published: outside metadata/ and targets/", name)
		}
	}
	for _, title := range titles(t, a) {
		if strings.HasSuffix(title, ".pem") || strings.Contains(title, "keys") || title == "metadata/2.root.json" {
			t.Errorf("%s published", title)
		}
	}
	skipped := strings.Join(a.Skipped, "\n")
	for _, want := range []string{"metadata/timestamp.pem", "metadata/keys/", "targets/team-a/team-a.pem", "metadata/2.root.json: not a regular file", "targets/team-b: not a regular file"} {
		if !strings.Contains(skipped, want) {
			t.Errorf("skipped %q; want %s among them", a.Skipped, want)
		}
	}
	if _, err := a.Verify(context.Background(), t0, nil); err != nil {
		t.Errorf("what is left is the repository, and it verifies: %v", err)
	}

	// A key under a name of the layout is refused, not published.
	tr.writeFile("metadata/9.root.json", key)
	if _, err := BuildArtifact(dir); err == nil || !strings.Contains(err.Error(), "metadata/9.root.json holds a private key") {
		t.Fatalf("a key named 9.root.json: %v; want it refused", err)
	}
	removeFile(tr, "metadata/9.root.json")

	// metadata/ itself a link is not followed.
	moved := filepath.Join(t.TempDir(), "metadata")
	if err := os.Rename(filepath.Join(dir, metadataDir), moved); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(moved, filepath.Join(dir, metadataDir)); err != nil {
		t.Fatal(err)
	}
	if _, err := BuildArtifact(dir); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("metadata/ a link: %v; want it refused", err)
	}
}

func TestArtifactRoundTripThroughOCISource(t *testing.T) {
	tr := newTestRepo(t)
	k, bad := newRecipientKey(t), newRecipientKey(t)
	tr.allow(metadata.TARGETS, "", k.entry("**"), bad.entry("**"))
	tr.delegate("team-a", newSigner(t), "team-a/*")
	tr.publish(metadata.TARGETS)
	team := newRecipientKey(t)
	tr.allow("team-a", "team-a", team.entry("team-a/**"))
	tr.publish("team-a")

	reg := memRegistry{}
	reg.put("ops/trust", "trust", buildArtifact(t, tr.repo.Dir()))
	env := newChecker(t, tr, "", func(o *Options) { o.Source = OCISource("ops/trust", "trust", reg.fetch) })
	env.refresh(t)
	env.allowed(t, OpWrap, "a/b", k.id, t0)
	env.allowed(t, OpWrap, "a/b", bad.id, t0)
	env.allowed(t, OpWrap, "team-a/app", team.id, t0)

	tr.revoke(metadata.TARGETS, "", bad.revocation(ReasonKeyCompromise))
	tr.publish(metadata.TARGETS)
	reg.put("ops/trust", "trust", buildArtifact(t, tr.repo.Dir()))
	env.refresh(t)
	env.allowed(t, OpWrap, "a/b", k.id, t0)
	env.refused(t, OpWrap, "a/b", bad.id, t0, RefusedRevoked)
	env.allowed(t, OpWrap, "team-a/app", team.id, t0)
}

// TestArtifactVerifyRefusesWhatReplicasWouldRefuse: each case is an
// artifact a replica would refuse (and so freeze on what it trusted
// before), caught before it is pushed.
func TestArtifactVerifyRefusesWhatReplicasWouldRefuse(t *testing.T) {
	ctx := context.Background()
	tr := newTestRepo(t)
	k := newRecipientKey(t)
	tr.allow(metadata.TARGETS, "", k.entry("**"))
	tr.revoke(metadata.TARGETS, "", newRecipientKey(t).revocation(ReasonKeyCompromise))
	tr.publish(metadata.TARGETS)
	first := buildArtifact(t, tr.repo.Dir())
	v, err := first.Verify(ctx, t0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if v.Status.Allow != 1 || v.Status.Deny != 1 || v.Status.Roles[1].Name != "timestamp.json" || v.Status.Roles[1].Version != 2 {
		t.Errorf("status %+v", v.Status)
	}
	tr.publish()
	second := buildArtifact(t, tr.repo.Dir())
	published := first.source()
	if v, err := second.Verify(ctx, t0, &published); err != nil || v.Published.LastOutcome != OutcomeOK {
		t.Fatalf("a newer artifact over the published one: %v (published: %+v)", err, v.Published)
	}
	again := second.source()
	if _, err := second.Verify(ctx, t0, &again); err != nil {
		t.Fatalf("the same artifact again: %v", err)
	}

	t.Run("expired timestamp", func(t *testing.T) {
		_, err := second.Verify(ctx, t0.Add(Expiry(metadata.TIMESTAMP)+time.Minute), nil)
		if !errors.Is(err, &metadata.ErrExpiredMetadata{}) {
			t.Fatalf("Verify a day later: %v; want expired", err)
		}
	})
	t.Run("unsigned timestamp", func(t *testing.T) {
		tr.repo.Timestamp.Signed.Version++
		tr.repo.Timestamp.ClearSignatures()
		tr.writeUnchecked(metadata.TIMESTAMP, "timestamp.json")
		defer tr.publish()
		_, err := buildArtifact(t, tr.repo.Dir()).Verify(ctx, t0, nil)
		if !errors.Is(err, &metadata.ErrUnsignedMetadata{}) {
			t.Fatalf("Verify: %v; want unsigned", err)
		}
	})
	t.Run("rollback", func(t *testing.T) {
		newer := second.source()
		_, err := first.Verify(ctx, t0, &newer)
		if !errors.Is(err, &metadata.ErrBadVersionNumber{}) {
			t.Fatalf("the older artifact over the newer one: %v; want a rollback", err)
		}
	})
	t.Run("deny entry dropped", func(t *testing.T) {
		if err := tr.repo.SetRevocations(metadata.TARGETS, "", RevocationList{}); err != nil {
			t.Fatal(err)
		}
		tr.publish(metadata.TARGETS)
		_, err := buildArtifact(t, tr.repo.Dir()).Verify(ctx, t0, &published)
		if err == nil || !strings.Contains(err.Error(), ErrDenyEntryDropped.Error()) {
			t.Fatalf("Verify: %v; want the dropped deny entry refused", err)
		}
	})
	t.Run("root missing", func(t *testing.T) {
		if _, err := BuildArtifact(t.TempDir()); err == nil || !strings.Contains(err.Error(), "1.root.json") {
			t.Fatalf("an empty directory: %v", err)
		}
	})
}

func TestArtifactManifestBounded(t *testing.T) {
	tr := newTestRepo(t)
	a := buildArtifact(t, tr.repo.Dir())
	// Descriptors of about 300 bytes: 15,000 lists make a manifest over
	// maxArtifactManifest.
	for i := range 15000 {
		a.Files[fmt.Sprintf("%s/ns%d/%064x.%s", targetsDir, i/100, i, RecipientsFile)] = []byte("{}")
	}
	err := a.pack()
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("more than the %d the OCI source reads", maxArtifactManifest)) {
		t.Fatalf("pack: %v; want the manifest size refused", err)
	}
}

// The attacks below are from the security review of 26971a6: `shroud
// trust publish` pushed what replicas refuse, or what drops a
// revocation, or a private key.

// The timestamp cron missed a day: what the tag holds has an expired
// timestamp (the replicas are frozen, and still hold its deny list). The
// operator publishes from a stale copy of the directory, re-signed: the
// deny list in it lacks the revocation published since. A replica that
// trusted the published artifact refuses the new one (a deny entry
// dropped); Verify, the published artifact failing for its expiry, does
// not load its lists and passes it.
func TestAttackPublishOverAnExpiredArtifactDropsADenyEntry(t *testing.T) {
	ctx := context.Background()
	tr := newTestRepo(t)
	k := newRecipientKey(t)
	tr.allow(metadata.TARGETS, "", k.entry("**"))
	tr.revoke(metadata.TARGETS, "", k.revocation(ReasonKeyCompromise))
	tr.publish(metadata.TARGETS)
	published := buildArtifact(t, tr.repo.Dir())
	reg := memRegistry{}
	reg.put("infra/trust", "trust", published)

	// A replica trusted it.
	replica := newChecker(t, tr, "", func(o *Options) { o.Source = OCISource("infra/trust", "trust", reg.fetch) })
	replica.refreshed(t)
	replica.refused(t, OpWrap, "a/b", k.id, t0, RefusedRevoked)

	// Two days on; the timestamp (a day) expired, targets and snapshot
	// not. The stale copy: the revocation taken out, re-signed.
	later := t0.Add(2 * Expiry(metadata.TIMESTAMP))
	if later.After(t0.Add(Expiry(metadata.SNAPSHOT))) {
		t.Skipf("snapshot expiry %v is shorter than two timestamps", Expiry(metadata.SNAPSHOT))
	}
	if err := tr.repo.SetRevocations(metadata.TARGETS, "", RevocationList{}); err != nil {
		t.Fatal(err)
	}
	for _, role := range []string{metadata.TARGETS, metadata.SNAPSHOT, metadata.TIMESTAMP} {
		if err := tr.repo.Bump(role, later.Add(Expiry(role))); err != nil {
			t.Fatal(err)
		}
		tr.sign(role)
	}
	tr.write()
	stale := buildArtifact(t, tr.repo.Dir())
	pub := OCISource("infra/trust", "trust", reg.fetch)
	v, err := stale.Verify(ctx, later, &pub)
	t.Logf("Verify: published %s (%s); %v", v.Published.LastOutcome, v.Published.LastError, err)

	// What the replica makes of it once pushed.
	reg.put("infra/trust", "trust", stale)
	replica.clock.Set(later)
	rerr := replica.Refresh(ctx)
	st := replica.Status()
	t.Logf("the replica's refresh: %v, refusals %v", rerr, st.Refusals)
	replicaRefuses := rerr != nil || len(st.Refusals) > 0
	if err == nil && replicaRefuses {
		t.Errorf("Verify passed an artifact a replica that trusted the published one refuses (%v %v): publish would push it", rerr, st.Refusals)
	}
	// A new replica (no floor of its own) takes the dropped entry's key.
	fresh := newChecker(t, tr, "", func(o *Options) { o.Source = OCISource("infra/trust", "trust", reg.fetch) })
	fresh.clock.Set(later)
	if fresh.Refresh(ctx) == nil && fresh.Check(ctx, OpWrap, "a/b", k.id, later) == nil && err == nil {
		t.Errorf("and a new replica wraps for %s, revoked (keyCompromise) in the artifact publish replaced", k.id)
	}
}

// The directory was initialized again (`trust init --generate` run a
// second time, or another directory given to --dir): a new root. The
// published artifact does not verify under the new directory's
// 1.root.json, so Verify checks the new one as a first publication and
// passes it; every replica, given the old root as --trust-root, refuses
// it and freezes when what it trusts expires.
func TestAttackPublishReplacesTheRootReplicasWereGiven(t *testing.T) {
	ctx := context.Background()
	tr := newTestRepo(t)
	tr.publish(metadata.TARGETS)
	reg := memRegistry{}
	reg.put("infra/trust", "trust", buildArtifact(t, tr.repo.Dir()))
	replica := newChecker(t, tr, "", func(o *Options) { o.Source = OCISource("infra/trust", "trust", reg.fetch) })
	replica.refreshed(t)

	other := newTestRepo(t)
	other.publish(metadata.TARGETS)
	a := buildArtifact(t, other.repo.Dir())
	pub := OCISource("infra/trust", "trust", reg.fetch)
	v, err := a.Verify(ctx, t0, &pub)
	t.Logf("Verify: published %s (%s); %v", v.Published.LastOutcome, v.Published.LastError, err)

	reg.put("infra/trust", "trust", a)
	rerr := replica.Refresh(ctx)
	if err == nil && rerr != nil {
		t.Errorf("Verify passed an artifact of another root; every replica refuses it: %v", rerr)
	}
}

// BuildArtifact takes every metadata/<name>.json whose name has the form
// of a role's, whether or not any role has that name, and recognises a
// private key by a PEM header alone: a JSON key file kept next to the
// metadata (a JWK, or the securesystemslib/go-tuf JSON key format TUF
// tooling writes) is published.
func TestAttackPublishPushesAJSONPrivateKeyKeptInMetadata(t *testing.T) {
	tr := newTestRepo(t)
	jwk := []byte(`{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"}`)
	tr.writeFile("metadata/timestamp-key.json", jwk)
	a := buildArtifact(t, tr.repo.Dir())
	if _, ok := a.Files["metadata/timestamp-key.json"]; ok {
		t.Errorf("the artifact publishes metadata/timestamp-key.json, a private JWK (its \"d\")")
	}
}

// TestArtifactVerifyOverAnExpiredPublication: the timestamp cron missed
// a day. Publishing the directory again with a fresh timestamp passes,
// checked against what the tag holds as of when it was last valid, its
// deny entries loaded.
func TestArtifactVerifyOverAnExpiredPublication(t *testing.T) {
	ctx := context.Background()
	tr := newTestRepo(t)
	k := newRecipientKey(t)
	tr.allow(metadata.TARGETS, "", k.entry("**"))
	tr.revoke(metadata.TARGETS, "", k.revocation(ReasonKeyCompromise))
	tr.publish(metadata.TARGETS)
	reg := memRegistry{}
	reg.put("infra/trust", "trust", buildArtifact(t, tr.repo.Dir()))
	expired := tr.repo.Timestamp.Signed.Expires

	later := t0.Add(2 * Expiry(metadata.TIMESTAMP))
	if err := tr.repo.Bump(metadata.TIMESTAMP, later.Add(Expiry(metadata.TIMESTAMP))); err != nil {
		t.Fatal(err)
	}
	tr.sign(metadata.TIMESTAMP)
	tr.write()
	pub := OCISource("infra/trust", "trust", reg.fetch)
	v, err := buildArtifact(t, tr.repo.Dir()).Verify(ctx, later, &pub)
	if err != nil {
		t.Fatalf("a fresh timestamp over an expired one: %v", err)
	}
	if !v.PublishedAt.Equal(expired) || v.Published.LastOutcome != OutcomeOK || v.Published.Deny != 1 || v.Status.Deny != 1 {
		t.Errorf("published checked at %v (want %v): %s, %d deny entries; now %d", v.PublishedAt, expired, v.Published.LastOutcome, v.Published.Deny, v.Status.Deny)
	}
}

// TestArtifactVerifyRefusesOverWhatDoesNotVerify: what the tag holds is
// not something replicas trust (not a trust artifact, a tampered one):
// Verify says so with ErrPublishedUnverified, not "checked without it";
// without it (--force), the new artifact verifies as a first
// publication.
func TestArtifactVerifyRefusesOverWhatDoesNotVerify(t *testing.T) {
	ctx := context.Background()
	tr := newTestRepo(t)
	tr.publish(metadata.TARGETS)
	a := buildArtifact(t, tr.repo.Dir())

	image := memRegistry{"infra/trust/manifests/trust": []byte(`{"schemaVersion":2,"mediaType":"` + ocispec.MediaTypeImageManifest + `","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}`)}
	noRoot := memRegistry{}
	noRootArtifact := buildArtifact(t, tr.repo.Dir())
	delete(noRootArtifact.Files, metadataDir+"/1.root.json")
	noRootArtifact.manifest.Layers = slices.DeleteFunc(noRootArtifact.manifest.Layers, func(d ocispec.Descriptor) bool {
		return d.Annotations[ocispec.AnnotationTitle] == metadataDir+"/1.root.json"
	})
	noRootArtifact.Manifest, _ = json.Marshal(noRootArtifact.manifest)
	noRoot.put("infra/trust", "trust", noRootArtifact)
	tampered := memRegistry{}
	tr.repo.Timestamp.Signed.Version++
	tr.repo.Timestamp.ClearSignatures()
	tr.writeUnchecked(metadata.TIMESTAMP, "timestamp.json")
	tampered.put("infra/trust", "trust", buildArtifact(t, tr.repo.Dir()))

	for name, reg := range map[string]memRegistry{"an image": image, "no 1.root.json": noRoot, "an unsigned timestamp": tampered} {
		pub := OCISource("infra/trust", "trust", reg.fetch)
		if _, err := a.Verify(ctx, t0, &pub); !errors.Is(err, ErrPublishedUnverified) {
			t.Errorf("over %s: %v; want ErrPublishedUnverified", name, err)
		}
	}
	if _, err := a.Verify(ctx, t0, nil); err != nil {
		t.Errorf("as a first publication: %v", err)
	}
}

// TestArtifactPublishesTheRolesFilesOnly: under metadata/, only the
// files of the roles the metadata names go in, each of its role's type.
func TestArtifactPublishesTheRolesFilesOnly(t *testing.T) {
	tr := newTestRepo(t)
	tr.delegate("team-a", newSigner(t), "team-a/*")
	tr.publish(metadata.TARGETS)
	tr.publish("team-a")
	ts := tr.readFile("metadata/timestamp.json")
	for name, data := range map[string][]byte{
		"metadata/notes.json":         []byte(`{"todo":"rotate"}`),
		"metadata/team-b.json":        ts,
		"metadata/2.timestamp.json":   ts,
		"metadata/timestamp-key.json": []byte(`{"keytype":"ed25519","scheme":"ed25519","keyval":{"public":"ab","private":"cd"}}`),
	} {
		tr.writeFile(name, data)
	}
	a := buildArtifact(t, tr.repo.Dir())
	for _, want := range []string{"metadata/team-a.json", "metadata/2.team-a.json", "metadata/1.root.json", "metadata/timestamp.json", "metadata/snapshot.json", "metadata/targets.json"} {
		if a.Files[want] == nil {
			t.Errorf("%s left out", want)
		}
	}
	skipped := strings.Join(a.Skipped, "\n")
	for _, left := range []string{"metadata/notes.json", "metadata/team-b.json", "metadata/2.timestamp.json", "metadata/timestamp-key.json"} {
		if a.Files[left] != nil || !strings.Contains(skipped, left+": names no role") {
			t.Errorf("%s published (skipped: %q)", left, a.Skipped)
		}
	}
	if _, err := a.Verify(context.Background(), t0, nil); err != nil {
		t.Fatal(err)
	}
	// A role's name on another document is refused.
	tr.writeFile("metadata/9.snapshot.json", ts)
	if _, err := BuildArtifact(tr.repo.Dir()); err == nil || !strings.Contains(err.Error(), "metadata/9.snapshot.json is named as role snapshot's but is not snapshot metadata") {
		t.Errorf("a timestamp as 9.snapshot.json: %v", err)
	}
	removeFile(tr, "metadata/9.snapshot.json")

	// A JWK private key as an allow entry's public_key is refused.
	l, err := tr.repo.Recipients("")
	if err != nil {
		t.Fatal(err)
	}
	l.Recipients = append(l.Recipients, Recipient{KeyID: newRecipientKey(t).id, Scheme: "jwe", Scopes: []string{"**"},
		PublicKey: `{"kty":"OKP","crv":"X25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"}`})
	if err := tr.repo.SetRecipients(metadata.TARGETS, "", l); err != nil {
		t.Fatal(err)
	}
	if _, err := BuildArtifact(tr.repo.Dir()); !errors.Is(err, ErrPrivateKey) || !strings.Contains(err.Error(), "recipients.json: entry 1") {
		t.Errorf("a JWK private key in the allow list: %v", err)
	}
}

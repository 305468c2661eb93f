package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shroud-oci/shroud/internal/shroudtest"
	"github.com/shroud-oci/shroud/proxy/upstream"
	"github.com/shroud-oci/shroud/trust"
)

var pushedDigest = regexp.MustCompile(`@(sha256:[0-9a-f]{64})`)

// refreshed refreshes c and fails the test unless all the source offers
// is accepted.
func refreshed(t *testing.T, c *trust.Checker) {
	t.Helper()
	if err := c.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s := c.Status(); s.LastOutcome != trust.OutcomeOK {
		t.Fatalf("refresh: %+v", s)
	}
}

// TestTrustPublishReachesReplicasThroughTheRegistry: the operator's
// commands write the repository (its keys kept in it, under keys/),
// `shroud trust publish` pushes it to a real registry that wants
// credentials for writes, and a Checker reading it with --trust-source
// oci: (as serve builds it) sees the allow entry, then a revocation
// published later. What replicas would refuse is not pushed.
func TestTrustPublishReachesReplicasThroughTheRegistry(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir()) // the default keychain holds nothing
	ctx := context.Background()
	reg := shroudtest.Distribution(t)
	guarded := shroudtest.Behind(t, reg, shroudtest.RequireAuth(false))
	tmp := t.TempDir()
	repo := filepath.Join(tmp, "trust")
	k := func(n string) string { return filepath.Join(repo, "keys", n+".pem") }
	runTrust(t, 0, "init", "--dir", repo, "--root-key", k("root"), "--targets-key", k("targets"),
		"--snapshot-key", k("snapshot"), "--timestamp-key", k("timestamp"), "--generate")
	chain := []string{"--targets-key", k("targets"), "--snapshot-key", k("snapshot"), "--timestamp-key", k("timestamp")}
	opsFile, opsID := recipientFile(t, tmp, "ops")
	runTrust(t, 0, append([]string{"add-key", "--dir", repo, "--public-key", opsFile, "--scheme", "jwe", "--scope", "**"}, chain...)...)

	authFile := filepath.Join(tmp, "config.json")
	if err := os.WriteFile(authFile, []byte(`{"auths":{"`+guarded.Host()+`":{"username":"ci","password":"secret"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	to := guarded.Host() + "/infra/trust"
	publish := func(want int, dir string) string {
		t.Helper()
		return runTrust(t, want, "publish", "--dir", dir, "--to", to, "--plain-http", "--auth-file", authFile)
	}
	pushed := func(out string) string {
		t.Helper()
		m := pushedDigest.FindStringSubmatch(out)
		if m == nil || !strings.Contains(out, " as "+to+":trust") || !strings.Contains(out, "--trust-source oci:infra/trust:trust") {
			t.Fatalf("publish output %q: want the digest and the tag", out)
		}
		return m[1]
	}

	if out := runTrust(t, 1, "publish", "--dir", repo, "--to", to, "--plain-http"); !strings.Contains(out, "UNAUTHORIZED") {
		t.Errorf("a push without credentials: %q; want the registry's refusal", out)
	}
	runTrust(t, 1, "publish", "--dir", repo, "--to", "other.example:5000/infra/trust", "--plain-http", "--auth-file", authFile)
	first := pushed(publish(0, repo))
	if again := pushed(publish(0, repo)); again != first {
		t.Errorf("the same directory published twice: %s, then %s", first, again)
	}
	tag, err := name.NewTag(to+":trust", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	d, err := remote.Get(tag)
	if err != nil {
		t.Fatal(err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(d.Manifest, &m); err != nil {
		t.Fatal(err)
	}
	if d.Digest.String() != first || m.ArtifactType != trust.ArtifactType || len(m.Layers) == 0 {
		t.Fatalf("the tag holds %s: %s", d.Digest, d.Manifest)
	}
	for _, l := range m.Layers {
		title := l.Annotations[ocispec.AnnotationTitle]
		if !strings.HasPrefix(title, "metadata/") && !strings.HasPrefix(title, "targets/") || strings.HasSuffix(title, ".pem") {
			t.Errorf("%s published", title)
		}
	}

	// A replica: the upstream is the registry itself, read as serve
	// reads it.
	up, err := upstream.New(reg.URL, &http.Client{})
	if err != nil {
		t.Fatal(err)
	}
	src, err := trustSource("oci:infra/trust", up)
	if err != nil {
		t.Fatal(err)
	}
	root, err := os.ReadFile(filepath.Join(repo, "metadata", "1.root.json"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := trust.New(trust.Options{Source: src, Root: root, DataDir: filepath.Join(tmp, "data"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	refreshed(t, c)
	if err := c.Check(ctx, trust.OpWrap, "team-a/app", opsID, time.Now()); err != nil {
		t.Fatalf("before the revocation: %v", err)
	}

	// The key leaks: revoked and published; the replica's next refresh
	// refuses it.
	stale := filepath.Join(tmp, "stale")
	if err := os.CopyFS(stale, os.DirFS(repo)); err != nil {
		t.Fatal(err)
	}
	runTrust(t, 0, append([]string{"revoke", "--dir", repo, "--key-id", opsID, "--reason", "keyCompromise"}, chain...)...)
	revoked := pushed(publish(0, repo))
	refreshed(t, c)
	for _, op := range []string{trust.OpWrap, trust.OpUnwrap} {
		var r *trust.Refusal
		if err := c.Check(ctx, op, "team-a/app", opsID, time.Now()); !errors.As(err, &r) || r.Reason != trust.RefusedRevoked {
			t.Errorf("Check(%s) after the revocation: %v; want revoked", op, err)
		}
	}

	// What replicas would refuse is not pushed: the copy of before the
	// revocation (a rollback, and a deny entry dropped), an expired
	// timestamp.
	if out := publish(1, stale); !strings.Contains(out, "nothing pushed") {
		t.Errorf("publishing the stale copy: %q", out)
	}
	runTrust(t, 0, "sign", "--dir", repo, "--role", "timestamp", "--key", k("timestamp"), "--expires", "1ns")
	if out := publish(1, repo); !strings.Contains(out, "expired") || !strings.Contains(out, "nothing pushed") {
		t.Errorf("publishing an expired timestamp: %q", out)
	}
	if h, err := remote.Head(tag); err != nil || h.Digest.String() != revoked {
		t.Errorf("the tag holds %v (%v); want %s, the last good publication", h, err, revoked)
	}
}

// TestAttackPublishPushesABinaryOpenPGPSecretKeyGivenAsPublicKey (from
// the security review of 26971a6): `trust add-key --public-key FILE`
// copied FILE verbatim into the entry's public_key, and for --scheme pgp
// read it with openpgp.ReadKeyRing, which reads secret keys as well. A
// binary OpenPGP secret key (`gpg --export-secret-keys KEY > team.gpg`,
// the file a team hands over by mistake) has no PEM header: add-key took
// it and publish pushed it to the registry. Now add-key refuses it, and
// publish refuses a list that carries one written there otherwise.
func TestAttackPublishPushesABinaryOpenPGPSecretKeyGivenAsPublicKey(t *testing.T) {
	tmp := t.TempDir()
	repo, keys := filepath.Join(tmp, "repo"), filepath.Join(tmp, "keys")
	k := func(n string) string { return filepath.Join(keys, n+".pem") }
	runTrust(t, 0, "init", "--dir", repo, "--root-key", k("root"), "--targets-key", k("targets"),
		"--snapshot-key", k("snapshot"), "--timestamp-key", k("timestamp"), "--generate")
	chain := []string{"--targets-key", k("targets"), "--snapshot-key", k("snapshot"), "--timestamp-key", k("timestamp")}

	e, err := openpgp.NewEntity("team-a", "", "team-a@example.com", &packet.Config{Algorithm: packet.PubKeyAlgoRSA, RSABits: 2048})
	if err != nil {
		t.Fatal(err)
	}
	var secret, public bytes.Buffer
	if err := e.SerializePrivate(&secret, nil); err != nil {
		t.Fatal(err)
	}
	if err := e.Serialize(&public); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(tmp, "team-a.gpg")
	if err := os.WriteFile(file, secret.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	var code int
	out := runTrustCode(t, append([]string{"add-key", "--dir", repo, "--public-key", file, "--scheme", "pgp", "--scope", "team-a/**"}, chain...), &code)
	if code == 0 || !strings.Contains(out, "private key") {
		t.Errorf("add-key of a binary OpenPGP secret key: exit %d: %s; want it refused", code, strings.TrimSpace(out))
	}
	r, err := trust.OpenRepository(repo)
	if err != nil {
		t.Fatal(err)
	}
	if l, err := r.Recipients(""); err != nil || len(l.Recipients) != 0 {
		t.Fatalf("the allow list after the refusal: %+v, %v", l, err)
	}

	// The same key's public half is taken, stored armored and public
	// only, with the same key id.
	pubFile := filepath.Join(tmp, "team-a.pub.gpg")
	if err := os.WriteFile(pubFile, public.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	runTrust(t, 0, append([]string{"add-key", "--dir", repo, "--public-key", pubFile, "--scheme", "pgp", "--scope", "team-a/**"}, chain...)...)
	if r, err = trust.OpenRepository(repo); err != nil {
		t.Fatal(err)
	}
	l, err := r.Recipients("")
	if err != nil || len(l.Recipients) != 1 {
		t.Fatalf("the allow list: %+v, %v", l, err)
	}
	stored := l.Recipients[0]
	if !strings.HasPrefix(stored.PublicKey, "-----BEGIN PGP PUBLIC KEY BLOCK-----") {
		t.Errorf("public_key stored as %.60q; want it armored", stored.PublicKey)
	}
	storedFile := filepath.Join(tmp, "stored.asc")
	if err := os.WriteFile(storedFile, []byte(stored.PublicKey), 0o644); err != nil {
		t.Fatal(err)
	}
	if id, err := keyIDOf("pgp", storedFile); err != nil || id != stored.KeyID || id != "pgp:"+strings.ToUpper(hex.EncodeToString(e.PrimaryKey.Fingerprint)) {
		t.Errorf("the stored key's id %s, %v; the entry's %s", id, err, stored.KeyID)
	}
	if _, err := trust.BuildArtifact(repo); err != nil {
		t.Fatalf("a list of public keys: %v", err)
	}

	// A list given the secret key some other way (by hand, by an older
	// shroud) is not published.
	l.Recipients[0].PublicKey = string(secret.Bytes())
	if err := r.SetRecipients("targets", "", l); err != nil {
		t.Fatal(err)
	}
	if _, err := trust.BuildArtifact(repo); err == nil || !strings.Contains(err.Error(), "refusing to publish") {
		t.Errorf("BuildArtifact of a list carrying an OpenPGP secret key: %v; want it refused", err)
	}
}

// TestTrustPublishOverAnotherTrustRepository: a second `trust init` (or
// another --dir) is a new root, which every replica given the published
// root refuses: publish refuses it, and --force pushes it with a warning
// that says what replicas need.
func TestTrustPublishOverAnotherTrustRepository(t *testing.T) {
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	reg := shroudtest.Distribution(t)
	tmp := t.TempDir()
	initRepo := func(name string) string {
		dir := filepath.Join(tmp, name)
		k := func(n string) string { return filepath.Join(dir, "keys", n+".pem") }
		runTrust(t, 0, "init", "--dir", dir, "--root-key", k("root"), "--targets-key", k("targets"),
			"--snapshot-key", k("snapshot"), "--timestamp-key", k("timestamp"), "--generate")
		return dir
	}
	first, second := initRepo("first"), initRepo("second")
	to := strings.TrimPrefix(reg.URL, "http://") + "/infra/trust"
	runTrust(t, 0, "publish", "--dir", first, "--to", to, "--plain-http")
	out := runTrust(t, 1, "publish", "--dir", second, "--to", to, "--plain-http")
	if !strings.Contains(out, "another metadata/1.root.json") || !strings.Contains(out, "nothing pushed") || !strings.Contains(out, "--force") {
		t.Errorf("publishing another trust repository over the first: %q", out)
	}
	var stdout, stderr strings.Builder
	if code := run(context.Background(), []string{"trust", "publish", "--dir", second, "--to", to, "--plain-http", "--force"}, &stdout, &stderr); code != 0 {
		t.Fatalf("--force: exit %d: %s %s", code, stdout.String(), stderr.String())
	}
	if !strings.Contains(stderr.String(), "WARNING: --force") || !strings.Contains(stderr.String(), filepath.Join(second, "metadata", "1.root.json")) || !strings.Contains(stdout.String(), "pushed ") {
		t.Errorf("--force: stdout %q, stderr %q; want the push and a warning naming the new root", stdout.String(), stderr.String())
	}
	// The second is what is published now: publishing it again needs no
	// --force.
	runTrust(t, 0, "publish", "--dir", second, "--to", to, "--plain-http")
}

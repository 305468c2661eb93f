package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shroud-oci/shroud/crypto"
)

// Keys revoked in the signed deny list, with the built binary, skopeo and
// trust documents written by `shroud trust`: after recipient A is revoked
// (superseded), a push wraps its layer keys for B alone, so skopeo with
// A's key cannot decrypt the new image from the upstream and with B's it
// can; with both revoked a push is refused, naming the rule; and a
// decryption key revoked (keyCompromise) no longer opens, through shroud,
// an image skopeo encrypted to it.
func TestTrustRevocationWithSkopeo(t *testing.T) {
	bin := buildShroud(t)
	up := distributionV3(t)
	dir := t.TempDir()
	run := shroudCommand(t, bin)
	keys := filepath.Join(dir, "keys")
	for _, n := range []string{"identity", "a", "b", "c"} {
		run("keygen", "--out", keys, "--name", n)
	}
	k := func(n string) string { return filepath.Join(keys, n+".pem") }
	pub := func(n string) string { return filepath.Join(keys, n+".pub.pem") }
	repo := filepath.Join(dir, "trust")
	tk := func(n string) string { return filepath.Join(dir, "tuf", n+".pem") }
	run("trust", "init", "--dir", repo, "--root-key", tk("root"), "--targets-key", tk("targets"), "--snapshot-key", tk("snapshot"), "--timestamp-key", tk("timestamp"), "--generate")
	publish := []string{"--targets-key", tk("targets"), "--snapshot-key", tk("snapshot"), "--timestamp-key", tk("timestamp")}
	for n, scope := range map[string]string{"identity": "**", "a": "team/**", "b": "team/**"} {
		run(append([]string{"trust", "add-key", "--dir", repo, "--public-key", pub(n), "--scheme", "jwe", "--scope", scope}, publish...)...)
	}
	maddr := freeAddr(t)
	addr, _, logs := startShroud(t, bin, "--upstream", up.URL, "--data-dir", filepath.Join(dir, "data"), "--identity", k("identity"),
		"--recipient", "jwe:"+pub("a"), "--recipient", "jwe:"+pub("b"), "--decryption-key", k("c"),
		"--trust-source", repo, "--trust-root", filepath.Join(repo, "metadata", "1.root.json"), "--trust-refresh", "200ms",
		"--metrics-listen", maddr)
	decrypt := func(ref, keyFile string) ([]string, error) {
		out := filepath.Join(t.TempDir(), "dec")
		if o, err := skopeoErr(t, "copy", "--src-tls-verify=false", "--decryption-key", keyFile, "docker://"+up.Host()+"/"+ref, "oci:"+out+":app"); err != nil {
			return nil, &exec.ExitError{Stderr: []byte(o)}
		}
		_, m := layoutManifest(t, out)
		return manifestLayerDigests(m), nil
	}
	src, img := ociLayout(t, 2, 100_000)
	want := layerDigests(t, img)
	skopeo(t, "copy", "--dest-tls-verify=false", src, "docker://"+addr+"/team/app:1")
	for _, n := range []string{"a", "b"} {
		if got, err := decrypt("team/app:1", k(n)); err != nil || !slices.Equal(got, want) {
			t.Fatalf("before any revocation, skopeo with %s's key: %v %v\n%s", n, got, err, logs)
		}
	}
	// What an operator alerts on: the documents' expiries, as published.
	metrics := scrape(t, "http://"+maddr+"/metrics")
	for _, doc := range []string{"timestamp", "snapshot", "targets", "root"} {
		var md struct {
			Signed struct{ Expires time.Time } `json:"signed"`
		}
		name := doc + ".json"
		if doc == "root" {
			name = "1.root.json"
		}
		b, err := os.ReadFile(filepath.Join(repo, "metadata", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &md); err != nil {
			t.Fatal(err)
		}
		if got := sample(metrics, "shroud_trust_document_expiry_seconds", `shroud_trust_document="`+doc+`\.json"`); got != float64(md.Signed.Expires.Unix()) {
			t.Errorf("shroud_trust_document_expiry_seconds of %s.json: %v; want %d (%s)", doc, got, md.Signed.Expires.Unix(), md.Signed.Expires)
		}
	}
	if got := sample(metrics, "shroud_trust_refresh_last_success_seconds", ""); got < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("shroud_trust_refresh_last_success_seconds %v; want a refresh of the last minute", got)
	}

	idOf := func(n string) string {
		r, err := crypto.ParseRecipient("jwe:" + pub(n))
		if err != nil {
			t.Fatal(err)
		}
		return r.KeyID()
	}
	revoke := func(n, reason string) {
		run(append([]string{"trust", "revoke", "--dir", repo, "--key-id", idOf(n), "--reason", reason}, publish...)...)
		time.Sleep(time.Second) // two refreshes
	}
	revoke("a", "superseded")
	skopeo(t, "copy", "--dest-tls-verify=false", src, "docker://"+addr+"/team/app:2")
	if _, err := decrypt("team/app:2", k("a")); err == nil {
		t.Fatal("after A's revocation, skopeo with A's key decrypts the new image from the upstream")
	}
	if got, err := decrypt("team/app:2", k("b")); err != nil || !slices.Equal(got, want) {
		t.Fatalf("after A's revocation, skopeo with B's key: %v %v", got, err)
	}

	revoke("b", "retired")
	out, err := skopeoErr(t, "copy", "--dest-tls-verify=false", src, "docker://"+addr+"/team/app:3")
	if err == nil || !strings.Contains(out, "no recipient") {
		t.Fatalf("a push with every recipient revoked: %v\n%s", err, out)
	}

	// A decryption key: skopeo encrypts an image to C straight to the
	// upstream; shroud, holding C, serves it decrypted until C is revoked.
	src2, _ := ociLayout(t, 2, 100_000)
	skopeo(t, "copy", "--dest-tls-verify=false", "--encryption-key", "jwe:"+pub("c"), src2, "docker://"+up.Host()+"/team/foreign:1")
	back := filepath.Join(t.TempDir(), "back")
	skopeo(t, "copy", "--src-tls-verify=false", "docker://"+addr+"/team/foreign:1", "oci:"+back+":app")
	revoke("c", "keyCompromise")
	if out, err := skopeoErr(t, "copy", "--src-tls-verify=false", "docker://"+addr+"/team/foreign:1", "oci:"+filepath.Join(t.TempDir(), "again")+":app"); err == nil {
		t.Fatal("shroud still decrypts with a revoked decryption key")
	} else if !strings.Contains(out, "403") {
		t.Fatalf("the pull with a revoked decryption key failed, but not with 403 DENIED: %v: %s", err, out)
	}
	// skopeo shows the status alone; shroud's log names key and reason.
	if !strings.Contains(logs.String(), idOf("c")) || !strings.Contains(logs.String(), "keyCompromise") {
		t.Errorf("shroud's log does not name the revoked decryption key and why:\n%s", logs)
	}
	if !strings.Contains(logs.String(), "revoked") {
		t.Errorf("shroud's log says nothing of the revoked keys:\n%s", logs)
	}
}

// The timestamp of before a revocation replayed to a replica new to the
// documents (a new pod: its data dir empty, so no floor of its own). Two
// replicas share Redis: the first trusted the documents with recipient A
// revoked; the attacker then serves the timestamp of before (signed, not
// yet expired). A replica alone (the control) trusts it and wraps layer
// keys for A again; one sharing the first one's Redis refuses the
// documents as older than the shared floor, and fails closed (the push
// is refused) until the source serves the current ones.
func TestTrustTimestampReplayedToANewReplicaSharingRedis(t *testing.T) {
	bin := buildShroud(t)
	up := distributionV3(t)
	rs := startRedis(t)
	dir := t.TempDir()
	run := shroudCommand(t, bin)
	keys := filepath.Join(dir, "keys")
	for _, n := range []string{"identity", "a", "b"} {
		run("keygen", "--out", keys, "--name", n)
	}
	pub := func(n string) string { return filepath.Join(keys, n+".pub.pem") }
	repo := filepath.Join(dir, "trust")
	tk := func(n string) string { return filepath.Join(dir, "tuf", n+".pem") }
	run("trust", "init", "--dir", repo, "--root-key", tk("root"), "--targets-key", tk("targets"), "--snapshot-key", tk("snapshot"), "--timestamp-key", tk("timestamp"), "--generate")
	publish := []string{"--targets-key", tk("targets"), "--snapshot-key", tk("snapshot"), "--timestamp-key", tk("timestamp")}
	for n, scope := range map[string]string{"identity": "**", "a": "team/**"} {
		run(append([]string{"trust", "add-key", "--dir", repo, "--public-key", pub(n), "--scheme", "jwe", "--scope", scope}, publish...)...)
	}
	replica := func(name string, shared bool) (string, *syncBuffer) {
		args := []string{"--upstream", up.URL, "--data-dir", filepath.Join(dir, name), "--identity", filepath.Join(keys, "identity.pem"),
			"--recipient", "jwe:" + pub("a"), "--trust-source", repo, "--trust-root", filepath.Join(repo, "metadata", "1.root.json"), "--trust-refresh", "200ms"}
		if shared {
			args = append(args, "--shared-redis", rs.addr)
		}
		addr, _, logs := startShroud(t, bin, args...)
		return addr, logs
	}
	src, _ := ociLayout(t, 1, 50_000)
	first, _ := replica("first", true)
	skopeo(t, "copy", "--dest-tls-verify=false", src, "docker://"+first+"/team/app:1")

	before, err := os.ReadFile(filepath.Join(repo, "metadata", "timestamp.json"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := crypto.ParseRecipient("jwe:" + pub("a"))
	if err != nil {
		t.Fatal(err)
	}
	run(append([]string{"trust", "revoke", "--dir", repo, "--key-id", r.KeyID(), "--reason", "keyCompromise"}, publish...)...)
	time.Sleep(time.Second) // the first replica refreshes
	if out, err := skopeoErr(t, "copy", "--dest-tls-verify=false", src, "docker://"+first+"/team/app:2"); err == nil || !strings.Contains(out, "no recipient") {
		t.Fatalf("the first replica, A revoked: a push %v\n%s", err, out)
	}
	current, err := os.ReadFile(filepath.Join(repo, "metadata", "timestamp.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(repo, "metadata", "timestamp.json"), before, 0o644); err != nil {
		t.Fatal(err)
	}

	// (Each replica pushes to a repository of its own: the replica alone
	// shares no mappings with the others.)
	alone, _ := replica("alone", false)
	if out, err := skopeoErr(t, "copy", "--dest-tls-verify=false", src, "docker://"+alone+"/team/alone:3"); err != nil {
		t.Fatalf("the control: a replica alone, served the old timestamp, should trust it and wrap for A again: %v\n%s", err, out)
	}
	fresh, logs := replica("fresh", true)
	out, err := skopeoErr(t, "copy", "--dest-tls-verify=false", src, "docker://"+fresh+"/team/fresh:4")
	if err == nil {
		t.Fatal("a new replica sharing Redis trusted the replayed timestamp: it wrapped the layer keys for the revoked key A")
	}
	t.Logf("the push through the new replica: %s", out)
	if !strings.Contains(logs.String(), "shared rollback floor") {
		t.Errorf("the new replica's log does not say why it refused the documents:\n%s", logs)
	}
	// The source serves the current documents again: the new replica
	// takes them, and refuses A as the first does.
	if err := os.WriteFile(filepath.Join(repo, "metadata", "timestamp.json"), current, 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if out, err := skopeoErr(t, "copy", "--dest-tls-verify=false", src, "docker://"+fresh+"/team/fresh:5"); err == nil || !strings.Contains(out, "no recipient") {
		t.Fatalf("the new replica on the current documents: a push %v\n%s", err, out)
	}
}

// shroudCommand runs the built binary with args, failing the test with
// its output if it fails, and returns the output.
func shroudCommand(t *testing.T, bin string) func(args ...string) string {
	return func(args ...string) string {
		t.Helper()
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("shroud %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
}

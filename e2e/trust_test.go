package e2e

import (
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
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("shroud %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
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
	addr, _, logs := startShroud(t, bin, "--upstream", up.URL, "--data-dir", filepath.Join(dir, "data"), "--identity", k("identity"),
		"--recipient", "jwe:"+pub("a"), "--recipient", "jwe:"+pub("b"), "--decryption-key", k("c"),
		"--trust-source", repo, "--trust-root", filepath.Join(repo, "metadata", "1.root.json"), "--trust-refresh", "200ms")
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

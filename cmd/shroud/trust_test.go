package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/trust"
)

func runTrust(t *testing.T, want int, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), append([]string{"trust"}, args...), &out, &errOut)
	if code != want {
		t.Fatalf("shroud trust %s: exit %d; want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, want, out.String(), errOut.String())
	}
	return out.String() + errOut.String()
}

// recipientFile writes a recipient public key and returns its path and
// its key id, computed here over the SPKI.
func recipientFile(t *testing.T, dir, name string) (string, string) {
	t.Helper()
	_, pub, err := crypto.GenerateKeyPair("ec")
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(pub)
	if _, err := x509.ParsePKIXPublicKey(block.Bytes); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(block.Bytes)
	p := filepath.Join(dir, name+".pub.pem")
	if err := os.WriteFile(p, pub, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, "sha256:" + hex.EncodeToString(sum[:])
}

func TestTrustCommandsWriteDocumentsTheCheckerTrusts(t *testing.T) {
	tmp := t.TempDir()
	repo, keys := filepath.Join(tmp, "repo"), filepath.Join(tmp, "keys")
	k := func(n string) string { return filepath.Join(keys, n+".pem") }
	runTrust(t, 2, "init", "--dir", repo)
	out := runTrust(t, 0, "init", "--dir", repo, "--root-key", k("root1"), "--root-key", k("root2"), "--threshold", "2",
		"--targets-key", k("targets"), "--snapshot-key", k("snapshot"), "--timestamp-key", k("timestamp"), "--generate")
	if !strings.Contains(out, "--trust-root "+filepath.Join(repo, "metadata", "1.root.json")) {
		t.Fatalf("init output %q", out)
	}
	runTrust(t, 1, "init", "--dir", repo, "--root-key", k("root1"), "--targets-key", k("targets"),
		"--snapshot-key", k("snapshot"), "--timestamp-key", k("timestamp"))
	publish := []string{"--snapshot-key", k("snapshot"), "--timestamp-key", k("timestamp")}

	opsFile, opsID := recipientFile(t, tmp, "ops")
	_, leakedID := recipientFile(t, tmp, "leaked")
	runTrust(t, 0, append([]string{"add-key", "--dir", repo, "--public-key", opsFile, "--scheme", "jwe",
		"--scope", "team-a/**", "--scope", "team-b/**", "--targets-key", k("targets")}, publish...)...)
	runTrust(t, 0, append([]string{"add-key", "--dir", repo, "--key-id", leakedID, "--scheme", "jwe",
		"--scope", "**", "--not-after", time.Now().Add(time.Hour).UTC().Format(time.RFC3339), "--targets-key", k("targets")}, publish...)...)
	runTrust(t, 0, append([]string{"revoke", "--dir", repo, "--key-id", leakedID, "--reason", "keyCompromise",
		"--targets-key", k("targets")}, publish...)...)
	runTrust(t, 2, "revoke", "--dir", repo, "--key-id", leakedID, "--reason", "lost", "--targets-key", k("targets"))

	// team-a signs its own namespace.
	if err := generateKey(k("team-a"), &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	runTrust(t, 0, append([]string{"delegate", "--dir", repo, "--role", "team-a", "--path", "team-a/*",
		"--role-key", k("team-a"), "--targets-key", k("targets")}, publish...)...)
	_, teamKeyID := recipientFile(t, tmp, "team-a-ci")
	runTrust(t, 0, append([]string{"add-key", "--dir", repo, "--role", "team-a", "--key-id", teamKeyID, "--scheme", "jwe",
		"--scope", "team-a/**", "--targets-key", k("team-a")}, publish...)...)

	out = runTrust(t, 0, "status", "--dir", repo)
	for _, want := range []string{opsID, leakedID, teamKeyID, "keyCompromise", "team-a/recipients.json", "team-a.json"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	var st trust.Status
	if err := json.Unmarshal([]byte(runTrust(t, 0, "status", "--dir", repo, "--output", "json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.Allow != 3 || st.Deny != 1 {
		t.Errorf("status counts %d allowed, %d revoked", st.Allow, st.Deny)
	}

	root, err := os.ReadFile(filepath.Join(repo, "metadata", "1.root.json"))
	if err != nil {
		t.Fatal(err)
	}
	src, err := trust.DirSource(repo)
	if err != nil {
		t.Fatal(err)
	}
	c, err := trust.New(trust.Options{Source: src, Root: root, DataDir: filepath.Join(tmp, "data")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, now := context.Background(), time.Now()
	refreshed(t, c)
	check := func(op, repo, id string, wantReason string) {
		t.Helper()
		err := c.Check(ctx, op, repo, id, now)
		var r *trust.Refusal
		switch {
		case wantReason == "" && err != nil:
			t.Errorf("Check(%s, %s, %s): %v", op, repo, id, err)
		case wantReason != "" && (!errors.As(err, &r) || r.Reason != wantReason):
			t.Errorf("Check(%s, %s, %s): %v; want %s", op, repo, id, err, wantReason)
		}
	}
	check(trust.OpWrap, "team-a/app", opsID, "")
	check(trust.OpWrap, "team-c/app", opsID, trust.RefusedNotAllowed)
	check(trust.OpWrap, "team-a/app", leakedID, trust.RefusedRevoked)
	check(trust.OpUnwrap, "team-a/app", leakedID, trust.RefusedRevoked)
	check(trust.OpWrap, "team-a/app", teamKeyID, "")
	check(trust.OpWrap, "team-b/app", teamKeyID, trust.RefusedNotAllowed)

	// The timestamp key leaks: root (both root keys) rotates it.
	runTrust(t, 1, "sign", "--dir", repo, "--role", "root", "--key", k("root1"))
	if err := generateKey(k("timestamp2"), &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	runTrust(t, 0, "sign", "--dir", repo, "--role", "root", "--key", k("root1"), "--key", k("root2"),
		"--set-keys", "timestamp="+filepath.Join(keys, "timestamp2.pub.pem"))
	runTrust(t, 1, "sign", "--dir", repo, "--role", "timestamp", "--key", k("timestamp"))
	runTrust(t, 0, "sign", "--dir", repo, "--role", "timestamp", "--key", k("timestamp2"), "--expires", "2h")
	refreshed(t, c)
	if s := c.Status(); s.Roles[0].Version != 2 || s.Roles[1].Expires.After(time.Now().Add(3*time.Hour)) {
		t.Errorf("roles %+v; want root v2 and a 2h timestamp", s.Roles)
	}
	check(trust.OpWrap, "team-a/app", opsID, "")
}

func TestTrustKeyIDOfPublicKeyFile(t *testing.T) {
	p, want := recipientFile(t, t.TempDir(), "k")
	got, err := keyIDOf("jwe", p)
	if err != nil || got != want {
		t.Errorf("jwe: %s, %v; want %s (SHA-256 of the SPKI)", got, err, want)
	}
	if _, err := keyIDOf("pkcs7", p); err == nil {
		t.Error("a pkcs7 key id from a bare public key (want a certificate)")
	}
}

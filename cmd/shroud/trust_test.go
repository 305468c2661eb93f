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
	"io"
	"log/slog"
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

// TestAttackTrustRevokeOfAMisspeltKeyIDRevokesNothing (from the security
// review of 26971a6): `shroud trust revoke --key-id ID` took any
// non-empty ID, and the Checker matches deny entries by exact string.
// The day a key leaks, an operator who pastes the id without its
// "sha256:" prefix, or in upper case, got "revoke ..." and exit 0,
// published, and the key went on being wrapped for and unwrapping as
// before: nothing was revoked. Now the command refuses the id
// (crypto.ValidKeyID), and a deny list holding one is refused whole.
func TestAttackTrustRevokeOfAMisspeltKeyIDRevokesNothing(t *testing.T) {
	for name, spell := range map[string]func(string) string{
		"without sha256: prefix": func(id string) string { return strings.TrimPrefix(id, "sha256:") },
		"upper case hex":         func(id string) string { return "sha256:" + strings.ToUpper(strings.TrimPrefix(id, "sha256:")) },
	} {
		t.Run(name, func(t *testing.T) {
			tmp := t.TempDir()
			repo, keys := filepath.Join(tmp, "repo"), filepath.Join(tmp, "keys")
			k := func(n string) string { return filepath.Join(keys, n+".pem") }
			runTrust(t, 0, "init", "--dir", repo, "--root-key", k("root"), "--targets-key", k("targets"),
				"--snapshot-key", k("snapshot"), "--timestamp-key", k("timestamp"), "--generate")
			publish := []string{"--targets-key", k("targets"), "--snapshot-key", k("snapshot"), "--timestamp-key", k("timestamp")}
			file, id := recipientFile(t, tmp, "leaked")
			runTrust(t, 0, append([]string{"add-key", "--dir", repo, "--public-key", file, "--scheme", "jwe", "--scope", "**"}, publish...)...)

			var code int
			out := runTrustCode(t, append([]string{"revoke", "--dir", repo, "--key-id", spell(id), "--reason", "keyCompromise"}, publish...), &code)
			t.Logf("shroud trust revoke --key-id %s: exit %d: %s", spell(id), code, strings.TrimSpace(out))

			root, _ := os.ReadFile(filepath.Join(repo, "metadata", "1.root.json"))
			src, err := trust.DirSource(repo)
			if err != nil {
				t.Fatal(err)
			}
			c, err := trust.New(trust.Options{Source: src, Root: root, DataDir: filepath.Join(tmp, "data")})
			if err != nil {
				t.Fatal(err)
			}
			refreshed(t, c)
			if code == 0 && c.Check(context.Background(), trust.OpWrap, "team/app", id, time.Now()) == nil {
				t.Errorf("`trust revoke --key-id %s` exits 0 and the key %s is still wrapped for (and unwraps): nothing was revoked", spell(id), id)
			}
		})
	}
}

// runTrustCode is runTrust that returns the exit code instead of
// wanting one.
func runTrustCode(t *testing.T, args []string, code *int) string {
	t.Helper()
	var out, errOut strings.Builder
	*code = run(context.Background(), append([]string{"trust"}, args...), &out, &errOut)
	return out.String() + errOut.String()
}

// A deny or allow list holding an entry whose key_id is no key id is
// refused whole, as one that does not parse: the refresh keeps the
// lists trusted before and says why; `trust revoke` refuses the id
// before anything is written; add-key --key-id too.
func TestTrustListsWithAMisspeltKeyIDAreRefused(t *testing.T) {
	tmp := t.TempDir()
	repo, keys := filepath.Join(tmp, "repo"), filepath.Join(tmp, "keys")
	k := func(n string) string { return filepath.Join(keys, n+".pem") }
	runTrust(t, 0, "init", "--dir", repo, "--root-key", k("root"), "--targets-key", k("targets"),
		"--snapshot-key", k("snapshot"), "--timestamp-key", k("timestamp"), "--generate")
	publish := []string{"--targets-key", k("targets"), "--snapshot-key", k("snapshot"), "--timestamp-key", k("timestamp")}
	_, id := recipientFile(t, tmp, "k")
	upper := "sha256:" + strings.ToUpper(strings.TrimPrefix(id, "sha256:"))
	if out := runTrust(t, 2, append([]string{"revoke", "--dir", repo, "--key-id", upper, "--reason", "keyCompromise"}, publish...)...); !strings.Contains(out, "lower-case hex") || !strings.Contains(out, "nothing revoked") {
		t.Errorf("revoke of an upper-case id: %s", out)
	}
	runTrust(t, 2, append([]string{"add-key", "--dir", repo, "--key-id", upper, "--scheme", "jwe", "--scope", "**"}, publish...)...)
	runTrust(t, 0, append([]string{"revoke", "--dir", repo, "--key-id", id, "--reason", "keyCompromise"}, publish...)...)

	// The list, edited by hand and re-signed: the id mistyped.
	r, err := trust.OpenRepository(repo)
	if err != nil {
		t.Fatal(err)
	}
	l, err := r.Revocations("")
	if err != nil {
		t.Fatal(err)
	}
	l.Revocations = append(l.Revocations, trust.Revocation{KeyID: strings.TrimPrefix(id, "sha256:"), Reason: trust.ReasonKeyCompromise, RevokedAt: time.Now().UTC()})
	if err := r.SetRevocations("targets", "", l); err != nil {
		t.Fatal(err)
	}
	if err := publishRole(r, "targets", k("targets"), 0, k("snapshot"), k("timestamp"), io.Discard); err != nil {
		t.Fatal(err)
	}
	if out := runTrust(t, 1, "status", "--dir", repo); !strings.Contains(out, "revocations: entry 2") {
		t.Errorf("status of a deny list with a misspelt id: %s", out)
	}
	root, err := os.ReadFile(filepath.Join(repo, "metadata", "1.root.json"))
	if err != nil {
		t.Fatal(err)
	}
	src, err := trust.DirSource(repo)
	if err != nil {
		t.Fatal(err)
	}
	c, err := trust.New(trust.Options{Source: src, Root: root, DataDir: filepath.Join(tmp, "data"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := c.Status(); st.LastOutcome != trust.OutcomeRefused || !strings.Contains(strings.Join(st.Refusals, "\n"), "revocations: entry 2") {
		t.Errorf("a replica's refresh of a deny list with a misspelt id: %s %q; want it refused", st.LastOutcome, st.Refusals)
	}
	if out := runTrust(t, 1, append([]string{"revoke", "--dir", repo, "--key-id", id, "--reason", "retired"}, publish...)...); !strings.Contains(out, "entry 2") {
		t.Errorf("revoke on a directory whose deny list is refused: %s", out)
	}
}

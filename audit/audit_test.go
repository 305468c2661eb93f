package audit_test

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shroud-oci/shroud/audit"
	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/testkeys"
)

func lines(t *testing.T, b []byte) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("not a JSON line: %v: %q", err, sc.Text())
		}
		out = append(out, m)
	}
	return out
}

// One JSON object per line, each event whole even when logged at once
// from many goroutines; zero fields left out; times in UTC.
func TestLogWritesOneJSONLinePerEvent(t *testing.T) {
	var buf bytes.Buffer
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600))
	l := audit.New(&buf).WithClock(func() time.Time { return at })
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.Log(audit.Event{Kind: audit.WrapRefused, Repository: "team/app", KeyID: "sha256:ab", Reason: "expired", Op: "wrap"})
		}()
	}
	wg.Wait()
	l.Log(audit.Event{Kind: audit.TrustRefresh, Document: "timestamp.json", Version: 7, Expires: at.Add(time.Hour), Outcome: "ok"})
	got := lines(t, buf.Bytes())
	if len(got) != 51 {
		t.Fatalf("%d lines, want 51", len(got))
	}
	first := got[0]
	if first["kind"] != "wrap-refused" || first["repository"] != "team/app" || first["key_id"] != "sha256:ab" || first["reason"] != "expired" || first["time"] != "2030-01-02T02:04:05Z" {
		t.Errorf("line = %v", first)
	}
	if _, ok := first["expires"]; ok {
		t.Errorf("a zero expiry is written: %v", first)
	}
	last := got[50]
	if last["document"] != "timestamp.json" || last["version"] != float64(7) || last["expires"] != "2030-01-02T03:04:05Z" {
		t.Errorf("trust line = %v", last)
	}
}

func TestNilLoggerDoesNothing(t *testing.T) {
	var l *audit.Logger
	if err := l.Log(audit.Event{Kind: audit.Admin}); err != nil {
		t.Fatal(err)
	}
	l.WithClock(time.Now)
}

// The file is opened for appending, mode 0600; "-" is stdout.
func TestOpen(t *testing.T) {
	p := filepath.Join(t.TempDir(), "audit.log")
	for i := 0; i < 2; i++ {
		l, c, err := audit.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		l.Log(audit.Event{Kind: audit.Admin, Actor: "ops"})
		c.Close()
	}
	b, _ := os.ReadFile(p)
	if n := len(lines(t, b)); n != 2 {
		t.Fatalf("%d lines after two opens, want 2 (appended)", n)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
	if _, c, err := audit.Open("-"); err != nil || c.Close() != nil {
		t.Fatal(err)
	}
}

// Events made from real keys, and events a careless caller stuffed with
// key material, never put any of it in the log: no PEM or armor block,
// no wrapped key, no JWK; their key ids do get there.
func TestNoKeyMaterialInAuditLog(t *testing.T) {
	dir := t.TempDir()
	priv, pub, _ := crypto.GenerateKeyPair("ec")
	os.WriteFile(filepath.Join(dir, "k.pem"), priv, 0o600)
	os.WriteFile(filepath.Join(dir, "k.pub.pem"), pub, 0o644)
	pgpPub, pgpPriv, _ := testkeys.PGP(t, dir, "alice", true)
	certFile, certKey := testkeys.Cert(t, dir, "bob", false)
	jwe, err := crypto.ParseRecipient("jwe:" + filepath.Join(dir, "k.pub.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pgp, _ := crypto.ParseRecipient("pgp:" + pgpPub)
	p7, _ := crypto.ParseRecipient("pkcs7:" + certFile)

	// A layer key wrapped for all three, as a manifest carries it.
	id, _, _ := crypto.LoadOrCreateIdentity(dir)
	kr, err := crypto.NewKeyring(id, nil)
	if err != nil {
		t.Fatal(err)
	}
	set, err := kr.Recipients([]crypto.Recipient{jwe, pgp, p7})
	if err != nil {
		t.Fatal(err)
	}
	key, _ := crypto.NewLayerKey()
	ann, err := kr.Wrap(crypto.PrivateOptions{Key: key, PlainDigest: "sha256:0000000000000000000000000000000000000000000000000000000000000000"}, crypto.PublicOptions{HMAC: make([]byte, 32)}, set)
	if err != nil {
		t.Fatal(err)
	}
	jwkPriv := `{"kty":"EC","crv":"P-256","d":"7F3hGZ0Ld0pQUVpYxB6u2Ykq3eE4J8mR9W1s2t3u4v0","x":"abc","y":"def"}`

	var material [][]byte
	for _, f := range []string{filepath.Join(dir, "k.pem"), filepath.Join(dir, "k.pub.pem"), pgpPub, pgpPriv, certFile, certKey, id.Path()} {
		b, _ := os.ReadFile(f)
		material = append(material, b)
	}
	for _, v := range ann {
		material = append(material, []byte(v))
	}
	// (A bare 32-byte secret in base64 cannot be told from a key
	// thumbprint; no caller has one to pass.)
	material = append(material, []byte(jwkPriv))

	var buf bytes.Buffer
	l := audit.New(&buf)
	var events []audit.Event
	for _, r := range []crypto.Recipient{jwe, pgp, p7} {
		nb, na := r.Validity()
		reason := "revoked"
		if err := crypto.CheckValidity(r.KeyID(), nb, na, time.Now().Add(1000*time.Hour)); err != nil {
			reason = err.Error()
		}
		events = append(events, audit.Event{Kind: audit.WrapRefused, Op: "wrap", Repository: "team/app", KeyID: r.KeyID(), Reason: reason, Detail: "recipient " + r.KeyID() + " dropped"})
	}
	// The careless ones: every field a caller might misuse.
	for _, m := range material {
		s := string(m)
		events = append(events,
			audit.Event{Kind: audit.UnwrapRefused, Detail: s},
			audit.Event{Kind: audit.JobStep, Reason: s, Outcome: "failed: " + s, Step: s},
			audit.Event{Kind: audit.Admin, Actor: s, Document: s, KeyID: s, Repository: s},
			audit.Event{Kind: audit.Admin, Detail: base64.StdEncoding.EncodeToString(m)},
		)
	}
	// A key provider's glob scope is a repository, kept.
	events = append(events, audit.Event{Kind: audit.UnwrapAllowed, Op: "unwrap", Repository: "team-?/*/app", ActorCert: "sha256:" + strings.Repeat("ab", 32)})
	for _, e := range events {
		if err := l.Log(e); err != nil {
			t.Fatal(err)
		}
	}
	out := buf.Bytes()
	for _, bad := range []string{"BEGIN", "PRIVATE", "PGP", `\"kty\"`, `"kty"`} {
		if bytes.Contains(out, []byte(bad)) {
			t.Errorf("the audit log holds %q", bad)
		}
	}
	for i, m := range material {
		// Any 40-byte piece of the material, as it is or in base64.
		for _, form := range [][]byte{m, []byte(base64.StdEncoding.EncodeToString(m))} {
			for _, line := range bytes.Split(form, []byte("\n")) {
				line = bytes.TrimSpace(line)
				for off := 0; off+40 <= len(line); off += 20 {
					if bytes.Contains(out, line[off:off+40]) {
						t.Fatalf("material %d: the audit log holds %q", i, line[off:off+40])
					}
				}
			}
		}
	}
	for _, r := range []crypto.Recipient{jwe, pgp, p7} {
		if !bytes.Contains(out, []byte(`"key_id":"`+r.KeyID()+`"`)) {
			t.Errorf("the key id %s is not in the log", r.KeyID())
		}
	}
	if !strings.Contains(buf.String(), `"repository":"team-?/*/app"`) || !strings.Contains(buf.String(), `"actor_cert":"sha256:abab`) {
		t.Error("the glob scope or the certificate fingerprint is not in the log")
	}
	if !strings.Contains(buf.String(), "expired at") {
		t.Error("the expiry reason is not in the log")
	}
	if len(lines(t, out)) != len(events) {
		t.Errorf("%d lines for %d events", len(lines(t, out)), len(events))
	}
}

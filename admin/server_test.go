package admin_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shroud-oci/shroud/admin"
	"github.com/shroud-oci/shroud/audit"
	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/shroudtest"
)

// Without the token, with another one, with it under another scheme, or
// with more after it: one and the same 401 (status, headers, body), on
// every path, those that do not exist too; each is an audit line that
// holds neither the token nor what was sent instead; nothing is started.
// With the token (the scheme's case aside) the API answers.
func TestRefusesAnyoneWithoutTheToken(t *testing.T) {
	up := shroudtest.Distribution(t)
	var log lockedBuffer
	s := shroudtest.Start(t, up, shroudtest.WithAudit(audit.New(&log)))
	a := startAdmin(context.Background(), t, s.Handler, t.TempDir(), admin.Options{Audit: audit.New(&log)})
	const wrong = "wrong-token-but-just-as-long-0123"
	spec := `{"kind":"rewrap","repositories":["team/app"]}`
	var first *answer
	n := 0
	for _, authz := range []string{"", "Bearer " + wrong, "Bearer " + token + "x", "Bearer " + token[:len(token)-1], "Basic " + base64.StdEncoding.EncodeToString([]byte("admin:"+token)), token, "Bearer"} {
		for _, req := range [][2]string{{"POST", "/admin/v1/jobs"}, {"GET", "/admin/v1/jobs"}, {"GET", "/admin/v1/jobs/0123456789abcdef"}, {"POST", "/admin/v1/jobs/0123456789abcdef/cancel"}, {"GET", "/admin/v2/nothing"}} {
			var body any
			if req[0] == "POST" {
				body = spec
			}
			ans := a.do(req[0], req[1], authz, body)
			n++
			ans.header.Del("Date")
			if first == nil {
				first = &ans
				if ans.status != http.StatusUnauthorized || ans.header.Get("WWW-Authenticate") == "" {
					t.Fatalf("%s %s without the token: %d %v %s", req[0], req[1], ans.status, ans.header, ans.body)
				}
				continue
			}
			if ans.status != first.status || string(ans.body) != string(first.body) || !sameHeaders(ans.header, first.header) {
				t.Errorf("%s %s with %q: %d %v %s; the first refusal was %d %v %s", req[0], req[1], authz, ans.status, ans.header, ans.body, first.status, first.header, first.body)
			}
		}
	}
	var refused int
	for _, e := range log.adminEvents(t) {
		if e.Outcome == "unauthenticated" {
			refused++
		}
	}
	if refused != n {
		t.Errorf("%d refusals audited for %d requests refused", refused, n)
	}
	for _, secret := range []string{token, wrong, token[:len(token)-1]} {
		if strings.Contains(log.String(), secret) {
			t.Errorf("the audit log holds %q", secret)
		}
	}
	var list struct {
		Jobs []json.RawMessage `json:"jobs"`
	}
	ans := a.do("GET", "/admin/v1/jobs", "bearer "+token, nil)
	json.Unmarshal(ans.body, &list)
	if ans.status != http.StatusOK || list.Jobs == nil || len(list.Jobs) != 0 {
		t.Errorf("with the token: %d %s, want 200 and no job", ans.status, ans.body)
	}
}

func sameHeaders(a, b http.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if strings.Join(a[k], ",") != strings.Join(b[k], ",") {
			return false
		}
	}
	return true
}

// A spec the job would refuse is refused at once, 400 with the reason,
// audited, and starts nothing: an unknown kind or field, no repository,
// a name outside the distribution grammar, a repository no encrypt rule
// covers, a reencrypt without the key or with a key id spelt otherwise
// than shroud spells it, an identity job on a keyring
// without a previous identity, a negative pace, two specs in one body.
func TestRefusesSpecsAJobWouldRefuse(t *testing.T) {
	up := shroudtest.Distribution(t)
	var log lockedBuffer
	rec, _ := keyPair(t, "ec")
	s := shroudtest.Start(t, up, shroudtest.WithPolicy(shroudtest.Rule{Pattern: "team/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{rec}},
		shroudtest.Rule{Pattern: "public/**", Action: crypto.Passthrough}))
	dir := t.TempDir()
	a := startAdmin(context.Background(), t, s.Handler, dir, admin.Options{Audit: audit.New(&log)})
	cases := map[string]string{
		"unknown kind":       `{"kind":"shred","repositories":["team/app"]}`,
		"unknown field":      `{"kind":"rewrap","repositories":["team/app"],"force":true}`,
		"no repository":      `{"kind":"rewrap","repositories":[]}`,
		"bad name":           `{"kind":"rewrap","repositories":["../../v2/_catalog"]}`,
		"twice":              `{"kind":"rewrap","repositories":["team/app","team/app"]}`,
		"no encrypt rule":    `{"kind":"rewrap","repositories":["public/app"]}`,
		"reencrypt, no key":  `{"kind":"reencrypt","repositories":["team/app"]}`,
		"key id misspelt":    `{"kind":"reencrypt","repositories":["team/app"],"key_id":"SHA256:2B1A"}`,
		"key id on a rewrap": `{"kind":"rewrap","repositories":["team/app"],"key_id":"sha256:x"}`,
		"identity":           `{"kind":"identity","repositories":["team/app"]}`,
		"negative pace":      `{"kind":"rewrap","repositories":["team/app"],"pace":"-1s"}`,
		"bad pace":           `{"kind":"rewrap","repositories":["team/app"],"pace":"soon"}`,
		"two specs":          `{"kind":"rewrap","repositories":["team/app"]} {"kind":"rewrap","repositories":["team/b"]}`,
		"not json":           `kind=rewrap`,
	}
	for name, body := range cases {
		ans := a.call("POST", "/admin/v1/jobs", body, http.StatusBadRequest)
		if !strings.Contains(string(ans.body), `"INVALID"`) {
			t.Errorf("%s: %s, want INVALID", name, ans.body)
		}
	}
	if ans := a.call("POST", "/admin/v1/jobs", cases["identity"], http.StatusBadRequest); !strings.Contains(string(ans.body), "previous identity") {
		t.Errorf("an identity job without a previous identity: %s, want the reason", ans.body)
	}
	var refused int
	for _, e := range log.adminEvents(t) {
		if e.Step == "start" && e.Outcome == "refused" && e.Actor == "token" {
			refused++
		}
	}
	if refused != len(cases)+1 {
		t.Errorf("%d refused starts audited, want %d:\n%s", refused, len(cases)+1, log.String())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("a refused start left files: %v", entries)
	}
}

// The token file: missing, empty, too short, or readable by every user is
// refused; a file of mode 0600 or 0640 gives its content, white space
// trimmed.
func TestLoadToken(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(content), 0o600)
		os.Chmod(p, mode)
		return p
	}
	for name, path := range map[string]string{
		"missing":         filepath.Join(dir, "none"),
		"empty":           write("empty", "\n", 0o600),
		"short":           write("short", "abc\n", 0o600),
		"world-readable":  write("world", token+"\n", 0o644),
		"group-writable":  write("gw", token+"\n", 0o620),
		"world-writable":  write("ww", token+"\n", 0o602),
		"a space in it":   write("space", "test admin token 0123456789abcdef", 0o600),
		"a directory":     dir,
		"world, too long": write("long", strings.Repeat("a", 5000), 0o604),
	} {
		if _, err := admin.LoadToken(path); err == nil {
			t.Errorf("%s: LoadToken passed", name)
		}
	}
	for _, mode := range []os.FileMode{0o600, 0o640, 0o400} {
		got, err := admin.LoadToken(write("ok", " "+token+"\r\n", mode))
		if err != nil || string(got) != token {
			t.Errorf("mode %04o: %q %v", mode, got, err)
		}
	}
	if _, err := admin.New(admin.Options{Handler: shroudtest.Start(t, shroudtest.GGCR(t)).Handler, Dir: dir}); err == nil {
		t.Error("admin.New without a token passed")
	}
}

package trust

import (
	"errors"
	"strings"
	"testing"

	"github.com/shroud-oci/shroud/crypto"
)

func TestListsAreParsedStrictly(t *testing.T) {
	if _, err := ParseRecipients([]byte(`{"recipients":[{"key_id":"x","scheme":"jwe","scopes":["**"],"not_afer":"2030-01-01T00:00:00Z"}]}`)); err == nil {
		t.Error("a misspelt field was accepted")
	}
	if _, err := ParseRevocations([]byte(`{"revocations":[]} {}`)); err == nil {
		t.Error("trailing data was accepted")
	}
	l, err := ParseRecipients([]byte(`{"recipients":[{"key_id":"pgp:0123456789ABCDEF0123456789ABCDEF01234567","scheme":"pgp","scopes":["team-a/**"],"not_after":"2030-01-01T00:00:00Z"}]}`))
	if err != nil || len(l.Recipients) != 1 || l.Recipients[0].NotAfter.IsZero() {
		t.Fatalf("%+v, %v", l, err)
	}
	if err := l.Recipients[0].Validate(); err != nil {
		t.Error(err)
	}
}

func TestKeyIDForms(t *testing.T) {
	good := map[string]string{
		"jwe":      "sha256:" + strings.Repeat("ab", 32),
		"pkcs7":    "sha256:" + strings.Repeat("0f", 32),
		"pgp":      "pgp:" + strings.Repeat("AB", 20),
		"pkcs11":   "pkcs11:id=%01;token=t",
		"provider": "provider:kms",
	}
	for scheme, id := range good {
		if err := ValidKeyID(scheme, id); err != nil {
			t.Errorf("%s %s: %v", scheme, id, err)
		}
	}
	bad := map[string]string{
		"jwe": "sha256:" + strings.Repeat("AB", 32), // upper case
		"pgp": "pgp:" + strings.Repeat("ab", 20),    // lower case
		"x":   "provider:kms",
	}
	for scheme, id := range bad {
		if err := ValidKeyID(scheme, id); err == nil {
			t.Errorf("%s %s accepted", scheme, id)
		}
	}
}

func TestGlobsAndNamespaces(t *testing.T) {
	for _, c := range []struct {
		glob, repo string
		want       bool
	}{
		{"team-a/**", "team-a/app", true},
		{"team-a/**", "team-a/x/y", true},
		{"team-a/**", "team-a", false},
		{"team-a/*", "team-a/x/y", false},
		{"**", "anything/at/all", true},
		{"**/app", "app", true},
		{"team-?/app", "team-b/app", true},
	} {
		g, err := compileGlob(c.glob)
		if err != nil {
			t.Fatal(err)
		}
		if got := g.MatchString(c.repo); got != c.want {
			t.Errorf("%s ~ %s = %v; want %v", c.glob, c.repo, got, c.want)
		}
	}
	for p, want := range map[string]string{"team-a/*": "team-a", "team-a/prod/*": "team-a/prod", "team-a/recipients.json": "team-a"} {
		if ns, ok := namespaceOfPattern(p); !ok || ns != want {
			t.Errorf("%s: %q %v; want %q", p, ns, ok, want)
		}
	}
	for _, p := range []string{"team-*/*", "*", "../x/*", "team-a/*.txt"} {
		if ns, ok := namespaceOfPattern(p); ok {
			t.Errorf("%s names namespace %q", p, ns)
		}
	}
}

func TestListsRefuseMalformedKeyIDs(t *testing.T) {
	id := "sha256:" + strings.Repeat("ab", 32)
	for _, bad := range []string{"", strings.TrimPrefix(id, "sha256:"), strings.ToUpper(id), "sha256:" + strings.Repeat("AB", 32)} {
		if _, err := ParseRevocations([]byte(`{"revocations":[{"key_id":"` + id + `","revoked_at":"2030-01-01T00:00:00Z","reason":"retired"},{"key_id":"` + bad + `","revoked_at":"2030-01-01T00:00:00Z","reason":"keyCompromise"}]}`)); !errors.Is(err, crypto.ErrInvalidKeyID) || !strings.Contains(err.Error(), "entry 2") {
			t.Errorf("a deny list with key_id %q: %v; want it refused", bad, err)
		}
		if _, err := ParseRecipients([]byte(`{"recipients":[{"key_id":"` + bad + `","scheme":"jwe","scopes":["**"]}]}`)); !errors.Is(err, crypto.ErrInvalidKeyID) {
			t.Errorf("an allow list with key_id %q: %v; want it refused", bad, err)
		}
		if err := (Revocation{KeyID: bad, Reason: ReasonKeyCompromise, RevokedAt: t0}).Validate(); err == nil {
			t.Errorf("Revocation{%q}.Validate passes", bad)
		}
	}
	// A well-formed id of another scheme is the entry's problem alone.
	l, err := ParseRecipients([]byte(`{"recipients":[{"key_id":"` + id + `","scheme":"pgp","scopes":["**"]}]}`))
	if err != nil || l.Recipients[0].Validate() == nil {
		t.Errorf("a sha256 id for a pgp entry: %v, %v", err, l.Recipients[0].Validate())
	}
}

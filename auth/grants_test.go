package auth

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"strings"
	"testing"
)

var (
	anon    = Principal{}
	alice   = Principal{Method: Basic, Name: "alice"}
	aliceT  = Principal{Method: Token, Name: "alice", Issuer: testIssuer, Groups: []string{"team-a", "ops"}}
	node1   = Principal{Method: Certificate, Name: "CN=node-1,O=cluster"}
	aliceCN = Principal{Method: Certificate, Name: "alice"}
)

func mustGrant(t *testing.T, s string) Grant {
	t.Helper()
	g, err := ParseGrant(s)
	if err != nil {
		t.Fatalf("ParseGrant(%q): %v", s, err)
	}
	return g
}

func TestParseGrant(t *testing.T) {
	for _, s := range []string{"user:alice", "group:team-*", "subject:CN=node-*,O=cluster", "authenticated", "anonymous",
		"user:a*b*c", "user:*@example.com", "user:with:colon", "subject:" + strings.Repeat("x", maxGrantLen-len("subject:"))} {
		if g := mustGrant(t, s); g.String() != s {
			t.Errorf("String() = %q, want %q", g, s)
		}
	}
	for _, tc := range []struct{ s, want string }{
		{"", "want user"},
		{"user:", "empty"},
		{"group:", "empty"},
		{"subject:", "empty"},
		{"user:*", "only wildcards"},
		{"subject:***", "only wildcards"},
		{"role:admin", "want user"},
		{"User:alice", "want user"},
		{"alice", "want user"},
		{"authenticated:x", "want user"},
		{" anonymous", "want user"},
		{"user:" + strings.Repeat("a", maxGrantLen), "longer than"},
		{"user:\xff", ""},
	} {
		if _, err := ParseGrant(tc.s); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseGrant(%.40q) = %v, want an error saying %q", tc.s, err, tc.want)
		}
	}
}

func TestGrantMatches(t *testing.T) {
	bob := Principal{Method: Basic, Name: "bob"}
	for _, tc := range []struct {
		grant string
		p     Principal
		want  bool
	}{
		{"user:alice", alice, true},
		{"user:alice", aliceT, true},
		{"user:alice", aliceCN, false},
		{"user:alice", anon, false},
		{"user:alice", bob, false},
		{"user:alic", alice, false},
		{"user:alice", Principal{Method: Basic, Name: "alice2"}, false},
		{"user:al*", alice, true},
		{"user:*ce", alice, true},
		{"user:a*i*e", alice, true},
		{"user:a.ice", alice, false}, // no regexp
		{"user:a.ice", Principal{Method: Basic, Name: "a.ice"}, true},
		{"user:(alice|bob)", bob, false},
		{"group:team-a", aliceT, true},
		{"group:team-*", aliceT, true},
		{"group:ops", aliceT, true},
		{"group:dev", aliceT, false},
		{"group:team-a", Principal{Method: Basic, Name: "team-a", Groups: []string{"team-a"}}, false},
		{"group:team-a", Principal{Method: Certificate, Name: "x", Groups: []string{"team-a"}}, false},
		{"subject:CN=node-*,O=cluster", node1, true},
		{"subject:CN=node-*,O=cluster", Principal{Method: Certificate, Name: "CN=node-1,O=other"}, false},
		{"subject:CN=node-*,O=cluster", Principal{Method: Certificate, Name: "CN=node-1,OU=workers,O=cluster"}, true},
		{"subject:CN=node-*,O=cluster", Principal{Method: Certificate, Name: "CN=node-1,O=cluster,C=US"}, false},
		{"subject:CN=node-*,O=cluster", Principal{Method: Basic, Name: "CN=node-1,O=cluster"}, false},
		{"subject:CN=node-*,O=cluster", Principal{Method: Token, Name: "CN=node-1,O=cluster"}, false},
		{"subject:alice", aliceCN, true},
		{"subject:alice", alice, false},
		{"anonymous", anon, true},
		{"anonymous", alice, true},
		{"anonymous", node1, true},
		{"authenticated", anon, false},
		{"authenticated", alice, true},
		{"authenticated", aliceT, true},
		{"authenticated", node1, true},
		// "*" is any run of characters, a newline among them.
		{"user:al*", Principal{Method: Token, Name: "al\nice"}, true},
		{"user:*", alice, false}, // refused at parse; the zero Grant matches nothing
	} {
		g, err := ParseGrant(tc.grant)
		if err != nil {
			g = Grant{}
		}
		if got := g.Matches(tc.p); got != tc.want {
			t.Errorf("%q matches %+v = %v, want %v", tc.grant, tc.p, got, tc.want)
		}
	}
}

// A certificate subject is matched as crypto/x509 prints it, with
// escaped commas: a subject wildcard cannot be satisfied by a CN that
// holds ",O=cluster" itself (a CA that lets clients choose their CN
// would otherwise hand out any organization).
func TestGrantSubjectEscapes(t *testing.T) {
	g := mustGrant(t, "subject:CN=node-*,O=cluster")
	cn := asn1.ObjectIdentifier{2, 5, 4, 3}
	name := pkix.Name{ExtraNames: []pkix.AttributeTypeAndValue{{Type: cn, Value: "node-1,O=cluster"}}}
	subject := name.String()
	if subject != `CN=node-1\,O=cluster` {
		t.Fatalf("subject %q", subject)
	}
	if g.Matches(Principal{Method: Certificate, Name: subject}) {
		t.Errorf("%q matches %q", g, subject)
	}
	// An escaped comma inside the wildcard's run is still a character it matches.
	if !g.Matches(Principal{Method: Certificate, Name: `CN=node-1\,a,O=cluster`}) {
		t.Error("an escaped comma within the wildcard's run does not match")
	}
	// A literal escaped comma in a grant matches it.
	if !mustGrant(t, `subject:CN=a\,b,O=*`).Matches(Principal{Method: Certificate, Name: `CN=a\,b,O=x`}) {
		t.Error("a grant's literal escape does not match")
	}
}

func TestAccess(t *testing.T) {
	a, err := NewAccess([]RuleGrants{
		{},                               // 0: neither list
		{Pull: []string{"group:team-a"}}, // 1: only pull
		{Push: []string{"user:ci"}},      // 2: only push
		{Pull: []string{"anonymous"}, Push: []string{"authenticated"}},                // 3
		{Pull: []string{"subject:CN=node-*,O=cluster"}, Push: []string{"user:alice"}}, // 4
		{Pull: []string{}, Push: []string{}},                                          // 5: both set, empty: nobody
		{Push: []string{}},                                                            // 6: push set to nobody, pull unset
	})
	if err != nil {
		t.Fatal(err)
	}
	ci := Principal{Method: Basic, Name: "ci"}
	for _, tc := range []struct {
		rule int
		p    Principal
		act  Action
		want bool
	}{
		{0, alice, Pull, true},
		{0, alice, Push, true},
		{0, node1, Push, true},
		{0, anon, Pull, false},
		{0, anon, Push, false},
		{1, aliceT, Pull, true},
		{1, aliceT, Push, false},
		{1, alice, Pull, false},
		{2, ci, Push, true},
		{2, ci, Pull, true}, // push implies pull
		{2, alice, Pull, false},
		{3, anon, Pull, true},
		{3, anon, Push, false},
		{3, alice, Push, true},
		{4, node1, Pull, true},
		{4, node1, Push, false},
		{4, alice, Pull, true},
		{4, alice, Push, true},
		{4, aliceCN, Pull, false},
		{5, alice, Pull, false},
		{5, alice, Push, false},
		{6, alice, Pull, false},
		{6, alice, Push, false},
		{7, alice, Pull, false},
		{-1, alice, Pull, false},
		{1 << 30, alice, Push, false},
	} {
		if got := a.Allows(tc.rule, tc.p, tc.act); got != tc.want {
			t.Errorf("rule %d, %v, %v: %v, want %v", tc.rule, tc.p, tc.act, got, tc.want)
		}
	}
	var none *Access
	if none, err = NewAccess(nil); err != nil || none.Allows(0, alice, Pull) || none.AnyAnonymous() {
		t.Errorf("no rules: %v", err)
	}
}

func TestNewAccessErrors(t *testing.T) {
	_, err := NewAccess([]RuleGrants{{}, {Pull: []string{"user:a"}, Push: []string{"user:b", "role:x"}}})
	if err == nil || !strings.Contains(err.Error(), "policy rule 1") || !strings.Contains(err.Error(), "push") {
		t.Errorf("err = %v", err)
	}
	if _, err := NewAccess([]RuleGrants{{Pull: []string{""}}}); err == nil || !strings.Contains(err.Error(), "pull") {
		t.Errorf("err = %v", err)
	}
}

func TestAnyAnonymous(t *testing.T) {
	for _, tc := range []struct {
		rules []RuleGrants
		want  bool
	}{
		{nil, false},
		{[]RuleGrants{{}}, false},
		{[]RuleGrants{{Pull: []string{"authenticated"}}}, false},
		{[]RuleGrants{{}, {Pull: []string{"user:a", "anonymous"}}}, true},
		{[]RuleGrants{{Push: []string{"anonymous"}}}, true},
	} {
		a, err := NewAccess(tc.rules)
		if err != nil {
			t.Fatal(err)
		}
		if got := a.AnyAnonymous(); got != tc.want {
			t.Errorf("%+v: %v, want %v", tc.rules, got, tc.want)
		}
	}
}

func TestActionString(t *testing.T) {
	if Pull.String() != "pull" || Push.String() != "push" {
		t.Error(Pull, Push)
	}
}

func TestPrincipal(t *testing.T) {
	if !anon.IsAnonymous() || alice.IsAnonymous() {
		t.Error("IsAnonymous")
	}
	if anon.String() != "anonymous" || alice.String() != "user alice" || node1.String() != "certificate CN=node-1,O=cluster" {
		t.Error(anon, alice, node1)
	}
	// The same name by two methods or issuers is two principals.
	other := aliceT
	other.Issuer = "https://other.example"
	if alice.ID() == aliceT.ID() || aliceT.ID() == other.ID() || alice.ID() == aliceCN.ID() {
		t.Error("IDs collide")
	}
}

package repoglob

import "testing"

// TestMayOverlap: false only when neither literal prefix begins the
// other (the globs surely match no common name).
func TestMayOverlap(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"team-a/app", "team-a/**", true},
		{"team-*/app", "team-a/**", true},
		{"**", "team-a/**", true},
		{"*/app", "team-a/**", true},
		{"team-ab/*", "team-a/**", false},
		{"team-b/*", "team-a/**", false},
		{"other/**", "team-a/secret/**", false},
	} {
		if got := MayOverlap(c.a, c.b); got != c.want {
			t.Errorf("MayOverlap(%q, %q) = %v, want %v", c.a, c.b, got, c.want)
		}
		if got := MayOverlap(c.b, c.a); got != c.want {
			t.Errorf("MayOverlap(%q, %q) = %v, want %v", c.b, c.a, got, c.want)
		}
	}
	if IsGlob("team-a/app") || !IsGlob("team-?/app") || !IsGlob("**") {
		t.Error("IsGlob")
	}
}

package crypto

import (
	"strings"
	"testing"
)

// Wrapped keys and public options are written by the hostile upstream:
// validating and parsing them never panics, and a layer ValidateEncrypted
// accepts has public options that parse with a full-size HMAC.
func FuzzValidateEncrypted(f *testing.F) {
	pub := `eyJjaXBoZXIiOiJBRVNfMjU2X0NUUl9ITUFDX1NIQTI1NiIsImhtYWMiOiJBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBPSIsImNpcGhlcm9wdGlvbnMiOnt9fQ==`
	f.Add("jwe", "eA==", pub)
	f.Add("pgp", "!!!", pub)
	f.Add("pkcs7", strings.Repeat("eA==,", 100), pub)
	f.Add("provider.x", "eyJ9", "e30=")
	f.Fuzz(func(t *testing.T, scheme, keys, pubopts string) {
		ann := map[string]string{AnnotationKeys + scheme: keys, AnnotationPubOpts: pubopts}
		if ValidateEncrypted(ann) != nil {
			return
		}
		p, err := ParsePublicOptions(ann)
		if err != nil || len(p.HMAC) != HMACSize {
			t.Fatalf("accepted a layer whose public options do not parse: %v", err)
		}
	})
}

// Policy globs come from the operator's config: compiling never panics
// and a compiled glob matches itself when it has no wildcard.
func FuzzGlob(f *testing.F) {
	for _, g := range []string{"**", "team-a/**", "a/*/b", "?", "**/x", "[", "a\\b"} {
		f.Add(g)
	}
	f.Fuzz(func(t *testing.T, g string) {
		re, err := globRegexp(g)
		if err != nil {
			return
		}
		if !strings.ContainsAny(g, "*?") && !re.MatchString(g) {
			t.Fatalf("glob %q does not match itself", g)
		}
	})
}

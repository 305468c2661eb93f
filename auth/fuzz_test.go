package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"golang.org/x/crypto/bcrypt"
)

// The fuzz keys are fixed, so that a corpus entry means the same in
// every worker and every run (a token stored by one run verifies in the
// next, until it expires).
const (
	fuzzECKey = "1uH2LMk9Jve80B+gK08LxxPn2SUhIUnnaiXUTjEt/eI="
	fuzzEdKey = "cNyPDZlJl+pRllL1uAtJQFn7NZhxVAzectD8Rd4UtTY="
)

func fuzzKeys(t testing.TB) (*ecdsa.PrivateKey, ed25519.PrivateKey) {
	t.Helper()
	d, _ := base64.StdEncoding.DecodeString(fuzzECKey)
	ec, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d)
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := base64.StdEncoding.DecodeString(fuzzEdKey)
	return ec, ed25519.NewKeyFromSeed(seed)
}

func FuzzParseHtpasswd(f *testing.F) {
	good, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		f.Fatal(err)
	}
	h := string(good)
	for _, s := range []string{
		"alice:" + h + "\n",
		"# comment\n\nalice:" + h + "\r\nbob:" + strings.Replace(h, "$2a$", "$2y$", 1) + "\n",
		"alice:" + h + "\nalice:" + h + "\n",
		"bob:$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/\n",
		"bob:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\n",
		"bob:plain-password\n",
		"bob:rl0uE2yNQ8cMU\n",
		":" + h,
		"al ice:" + h,
		"alice",
		"alice:" + h[:30],
		"alice:$2a$99$" + h[7:],
		"alice:$3a$04$" + h[7:],
		"alice:" + h + strings.Repeat("x", 70<<10),
		"",
		"\x00:\x00",
	} {
		f.Add([]byte(s))
	}
	lineRE := regexp.MustCompile(`^line (\d+)`)
	f.Fuzz(func(t *testing.T, b []byte) {
		users, err := ParseHtpasswd(b)
		if err == nil {
			for u, hash := range users {
				if u == "" || strings.ContainsAny(u, " \t") {
					t.Fatalf("user %q accepted", u)
				}
				if _, err := bcrypt.Cost(hash); err != nil {
					t.Fatalf("user %q: a hash bcrypt does not read: %v", u, err)
				}
			}
			return
		}
		// The error never holds the hash of the line it names.
		m := lineRE.FindStringSubmatch(err.Error())
		if m == nil {
			return
		}
		n, _ := strconv.Atoi(m[1])
		lines := strings.Split(string(b), "\n")
		if n < 1 || n > len(lines) {
			t.Fatalf("error %q names a line the input does not have", err)
		}
		user, hash, ok := strings.Cut(strings.TrimSpace(lines[n-1]), ":")
		// (The user name is shown, quoted: a hash within it, or within its
		// escapes, is the name's.)
		if ok && len(hash) >= 8 && !strings.Contains(strconv.Quote(user), hash) && strings.Contains(err.Error(), hash) {
			t.Fatalf("error %q holds the hash %q", err, hash)
		}
	})
}

func FuzzParseGrant(f *testing.F) {
	for _, s := range []string{
		"user:alice", "group:team-*", "subject:CN=node-*,O=cluster", "authenticated", "anonymous",
		"user:", "user:*", "subject:***", "role:admin", "alice", "", "user:a*b*c", `subject:CN=a\,b*`,
		"user:(a|b)", "user:.*", "user:\xff", "user:" + strings.Repeat("*a", 600),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		g, err := ParseGrant(s)
		if err != nil {
			return
		}
		if g.String() != s {
			t.Fatalf("String() = %q, want %q", g, s)
		}
		kind, name, _ := strings.Cut(s, ":")
		if kind == "authenticated" || kind == "anonymous" {
			if g.Matches(Principal{}) != (kind == "anonymous") {
				t.Fatalf("%q and the anonymous principal", s)
			}
			return
		}
		// The name with each * taken as nothing matches; with another
		// method it does not.
		literal := strings.ReplaceAll(name, "*", "")
		method := map[string]Method{"user": Basic, "group": Token, "subject": Certificate}[kind]
		p := Principal{Method: method, Name: literal, Groups: []string{literal}}
		if !g.Matches(p) {
			t.Fatalf("%q does not match %q", s, literal)
		}
		for _, m := range []Method{Anonymous, Basic, Token, Certificate} {
			ok := g.Matches(Principal{Method: m, Name: literal, Groups: []string{literal}})
			want := m == method || (kind == "user" && m == Token)
			if ok != want {
				t.Fatalf("%q matches method %q: %v", s, m, ok)
			}
		}
	})
}

func FuzzParseJWKS(f *testing.F) {
	ec, ed := fuzzKeys(f)
	pub := func(ks ...jose.JSONWebKey) string {
		b, err := json.Marshal(jose.JSONWebKeySet{Keys: ks})
		if err != nil {
			f.Fatal(err)
		}
		return string(b)
	}
	for _, s := range []string{
		pub(jose.JSONWebKey{Key: ec.Public(), KeyID: "ec", Algorithm: "ES256", Use: "sig"}),
		pub(jose.JSONWebKey{Key: ed.Public(), KeyID: "ed"}, jose.JSONWebKey{Key: ec.Public(), KeyID: "ec"}),
		pub(jose.JSONWebKey{Key: ec, KeyID: "private"}),
		pub(jose.JSONWebKey{Key: ed, KeyID: "private"}),
		pub(jose.JSONWebKey{Key: []byte("0123456789abcdef"), KeyID: "oct"}),
		pub(jose.JSONWebKey{Key: ec.Public(), KeyID: "enc", Use: "enc"}),
		`{"keys":[]}`, `{"keys":null}`, `{}`, `[]`, `{"keys":[{"kty":"XYZ"}]}`,
		`{"keys":[{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}]}`,
		`{"keys":[{"kty":"RSA","n":"AQ","e":"AQ"}]}`,
		`{"keys":[{"kty":"OKP","crv":"Ed25519","x":""}]}`,
		`{"keys":[{"kty":"EC","crv":"P-256","x5c":["AAAA"]}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		set, err := ParseJWKS(b)
		if err != nil {
			return
		}
		if len(set.Keys) == 0 || len(set.Keys) > maxJWKSKeys {
			t.Fatalf("%d keys accepted", len(set.Keys))
		}
		for _, k := range set.Keys {
			if !k.IsPublic() || !k.Valid() || (k.Use != "" && k.Use != "sig") {
				t.Fatalf("key %+v accepted", k)
			}
		}
	})
}

// FuzzVerifyJWT feeds arbitrary tokens to a verifier over a fixed JWKS:
// it must not panic, and what it accepts must carry a signature the
// set's keys make (checked here with crypto/ecdsa and crypto/ed25519
// directly, not through go-jose).
func FuzzVerifyJWT(f *testing.F) {
	ec, ed := fuzzKeys(f)
	path := filepath.Join(f.TempDir(), "jwks.json")
	set, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		{Key: ec.Public(), KeyID: "ec", Algorithm: "ES256", Use: "sig"},
		{Key: ed.Public(), KeyID: "ed"},
	}})
	if err != nil {
		f.Fatal(err)
	}
	if err := os.WriteFile(path, set, 0o600); err != nil {
		f.Fatal(err)
	}
	v, err := NewJWTVerifier(context.Background(), JWTConfig{Issuer: testIssuer, Audience: testAudience, JWKS: path, GroupsClaim: "groups"})
	if err != nil {
		f.Fatal(err)
	}
	signWith := func(alg jose.SignatureAlgorithm, key any, kid string, c map[string]any) string {
		opts := (&jose.SignerOptions{}).WithType("JWT")
		if kid != "" {
			opts = opts.WithHeader("kid", kid)
		}
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
		if err != nil {
			f.Fatal(err)
		}
		tok, err := jwt.Signed(s).Claims(c).Serialize()
		if err != nil {
			f.Fatal(err)
		}
		return tok
	}
	valid := signWith(jose.ES256, ec, "ec", claims())
	validEd := signWith(jose.EdDSA, ed, "ed", claims())
	parts := strings.Split(valid, ".")
	expired := claims()
	expired["exp"] = time.Now().Add(-time.Hour).Unix()
	noExp := claims()
	delete(noExp, "exp")
	wrongAud := claims()
	wrongAud["aud"] = "other"
	groupsString := claims()
	groupsString["groups"] = "team-a"
	pubJWK, _ := json.Marshal(jose.JSONWebKey{Key: ec.Public(), KeyID: "ec"})
	seeds := []string{
		valid, validEd,
		signWith(jose.EdDSA, ed, "", groupsString),
		signWith(jose.ES256, ec, "ec", expired),
		signWith(jose.ES256, ec, "ec", noExp),
		signWith(jose.ES256, ec, "ec", wrongAud),
		signWith(jose.HS256, pubJWK, "ec", claims()),
		signWith(jose.HS256, []byte(set), "ec", claims()),
		b64(`{"alg":"none","kid":"ec"}`) + "." + parts[1] + ".",
		b64(`{"alg":"ES256","kid":"ed"}`) + "." + parts[1] + "." + parts[2],
		b64(`{"alg":"EdDSA","kid":"ec"}`) + "." + parts[1] + "." + parts[2],
		b64(`{"alg":"ES256","kid":"ec","crit":["b64"],"b64":false}`) + "." + parts[1] + "." + parts[2],
		parts[0] + "." + parts[1] + "." + parts[2][:len(parts[2])-2] + "AA",
		parts[0] + "." + parts[1] + "x." + parts[2],
		parts[0] + "." + parts[1],
		`{"payload":"` + parts[1] + `","signatures":[{"protected":"` + parts[0] + `","signature":"` + parts[2] + `"}]}`,
		"", ".", "..", "...", "a.b.c", strings.Repeat("A", maxTokenSize+1),
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		c, _, err := v.Verify(context.Background(), tok)
		if err != nil {
			if c.Username != "" {
				t.Fatalf("refused with claims %+v", c)
			}
			return
		}
		if c.Username == "" || c.Issuer != testIssuer {
			t.Fatalf("accepted claims %+v", c)
		}
		p := strings.Split(tok, ".")
		if len(p) != 3 {
			t.Fatalf("accepted a token of %d parts", len(p))
		}
		sig, err := base64.RawURLEncoding.DecodeString(p[2])
		if err != nil {
			t.Fatalf("accepted a signature that does not decode: %v", err)
		}
		input := []byte(p[0] + "." + p[1])
		sum := sha256.Sum256(input)
		byEC := len(sig) == 64 && ecdsa.Verify(&ec.PublicKey, sum[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:]))
		byEd := ed25519.Verify(ed.Public().(ed25519.PublicKey), input, sig)
		if !byEC && !byEd {
			t.Fatalf("accepted a token the set's keys did not sign: %q", tok)
		}
	})
}

package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

const (
	testIssuer   = "https://idp.example"
	testAudience = "shroud"
)

// testKey is a signing key with its kid.
type testKey struct {
	kid  string
	alg  jose.SignatureAlgorithm
	priv crypto.Signer
}

var (
	keyOnce  sync.Once
	rsaKey   *rsa.PrivateKey
	p256Key  *ecdsa.PrivateKey
	p384Key  *ecdsa.PrivateKey
	p521Key  *ecdsa.PrivateKey
	edKey    ed25519.PrivateKey
	otherKey *ecdsa.PrivateKey
)

// keys generates the test keys once (RSA generation is slow under -race).
func keys(t testing.TB) {
	t.Helper()
	keyOnce.Do(func() {
		var err error
		must := func(e error) {
			if e != nil && err == nil {
				err = e
			}
		}
		rsaKey, err = rsa.GenerateKey(rand.Reader, 2048)
		var e error
		p256Key, e = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		must(e)
		p384Key, e = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		must(e)
		p521Key, e = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
		must(e)
		_, edKey, e = ed25519.GenerateKey(rand.Reader)
		must(e)
		otherKey, e = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		must(e)
		if err != nil {
			panic(err)
		}
	})
}

func ecKey(t testing.TB) testKey {
	keys(t)
	return testKey{kid: "ec-1", alg: jose.ES256, priv: p256Key}
}

// jwk is k's public half as a JWK; alg may be empty.
func (k testKey) jwk(alg jose.SignatureAlgorithm) jose.JSONWebKey {
	return jose.JSONWebKey{Key: k.priv.Public(), KeyID: k.kid, Algorithm: string(alg), Use: "sig"}
}

func jwksJSON(t testing.TB, ks ...jose.JSONWebKey) []byte {
	t.Helper()
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: ks})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// claims are a valid token's claims, for changing.
func claims() map[string]any {
	now := time.Now()
	return map[string]any{
		"iss":    testIssuer,
		"aud":    []string{"other", testAudience},
		"sub":    "alice",
		"exp":    now.Add(time.Hour).Unix(),
		"nbf":    now.Add(-time.Minute).Unix(),
		"iat":    now.Add(-time.Minute).Unix(),
		"groups": []string{"team-a", "team-b"},
	}
}

// sign signs c with k (kid in the header when k.kid is set).
func sign(t testing.TB, k testKey, c map[string]any) string {
	t.Helper()
	opts := &jose.SignerOptions{}
	opts.WithType("JWT")
	if k.kid != "" {
		opts.WithHeader(jose.HeaderKey("kid"), k.kid)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: k.alg, Key: k.priv}, opts)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(s).Claims(c).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func writeFile(t testing.TB, path string, b []byte, mtime time.Time) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

// fileVerifier is a verifier over a JWKS file holding ks.
func fileVerifier(t testing.TB, ks ...jose.JSONWebKey) (*JWTVerifier, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "jwks.json")
	writeFile(t, path, jwksJSON(t, ks...), time.Now().Add(-time.Hour))
	v, err := NewJWTVerifier(context.Background(), JWTConfig{Issuer: testIssuer, Audience: testAudience, JWKS: path})
	if err != nil {
		t.Fatal(err)
	}
	return v, path
}

// expire makes the verifier's set due for a refresh.
func expire(v *JWTVerifier, ago time.Duration) {
	v.mu.Lock()
	v.fetched = time.Now().Add(-ago)
	v.mu.Unlock()
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func payload(t testing.TB, c map[string]any) string {
	t.Helper()
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func TestJWTValid(t *testing.T) {
	k := ecKey(t)
	v, _ := fileVerifier(t, k.jwk(jose.ES256))
	c, refreshErr, err := v.Verify(context.Background(), sign(t, k, claims()))
	if err != nil || refreshErr != nil {
		t.Fatalf("Verify: %v, %v", refreshErr, err)
	}
	if c.Username != "alice" || c.Issuer != testIssuer || strings.Join(c.Groups, ",") != "team-a,team-b" || c.Expiry.IsZero() {
		t.Errorf("claims = %+v", c)
	}
	// Within the leeway on exp and nbf.
	cl := claims()
	cl["exp"] = time.Now().Add(-10 * time.Second).Unix()
	cl["nbf"] = time.Now().Add(10 * time.Second).Unix()
	cl["iat"] = time.Now().Add(10 * time.Second).Unix()
	if _, _, err := v.Verify(context.Background(), sign(t, k, cl)); err != nil {
		t.Errorf("within the leeway: %v", err)
	}
	// A string audience; no kid with a set of one key.
	cl = claims()
	cl["aud"] = testAudience
	if _, _, err := v.Verify(context.Background(), sign(t, testKey{alg: k.alg, priv: k.priv}, cl)); err != nil {
		t.Errorf("string aud, no kid: %v", err)
	}
}

func TestJWTAlgorithms(t *testing.T) {
	keys(t)
	for _, k := range []testKey{
		{"rs", jose.RS256, rsaKey},
		{"rs", jose.RS512, rsaKey},
		{"rs", jose.PS256, rsaKey},
		{"es256", jose.ES256, p256Key},
		{"es384", jose.ES384, p384Key},
		{"es512", jose.ES512, p521Key},
		{"ed", jose.EdDSA, edKey},
	} {
		t.Run(string(k.alg), func(t *testing.T) {
			for _, alg := range []jose.SignatureAlgorithm{"", k.alg} {
				v, _ := fileVerifier(t, k.jwk(alg))
				c, _, err := v.Verify(context.Background(), sign(t, k, claims()))
				if err != nil || c.Username != "alice" {
					t.Errorf("JWK alg %q: %v", alg, err)
				}
			}
		})
	}
}

// Each of these tokens must be refused.
func TestJWTAttacks(t *testing.T) {
	k := ecKey(t)
	keys(t)
	rsaK := testKey{kid: "rsa-1", alg: jose.RS256, priv: rsaKey}
	v, _ := fileVerifier(t, k.jwk(""), rsaK.jwk(jose.RS256), testKey{kid: "p384", priv: p384Key}.jwk(""))
	ctx := context.Background()
	valid := sign(t, k, claims())
	parts := strings.Split(valid, ".")

	// Key confusion: HS256 with the RSA public key's bytes as the secret.
	pubDER, err := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	rsaJWK, _ := json.Marshal(rsaK.jwk(""))
	hmacWith := func(secret []byte) string {
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: secret},
			(&jose.SignerOptions{}).WithHeader("kid", "rsa-1"))
		if err != nil {
			t.Fatal(err)
		}
		tok, err := jwt.Signed(s).Claims(claims()).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	// Two signatures: JSON serialization by a multi-signer.
	ms, err := jose.NewMultiSigner([]jose.SigningKey{
		{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: p256Key, KeyID: "ec-1"}},
		{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: rsaKey, KeyID: "rsa-1"}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	pl, _ := json.Marshal(claims())
	jws, err := ms.Sign(pl)
	if err != nil {
		t.Fatal(err)
	}
	twoSigs := jws.FullSerialize()

	with := func(f func(c map[string]any)) string {
		c := claims()
		f(c)
		return sign(t, k, c)
	}
	for _, tc := range []struct {
		name, token, want string
	}{
		{"alg none", b64(`{"alg":"none","kid":"ec-1"}`) + "." + parts[1] + ".", "allowed algorithm"},
		{"alg none no kid", b64(`{"alg":"none"}`) + "." + parts[1] + ".", "allowed algorithm"},
		{"alg None", b64(`{"alg":"None","kid":"ec-1"}`) + "." + parts[1] + ".", "allowed algorithm"},
		{"HS256 with the public key DER", hmacWith(pubDER), "allowed algorithm"},
		{"HS256 with the public JWK", hmacWith(rsaJWK), "allowed algorithm"},
		{"signed by a key not in the set, same kid", sign(t, testKey{kid: "ec-1", alg: jose.ES256, priv: otherKey}, claims()), "does not verify"},
		{"signed by a key not in the set, unknown kid", sign(t, testKey{kid: "nope", alg: jose.ES256, priv: otherKey}, claims()), "not in the key set"},
		{"no kid, several keys", sign(t, testKey{alg: jose.ES256, priv: p256Key}, claims()), "not in the key set"},
		{"signature of another token", parts[0] + "." + payload(t, map[string]any{"iss": testIssuer, "aud": testAudience, "sub": "root", "exp": time.Now().Add(time.Hour).Unix()}) + "." + parts[2], "does not verify"},
		{"signature stripped", parts[0] + "." + parts[1] + ".", "does not verify"},
		{"ES256 header over a P-384 key", b64(`{"alg":"ES256","kid":"p384"}`) + "." + parts[1] + "." + parts[2], "does not verify"},
		{"wrong issuer", with(func(c map[string]any) { c["iss"] = "https://evil.example" }), "not valid here"},
		{"no issuer", with(func(c map[string]any) { delete(c, "iss") }), "not valid here"},
		{"wrong audience", with(func(c map[string]any) { c["aud"] = []string{"registry", "other"} }), "not valid here"},
		{"no audience", with(func(c map[string]any) { delete(c, "aud") }), "not valid here"},
		{"expired beyond the leeway", with(func(c map[string]any) { c["exp"] = time.Now().Add(-2 * time.Minute).Unix() }), "not valid here"},
		{"not yet valid", with(func(c map[string]any) { c["nbf"] = time.Now().Add(2 * time.Minute).Unix() }), "not valid here"},
		{"issued in the future", with(func(c map[string]any) { c["iat"] = time.Now().Add(2 * time.Minute).Unix() }), "not valid here"},
		{"no exp", with(func(c map[string]any) { delete(c, "exp") }), "no expiry"},
		{"no username", with(func(c map[string]any) { delete(c, "sub") }), `no "sub" claim`},
		{"empty username", with(func(c map[string]any) { c["sub"] = "" }), `no "sub" claim`},
		{"username not a string", with(func(c map[string]any) { c["sub"] = 42 }), ""},
		{"a part with unused base64 bits set (the text is not what was signed)", nonCanonical(t, func(pad string) string {
			return with(func(c map[string]any) { c["pad"] = pad })
		}), "canonical base64url"},
		{"a newline inside a part (base64 and go-jose skip it: the text is not what was signed)", parts[0][:5] + "\n" + parts[0][5:] + "." + parts[1] + "." + parts[2], "canonical base64url"},
		{"a space inside the signature", parts[0] + "." + parts[1] + "." + parts[2][:7] + " " + parts[2][7:], ""},
		{"two signatures", twoSigs, "allowed algorithm"},
		{"not a JWT", "hello", "allowed algorithm"},
		{"empty", "", "allowed algorithm"},
		{"too large", with(func(c map[string]any) { c["pad"] = strings.Repeat("x", maxTokenSize) }), "too large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _, err := v.Verify(ctx, tc.token)
			if err == nil {
				t.Fatalf("verified: %+v", c)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to say %q", err, tc.want)
			}
			if tc.token != "" && strings.Contains(err.Error(), tc.token) {
				t.Errorf("error %q holds the token", err)
			}
			if c.Username != "" {
				t.Errorf("a refused token gave claims %+v", c)
			}
		})
	}
}

// A JWK whose alg differs from the token's header is refused, though the
// key would verify the signature (RS256 key, PS256 token).
func TestJWTKeyAlgMismatch(t *testing.T) {
	keys(t)
	k := testKey{kid: "rsa", alg: jose.PS256, priv: rsaKey}
	v, _ := fileVerifier(t, k.jwk(jose.RS256))
	_, _, err := v.Verify(context.Background(), sign(t, k, claims()))
	if err == nil || !strings.Contains(err.Error(), "its key is for RS256") {
		t.Errorf("err = %v", err)
	}
}

func TestJWTUsernameAndGroupsClaims(t *testing.T) {
	k := ecKey(t)
	path := filepath.Join(t.TempDir(), "jwks.json")
	writeFile(t, path, jwksJSON(t, k.jwk("")), time.Now())
	v, err := NewJWTVerifier(context.Background(), JWTConfig{Issuer: testIssuer, Audience: testAudience, JWKS: path,
		UsernameClaim: "preferred_username", GroupsClaim: "roles"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		roles  any
		groups string
	}{
		{"array", []any{"admin", "dev"}, "admin,dev"},
		{"string", "admin", "admin"},
		{"array with non-strings", []any{"admin", 7, map[string]any{"x": 1}, "dev"}, "admin,dev"},
		{"number", 7, ""},
		{"absent", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := claims()
			c["preferred_username"] = "bob"
			if tc.roles != nil {
				c["roles"] = tc.roles
			}
			got, _, err := v.Verify(context.Background(), sign(t, k, c))
			if err != nil {
				t.Fatal(err)
			}
			if got.Username != "bob" || strings.Join(got.Groups, ",") != tc.groups {
				t.Errorf("claims = %+v, want groups %q", got, tc.groups)
			}
		})
	}
	c := claims() // sub but no preferred_username
	if _, _, err := v.Verify(context.Background(), sign(t, k, c)); err == nil || !strings.Contains(err.Error(), "preferred_username") {
		t.Errorf("no username claim: %v", err)
	}
}

func TestParseJWKS(t *testing.T) {
	k := ecKey(t)
	keys(t)
	privJWK := func(key any) []byte {
		return jwksJSON(t, jose.JSONWebKey{Key: key, KeyID: "priv"})
	}
	many := make([]jose.JSONWebKey, maxJWKSKeys+1)
	for i := range many {
		many[i] = k.jwk("")
	}
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"EC private key", privJWK(p256Key), "public key"},
		{"RSA private key", privJWK(rsaKey), "public key"},
		{"Ed25519 private key", privJWK(edKey), "public key"},
		{"symmetric key", privJWK([]byte("0123456789abcdef0123456789abcdef")), "public key"},
		{"use enc", jwksJSON(t, jose.JSONWebKey{Key: k.priv.Public(), KeyID: "e", Use: "enc"}), `use "enc"`},
		{"no keys", []byte(`{"keys":[]}`), "no keys"},
		{"not JSON", []byte(`{"keys":`), "not a JWKS"},
		{"unknown kty", []byte(`{"keys":[{"kty":"XYZ"}]}`), "not a JWKS"},
		{"too many keys", jwksJSON(t, many...), "more than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseJWKS(tc.b)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
	// A private key in the file stops the verifier at construction.
	path := filepath.Join(t.TempDir(), "jwks.json")
	writeFile(t, path, privJWK(p256Key), time.Now())
	if _, err := NewJWTVerifier(context.Background(), JWTConfig{Issuer: testIssuer, Audience: testAudience, JWKS: path}); err == nil {
		t.Error("a JWKS holding a private key loaded")
	}
}

func TestNewJWTVerifierErrors(t *testing.T) {
	ctx := context.Background()
	for _, cfg := range []JWTConfig{
		{Audience: testAudience, JWKS: "x"},
		{Issuer: testIssuer, JWKS: "x"},
		{Issuer: testIssuer, Audience: testAudience},
		{Issuer: testIssuer, Audience: testAudience, JWKS: filepath.Join(t.TempDir(), "missing.json")},
		{Issuer: testIssuer, Audience: testAudience, JWKS: "http://idp.example/jwks"},
		{Issuer: testIssuer, Audience: testAudience, JWKS: "http://10.0.0.1/jwks"},
		{Issuer: testIssuer, Audience: testAudience, JWKS: "http://localhost.idp.example/jwks"},
		{Issuer: testIssuer, Audience: testAudience, JWKS: "ftp://127.0.0.1/jwks"},
	} {
		if _, err := NewJWTVerifier(ctx, cfg); err == nil {
			t.Errorf("%+v: constructed", cfg)
		}
	}
}

// jwksServer serves a JWKS that the test changes, or a failure.
type jwksServer struct {
	mu     sync.Mutex
	body   []byte
	status int
	hits   int
}

func (s *jwksServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hits++
	if s.status != 0 {
		w.WriteHeader(s.status)
		return
	}
	w.Write(s.body)
}

func (s *jwksServer) set(body []byte, status int) {
	s.mu.Lock()
	s.body, s.status = body, status
	s.mu.Unlock()
}

func TestJWTURL(t *testing.T) {
	k1 := ecKey(t)
	keys(t)
	k2 := testKey{kid: "ed-2", alg: jose.EdDSA, priv: edKey}
	js := &jwksServer{body: jwksJSON(t, k1.jwk(""))}
	srv := httptest.NewServer(js)
	defer srv.Close()
	if !strings.HasPrefix(srv.URL, "http://127.0.0.1:") {
		t.Fatalf("server at %s", srv.URL)
	}
	ctx := context.Background()
	v, err := NewJWTVerifier(ctx, JWTConfig{Issuer: testIssuer, Audience: testAudience, JWKS: srv.URL + "/jwks"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := v.Verify(ctx, sign(t, k1, claims())); err != nil {
		t.Fatal(err)
	}

	// Rotation: k2 appears. A token naming it right after a fetch is
	// refused without a fetch (no fetch storm from unknown kids) ...
	js.set(jwksJSON(t, k2.jwk("")), 0)
	hits := js.hits
	if _, _, err := v.Verify(ctx, sign(t, k2, claims())); err == nil {
		t.Error("k2 verified before the set was fetched again")
	}
	if js.hits != hits {
		t.Error("an unknown kid fetched the set within unknownKidRefresh")
	}
	// ... and once unknownKidRefresh has passed, it fetches the set.
	expire(v, unknownKidRefresh+time.Second)
	if _, refreshErr, err := v.Verify(ctx, sign(t, k2, claims())); err != nil || refreshErr != nil {
		t.Fatalf("k2 after the rotation: %v, %v", refreshErr, err)
	}
	if _, _, err := v.Verify(ctx, sign(t, k1, claims())); err == nil {
		t.Error("k1 verifies after it left the set")
	}

	// A failed refresh keeps the set and is reported.
	js.set(nil, http.StatusInternalServerError)
	expire(v, 6*time.Minute)
	_, refreshErr, err := v.Verify(ctx, sign(t, k2, claims()))
	if err != nil || refreshErr == nil || !strings.Contains(refreshErr.Error(), "500") {
		t.Errorf("failed refresh: %v, %v", refreshErr, err)
	}
	// Not tried again on the next request.
	hits = js.hits
	if _, refreshErr, _ := v.Verify(ctx, sign(t, k2, claims())); refreshErr != nil || js.hits != hits {
		t.Error("a failed refresh is tried again on the next request")
	}
	// A set that does not parse is a failure too.
	js.set([]byte(`{"keys":[]}`), 0)
	expire(v, 6*time.Minute)
	if _, refreshErr, err := v.Verify(ctx, sign(t, k2, claims())); err != nil || refreshErr == nil {
		t.Errorf("empty set: %v, %v", refreshErr, err)
	}
	// A set larger than the bound is refused.
	js.set([]byte(`{"keys":[`+strings.Repeat(" ", maxJWKSSize)+`]}`), 0)
	expire(v, 6*time.Minute)
	if _, refreshErr, err := v.Verify(ctx, sign(t, k2, claims())); err != nil || refreshErr == nil || !strings.Contains(refreshErr.Error(), "larger") {
		t.Errorf("large set: %v, %v", refreshErr, err)
	}
}

func TestJWTHTTPS(t *testing.T) {
	k := ecKey(t)
	srv := httptest.NewTLSServer(&jwksServer{body: jwksJSON(t, k.jwk(""))})
	defer srv.Close()
	v, err := NewJWTVerifier(context.Background(), JWTConfig{Issuer: testIssuer, Audience: testAudience,
		JWKS: srv.URL, HTTPClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := v.Verify(context.Background(), sign(t, k, claims())); err != nil {
		t.Error(err)
	}
	// Without the test CA, the server's certificate does not verify.
	if _, err := NewJWTVerifier(context.Background(), JWTConfig{Issuer: testIssuer, Audience: testAudience, JWKS: srv.URL}); err == nil {
		t.Error("an untrusted https server's set loaded")
	}
}

// roundTripper answers requests from a function (a fake network: the
// hosts it serves are not loopback, which httptest cannot give).
type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func respond(r *http.Request, status int, hdr http.Header, body []byte) *http.Response {
	if hdr == nil {
		hdr = http.Header{}
	}
	return &http.Response{StatusCode: status, Status: fmt.Sprintf("%d %s", status, http.StatusText(status)),
		Header: hdr, Body: io.NopCloser(strings.NewReader(string(body))), Request: r}
}

// An https JWKS URL that redirects to plain http on another host is not
// followed: whoever is on that path would choose the keys.
func TestJWTRedirectToHTTP(t *testing.T) {
	k := ecKey(t)
	evil := testKey{kid: "ec-1", alg: jose.ES256, priv: otherKey}
	var sawHTTP bool
	hc := &http.Client{Transport: roundTripper(func(r *http.Request) (*http.Response, error) {
		if r.URL.Scheme == "https" {
			return respond(r, http.StatusFound, http.Header{"Location": {"http://cdn.idp.example/jwks"}}, nil), nil
		}
		sawHTTP = true
		return respond(r, http.StatusOK, nil, jwksJSON(t, evil.jwk(""))), nil
	})}
	v, err := NewJWTVerifier(context.Background(), JWTConfig{Issuer: testIssuer, Audience: testAudience,
		JWKS: "https://idp.example/jwks", HTTPClient: hc})
	if err == nil {
		_, _, verr := v.Verify(context.Background(), sign(t, evil, claims()))
		t.Errorf("the set loaded over the http redirect (a token of the injected key: %v)", verr)
	}
	if sawHTTP {
		t.Error("the redirect to http was followed")
	}
	_ = k
	// An https redirect is followed.
	hc = &http.Client{Transport: roundTripper(func(r *http.Request) (*http.Response, error) {
		if r.URL.Host == "idp.example" {
			return respond(r, http.StatusFound, http.Header{"Location": {"https://cdn.idp.example/jwks"}}, nil), nil
		}
		return respond(r, http.StatusOK, nil, jwksJSON(t, k.jwk(""))), nil
	})}
	if _, err := NewJWTVerifier(context.Background(), JWTConfig{Issuer: testIssuer, Audience: testAudience,
		JWKS: "https://idp.example/jwks", HTTPClient: hc}); err != nil {
		t.Errorf("https redirect: %v", err)
	}
}

// The JWKS URL's password never reaches an error (they are logged).
func TestJWTURLPasswordNotInErrors(t *testing.T) {
	k := ecKey(t)
	status := http.StatusInternalServerError
	hc := &http.Client{Transport: roundTripper(func(r *http.Request) (*http.Response, error) {
		if status != http.StatusOK {
			return respond(r, status, nil, nil), nil
		}
		return respond(r, http.StatusOK, nil, jwksJSON(t, k.jwk(""))), nil
	})}
	cfg := JWTConfig{Issuer: testIssuer, Audience: testAudience, JWKS: "https://svc:s3cret-pw@idp.example/jwks", HTTPClient: hc}
	_, err := NewJWTVerifier(context.Background(), cfg)
	if err == nil || strings.Contains(err.Error(), "s3cret-pw") {
		t.Errorf("construction error %v", err)
	}
	status = http.StatusOK
	v, err := NewJWTVerifier(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	status = http.StatusBadGateway
	expire(v, time.Hour)
	_, refreshErr, _ := v.Verify(context.Background(), sign(t, k, claims()))
	if refreshErr == nil || strings.Contains(refreshErr.Error(), "s3cret-pw") {
		t.Errorf("refresh error %v", refreshErr)
	}
}

func TestJWTFileRotation(t *testing.T) {
	k1 := ecKey(t)
	keys(t)
	k2 := testKey{kid: "rsa-2", alg: jose.RS256, priv: rsaKey}
	v, path := fileVerifier(t, k1.jwk(""))
	ctx := context.Background()
	if _, _, err := v.Verify(ctx, sign(t, k2, claims())); err == nil {
		t.Fatal("k2 verified before the rotation")
	}
	writeFile(t, path, jwksJSON(t, k1.jwk(""), k2.jwk("")), time.Now())
	// Within the reload interval, the file is not looked at.
	if _, _, err := v.Verify(ctx, sign(t, k2, claims())); err == nil {
		t.Error("the file was read again within the reload interval")
	}
	expire(v, reloadInterval+time.Second)
	if _, refreshErr, err := v.Verify(ctx, sign(t, k2, claims())); err != nil || refreshErr != nil {
		t.Fatalf("k2 after the rotation: %v, %v", refreshErr, err)
	}
	if _, _, err := v.Verify(ctx, sign(t, k1, claims())); err != nil {
		t.Errorf("k1 after the rotation: %v", err)
	}

	// A broken file keeps the set loaded before and is reported.
	writeFile(t, path, []byte(`{"keys": [`), time.Now().Add(time.Minute))
	expire(v, reloadInterval+time.Second)
	if _, refreshErr, err := v.Verify(ctx, sign(t, k2, claims())); err != nil || refreshErr == nil {
		t.Errorf("broken file: %v, %v", refreshErr, err)
	}
	// A file holding a private key is a failure, not a new set.
	writeFile(t, path, jwksJSON(t, jose.JSONWebKey{Key: p256Key, KeyID: "ec-1"}), time.Now().Add(2*time.Minute))
	expire(v, reloadInterval+time.Second)
	if _, refreshErr, err := v.Verify(ctx, sign(t, k1, claims())); err != nil || refreshErr == nil {
		t.Errorf("private key file: %v, %v", refreshErr, err)
	}
	// A removed file too.
	os.Remove(path)
	expire(v, reloadInterval+time.Second)
	if _, refreshErr, err := v.Verify(ctx, sign(t, k1, claims())); err != nil || refreshErr == nil {
		t.Errorf("removed file: %v, %v", refreshErr, err)
	}
}

func TestJWTConcurrent(t *testing.T) {
	k := ecKey(t)
	v, path := fileVerifier(t, k.jwk(""))
	tok := sign(t, k, claims())
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 20 {
				if _, _, err := v.Verify(context.Background(), tok); err != nil {
					t.Error(err)
					return
				}
				if i == 0 && j%5 == 0 {
					writeFile(t, path, jwksJSON(t, k.jwk("")), time.Now().Add(time.Duration(j)*time.Second))
					expire(v, time.Hour)
				}
			}
		}()
	}
	wg.Wait()
}

// nonCanonical signs tokens made by token with pads of 0, 1, 2... bytes
// until its payload's base64url has unused trailing bits, and sets one:
// the payload decodes to the same bytes (go-jose decodes leniently and
// verified such a token), its text is not the one signed.
func nonCanonical(t *testing.T, token func(pad string) string) string {
	t.Helper()
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	for pad := ""; len(pad) < 3; pad += "x" {
		p := strings.Split(token(pad), ".")
		if len(p[1])%4 == 0 {
			continue
		}
		last := strings.IndexByte(alphabet, p[1][len(p[1])-1])
		p[1] = p[1][:len(p[1])-1] + string(alphabet[last|1])
		return strings.Join(p, ".")
	}
	t.Fatal("no payload length with unused bits")
	return ""
}

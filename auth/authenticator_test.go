package auth

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

const (
	alicePassword = "correct-horse-battery-staple"
)

// clientCert is a certificate for subject, as the TLS server verified it.
func clientCert(t *testing.T, subject pkix.Name) *x509.Certificate {
	t.Helper()
	keys(t)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: subject, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, p256Key.Public(), p256Key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func withCert(r *http.Request, c *x509.Certificate) *http.Request {
	r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{c}, VerifiedChains: [][]*x509.Certificate{{c}}}
	return r
}

// testAuthenticator accepts alice's password, tokens of ecKey and
// certificates.
func testAuthenticator(t *testing.T, cfg Config) *Authenticator {
	t.Helper()
	if cfg.Htpasswd == nil {
		cfg.Htpasswd, _ = newHtpasswd(t, "alice:"+hash(t, alicePassword)+"\n")
	}
	if cfg.JWT == nil {
		cfg.JWT, _ = fileVerifier(t, ecKey(t).jwk(""))
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func request(authorization string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/v2/", nil)
	if authorization != "" {
		r.Header.Set("Authorization", authorization)
	}
	return r
}

func basic(user, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
}

func TestAuthenticate(t *testing.T) {
	a := testAuthenticator(t, Config{Certificates: true})
	ctx := context.Background()
	token := sign(t, ecKey(t), claims())
	cert := clientCert(t, pkix.Name{CommonName: "node-1", Organization: []string{"cluster"}})
	for _, tc := range []struct {
		name string
		r    *http.Request
		want Principal
	}{
		{"basic", request(basic("alice", alicePassword)), Principal{Method: Basic, Name: "alice"}},
		{"basic, scheme in lower case", request(strings.Replace(basic("alice", alicePassword), "Basic", "basic", 1)), Principal{Method: Basic, Name: "alice"}},
		{"basic, password with a colon", nil, Principal{}},
		{"bearer", request("Bearer " + token), Principal{Method: Token, Name: "alice", Issuer: testIssuer, Groups: []string{"team-a", "team-b"}}},
		{"bearer, blanks around", request("BEARER   " + token + " "), Principal{Method: Token, Name: "alice", Issuer: testIssuer, Groups: []string{"team-a", "team-b"}}},
		{"certificate", withCert(request(""), cert), Principal{Method: Certificate, Name: "CN=node-1,O=cluster"}},
		{"no credentials", request(""), Principal{}},
		{"TLS without a verified chain", func() *http.Request {
			r := withCert(request(""), cert)
			r.TLS.VerifiedChains = nil
			return r
		}(), Principal{}},
		{"Authorization wins over a certificate", withCert(request(basic("alice", alicePassword)), cert), Principal{Method: Basic, Name: "alice"}},
	} {
		if tc.r == nil {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			p, err := a.Authenticate(ctx, tc.r)
			if err != nil {
				t.Fatal(err)
			}
			if p.Method != tc.want.Method || p.Name != tc.want.Name || p.Issuer != tc.want.Issuer ||
				strings.Join(p.Groups, ",") != strings.Join(tc.want.Groups, ",") {
				t.Errorf("principal %+v, want %+v", p, tc.want)
			}
		})
	}
	// Wrong credentials with a certificate are refused, not downgraded to it.
	if _, err := a.Authenticate(ctx, withCert(request(basic("alice", "wrong")), cert)); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("wrong password with a certificate: %v", err)
	}
}

func TestAuthenticateCertificatesOff(t *testing.T) {
	a := testAuthenticator(t, Config{})
	p, err := a.Authenticate(context.Background(), withCert(request(""), clientCert(t, pkix.Name{CommonName: "node-1"})))
	if err != nil || !p.IsAnonymous() {
		t.Errorf("a certificate with Certificates off: %+v, %v", p, err)
	}
}

// Every refusal wraps ErrUnauthenticated and never holds the credential.
func TestAuthenticateRefusals(t *testing.T) {
	a := testAuthenticator(t, Config{Certificates: true})
	k := ecKey(t)
	expired := claims()
	expired["exp"] = time.Now().Add(-time.Hour).Unix()
	expiredTok := sign(t, k, expired)
	otherTok := sign(t, testKey{kid: "ec-1", alg: jose.ES256, priv: otherKey}, claims())
	rawBasic := base64.StdEncoding.EncodeToString([]byte("alice:" + alicePassword))
	for _, tc := range []struct {
		name, authorization, secret, want string
	}{
		{"wrong password", basic("alice", "hunter2-wrong"), "hunter2-wrong", "wrong user name or password"},
		{"unknown user", basic("mallory", alicePassword), alicePassword, "wrong user name or password"},
		{"no user", basic("", alicePassword), alicePassword, "no user"},
		{"no colon", "Basic " + base64.StdEncoding.EncodeToString([]byte("alice"+alicePassword)), alicePassword, "no user"},
		{"malformed base64", "Basic " + alicePassword + "!!", alicePassword, "do not decode"},
		{"url-safe base64", "Basic " + base64.URLEncoding.EncodeToString([]byte("alice:"+alicePassword+"\xff\xfe")), alicePassword, "do not decode"},
		{"empty basic", "Basic", "", "no user"},
		{"expired token", "Bearer " + expiredTok, expiredTok, "not valid here"},
		{"token of another key", "Bearer " + otherTok, otherTok, "does not verify"},
		{"garbage token", "Bearer " + alicePassword, alicePassword, "not a signed JWT"},
		{"empty bearer", "Bearer ", "", "not a signed JWT"},
		{"unknown scheme", "Digest username=\"alice\", response=\"" + alicePassword + "\"", alicePassword, `"Digest"`},
		{"long unknown scheme", "Negotiate-this-long-one x", "", "scheme is not accepted"},
		// No scheme: the credential itself comes first and must not be
		// echoed as the scheme.
		{"no scheme, a token", expiredTok, expiredTok[:16], "scheme is not accepted"},
		{"no scheme, base64 credentials", rawBasic, rawBasic[:16], "scheme is not accepted"},
		{"no scheme, a password", alicePassword, alicePassword[:16], "scheme is not accepted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := a.Authenticate(context.Background(), request(tc.authorization))
			if !errors.Is(err, ErrUnauthenticated) {
				t.Fatalf("err = %v (principal %+v), want ErrUnauthenticated", err, p)
			}
			if !p.IsAnonymous() {
				t.Errorf("a refusal gave principal %+v", p)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to say %q", err, tc.want)
			}
			if tc.secret != "" && strings.Contains(err.Error(), tc.secret) {
				t.Errorf("error %q holds the credential %q", err, tc.secret)
			}
		})
	}
}

func TestAuthenticateMethodsOff(t *testing.T) {
	ctx := context.Background()
	ht, _ := newHtpasswd(t, "alice:"+hash(t, alicePassword)+"\n")
	onlyBasic, err := New(Config{Htpasswd: ht})
	if err != nil {
		t.Fatal(err)
	}
	tok := sign(t, ecKey(t), claims())
	if _, err := onlyBasic.Authenticate(ctx, request("Bearer "+tok)); !errors.Is(err, ErrUnauthenticated) || strings.Contains(err.Error(), tok) {
		t.Errorf("bearer without JWT: %v", err)
	}
	v, _ := fileVerifier(t, ecKey(t).jwk(""))
	onlyJWT, err := New(Config{JWT: v})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := onlyJWT.Authenticate(ctx, request(basic("alice", alicePassword))); !errors.Is(err, ErrUnauthenticated) || strings.Contains(err.Error(), alicePassword) {
		t.Errorf("basic without htpasswd: %v", err)
	}
}

// Reload failures go to the logger, once, and hold no credential.
func TestAuthenticateLogsReloadFailure(t *testing.T) {
	ht, path := newHtpasswd(t, "alice:"+hash(t, alicePassword)+"\n")
	ht.interval = time.Millisecond
	var log bytes.Buffer
	a, err := New(Config{Htpasswd: ht, Logger: slog.New(slog.NewTextHandler(&log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	writeHtpasswd(t, path, "alice:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\n", time.Now())
	for range 3 {
		time.Sleep(2 * time.Millisecond)
		if p, err := a.Authenticate(context.Background(), request(basic("alice", alicePassword))); err != nil || p.Name != "alice" {
			t.Fatalf("%+v, %v", p, err)
		}
	}
	if n := strings.Count(log.String(), "does not load"); n != 1 {
		t.Errorf("%d log lines, want 1:\n%s", n, log.String())
	}
	if strings.Contains(log.String(), alicePassword) || strings.Contains(log.String(), "5en6G6") {
		t.Errorf("the log holds a credential:\n%s", log.String())
	}
}

func TestChallenge(t *testing.T) {
	ht, _ := newHtpasswd(t, "alice:"+hash(t, alicePassword)+"\n")
	v, _ := fileVerifier(t, ecKey(t).jwk(""))
	for _, tc := range []struct {
		name  string
		cfg   Config
		scope string
		want  string
	}{
		{"basic by default", Config{Htpasswd: ht, JWT: v}, "repository:a/b:pull", `Basic realm="shroud"`},
		{"none, certificates only", Config{Certificates: true}, "repository:a:pull", ""},
		{"bearer when only JWT", Config{JWT: v}, "", `Bearer realm="https://idp.example",service="shroud"`},
		{"bearer with scope", Config{JWT: v}, "repository:team-a/app:pull,push", `Bearer realm="https://idp.example",service="shroud",scope="repository:team-a/app:pull,push"`},
		{"bearer, realm and service set", Config{Htpasswd: ht, JWT: v, Challenge: "bearer", Realm: "https://idp.example/token", Service: "registry"},
			"repository:a:pull", `Bearer realm="https://idp.example/token",service="registry",scope="repository:a:pull"`},
		{"basic chosen", Config{Htpasswd: ht, JWT: v, Challenge: "basic"}, "", `Basic realm="shroud"`},
		{"quotes in scope", Config{JWT: v}, `repository:a":pull`, `Bearer realm="https://idp.example",service="shroud",scope="repository:a\":pull"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := New(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if got := a.Challenge(tc.scope); got != tc.want {
				t.Errorf("Challenge(%q) = %s, want %s", tc.scope, got, tc.want)
			}
		})
	}
}

func TestNewErrors(t *testing.T) {
	ht, _ := newHtpasswd(t, "alice:"+hash(t, alicePassword)+"\n")
	v, _ := fileVerifier(t, ecKey(t).jwk(""))
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no method", Config{}, "no method"},
		{"no method, challenge set", Config{Challenge: "basic"}, "no method"},
		{"basic without htpasswd", Config{JWT: v, Challenge: "basic"}, "needs htpasswd"},
		{"bearer without jwt", Config{Htpasswd: ht, Challenge: "bearer"}, "needs jwt"},
		{"unknown challenge", Config{Htpasswd: ht, Challenge: "digest"}, "want basic or bearer"},
		{"challenge in capitals", Config{Htpasswd: ht, Challenge: "Basic"}, "want basic or bearer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// The JWT errors an Authenticate returns come from a verifier over a
// JWKS file the test controls: one more check that a refreshed-away key
// and a refresh failure do not leak the token into the log.
func TestAuthenticateLogsRefreshFailure(t *testing.T) {
	k := ecKey(t)
	path := filepath.Join(t.TempDir(), "jwks.json")
	writeFile(t, path, jwksJSON(t, k.jwk("")), time.Now().Add(-time.Hour))
	v, err := NewJWTVerifier(context.Background(), JWTConfig{Issuer: testIssuer, Audience: testAudience, JWKS: path})
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	a, err := New(Config{JWT: v, Logger: slog.New(slog.NewTextHandler(&log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, []byte("{"), time.Now())
	expire(v, time.Hour)
	tok := sign(t, k, claims())
	if p, err := a.Authenticate(context.Background(), request("Bearer "+tok)); err != nil || p.Name != "alice" {
		t.Fatalf("%+v, %v", p, err)
	}
	if !strings.Contains(log.String(), "could not be loaded again") || strings.Contains(log.String(), tok) {
		t.Errorf("log:\n%s", log.String())
	}
}

// Empty Basic credentials (":", what containers/image sends when it holds
// none) are no credentials: anonymous, or the verified certificate.
func TestAuthenticateEmptyBasic(t *testing.T) {
	a := testAuthenticator(t, Config{Certificates: true})
	ctx := context.Background()
	empty := basic("", "")
	if p, err := a.Authenticate(ctx, request(empty)); err != nil || !p.IsAnonymous() {
		t.Errorf("empty Basic: %+v, %v", p, err)
	}
	cert := clientCert(t, pkix.Name{CommonName: "node-1", Organization: []string{"cluster"}})
	if p, err := a.Authenticate(ctx, withCert(request(empty), cert)); err != nil || p.Method != Certificate || p.Name != "CN=node-1,O=cluster" {
		t.Errorf("empty Basic with a certificate: %+v, %v", p, err)
	}
}

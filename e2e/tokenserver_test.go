package e2e

import (
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/shroud-oci/shroud/internal/testkeys"
)

// tokenServer is a registry token service (the Bearer flow of Docker Hub,
// Harbor, GitLab): it grants one user the scopes asked for, anyone else
// nothing, and remembers the scopes it granted and to which client.
type tokenServer struct {
	URL      string
	certFile string // the bundle the registry verifies tokens against

	mu      sync.Mutex
	granted []grant
}

func startTokenServer(t *testing.T, user, password string) *tokenServer {
	t.Helper()
	certFile, keyFile := testkeys.Cert(t, t.TempDir(), "e2e-token-issuer", true)
	certPEM, _ := os.ReadFile(certFile)
	keyPEM, _ := os.ReadFile(keyFile)
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	key, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	opts := (&jose.SignerOptions{}).WithType("JWT").WithHeader("x5c", []string{base64.StdEncoding.EncodeToString(cb.Bytes)})
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key.(crypto.Signer)}, opts)
	if err != nil {
		t.Fatal(err)
	}
	ts := &tokenServer{certFile: certFile}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		authed := ok && u == user && p == password
		type access struct {
			Type    string   `json:"type"`
			Name    string   `json:"name"`
			Actions []string `json:"actions"`
		}
		var grants []access
		for _, scope := range r.URL.Query()["scope"] {
			parts := strings.Split(scope, ":")
			if !authed || len(parts) != 3 {
				continue
			}
			grants = append(grants, access{Type: parts[0], Name: parts[1], Actions: strings.Split(parts[2], ",")})
			ts.mu.Lock()
			ts.granted = append(ts.granted, grant{userAgent: r.UserAgent(), user: u, scope: scope})
			ts.mu.Unlock()
		}
		now := time.Now()
		claims := map[string]any{
			"iss": "e2e-issuer", "sub": u, "aud": r.URL.Query().Get("service"),
			"exp": now.Add(5 * time.Minute).Unix(), "nbf": now.Add(-time.Minute).Unix(), "iat": now.Unix(),
			"jti": now.String(), "access": grants,
		}
		tok, err := jwt.Signed(signer).Claims(claims).Serialize()
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"token": tok, "access_token": tok, "expires_in": 300})
	}))
	t.Cleanup(srv.Close)
	// By name: go-containerregistry (shroud's token client) refuses a realm
	// on a private IP literal other than the registry's own host:port.
	ts.URL = strings.Replace(srv.URL, "127.0.0.1", "localhost", 1) + "/token"
	return ts
}

// registryConfig is the auth section of a distribution config that takes
// this server's tokens.
func (ts *tokenServer) registryConfig() string {
	return "auth:\n  token:\n    realm: " + ts.URL + "\n    service: e2e-registry\n    issuer: e2e-issuer\n    rootcertbundle: " + ts.certFile + "\n"
}

// grant is a token the server issued.
type grant struct{ userAgent, user, scope string }

func (ts *tokenServer) grants() []grant {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]grant(nil), ts.granted...)
}

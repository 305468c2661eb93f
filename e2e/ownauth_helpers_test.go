package e2e

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/crypto/bcrypt"
)

// Helpers of ownauth_test.go: shroud authenticating clients itself.

// upstreamRecorder is a reverse proxy between shroud and its registry
// that remembers every request the registry received, to show which
// credentials reached it.
type upstreamRecorder struct {
	URL string

	mu   sync.Mutex
	seen []recordedRequest
}

type recordedRequest struct {
	method, uri string
	header      http.Header
}

func (r recordedRequest) String() string {
	return r.method + " " + r.uri + " Authorization=" + r.header.Get("Authorization")
}

// recordUpstream runs an upstreamRecorder in front of the registry at
// target. The registry sees the recorder's Host, so that the Locations
// it answers (upload sessions) lead back through the recorder.
func recordUpstream(t *testing.T, target string) *upstreamRecorder {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rec := &upstreamRecorder{}
	rp := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		pr.SetURL(u)
		pr.Out.Host = pr.In.Host
	}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.mu.Lock()
		rec.seen = append(rec.seen, recordedRequest{method: r.Method, uri: r.RequestURI, header: r.Header.Clone()})
		rec.mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	rec.URL = srv.URL
	return rec
}

func (rec *upstreamRecorder) requests() []recordedRequest {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return slices.Clone(rec.seen)
}

// Host is the recorder's host:port.
func (rec *upstreamRecorder) Host() string { return strings.TrimPrefix(rec.URL, "http://") }

// assertNoClientSecrets fails the test when any request the upstream
// received carries one of secrets anywhere in its URL or headers, or an
// Authorization other than allowed (shroud's own; none when empty).
func (rec *upstreamRecorder) assertNoClientSecrets(t *testing.T, allowed []string, secrets ...string) {
	t.Helper()
	reqs := rec.requests()
	if len(reqs) == 0 {
		t.Fatal("the upstream received no request at all")
	}
	for _, r := range reqs {
		if a := r.header.Get("Authorization"); a != "" && !slices.Contains(allowed, a) {
			t.Fatalf("the upstream received an Authorization that is not shroud's: %s", r)
		}
		var all strings.Builder
		all.WriteString(r.uri)
		for k, vs := range r.header {
			all.WriteString("\n" + k + ": " + strings.Join(vs, ", "))
		}
		for _, s := range secrets {
			if s != "" && strings.Contains(all.String(), s) {
				t.Fatalf("the upstream received a client's credential (%.8s...) in %s", s, r)
			}
		}
	}
}

// writeOwnAuthConfig writes a shroud config file: the upstream, a fresh
// data-dir and body (auth, policy...).
func writeOwnAuthConfig(t *testing.T, upstream, body string) string {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "shroud.yaml")
	cfg := fmt.Sprintf("upstream: %s\ndata-dir: %s\n%s", upstream, filepath.Join(dir, "data"), body)
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// writeHtpasswd writes an htpasswd file of bcrypt hashes (what
// `htpasswd -B` writes) for users, name → password.
func writeHtpasswd(t *testing.T, users map[string]string) string {
	t.Helper()
	var b strings.Builder
	names := make([]string, 0, len(users))
	for n := range users {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		h, err := bcrypt.GenerateFromPassword([]byte(users[n]), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s:%s\n", n, h)
	}
	p := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// craneAs runs crane with DOCKER_CONFIG=dockerConfig (its credentials)
// and returns stdout, stderr and the error.
func craneAs(t *testing.T, dockerConfig string, args ...string) (string, string, error) {
	t.Helper()
	cmd := exec.Command(tool("crane"), append(args, "--insecure")...)
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+dockerConfig)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return strings.TrimSpace(out.String()), errb.String(), err
}

func craneOK(t *testing.T, dockerConfig string, args ...string) string {
	t.Helper()
	out, errOut, err := craneAs(t, dockerConfig, args...)
	if err != nil {
		t.Fatalf("crane %s: %v\n%s", strings.Join(args, " "), err, errOut)
	}
	return out
}

// send makes one request with c (http.DefaultClient when nil); set, if
// not nil, adds credentials or headers.
func send(t *testing.T, c *http.Client, method, u string, set func(*http.Request)) (*http.Response, []byte) {
	t.Helper()
	if c == nil {
		c = http.DefaultClient
	}
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if set != nil {
		set(req)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func basicAuth(user, password string) func(*http.Request) {
	return func(r *http.Request) { r.SetBasicAuth(user, password) }
}

func bearer(token string) func(*http.Request) {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token) }
}

// answer is everything a response tells a client but its request id and
// date: status, headers, body.
func answer(resp *http.Response, body []byte) string {
	var keys []string
	for k := range resp.Header {
		if k != "X-Request-Id" && k != "Date" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "%d\n", resp.StatusCode)
	for _, k := range keys {
		fmt.Fprintf(&b, "%s: %s\n", k, strings.Join(resp.Header[k], ", "))
	}
	b.Write(body)
	return b.String()
}

// assertSameImage checks that the layout skopeo wrote to dir holds img:
// the same manifest bytes (so the same digest) and the same layer bytes.
func assertSameImage(t *testing.T, img v1.Image, dir string) {
	t.Helper()
	raw, m := layoutManifest(t, dir)
	want, _ := img.RawManifest()
	if !bytes.Equal(raw, want) {
		t.Fatalf("pulled manifest differs from the pushed one:\n got %s\nwant %s", raw, want)
	}
	assertLayerBytes(t, img, func(d string) []byte { return layoutBlob(t, dir, d) })
	if len(m.Layers) == 0 {
		t.Fatal("the pulled image has no layers")
	}
}

// assertLayerBytes checks that got(digest) is each of img's layers, byte
// for byte.
func assertLayerBytes(t *testing.T, img v1.Image, got func(digest string) []byte) {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		d, _ := l.Digest()
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		want, _ := io.ReadAll(rc)
		rc.Close()
		if !bytes.Equal(got(d.String()), want) {
			t.Fatalf("layer %s pulled back differs from the pushed bytes", d)
		}
	}
}

// layerPrefix is the first n bytes of img's first layer, to look for
// plaintext in answers.
func layerPrefix(t *testing.T, img v1.Image, n int) []byte {
	t.Helper()
	ls, _ := img.Layers()
	rc, err := ls[0].Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b := make([]byte, n)
	if _, err := io.ReadFull(rc, b); err != nil {
		t.Fatal(err)
	}
	return b
}

// testCA is a certificate authority for TLS servers and clients.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	// File is its PEM certificate.
	File string
}

var serial int64 = 100

func nextSerial() *big.Int {
	serial++
	return big.NewInt(serial)
}

func newTestCA(t *testing.T, cn string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: nextSerial(), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{cert: cert, key: key, File: filepath.Join(t.TempDir(), "ca.crt")}
	writePEM(t, ca.File, "CERTIFICATE", der)
	return ca
}

// issue writes a certificate for subject signed by the CA, and its key,
// into dir as <base>.<certExt> and <base>.key: a server certificate for
// 127.0.0.1 and localhost, or a client certificate.
func (ca *testCA) issue(t *testing.T, dir, base, certExt string, subject pkix.Name, server bool) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: nextSerial(), Subject: subject,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.DNSNames, tmpl.IPAddresses = []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	p8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, base+"."+certExt), filepath.Join(dir, base+".key")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "PRIVATE KEY", p8)
	return certFile, keyFile
}

// clientCertDir is a skopeo --*-cert-dir: ca.crt (shroud's CA) and,
// issued by from, client.cert and client.key for subject.
func clientCertDir(t *testing.T, serverCA, from *testCA, subject pkix.Name) string {
	t.Helper()
	dir := t.TempDir()
	b, _ := os.ReadFile(serverCA.File)
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	from.issue(t, dir, "client", "cert", subject, false)
	return dir
}

// mtlsTransport trusts serverCA and, when dir is not empty, presents the
// client certificate of a clientCertDir.
func mtlsTransport(t *testing.T, serverCA *testCA, dir string) *http.Transport {
	t.Helper()
	pool := x509.NewCertPool()
	b, _ := os.ReadFile(serverCA.File)
	pool.AppendCertsFromPEM(b)
	cfg := &tls.Config{RootCAs: pool}
	if dir != "" {
		c, err := tls.LoadX509KeyPair(filepath.Join(dir, "client.cert"), filepath.Join(dir, "client.key"))
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	return &http.Transport{TLSClientConfig: cfg}
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// tokenIssuer signs JWTs with an EC key, as an identity provider does.
type tokenIssuer struct {
	key *ecdsa.PrivateKey
	kid string
}

func newTokenIssuer(t *testing.T, kid string) tokenIssuer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return tokenIssuer{key: key, kid: kid}
}

// writeJWKS writes the public keys of issuers as a JWKS file.
func writeJWKS(t *testing.T, issuers ...tokenIssuer) string {
	t.Helper()
	var set jose.JSONWebKeySet
	for _, i := range issuers {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: &i.key.PublicKey, KeyID: i.kid, Algorithm: string(jose.ES256), Use: "sig"})
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// sign makes a compact ES256 JWT of the standard claims and groups.
func (i tokenIssuer) sign(t *testing.T, std jwt.Claims, groups []string) string {
	t.Helper()
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: i.key, KeyID: i.kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(sig).Claims(std).Claims(map[string]any{"groups": groups}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// tokenDockerConfig is a DOCKER_CONFIG directory whose config.json gives
// host a registry token (ggcr sends it as a Bearer token).
func tokenDockerConfig(t *testing.T, host, token string) string {
	t.Helper()
	dir := t.TempDir()
	b, _ := json.Marshal(map[string]any{"auths": map[string]any{host: map[string]string{"registrytoken": token}}})
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

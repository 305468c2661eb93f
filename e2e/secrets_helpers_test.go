package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Helpers of secrets_test.go: the secrets a test knows, what shroud said
// (its log, every answer a client got, its metrics) and the search of the
// one in the other.

// secret is a value that must appear nowhere shroud writes, by name.
type secret struct{ name, value string }

// secretSet collects the secrets of a run; it is filled as the run goes
// (Authorization headers seen, upload states the upstream handed out).
type secretSet struct {
	mu   sync.Mutex
	list []secret
	seen map[string]bool
}

// minSecret is the shortest value searched for: shorter ones would match
// by chance (every secret a test makes is longer).
const minSecret = 12

func (s *secretSet) add(name, value string) {
	value = strings.TrimSpace(value)
	if len(value) < minSecret {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen == nil {
		s.seen = map[string]bool{}
	}
	if s.seen[value] {
		return
	}
	s.seen[value] = true
	s.list = append(s.list, secret{name, value})
}

func (s *secretSet) all() []secret {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]secret(nil), s.list...)
}

// addPassword adds a password and the forms it travels in: base64 of
// user:password (a Basic header's, a config.json "auth"'s).
func (s *secretSet) addPassword(user, password string) {
	s.add("password of "+user, password)
	s.add("base64 of "+user+":password", base64.StdEncoding.EncodeToString([]byte(user+":"+password)))
	s.add("base64url of "+user+":password", base64.URLEncoding.EncodeToString([]byte(user+":"+password)))
}

// addToken adds a compact JWT and its signature part.
func (s *secretSet) addToken(name, token string) {
	s.add(name, token)
	if parts := strings.Split(token, "."); len(parts) == 3 {
		s.add("signature of "+name, parts[2])
	}
}

// addHtpasswd adds the hashes of an htpasswd file.
func (s *secretSet) addHtpasswd(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if user, hash, ok := strings.Cut(line, ":"); ok {
			s.add("bcrypt hash of "+user, hash)
		}
	}
}

// addPrivateKey adds a private key's material: its file as written
// (PEM), each PEM body line, its DER in base64 (standard and URL, padded
// or not), and its private numbers: an EC key's scalar and an RSA key's
// exponent and primes in hex, decimal and base64url (a JWK's "d", "p",
// "q").
func (s *secretSet) addPrivateKey(t *testing.T, name string, file []byte, key any) {
	t.Helper()
	s.add(name+" file", string(file))
	for rest := file; ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
			s.add(name+" DER in base64", enc.EncodeToString(blk.Bytes))
		}
		for i, line := range strings.Split(string(pem.EncodeToMemory(blk)), "\n") {
			if !strings.HasPrefix(line, "-----") && !strings.Contains(line, ":") {
				s.add(fmt.Sprintf("%s PEM line %d", name, i), line)
			}
		}
	}
	number := func(what string, b []byte) {
		s.add(name+" "+what+" (hex)", hex.EncodeToString(b))
		s.add(name+" "+what+" (HEX)", strings.ToUpper(hex.EncodeToString(b)))
		s.add(name+" "+what+" (base64url, a JWK's)", base64.RawURLEncoding.EncodeToString(b))
		s.add(name+" "+what+" (base64)", base64.StdEncoding.EncodeToString(b))
		s.add(name+" "+what+" (decimal)", new(big.Int).SetBytes(b).String())
	}
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		d, err := k.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		number("scalar d", d)
		if p8, err := x509.MarshalPKCS8PrivateKey(k); err == nil {
			s.add(name+" PKCS#8 in base64", base64.StdEncoding.EncodeToString(p8))
		}
		if sec1, err := x509.MarshalECPrivateKey(k); err == nil {
			s.add(name+" SEC 1 in base64", base64.StdEncoding.EncodeToString(sec1))
		}
	case *rsa.PrivateKey:
		number("exponent d", k.D.Bytes())
		for i, p := range k.Primes {
			number(fmt.Sprintf("prime %d", i), p.Bytes())
		}
		s.add(name+" PKCS#1 in base64", base64.StdEncoding.EncodeToString(x509.MarshalPKCS1PrivateKey(k)))
		if p8, err := x509.MarshalPKCS8PrivateKey(k); err == nil {
			s.add(name+" PKCS#8 in base64", base64.StdEncoding.EncodeToString(p8))
		}
	default:
		t.Fatalf("addPrivateKey: %T", key)
	}
}

// randomSecret is prefix and 12 random hex digits, so that no fixed text
// of shroud's matches it by chance.
func randomSecret(prefix string) string {
	b := make([]byte, 6)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// corpus is what shroud said during a run, by where it was said.
type corpus struct {
	mu   sync.Mutex
	docs []doc
}

type doc struct{ where, text string }

func (c *corpus) add(where, text string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.docs = append(c.docs, doc{where, text})
}

func (c *corpus) all() []doc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]doc(nil), c.docs...)
}

// assertNoSecrets fails the test for every secret that appears in any
// doc, naming the secret, where it appeared and the offending line with
// every secret in it cut to its first 8 characters.
func assertNoSecrets(t *testing.T, secrets []secret, docs []doc) {
	t.Helper()
	found := 0
	for _, d := range docs {
		for _, s := range secrets {
			i := strings.Index(d.text, s.value)
			if i < 0 {
				continue
			}
			found++
			if found > 40 {
				continue
			}
			start := strings.LastIndexByte(d.text[:i], '\n') + 1
			end := i + len(s.value)
			if j := strings.IndexByte(d.text[end:], '\n'); j >= 0 {
				end += j
			} else {
				end = len(d.text)
			}
			lineNo := strings.Count(d.text[:start], "\n") + 1
			t.Errorf("%s (%.8s…) appears in %s, line %d:\n    %s", s.name, s.value, d.where, lineNo, redactSecrets(d.text[start:end], secrets))
		}
	}
	if found > 40 {
		t.Errorf("... %d appearances in all", found)
	}
}

// redactSecrets cuts every secret in line to its first 8 characters, and
// a long line around its first cut.
func redactSecrets(line string, secrets []secret) string {
	sorted := append([]secret(nil), secrets...)
	sort.Slice(sorted, func(i, j int) bool { return len(sorted[i].value) > len(sorted[j].value) })
	for _, s := range sorted {
		line = strings.ReplaceAll(line, s.value, s.value[:8]+"…[redacted]")
	}
	if len(line) > 600 {
		i := strings.Index(line, "…[redacted]")
		lo := max(0, i-300)
		line = "…" + line[lo:min(len(line), lo+600)] + "…"
	}
	return line
}

// exchange is one request a client made of shroud and what it got back.
type exchange struct {
	method, uri string
	auth        []string
	status      int
	header      http.Header
	body        []byte
}

// answerText is everything the client got: status, headers, body.
func (e exchange) answerText() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d %s\n", e.status, http.StatusText(e.status))
	keys := make([]string, 0, len(e.header))
	for k := range e.header {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, v := range e.header[k] {
			fmt.Fprintf(&b, "%s: %s\n", k, v)
		}
	}
	b.WriteString("\n")
	b.Write(e.body)
	return b.String()
}

// frontRecorder is a reverse proxy in front of shroud, between it and
// every client of a test, that keeps each request's Authorization and
// each answer whole: status, headers, body.
type frontRecorder struct {
	URL string
	srv *httptest.Server

	mu   sync.Mutex
	seen []exchange
}

// maxRecordedBody bounds the body kept of one answer (the tests' images
// are far smaller).
const maxRecordedBody = 8 << 20

func recordFront(t *testing.T, target string) *frontRecorder {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	f := &frontRecorder{}
	type reqKey struct{}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Host = pr.In.Host // shroud's Locations lead back through the recorder
		},
		ModifyResponse: func(resp *http.Response) error {
			body, err := io.ReadAll(io.LimitReader(resp.Body, maxRecordedBody))
			resp.Body.Close()
			if err != nil {
				return err
			}
			resp.Body = io.NopCloser(bytes.NewReader(body))
			in := resp.Request
			f.mu.Lock()
			f.seen = append(f.seen, exchange{method: in.Method, uri: in.URL.RequestURI(), auth: in.Header.Values("Authorization"),
				status: resp.StatusCode, header: resp.Header.Clone(), body: body})
			f.mu.Unlock()
			return nil
		},
		ErrorLog: log.New(io.Discard, "", 0),
	}
	f.srv = httptest.NewServer(rp)
	t.Cleanup(f.srv.Close)
	f.URL = f.srv.URL
	return f
}

func (f *frontRecorder) Host() string { return strings.TrimPrefix(f.URL, "http://") }

func (f *frontRecorder) exchanges() []exchange {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]exchange(nil), f.seen...)
}

// upstreamSpy is a reverse proxy between shroud and its registry that
// keeps the Authorization shroud sent and the upload states (Location
// values, their _state) the registry handed out, to search for them in
// what shroud says.
type upstreamSpy struct {
	URL string
	srv *httptest.Server

	mu        sync.Mutex
	auths     []string
	locations []string
}

func spyUpstream(t *testing.T, target string) *upstreamSpy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	s := &upstreamSpy{}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Host = pr.In.Host // the registry's Locations lead back through the spy
		},
		ModifyResponse: func(resp *http.Response) error {
			if l := resp.Header.Get("Location"); l != "" {
				s.mu.Lock()
				s.locations = append(s.locations, l)
				s.mu.Unlock()
			}
			return nil
		},
		ErrorLog: log.New(io.Discard, "", 0),
	}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.auths = append(s.auths, r.Header.Values("Authorization")...)
		if r.URL.RawQuery != "" {
			s.locations = append(s.locations, r.URL.RequestURI())
		}
		s.mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(s.srv.Close)
	s.URL = s.srv.URL
	return s
}

func (s *upstreamSpy) Host() string { return strings.TrimPrefix(s.URL, "http://") }

// addTo adds what the spy saw to secrets: every Authorization value, and
// every upload state: the _state (and any other long query value) of each
// Location, and each Location with its query whole.
func (s *upstreamSpy) addTo(secrets *secretSet) (auths, states int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range s.auths {
		secrets.add("Authorization shroud sent upstream", a)
		if _, cred, ok := strings.Cut(a, " "); ok {
			secrets.add("credential of an Authorization shroud sent upstream", cred)
		}
		auths++
	}
	for _, l := range s.locations {
		u, err := url.Parse(l)
		if err != nil || u.RawQuery == "" {
			continue
		}
		secrets.add("upstream upload Location (with its query)", u.RequestURI())
		for k, vs := range u.Query() {
			for _, v := range vs {
				if k == "_state" {
					states++
				}
				if !publicQuery[k] {
					secrets.add("upstream upload "+k, v)
					secrets.add("upstream upload "+k+" (query-escaped)", url.QueryEscape(v))
				}
			}
		}
	}
	return auths, states
}

// publicQuery are the query parameters of upload URLs that hold nothing
// secret: digests, repository names, page sizes.
var publicQuery = map[string]bool{"digest": true, "mount": true, "from": true, "n": true, "last": true}

// stopShroud stops shroud with SIGTERM (a clean shutdown, its last log
// lines written) and waits for it, so that its log is complete.
func stopShroud(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

// request sends one request with a body; set adds credentials or headers.
func request(t *testing.T, method, u string, body []byte, set func(*http.Request)) (*http.Response, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if set != nil {
		set(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// also chains request setters.
func also(fs ...func(*http.Request)) func(*http.Request) {
	return func(r *http.Request) {
		for _, f := range fs {
			if f != nil {
				f(r)
			}
		}
	}
}

func header(k, v string) func(*http.Request) {
	return func(r *http.Request) { r.Header.Set(k, v) }
}

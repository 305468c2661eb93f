package proxy_test

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/crypto/bcrypt"

	"github.com/shroud-oci/shroud/auth"
	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/shroudtest"
)

// ownAuthConfig is shroud's own authentication with an htpasswd file of
// users (name -> password).
func ownAuthConfig(t *testing.T, users map[string]string) auth.Config {
	t.Helper()
	var b strings.Builder
	for u, p := range users {
		h, err := bcrypt.GenerateFromPassword([]byte(p), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(u + ":" + string(h) + "\n")
	}
	f := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(f, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	ht, err := auth.LoadHtpasswd(f)
	if err != nil {
		t.Fatal(err)
	}
	return auth.Config{Htpasswd: ht}
}

// headerLog records every Authorization header an upstream receives.
type headerLog struct {
	mu   sync.Mutex
	seen []string
}

func (l *headerLog) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l.mu.Lock()
		l.seen = append(l.seen, r.Header.Get("Authorization"))
		l.mu.Unlock()
		next.ServeHTTP(w, r)
	})
}

func (l *headerLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.seen...)
}

// Attack: a refused client probes for existence. Under shroud's own
// authentication, team-a/** is alice's; bob (authenticated, no grant) and
// an anonymous client ask for a blob and a tag that exist and for ones
// that do not. A user checks that each gets the same answer either way
// (401 with the challenge for the anonymous client, 403 DENIED for bob),
// with no size, digest or body difference, and no plaintext.
func TestOwnAuthRefusedClientLearnsNoExistence(t *testing.T) {
	s := shroudtest.Start(t, shroudtest.Distribution(t),
		shroudtest.WithAuth(ownAuthConfig(t, map[string]string{"alice": "alice-pw", "bob": "bob-pw"})),
		shroudtest.WithPolicy(shroudtest.Rule{Pattern: "team-a/**", Action: crypto.Encrypt, Pull: []string{"user:alice"}, Push: []string{"user:alice"}}))
	c := call{t, s.URL}
	alice := []string{"Authorization", atkBasicAuth("alice", "alice-pw")}
	layer := atkRandBytes(t, 40_000)
	cd := atkPushBlob(t, c, "team-a/app", atkPlainConfig, alice...)
	ld := atkPushBlob(t, c, "team-a/app", layer, alice...)
	cfg := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: cd, Size: int64(len(atkPlainConfig))}
	if a := c.do("PUT", "/v2/team-a/app/manifests/1", bytes.NewReader(atkImageManifest(t, cfg, atkLayerDesc(layer))),
		append([]string{"Content-Type", ocispec.MediaTypeImageManifest}, alice...)...); a.status != 201 {
		t.Fatalf("alice pushes: %d %s", a.status, a.body)
	}
	if a := c.do("GET", "/v2/team-a/app/blobs/"+ld.String(), nil, alice...); a.status != 200 || !bytes.Equal(a.body, layer) {
		t.Fatalf("alice pulls her layer: %d, %d bytes", a.status, len(a.body))
	}
	_, missing := randBlob(t, 40_000)

	for _, who := range []struct {
		name   string
		hdr    []string
		status int
		code   string
	}{
		{"anonymous", nil, 401, "UNAUTHORIZED"},
		{"bob", []string{"Authorization", atkBasicAuth("bob", "bob-pw")}, 403, "DENIED"},
		{"a wrong password", []string{"Authorization", atkBasicAuth("alice", "guess")}, 401, "UNAUTHORIZED"},
	} {
		for _, probe := range []struct{ method, exists, absent string }{
			{"HEAD", "/v2/team-a/app/blobs/" + ld.String(), "/v2/team-a/app/blobs/" + missing.String()},
			{"GET", "/v2/team-a/app/blobs/" + ld.String(), "/v2/team-a/app/blobs/" + missing.String()},
			{"GET", "/v2/team-a/app/manifests/1", "/v2/team-a/app/manifests/2"},
			{"GET", "/v2/team-a/app/tags/list", "/v2/team-a/xyz/tags/list"},
			{"POST", "/v2/team-a/app/blobs/uploads/?mount=" + ld.String() + "&from=team-a/app", "/v2/team-a/app/blobs/uploads/?mount=" + missing.String() + "&from=team-a/app"},
		} {
			hdr := append([]string{"Range", "bytes=0-99"}, who.hdr...)
			e := c.do(probe.method, probe.exists, nil, hdr...)
			n := c.do(probe.method, probe.absent, nil, hdr...)
			what := who.name + " " + probe.method + " " + probe.exists
			if e.status != who.status || (probe.method != "HEAD" && e.errorCode() != who.code) {
				t.Errorf("%s: %d %s, want %d %s", what, e.status, e.body, who.status, who.code)
			}
			if who.status == 401 && !strings.HasPrefix(e.header.Get("WWW-Authenticate"), "Basic ") {
				t.Errorf("%s: challenge %q, want Basic", what, e.header.Get("WWW-Authenticate"))
			}
			norm := func(b []byte, d string) []byte {
				return bytes.ReplaceAll(bytes.ReplaceAll(b, []byte(d), nil), []byte("team-a/xyz"), []byte("team-a/app"))
			}
			if e.status != n.status || !bytes.Equal(norm(e.body, ld.String()), norm(n.body, missing.String())) ||
				e.header.Get("Content-Length") != n.header.Get("Content-Length") || e.header.Get("Content-Range") != n.header.Get("Content-Range") ||
				e.header.Get("Docker-Content-Digest") != "" || e.header.Get("WWW-Authenticate") != n.header.Get("WWW-Authenticate") {
				t.Errorf("%s: the answers for what exists and what does not differ:\n%d %v %s\n%d %v %s", what, e.status, e.header, e.body, n.status, n.header, n.body)
			}
			atkNoPlaintextBlob(t, what, e, layer)
		}
	}
}

// Attack: shroud hands the client's credentials to the upstream. Under
// shroud's own authentication the client's password is shroud's business:
// the upstream (a registry an operator does not trust with shroud's user
// database) must never see it, whether the repository is encrypted or
// passed through, and shroud asks with its own credentials. A user checks
// every Authorization header the upstream received: none is the client's,
// and the writes carry shroud's.
func TestOwnAuthNeverForwardsClientCredentials(t *testing.T) {
	log := &headerLog{}
	up := shroudtest.Behind(t, shroudtest.Distribution(t), log.middleware)
	s := shroudtest.Start(t, up,
		shroudtest.WithAuth(ownAuthConfig(t, map[string]string{"alice": "alice-pw"})),
		shroudtest.WithOwnUpstreamCredentials(&authn.Basic{Username: "shroud", Password: "shroud-upstream-pw"}),
		shroudtest.WithPolicy(
			shroudtest.Rule{Pattern: "public/**", Action: crypto.Passthrough},
			shroudtest.Rule{Pattern: "**", Action: crypto.Encrypt}))
	c := call{t, s.URL}
	alice := []string{"Authorization", atkBasicAuth("alice", "alice-pw")}
	for _, repo := range []string{"team/app", "public/app"} {
		img := atkStaticImage(t, atkRandBytes(t, 20_000))
		opt := remote.WithAuth(&authn.Basic{Username: "alice", Password: "alice-pw"})
		if err := remote.Write(ref(t, s.Host(), repo+":1"), img, opt); err != nil {
			t.Fatalf("%s: alice pushes: %v", repo, err)
		}
		back, err := remote.Image(ref(t, s.Host(), repo+":1"), opt)
		if err != nil {
			t.Fatalf("%s: alice pulls: %v", repo, err)
		}
		if _, err := atkReadLayers(back); err != nil {
			t.Fatalf("%s: alice's layers: %v", repo, err)
		}
		c.do("GET", "/v2/"+repo+"/tags/list", nil, alice...)
	}
	c.do("GET", "/v2/_catalog", nil, alice...)
	seen := log.all()
	if len(seen) == 0 {
		t.Fatal("the upstream saw no request")
	}
	shroudCreds := "Basic " + atkBasicAuth("shroud", "shroud-upstream-pw")[len("Basic "):]
	own := 0
	for _, h := range seen {
		if h == alice[1] || strings.Contains(h, atkBasicAuth("alice", "alice-pw")[len("Basic "):]) {
			t.Fatalf("the upstream received alice's credentials: %.12s…", h)
		}
		if h == shroudCreds {
			own++
		}
	}
	if own == 0 {
		t.Errorf("no upstream request carried shroud's own credentials (%d requests)", len(seen))
	}
}

// Attack: another principal continues an upload. Under shroud's own
// authentication an upload session belongs to the principal that opened
// it; bob, who may push to the same repository, learns alice's session
// URL. A user checks that bob's status GET, PATCH and DELETE get 404
// BLOB_UPLOAD_UNKNOWN and that alice then completes her upload intact.
func TestOwnAuthUploadSessionBelongsToPrincipal(t *testing.T) {
	s := shroudtest.Start(t, shroudtest.Distribution(t),
		shroudtest.WithAuth(ownAuthConfig(t, map[string]string{"alice": "alice-pw", "bob": "bob-pw"})))
	c := call{t, s.URL}
	alice := []string{"Authorization", atkBasicAuth("alice", "alice-pw")}
	bob := []string{"Authorization", atkBasicAuth("bob", "bob-pw")}
	b, d := randBlob(t, 50_000)
	a := c.do("POST", "/v2/shared/app/blobs/uploads/", nil, alice...)
	if a.status != 202 {
		t.Fatalf("alice opens an upload: %d %s", a.status, a.body)
	}
	loc := a.header.Get("Location")
	if a = c.do("PATCH", loc, bytes.NewReader(b[:20_000]), append([]string{"Content-Type", "application/octet-stream"}, alice...)...); a.status != 202 {
		t.Fatalf("alice's chunk: %d %s", a.status, a.body)
	}
	loc = a.header.Get("Location")
	c.do("GET", loc, nil, bob...).want(t, 404, "BLOB_UPLOAD_UNKNOWN")
	c.do("PATCH", loc, bytes.NewReader([]byte("bob was here")), append([]string{"Content-Type", "application/octet-stream"}, bob...)...).want(t, 404, "BLOB_UPLOAD_UNKNOWN")
	c.do("DELETE", loc, nil, bob...).want(t, 404, "BLOB_UPLOAD_UNKNOWN")
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	if a = c.do("PUT", loc+sep+"digest="+d.String(), bytes.NewReader(b[20_000:]), append([]string{"Content-Type", "application/octet-stream"}, alice...)...); a.status != 201 {
		t.Fatalf("alice completes: %d %s", a.status, a.body)
	}
	if a = c.do("GET", "/v2/shared/app/blobs/"+d.String(), nil, alice...); a.status != 200 || !bytes.Equal(a.body, b) {
		t.Fatalf("alice's blob: %d, %d bytes", a.status, len(a.body))
	}
}

// Attack: the catalog and the ping tell an anonymous client what is
// there. A user checks that an anonymous ping gets 401 with the challenge
// (clients learn to send credentials), a ping with credentials 200
// without asking the upstream, and the catalog lists only what the
// client may pull.
func TestOwnAuthCatalogListsOnlyWhatThePrincipalMayPull(t *testing.T) {
	s := shroudtest.Start(t, shroudtest.Distribution(t),
		shroudtest.WithAuth(ownAuthConfig(t, map[string]string{"alice": "alice-pw", "bob": "bob-pw"})),
		shroudtest.WithPolicy(
			shroudtest.Rule{Pattern: "team-a/**", Action: crypto.Encrypt, Push: []string{"user:alice"}},
			shroudtest.Rule{Pattern: "team-b/**", Action: crypto.Encrypt, Push: []string{"user:bob"}}))
	c := call{t, s.URL}
	alice := []string{"Authorization", atkBasicAuth("alice", "alice-pw")}
	bob := []string{"Authorization", atkBasicAuth("bob", "bob-pw")}
	atkPushBlob(t, c, "team-a/app", atkPlainConfig, alice...)
	atkPushBlob(t, c, "team-b/app", atkPlainConfig, bob...)
	for _, repo := range []string{"team-a/app", "team-b/app"} {
		hdr := alice
		if strings.HasPrefix(repo, "team-b") {
			hdr = bob
		}
		cfg := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: atkPushBlob(t, c, repo, atkPlainConfig, hdr...), Size: int64(len(atkPlainConfig))}
		layer := atkRandBytes(t, 1000)
		atkPushBlob(t, c, repo, layer, hdr...)
		if a := c.do("PUT", "/v2/"+repo+"/manifests/1", bytes.NewReader(atkImageManifest(t, cfg, atkLayerDesc(layer))),
			append([]string{"Content-Type", ocispec.MediaTypeImageManifest}, hdr...)...); a.status != 201 {
			t.Fatalf("%s: push: %d %s", repo, a.status, a.body)
		}
	}
	if a := c.do("GET", "/v2/", nil); a.status != 401 || a.header.Get("WWW-Authenticate") == "" {
		t.Errorf("anonymous ping: %d, challenge %q; want 401 with a challenge", a.status, a.header.Get("WWW-Authenticate"))
	}
	c.do("GET", "/v2/", nil, alice...).want(t, 200, "")
	c.do("GET", "/v2/_catalog", nil).want(t, 401, "UNAUTHORIZED")
	a := c.do("GET", "/v2/_catalog", nil, alice...)
	if a.status != 200 || !bytes.Contains(a.body, []byte("team-a/app")) || bytes.Contains(a.body, []byte("team-b")) {
		t.Errorf("alice's catalog: %d %s, want team-a/app and nothing of team-b", a.status, a.body)
	}
}

// Attack: a mount reads a repository the client may not pull. Under
// shroud's own authentication the upstream is asked with shroud's
// credentials, so it checks nothing about the client's right to read a
// mount's source. bob may push to team-b (global dedup) but not read
// team-a; he asks HEAD for team-a's layer in team-b and a mount from
// team-a. A user checks that both answer as for a layer never pushed.
func TestOwnAuthMountNeedsPullOnSource(t *testing.T) {
	s := shroudtest.Start(t, shroudtest.Distribution(t),
		shroudtest.WithAuth(ownAuthConfig(t, map[string]string{"alice": "alice-pw", "bob": "bob-pw"})),
		shroudtest.WithPolicy(
			shroudtest.Rule{Pattern: "team-a/**", Action: crypto.Encrypt, DedupScope: crypto.DedupGlobal, Push: []string{"user:alice"}},
			shroudtest.Rule{Pattern: "team-b/**", Action: crypto.Encrypt, DedupScope: crypto.DedupGlobal, Push: []string{"user:bob"}}))
	c := call{t, s.URL}
	alice := []string{"Authorization", atkBasicAuth("alice", "alice-pw")}
	bob := []string{"Authorization", atkBasicAuth("bob", "bob-pw")}
	layer := atkRandBytes(t, 20_000)
	ld := atkPushBlob(t, c, "team-a/app", layer, alice...)
	cd := atkPushBlob(t, c, "team-a/app", atkPlainConfig, alice...)
	cfg := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: cd, Size: int64(len(atkPlainConfig))}
	if a := c.do("PUT", "/v2/team-a/app/manifests/1", bytes.NewReader(atkImageManifest(t, cfg, atkLayerDesc(layer))),
		append([]string{"Content-Type", ocispec.MediaTypeImageManifest}, alice...)...); a.status != 201 {
		t.Fatalf("alice pushes: %d %s", a.status, a.body)
	}
	if a := c.do("HEAD", "/v2/team-b/app/blobs/"+ld.String(), nil, bob...); a.status != 404 {
		t.Errorf("bob's HEAD in team-b of team-a's layer: %d, want 404", a.status)
	}
	if a := c.do("POST", "/v2/team-b/app/blobs/uploads/?mount="+ld.String()+"&from=team-a/app", nil, bob...); a.status != 202 {
		t.Errorf("bob's mount from team-a: %d, want 202 (a fresh upload)", a.status)
	}
	// alice, who may read both... may not push to team-b: the grant is bob's.
	if a := c.do("HEAD", "/v2/team-b/app/blobs/"+ld.String(), nil, alice...); a.status != 403 {
		t.Errorf("alice's HEAD in team-b: %d, want 403", a.status)
	}
}

// Attack: a HEAD of a pull-only client writes. Under shroud's own
// authentication a HEAD needs only pull, but a HEAD of a layer another
// repository of the dedup scope holds mounts it into the repository asked
// about, with shroud's upstream credentials, and records a mapping every
// reader of that repository is served from. alice may pull team-a and
// team-b but push neither; carol may pull team-a only. A user checks
// that alice's HEAD in team-a of team-b's layer makes no upstream write
// and that carol then still gets no plaintext of team-b's layer from
// team-a. (Found by the adversarial review.)
func TestOwnAuthPullOnlyHeadMountsNothing(t *testing.T) {
	rec := &shroudtest.Recorder{}
	up := shroudtest.Behind(t, shroudtest.Distribution(t), rec.Middleware)
	s := shroudtest.Start(t, up,
		shroudtest.WithAuth(ownAuthConfig(t, map[string]string{"alice": "a", "carol": "c", "bpush": "b"})),
		shroudtest.WithPolicy(
			shroudtest.Rule{Pattern: "team-a/**", Action: crypto.Encrypt, DedupScope: crypto.DedupGlobal,
				Pull: []string{"user:alice", "user:carol"}, Push: []string{"user:nobody"}},
			shroudtest.Rule{Pattern: "team-b/**", Action: crypto.Encrypt, DedupScope: crypto.DedupGlobal,
				Pull: []string{"user:alice"}, Push: []string{"user:bpush"}}))
	c := call{t, s.URL}
	alice := []string{"Authorization", atkBasicAuth("alice", "a")}
	carol := []string{"Authorization", atkBasicAuth("carol", "c")}
	bp := []string{"Authorization", atkBasicAuth("bpush", "b")}
	layer := atkRandBytes(t, 20_000)
	ld := atkPushBlob(t, c, "team-b/app", layer, bp...)
	cd := atkPushBlob(t, c, "team-b/app", atkPlainConfig, bp...)
	cfg := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: cd, Size: int64(len(atkPlainConfig))}
	if a := c.do("PUT", "/v2/team-b/app/manifests/1", bytes.NewReader(atkImageManifest(t, cfg, atkLayerDesc(layer))),
		append([]string{"Content-Type", ocispec.MediaTypeImageManifest}, bp...)...); a.status != 201 {
		t.Fatalf("push: %d %s", a.status, a.body)
	}
	rec.Reset()
	c.do("HEAD", "/v2/team-a/app/blobs/"+ld.String(), nil, alice...)
	if n := rec.Count(func(r shroudtest.Request) bool { return shroudtest.IsWrite(r.Method) }); n != 0 {
		t.Errorf("alice's HEAD (pull only on team-a) made %d upstream writes, want none", n)
	}
	if a := c.do("GET", "/v2/team-a/app/blobs/"+ld.String(), nil, carol...); bytes.Equal(a.body, layer) {
		t.Errorf("carol (no grant on team-b) GETs team-b's layer plaintext from team-a: %d", a.status)
	}
}

// Attack: the upstream's challenge reaches a client of shroud's own
// authentication. The upstream refuses shroud's (here: missing)
// credentials on a tag list or the catalog with a token challenge; a
// client that got it would send that token service the credentials it
// holds for shroud. A user checks that alice gets 502 and no
// WWW-Authenticate, on every relayed read.
func TestOwnAuthNeverRelaysTheUpstreamsChallenge(t *testing.T) {
	up := shroudtest.Behind(t, shroudtest.Distribution(t), shroudtest.RequireAuth(true))
	s := shroudtest.Start(t, up, shroudtest.WithAuth(ownAuthConfig(t, map[string]string{"alice": "alice-pw"})))
	c := call{t, s.URL}
	alice := []string{"Authorization", atkBasicAuth("alice", "alice-pw")}
	_, d := randBlob(t, 10)
	for _, p := range []string{"/v2/team/app/tags/list", "/v2/_catalog", "/v2/team/app/referrers/" + d.String(), "/v2/team/app/manifests/1", "/v2/team/app/blobs/" + d.String()} {
		a := c.do("GET", p, nil, alice...)
		if a.status != 502 || a.header.Get("WWW-Authenticate") != "" {
			t.Errorf("GET %s as alice: %d, challenge %q; want 502 and none", p, a.status, a.header.Get("WWW-Authenticate"))
		}
	}
}

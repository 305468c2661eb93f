package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/opencontainers/go-digest"
)

// DESIGN.md §10: secrets never appear in logs, error bodies or metric
// labels. The shroud binary runs at --log-level debug with
// --metrics-listen, holding known secrets: htpasswd passwords and JWTs of
// its own authentication, credentials for an upstream that wants Basic
// auth (--upstream-auth-file), an identity key, a decryption key whose
// PEM is encrypted with a known passphrase. skopeo, crane and raw
// requests push and pull through a recording reverse proxy in front of
// it, on the paths that succeed and on those that fail: wrong passwords,
// expired and forged tokens, a malformed manifest, wrong digests, a
// denied repository, another client's upload session, mounts, upstream
// credentials the upstream refuses, a registry that dies with upload
// sessions open, then an upstream that is not there at all.
// Then every line shroud logged, every answer (status, headers, body) a
// client got and the whole /metrics text are searched for every secret:
// the passwords and their base64 user:password, the tokens and their
// signatures, every Authorization value a client or shroud sent, the
// private keys (PEM, DER, scalars and primes as a JWK holds them), the
// passphrase, and the upload states (_state, Locations) the upstream
// handed out. A second run does the same where the upstream decides (the
// client's credentials go upstream); a third starts shroud with
// configurations that must fail and searches what it says for theirs.
func TestNoSecretInLogsErrorsOrMetrics(t *testing.T) {
	start := time.Now()
	bin := buildShroud(t)
	keys := newLeakKeys(t)
	t.Run("runs", func(t *testing.T) {
		t.Run("own-auth", func(t *testing.T) { t.Parallel(); noSecretOwnAuth(t, bin, keys) })
		t.Run("upstream-decides", func(t *testing.T) { t.Parallel(); noSecretUpstreamDecides(t, bin, keys) })
		t.Run("start-up-errors", func(t *testing.T) { t.Parallel(); noSecretStartupErrors(t, bin, keys) })
	})
	t.Logf("secrets scan took %s", time.Since(start).Round(100*time.Millisecond))
}

// leakKeys are the key files the runs give shroud.
type leakKeys struct {
	identity        string // --identity: an EC key, PKCS#8 PEM
	opsPub          string // public key of the ops key: the encrypt rules' jwe recipient
	opsEnc          string // the ops private key, PEM encrypted with passphrase
	passphrase      string
	wrongPassphrase string
	identityPEM     []byte
	identityKey     *ecdsa.PrivateKey
	opsKey          *rsa.PrivateKey
	opsEncPEM       []byte
}

func newLeakKeys(t *testing.T) *leakKeys {
	t.Helper()
	dir := t.TempDir()
	k := &leakKeys{passphrase: randomSecret("passphrase-"), wrongPassphrase: randomSecret("wrong-passphrase-")}
	var err error
	if k.identityKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	p8, err := x509.MarshalPKCS8PrivateKey(k.identityKey)
	if err != nil {
		t.Fatal(err)
	}
	k.identityPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8})
	k.identity = filepath.Join(dir, "identity.pem")
	if k.opsKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	//lint:ignore SA1019 legacy encrypted PEM is what ocicrypt (and so --decryption-key file:password) opens
	blk, err := x509.EncryptPEMBlock(rand.Reader, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(k.opsKey), []byte(k.passphrase), x509.PEMCipherAES256) //nolint:staticcheck
	if err != nil {
		t.Fatal(err)
	}
	k.opsEncPEM = pem.EncodeToMemory(blk)
	pkix, err := x509.MarshalPKIXPublicKey(&k.opsKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	k.opsPub, k.opsEnc = filepath.Join(dir, "ops.pub.pem"), filepath.Join(dir, "ops.enc.pem")
	for p, b := range map[string][]byte{k.identity: k.identityPEM, k.opsEnc: k.opsEncPEM,
		k.opsPub: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkix})} {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return k
}

// decryptionKey is the --decryption-key argument: file:passphrase.
func (k *leakKeys) decryptionKey() string { return k.opsEnc + ":" + k.passphrase }

func (k *leakKeys) addTo(t *testing.T, s *secretSet) {
	t.Helper()
	s.addPrivateKey(t, "identity key", k.identityPEM, k.identityKey)
	s.addPrivateKey(t, "ops decryption key", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k.opsKey)}), k.opsKey)
	s.addPrivateKey(t, "ops decryption key's encrypted file", k.opsEncPEM, k.opsKey)
	s.add("decryption key passphrase", k.passphrase)
	s.add("wrong decryption key passphrase", k.wrongPassphrase)
	s.add("--decryption-key argument (file:passphrase)", k.decryptionKey())
}

// leakRun is one shroud under test, reached through a frontRecorder.
type leakRun struct {
	t       *testing.T
	secrets *secretSet
	said    *corpus
	front   *frontRecorder
	// owner may push to and pull from team/**; other may push too, as
	// another principal; wrong is owner's user with a wrong password.
	owner, other, wrong func(*http.Request)
	// ownerCreds is owner's user:password for skopeo.
	ownerCreds string
	// denied is a repository owner may not pull.
	denied string
}

func (r *leakRun) url(path string) string { return r.front.URL + path }

// want checks an answer's status against the statuses allowed; a
// mismatch is an error (the run goes on: what is searched is what
// shroud said, whatever it was).
func (r *leakRun) want(what string, resp *http.Response, body []byte, statuses ...int) {
	r.t.Helper()
	if !slices.Contains(statuses, resp.StatusCode) {
		r.t.Errorf("%s: %d %.300s, want one of %v", what, resp.StatusCode, body, statuses)
	}
}

// location resolves an answer's Location against the front, with extra
// query appended.
func (r *leakRun) location(resp *http.Response, query string) string {
	r.t.Helper()
	l := resp.Header.Get("Location")
	if l == "" {
		r.t.Fatalf("no Location in a %d answer to %s %s", resp.StatusCode, resp.Request.Method, resp.Request.URL.Path)
	}
	base, _ := url.Parse(r.front.URL)
	u, err := base.Parse(l)
	if err != nil {
		r.t.Fatal(err)
	}
	s := u.String()
	if query != "" {
		if u.RawQuery != "" {
			s += "&" + query
		} else {
			s += "?" + query
		}
	}
	return s
}

// skopeoRoundTrip pushes an image to team/app:1 with skopeo and pulls it
// back, the manifest exact.
func (r *leakRun) skopeoRoundTrip() v1.Image {
	t := r.t
	t.Helper()
	src, img := ociLayout(t, 2, 100_000)
	ref := "docker://" + r.front.Host() + "/team/app:1"
	skopeo(t, "copy", "--dest-tls-verify=false", "--dest-creds", r.ownerCreds, src, ref)
	back := filepath.Join(t.TempDir(), "back")
	skopeo(t, "copy", "--src-tls-verify=false", "--src-creds", r.ownerCreds, ref, "oci:"+back+":app")
	raw, _ := layoutManifest(t, back)
	if want, _ := img.RawManifest(); !bytes.Equal(raw, want) {
		t.Errorf("skopeo pulled back another manifest than it pushed")
	}
	user, _, _ := strings.Cut(r.ownerCreds, ":")
	if out, err := skopeoErr(t, "copy", "--src-tls-verify=false", "--src-creds", user+":"+r.wrongPassword(), ref, "oci:"+filepath.Join(t.TempDir(), "x")+":app"); err == nil {
		t.Errorf("skopeo pulled with a wrong password:\n%s", out)
	}
	return img
}

func (r *leakRun) wrongPassword() string {
	req, _ := http.NewRequest("GET", "http://x/", nil)
	r.wrong(req)
	_, p, _ := req.BasicAuth()
	return p
}

// foreignImage is pushed by skopeo straight to the upstream (creds),
// encrypted there for the ops key, and pulled through shroud, which opens
// it with the passphrase-protected decryption key.
func (r *leakRun) foreignImage(upstreamHost, creds string, keys *leakKeys) {
	t := r.t
	t.Helper()
	src, img := ociLayout(t, 1, 100_000)
	skopeo(t, "copy", "--dest-tls-verify=false", "--dest-creds", creds, "--encryption-key", "jwe:"+keys.opsPub, src, "docker://"+upstreamHost+"/team/foreign:1")
	back := filepath.Join(t.TempDir(), "foreign")
	out, err := skopeoErr(t, "copy", "--src-tls-verify=false", "--src-creds", r.ownerCreds, "docker://"+r.front.Host()+"/team/foreign:1", "oci:"+back+":app")
	if err != nil {
		t.Errorf("pulling an image encrypted for the decryption key through shroud: %v\n%s", err, out)
		return
	}
	if _, m := layoutManifest(t, back); !slices.Equal(manifestLayerDigests(m), layerDigests(t, img)) {
		t.Errorf("the image encrypted for the decryption key came back with layers %v, want the plaintext %v", manifestLayerDigests(m), layerDigests(t, img))
	}
}

// failures are the failure paths both runs share, made as raw requests.
func (r *leakRun) failures(img v1.Image) {
	t := r.t
	t.Helper()
	const ociManifest = "application/vnd.oci.image.manifest.v1+json"
	asManifest := header("Content-Type", ociManifest)

	// A malformed manifest, and one naming a blob never pushed.
	resp, body := request(t, "PUT", r.url("/v2/team/app/manifests/broken"), []byte(`{"schemaVersion":2,"mediaType":"`+ociManifest+`","config":{"mediaType":`), also(r.owner, asManifest))
	r.want("PUT of a malformed manifest", resp, body, 400)
	dangling := fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":2},"layers":[]}`,
		ociManifest, digest.FromString("a config nobody pushed"))
	resp, body = request(t, "PUT", r.url("/v2/team/app/manifests/dangling"), []byte(dangling), also(r.owner, asManifest))
	r.want("PUT of a manifest naming a blob never pushed", resp, body, 400, 404)
	resp, body = request(t, "PUT", r.url("/v2/team/app/manifests/"+digest.FromString("not this manifest").String()), []byte(dangling), also(r.owner, asManifest))
	r.want("PUT of a manifest under another digest", resp, body, 400, 404)

	// Wrong digests: a monolithic upload, a session's last PUT, a
	// malformed digest, blobs and manifests never pushed.
	wrongDigest := digest.FromString("other bytes").String()
	resp, body = request(t, "POST", r.url("/v2/team/app/blobs/uploads/?digest="+wrongDigest), []byte("these bytes"), also(r.owner, header("Content-Type", "application/octet-stream")))
	r.want("monolithic upload with a wrong digest", resp, body, 400)
	resp, body = request(t, "POST", r.url("/v2/team/app/blobs/uploads/"), nil, r.owner)
	r.want("POST of an upload", resp, body, 202)
	if resp.StatusCode == 202 {
		loc := r.location(resp, "")
		resp, body = request(t, "PATCH", loc, []byte("a chunk"), also(r.owner, header("Content-Type", "application/octet-stream")))
		r.want("PATCH of a chunk", resp, body, 202)
		if resp.StatusCode == 202 {
			resp, body = request(t, "PUT", r.location(resp, "digest="+url.QueryEscape(wrongDigest)), nil, r.owner)
			r.want("PUT closing an upload with a wrong digest", resp, body, 400)
		}
	}
	for _, p := range []string{"/v2/team/app/blobs/sha256:zz", "/v2/team/app/blobs/" + digest.FromString("never pushed").String(),
		"/v2/team/app/manifests/" + digest.FromString("never pushed").String(), "/v2/team/app/manifests/no-such-tag"} {
		resp, body = request(t, "GET", r.url(p), nil, r.owner)
		r.want("GET "+p, resp, body, 400, 404)
	}

	// Another principal's upload session: neither they nor an anonymous
	// client may touch it; it stays its owner's.
	resp, body = request(t, "POST", r.url("/v2/team/app/blobs/uploads/"), nil, r.owner)
	r.want("POST of an upload", resp, body, 202)
	if resp.StatusCode == 202 {
		loc := r.location(resp, "")
		chunk := []byte("the owner's bytes")
		for _, c := range []struct {
			who    string
			set    func(*http.Request)
			method string
			u      string
		}{
			{"another principal", r.other, "GET", loc},
			{"another principal", r.other, "PATCH", loc},
			{"another principal", r.other, "PUT", r.locationOf(loc, "digest="+digest.FromBytes(chunk).String())},
			{"another principal", r.other, "DELETE", loc},
			{"an anonymous client", nil, "PATCH", loc},
			{"a wrong password", r.wrong, "PATCH", loc},
		} {
			resp, body := request(t, c.method, c.u, chunk, c.set)
			if resp.StatusCode < 400 {
				t.Errorf("%s %s another's upload session: %d %.300s, want a refusal", c.who, c.method, resp.StatusCode, body)
			}
		}
		resp, body = request(t, "PUT", r.locationOf(loc, "digest="+digest.FromBytes(chunk).String()), chunk, also(r.owner, header("Content-Type", "application/octet-stream")))
		r.want("the owner closing its upload session", resp, body, 201)
	}

	// Wrong credentials, none, malformed ones.
	ls, _ := img.Layers()
	layer, _ := ls[0].Digest()
	for _, p := range []string{"/v2/team/app/manifests/1", "/v2/team/app/blobs/" + layer.String()} {
		resp, body = request(t, "GET", r.url(p), nil, r.wrong)
		r.want("GET "+p+" with a wrong password", resp, body, 401)
		resp, body = request(t, "GET", r.url(p), nil, header("Authorization", "Basic !!not-base64!!"))
		r.want("GET "+p+" with malformed Basic credentials", resp, body, 400, 401)
		resp, body = request(t, "GET", r.url(p), nil, header("Authorization", base64.StdEncoding.EncodeToString([]byte(r.ownerCreds))))
		r.want("GET "+p+" with credentials but no scheme", resp, body, 400, 401)
	}
	resp, body = request(t, "GET", r.url("/v2/"), nil, nil)
	r.want("anonymous ping", resp, body, 200, 401)
	resp, body = request(t, "GET", r.url("/v2/"), nil, r.owner)
	r.want("ping", resp, body, 200)
	resp, body = request(t, "GET", r.url("/v2/_catalog"), nil, r.owner)
	r.want("catalog", resp, body, 200, 401, 403, 404)

	// Mounts: from a repository holding the layer, from one that does
	// not, from the denied one.
	for _, from := range []string{"team/app", "team/nothing-here", r.denied} {
		resp, body = request(t, "POST", r.url("/v2/team/mounted/blobs/uploads/?mount="+layer.String()+"&from="+from), nil, r.owner)
		r.want("mount from "+from, resp, body, 201, 202)
	}

	// A repository the owner may not read nor write.
	resp, body = request(t, "GET", r.url("/v2/"+r.denied+"/manifests/1"), nil, r.owner)
	r.want("GET of a denied repository's manifest", resp, body, 403)
	resp, body = request(t, "POST", r.url("/v2/"+r.denied+"/blobs/uploads/"), nil, r.owner)
	r.want("POST of an upload to a denied repository", resp, body, 403)
	resp, body = request(t, "GET", r.url("/v2/"+r.denied+"/tags/list"), nil, r.owner)
	r.want("tags of a denied repository", resp, body, 403)
}

// locationOf appends query to an absolute session URL.
func (r *leakRun) locationOf(loc, query string) string {
	if strings.Contains(loc, "?") {
		return loc + "&" + query
	}
	return loc + "?" + query
}

// deadUpstream kills the registry, then the spy in front of it, and
// pulls again: answers of a registry that fails, then of one that is not
// there.
func (r *leakRun) deadUpstream(reg *registryProcess, spy *upstreamSpy, img v1.Image) {
	t := r.t
	t.Helper()
	ls, _ := img.Layers()
	layer, _ := ls[1].Digest()
	// Upload sessions open upstream when it dies, one per round: their
	// next chunk goes to a Location that carries the upstream's _state.
	chunk := []byte("bytes of an upload the upstream will not see finished")
	var sessions []string
	for range 2 {
		resp, body := request(t, "POST", r.url("/v2/team/app/blobs/uploads/"), nil, r.owner)
		r.want("POST of an upload", resp, body, 202)
		if resp.StatusCode != 202 {
			return
		}
		resp, body = request(t, "PATCH", r.location(resp, ""), chunk[:10], also(r.owner, header("Content-Type", "application/octet-stream")))
		r.want("PATCH of a first chunk", resp, body, 202)
		sessions = append(sessions, r.location(resp, ""))
	}
	reg.stop()
	ref := "docker://" + r.front.Host() + "/team/app:1"
	for round, what := range []string{"a registry the spy cannot reach (502)", "no registry at all (connection refused)"} {
		if round == 1 {
			spy.srv.Close()
		}
		resp, body := request(t, "PATCH", sessions[round], chunk[10:], also(r.owner, header("Content-Type", "application/octet-stream")))
		r.want("PATCH of a chunk with "+what, resp, body, 202, 502, 503, 504)
		resp, body = request(t, "PUT", r.locationOf(sessions[round], "digest="+digest.FromBytes(chunk).String()), nil, r.owner)
		if resp.StatusCode < 400 {
			t.Errorf("PUT closing an upload with %s: %d %.300s, want a refusal", what, resp.StatusCode, body)
		}
		resp, body = request(t, "POST", r.url("/v2/team/app/blobs/uploads/?mount="+layer.String()+"&from=team/other"), nil, r.owner)
		r.want("POST of a mount with "+what, resp, body, 201, 202, 502, 503, 504)
		if out, err := skopeoErr(t, "copy", "--src-tls-verify=false", "--src-creds", r.ownerCreds, ref, "oci:"+filepath.Join(t.TempDir(), "dead")+":app"); err == nil {
			t.Logf("skopeo pulled with %s: %s", what, out)
		}
		resp, body = request(t, "GET", r.url("/v2/team/app/blobs/"+layer.String()), nil, r.owner)
		if resp.StatusCode < 500 {
			t.Errorf("GET of a blob with %s: %d %.300s, want a 5xx", what, resp.StatusCode, body)
		}
		resp, body = request(t, "GET", r.url("/v2/team/app/manifests/no-such-tag"), nil, r.owner)
		r.want("GET of a manifest with "+what, resp, body, 502, 503, 504)
		resp, body = request(t, "POST", r.url("/v2/team/app/blobs/uploads/"), nil, r.owner)
		r.want("POST of an upload with "+what, resp, body, 502, 503, 504)
		resp, body = request(t, "GET", r.url("/readyz"), nil, nil)
		r.want("readyz with "+what, resp, body, 503)
	}
}

// finish stops shroud and searches its log, every answer the clients
// got and the metrics for every secret.
func (r *leakRun) finish(cmd *exec.Cmd, logs *syncBuffer, metricsAddr string, spy *upstreamSpy, label string) {
	t := r.t
	t.Helper()
	metrics := scrape(t, "http://"+metricsAddr+"/metrics")
	if !strings.Contains(metrics, "shroud_") {
		t.Errorf("the metrics hold no shroud_ series:\n%.2000s", metrics)
	}
	r.said.add("/metrics ("+label+")", metrics)
	stopShroud(t, cmd)
	log := logs.String()
	r.said.add("shroud's log ("+label+")", log)
	if !strings.Contains(log, "level=DEBUG") {
		t.Errorf("shroud logged no debug line: --log-level debug did not take")
	}

	exchanges := r.front.exchanges()
	for _, e := range exchanges {
		r.said.add(fmt.Sprintf("the answer to %s %s (%s)", e.method, e.uri, label), e.answerText())
		for _, a := range e.auth {
			r.secrets.add("Authorization a client sent", a)
			if _, cred, ok := strings.Cut(a, " "); ok {
				r.secrets.add("credential of an Authorization a client sent", cred)
			}
		}
	}
	auths, states := spy.addTo(r.secrets)
	if auths == 0 || states == 0 {
		t.Errorf("the upstream saw %d Authorization headers and handed out %d upload states: the search for them proves nothing", auths, states)
	}
	secrets := r.secrets.all()
	assertNoSecrets(t, secrets, r.said.all())
	t.Logf("%s: searched %d lines of log, %d answers and %d lines of metrics for %d secrets (%d upload states from the upstream)",
		label, strings.Count(log, "\n"), len(exchanges), strings.Count(metrics, "\n"), len(secrets), states)
}

// craneImage pushes a small random image to ref with crane under
// dockerConfig and pulls it back, the layers exact.
func craneImage(t *testing.T, dockerConfig, ref string) {
	t.Helper()
	img, err := random.Image(50_000, 1)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in.tar"), filepath.Join(dir, "out.tar")
	if err := tarball.WriteToFile(in, name.MustParseReference("example/img:1"), img); err != nil {
		t.Fatal(err)
	}
	if _, errOut, err := craneAs(t, dockerConfig, "push", in, ref); err != nil {
		t.Fatalf("crane push %s: %v\n%s", ref, err, errOut)
	}
	if _, errOut, err := craneAs(t, dockerConfig, "pull", "--format", "tarball", ref, out); err != nil {
		t.Fatalf("crane pull %s: %v\n%s", ref, err, errOut)
	}
	pulled, err := tarball.ImageFromPath(out, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(layerDigests(t, pulled), layerDigests(t, img)) {
		t.Errorf("crane pulled back other layers than it pushed")
	}
}

// basicRegistry runs distribution v3 with htpasswd users.
func basicRegistry(t *testing.T, users map[string]string) (up string, host string, reg *registryProcess, htpasswd string) {
	t.Helper()
	htpasswd = writeHtpasswd(t, users)
	u, reg := startRegistry(t, "distribution-v3-htpasswd", tool("registry"), "auth:\n  htpasswd:\n    realm: e2e-realm\n    path: "+htpasswd+"\n")
	return u.URL, u.Host(), reg, htpasswd
}

// Shroud authenticates clients itself: htpasswd (--auth-htpasswd) and
// JWTs, its own credentials for the upstream.
func noSecretOwnAuth(t *testing.T, bin string, keys *leakKeys) {
	secrets := &secretSet{}
	keys.addTo(t, secrets)
	svc, svcPass := "shroud-svc", randomSecret("svc-pass-")
	upURL, upHost, reg, upHtpasswd := basicRegistry(t, map[string]string{svc: svcPass})
	spy := spyUpstream(t, upURL)
	users := map[string]string{"alice": randomSecret("alice-pass-"), "bob": randomSecret("bob-pass-")}
	wrong := randomSecret("alice-wrong-")
	htpasswd := writeHtpasswd(t, users)
	for u, p := range users {
		secrets.addPassword(u, p)
	}
	secrets.addPassword("alice", wrong)
	secrets.addPassword(svc, svcPass)
	secrets.addHtpasswd(t, htpasswd)
	secrets.addHtpasswd(t, upHtpasswd)

	const iss, aud = "https://idp.example.com", "shroud-e2e"
	idp, rogueIdp := newTokenIssuer(t, "idp-1"), newTokenIssuer(t, "idp-1")
	for n, i := range map[string]tokenIssuer{"identity provider's signing key": idp, "another key's": rogueIdp} {
		p8, _ := x509.MarshalPKCS8PrivateKey(i.key)
		secrets.addPrivateKey(t, n, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}), i.key)
	}
	claims := func(sub string, exp time.Time) jwt.Claims {
		return jwt.Claims{Issuer: iss, Audience: jwt.Audience{aud}, Subject: sub,
			IssuedAt: jwt.NewNumericDate(time.Now().Add(-2 * time.Hour)), Expiry: jwt.NewNumericDate(exp)}
	}
	soon := time.Now().Add(10 * time.Minute)
	tok := idp.sign(t, claims("ci-bot", soon), []string{"builders"})
	expired := idp.sign(t, claims("ci-bot", time.Now().Add(-time.Hour)), []string{"builders"})
	rogue := rogueIdp.sign(t, claims("ci-bot", soon), []string{"builders"})
	outsider := idp.sign(t, claims("someone", soon), []string{"staff"})
	for n, v := range map[string]string{"token": tok, "expired token": expired, "token signed by another key": rogue, "token without the group": outsider} {
		secrets.addToken(n, v)
	}

	authFilePath := authFile(t, spy.Host(), svc, svcPass)
	cfg := writeOwnAuthConfig(t, spy.URL, fmt.Sprintf(`upstream-auth-file: %s
auth:
  jwt:
    issuer: %s
    audience: %s
    jwks: %s
policy:
  - repositories: "team/**"
    action: encrypt
    recipients: ["jwe:%s"]
    pull: ["user:alice", "group:builders"]
    push: ["user:alice", "group:builders"]
  - repositories: "private/**"
    action: encrypt
    pull: ["user:bob"]
    push: ["user:bob"]
`, authFilePath, iss, aud, writeJWKS(t, idp), keys.opsPub))
	maddr := freeAddr(t)
	addr, cmd, logs := startShroud(t, bin, "--config", cfg, "--auth-htpasswd", htpasswd, "--identity", keys.identity,
		"--decryption-key", keys.decryptionKey(), "--log-level", "debug", "--metrics-listen", maddr)
	front := recordFront(t, "http://"+addr)
	r := &leakRun{t: t, secrets: secrets, said: &corpus{}, front: front,
		owner: basicAuth("alice", users["alice"]), other: bearer(tok), wrong: basicAuth("alice", wrong),
		ownerCreds: "alice:" + users["alice"], denied: "private/crane"}

	img := r.skopeoRoundTrip()
	// crane with the token (a DOCKER_CONFIG registrytoken), and bob
	// logged in with crane auth login.
	craneImage(t, tokenDockerConfig(t, front.Host(), tok), front.Host()+"/team/crane:1")
	bobConfig := t.TempDir()
	if _, errOut, err := craneAs(t, bobConfig, "auth", "login", front.Host(), "-u", "bob", "-p", users["bob"]); err != nil {
		t.Fatalf("crane auth login: %v\n%s", err, errOut)
	}
	craneImage(t, bobConfig, front.Host()+"/private/crane:1")
	for what, bad := range map[string]string{"an expired token": expired, "another key's token": rogue} {
		if _, errOut, err := craneAs(t, tokenDockerConfig(t, front.Host(), bad), "pull", front.Host()+"/team/crane:1", filepath.Join(t.TempDir(), "x.tar")); err == nil {
			t.Errorf("crane pulled with %s", what)
		} else if !strings.Contains(strings.ToLower(errOut), "unauthorized") {
			t.Errorf("crane pull with %s: %s, want unauthorized", what, errOut)
		}
	}
	r.foreignImage(upHost, svc+":"+svcPass, keys)

	// Tokens that do not check, and one without the group.
	for what, bad := range map[string]string{"an expired token": expired, "another key's token": rogue, "a truncated token": tok[:len(tok)-10], "a token with a flipped signature": flipSignature(tok)} {
		resp, body := request(t, "GET", r.url("/v2/team/app/manifests/1"), nil, bearer(bad))
		r.want("GET with "+what, resp, body, 401)
		secrets.addToken(what, bad)
	}
	resp, body := request(t, "GET", r.url("/v2/team/app/manifests/1"), nil, bearer(outsider))
	r.want("GET with a token outside the group", resp, body, 403)
	resp, body = request(t, "POST", r.url("/v2/team/app/blobs/uploads/"), nil, bearer(expired))
	r.want("POST of an upload with an expired token", resp, body, 401)
	r.failures(img)
	// Anonymous: asked for credentials.
	resp, body = request(t, "GET", r.url("/v2/team/app/manifests/1"), nil, nil)
	r.want("anonymous GET", resp, body, 401)

	// A second shroud whose upstream credentials are wrong: the upstream
	// refuses them, the client is told shroud was refused.
	svcWrong := randomSecret("svc-wrong-")
	secrets.addPassword(svc, svcWrong)
	cfgWrong := writeOwnAuthConfig(t, spy.URL, fmt.Sprintf("upstream-auth-file: %s\npolicy:\n  - repositories: \"team/**\"\n    action: encrypt\n",
		authFile(t, spy.Host(), svc, svcWrong)))
	addrWrong, cmdWrong, logsWrong := startShroud(t, bin, "--config", cfgWrong, "--auth-htpasswd", htpasswd, "--identity", keys.identity,
		"--decryption-key", keys.decryptionKey(), "--log-level", "debug")
	frontWrong := recordFront(t, "http://"+addrWrong)
	for _, c := range []struct{ method, path string }{{"GET", "/v2/team/app/manifests/1"}, {"POST", "/v2/team/app/blobs/uploads/"},
		{"GET", "/v2/team/app/blobs/" + digest.FromString("any").String()}} {
		resp, body := request(t, c.method, frontWrong.URL+c.path, nil, r.owner)
		r.want(c.method+" "+c.path+" through a shroud the upstream refuses", resp, body, 502)
	}
	// The tags list and the catalog pass the upstream's answer on as it
	// is: its 401 and its challenge (reported: under shroud's own
	// authentication the upstream's challenges are not for the client). Their
	// answers are searched all the same.
	for _, p := range []string{"/v2/team/app/tags/list", "/v2/_catalog"} {
		resp, body := request(t, "GET", frontWrong.URL+p, nil, r.owner)
		if c := resp.Header.Get("Www-Authenticate"); c != "" {
			t.Logf("GET %s through a shroud the upstream refuses: %d with the upstream's challenge %q", p, resp.StatusCode, c)
		}
		r.want("GET "+p+" through a shroud the upstream refuses", resp, body, 401, 502)
	}
	stopShroud(t, cmdWrong)
	r.said.add("shroud's log (own auth, wrong upstream credentials)", logsWrong.String())
	for _, e := range frontWrong.exchanges() {
		r.said.add(fmt.Sprintf("the answer to %s %s (own auth, wrong upstream credentials)", e.method, e.uri), e.answerText())
	}

	r.deadUpstream(reg, spy, img)
	r.finish(cmd, logs, maddr, spy, "own auth")
}

// flipSignature changes a token's signature, keeping its form.
func flipSignature(tok string) string {
	i := strings.LastIndexByte(tok, '.')
	sig, _ := base64.RawURLEncoding.DecodeString(tok[i+1:])
	sig[len(sig)/2] ^= 0x55
	return tok[:i+1] + base64.RawURLEncoding.EncodeToString(sig)
}

// The default: the upstream decides, asked with the client's own
// credentials; shroud's (--upstream-auth-file) read for clients that send
// none.
func noSecretUpstreamDecides(t *testing.T, bin string, keys *leakKeys) {
	secrets := &secretSet{}
	keys.addTo(t, secrets)
	users := map[string]string{"carol": randomSecret("carol-pass-"), "dave": randomSecret("dave-pass-"), "reader": randomSecret("reader-pass-")}
	upURL, upHost, reg, upHtpasswd := basicRegistry(t, users)
	spy := spyUpstream(t, upURL)
	wrong := randomSecret("carol-wrong-")
	for u, p := range users {
		secrets.addPassword(u, p)
	}
	secrets.addPassword("carol", wrong)
	secrets.addHtpasswd(t, upHtpasswd)

	cfg := writeOwnAuthConfig(t, spy.URL, fmt.Sprintf(`policy:
  - repositories: "secret/**"
    action: deny
  - repositories: "**"
    action: encrypt
    recipients: ["jwe:%s"]
`, keys.opsPub))
	maddr := freeAddr(t)
	addr, cmd, logs := startShroud(t, bin, "--config", cfg, "--upstream-auth-file", authFile(t, spy.Host(), "reader", users["reader"]),
		"--identity", keys.identity, "--decryption-key", keys.decryptionKey(), "--log-level", "debug", "--metrics-listen", maddr)
	front := recordFront(t, "http://"+addr)
	r := &leakRun{t: t, secrets: secrets, said: &corpus{}, front: front,
		owner: basicAuth("carol", users["carol"]), other: basicAuth("dave", users["dave"]), wrong: basicAuth("carol", wrong),
		ownerCreds: "carol:" + users["carol"], denied: "secret/app"}

	img := r.skopeoRoundTrip()
	daveConfig := t.TempDir()
	if _, errOut, err := craneAs(t, daveConfig, "auth", "login", front.Host(), "-u", "dave", "-p", users["dave"]); err != nil {
		t.Fatalf("crane auth login: %v\n%s", err, errOut)
	}
	craneImage(t, daveConfig, front.Host()+"/team/crane:1")
	wrongConfig := t.TempDir()
	craneAs(t, wrongConfig, "auth", "login", front.Host(), "-u", "dave", "-p", wrong)
	if _, _, err := craneAs(t, wrongConfig, "pull", front.Host()+"/team/crane:1", filepath.Join(t.TempDir(), "x.tar")); err == nil {
		t.Errorf("crane pulled with a wrong password")
	}
	r.foreignImage(upHost, "carol:"+users["carol"], keys)

	// Anonymous reads go upstream with shroud's credentials; an anonymous
	// write gets the upstream's 401.
	resp, body := request(t, "GET", r.url("/v2/team/app/manifests/1"), nil, header("Accept", "application/vnd.oci.image.manifest.v1+json"))
	r.want("anonymous GET (shroud's upstream credentials)", resp, body, 200)
	resp, body = request(t, "POST", r.url("/v2/team/app/blobs/uploads/"), nil, nil)
	r.want("anonymous POST of an upload", resp, body, 401)
	r.failures(img)

	r.deadUpstream(reg, spy, img)
	r.finish(cmd, logs, maddr, spy, "upstream decides")
}

// Configurations that must stop shroud at start-up, each holding a
// secret; what shroud says holds none.
func noSecretStartupErrors(t *testing.T, bin string, keys *leakKeys) {
	secrets := &secretSet{}
	keys.addTo(t, secrets)
	said := &corpus{}
	dir := t.TempDir()
	pw := randomSecret("plain-pass-")
	secrets.addPassword("alice", pw)
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// An identity as a JWK whose curve is unknown: its "d" is the
	// identity's scalar.
	d, _ := keys.identityKey.Bytes()
	jwk, _ := json.Marshal(map[string]string{"kty": "EC", "crv": "P-999", "d": base64.RawURLEncoding.EncodeToString(d),
		"x": base64.RawURLEncoding.EncodeToString(keys.identityKey.X.Bytes()), "y": base64.RawURLEncoding.EncodeToString(keys.identityKey.Y.Bytes())})
	for _, c := range []struct {
		what string
		args []string
	}{
		{"a wrong passphrase", []string{"--decryption-key", keys.opsEnc + ":" + keys.wrongPassphrase}},
		{"no passphrase for an encrypted key", []string{"--decryption-key", keys.opsEnc}},
		{"a missing key file with a passphrase", []string{"--decryption-key", filepath.Join(dir, "missing.pem") + ":" + keys.passphrase}},
		{"an htpasswd line with a plaintext password", []string{"--auth-htpasswd", write("htpasswd", "alice:"+pw+"\n")}},
		{"an auth file whose auth is not base64", []string{"--upstream-auth-file", write("auth-plain.json", `{"auths":{"127.0.0.1:1":{"auth":"alice:`+pw+`"}}}`)}},
		{"an auth file whose auth holds no user", []string{"--upstream-auth-file", write("auth-nouser.json", `{"auths":{"127.0.0.1:1":{"auth":"`+base64.StdEncoding.EncodeToString([]byte(pw))+`"}}}`)}},
		{"an auth file that is not JSON", []string{"--upstream-auth-file", write("auth-broken.json", `{"auths":{"127.0.0.1:1":{"password":"`+pw+`",}}}`)}},
		{"an identity JWK of an unknown curve", []string{"--identity", write("identity.jwk", string(jwk))}},
		{"a truncated identity", []string{"--identity", write("identity-cut.pem", string(keys.identityPEM[:len(keys.identityPEM)-40]))}},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		args := append([]string{"serve", "--listen", freeAddr(t), "--data-dir", t.TempDir(), "--upstream", "http://127.0.0.1:1", "--log-level", "debug"}, c.args...)
		out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
		timedOut := ctx.Err() != nil
		cancel()
		if err == nil || timedOut {
			t.Errorf("shroud started with %s (%v):\n%s", c.what, err, out)
		}
		said.add("shroud's output on "+c.what, string(out))
	}
	assertNoSecrets(t, secrets.all(), said.all())
}

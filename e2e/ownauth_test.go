package e2e

import (
	"bytes"
	"crypto/tls"
	"crypto/x509/pkix"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/opencontainers/go-digest"
)

// shroud's own authentication (auth: in the config), end to end: the
// shroud binary in front of distribution v3, with a recording reverse
// proxy between the two that shows which credentials reached the
// registry, driven by skopeo and crane (or, for client certificates,
// go-containerregistry's remote package, the library crane is built on:
// crane has no client-certificate flag).

// TestOwnAuth runs each mode's test against one build of the shroud
// binary.
func TestOwnAuth(t *testing.T) {
	bin := buildShroud(t)
	for _, c := range []struct {
		name string
		run  func(*testing.T, string)
	}{
		{"htpasswd", ownAuthHtpasswd},
		{"jwt", ownAuthJWT},
		{"client-certificate", ownAuthClientCertificate},
		{"grants", ownAuthGrants},
		{"anonymous-skopeo", ownAuthAnonymousSkopeo},
	} {
		t.Run(c.name, func(t *testing.T) { c.run(t, bin) })
	}
}

// cranePushPull pushes a small random image to ref with crane under
// dockerConfig's credentials, and checks that crane digest and crane pull
// give back the same image, layer bytes included.
func cranePushPull(t *testing.T, dockerConfig, ref string) v1.Image {
	t.Helper()
	img, err := random.Image(100_000, 2)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tarPath := filepath.Join(dir, "img.tar")
	if err := tarball.WriteToFile(tarPath, name.MustParseReference("example/img:1"), img); err != nil {
		t.Fatal(err)
	}
	craneOK(t, dockerConfig, "push", tarPath, ref)
	if got, want := craneOK(t, dockerConfig, "digest", ref), digestOf(t, img); got != want {
		t.Fatalf("crane digest %s, want %s", got, want)
	}
	out := filepath.Join(dir, "out.tar")
	craneOK(t, dockerConfig, "pull", "--format", "tarball", ref, out)
	pulled, err := tarball.ImageFromPath(out, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := layerDigests(t, pulled), layerDigests(t, img); !slices.Equal(got, want) {
		t.Fatalf("crane pull layers %v, want %v", got, want)
	}
	assertLayerBytes(t, img, func(d string) []byte {
		h, _ := v1.NewHash(d)
		l, err := pulled.LayerByDigest(h)
		if err != nil {
			t.Fatal(err)
		}
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		b, _ := io.ReadAll(rc)
		return b
	})
	return img
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// isDenied says whether a client's error output tells of a 403: skopeo
// prints the DENIED error's text, or for a HEAD (no body) the status.
func isDenied(out string) bool {
	out = strings.ToLower(out)
	return strings.Contains(out, "denied") || strings.Contains(out, "403 (forbidden)")
}

// htpasswd: skopeo (--src-creds/--dest-creds) and crane (crane auth login
// into a private DOCKER_CONFIG) push and pull through shroud, the images
// exact; a wrong password is an authentication error in both; no
// credentials get 401 with shroud's Basic challenge and no content. The
// upstream wants credentials of its own: it only ever sees shroud's (from
// upstream-auth-file), never a client's password.
func ownAuthHtpasswd(t *testing.T, bin string) {
	up := htpasswdRegistry(t, "shroud-svc", "svc-pass")
	rec := recordUpstream(t, up.URL)
	users := map[string]string{"alice": "alice-s3cret", "bob": "bob-s3cret"}
	cfg := writeOwnAuthConfig(t, rec.URL, fmt.Sprintf(`upstream-auth-file: %s
auth:
  htpasswd: %s
policy:
  - repositories: "team/**"
    action: encrypt
`, authFile(t, rec.Host(), "shroud-svc", "svc-pass"), writeHtpasswd(t, users)))
	addr, _, logs := startShroud(t, bin, "--config", cfg)
	base := "http://" + addr

	// skopeo, with credentials on the command line.
	src, img := ociLayout(t, 2, 100_000)
	ref := "docker://" + addr + "/team/app:1"
	skopeo(t, "copy", "--dest-tls-verify=false", "--dest-creds", "alice:alice-s3cret", src, ref)
	back := filepath.Join(t.TempDir(), "back")
	skopeo(t, "copy", "--src-tls-verify=false", "--src-creds", "alice:alice-s3cret", ref, "oci:"+back+":app")
	assertSameImage(t, img, back)
	// What the upstream holds is ciphertext.
	if out := skopeo(t, "inspect", "--raw", "--tls-verify=false", "--creds", "shroud-svc:svc-pass", "docker://"+up.Host()+"/team/app:1"); !strings.Contains(out, "+encrypted") {
		t.Fatalf("the upstream's manifest is not encrypted:\n%s", out)
	}

	// crane, logged in with crane auth login.
	dc := t.TempDir()
	craneOK(t, dc, "auth", "login", addr, "-u", "bob", "-p", "bob-s3cret")
	if b, err := os.ReadFile(filepath.Join(dc, "config.json")); err != nil || !bytes.Contains(b, []byte(addr)) {
		t.Fatalf("crane auth login wrote no credentials for %s: %v %s", addr, err, b)
	}
	cranePushPull(t, dc, addr+"/team/crane:1")

	// A wrong password is an authentication error, to both clients.
	out, err := skopeoErr(t, "copy", "--src-tls-verify=false", "--src-creds", "alice:wrong", ref, "oci:"+filepath.Join(t.TempDir(), "x")+":app")
	if err == nil || !strings.Contains(strings.ToLower(out), "unauthorized") {
		t.Fatalf("skopeo pull with a wrong password: %v %s; want unauthorized", err, out)
	}
	bad := t.TempDir()
	craneOK(t, bad, "auth", "login", addr, "-u", "bob", "-p", "wrong")
	if _, errOut, err := craneAs(t, bad, "pull", addr+"/team/crane:1", filepath.Join(t.TempDir(), "x.tar")); err == nil || !strings.Contains(strings.ToLower(errOut), "unauthorized") {
		t.Fatalf("crane pull with a wrong password: %v %s; want unauthorized", err, errOut)
	}
	plain := layerPrefix(t, img, 256)
	ls, _ := img.Layers()
	layer, _ := ls[0].Digest()
	for _, path := range []string{"/v2/team/app/manifests/1", "/v2/team/app/blobs/" + layer.String()} {
		resp, body := send(t, nil, "GET", base+path, basicAuth("alice", "wrong"))
		if resp.StatusCode != http.StatusUnauthorized || !bytes.Contains(body, []byte("UNAUTHORIZED")) {
			t.Fatalf("GET %s with a wrong password: %d %s, want 401 UNAUTHORIZED", path, resp.StatusCode, body)
		}
		if bytes.Contains(body, plain) || bytes.Contains(body, []byte(`"layers"`)) {
			t.Fatalf("GET %s with a wrong password leaked content", path)
		}
		// No credentials: the challenge, no content.
		resp, body = send(t, nil, "GET", base+path, nil)
		if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") != `Basic realm="shroud"` {
			t.Fatalf("anonymous GET %s: %d %q, want 401 with Basic realm=\"shroud\"", path, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
		if bytes.Contains(body, plain) || bytes.Contains(body, []byte(`"layers"`)) {
			t.Fatalf("anonymous GET %s leaked content", path)
		}
	}
	if resp, _ := send(t, nil, "GET", base+"/v2/", nil); resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") != `Basic realm="shroud"` {
		t.Fatalf("anonymous ping: %d %q, want 401 with Basic realm=\"shroud\"", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	if resp, _ := send(t, nil, "GET", base+"/v2/", basicAuth("alice", "alice-s3cret")); resp.StatusCode != http.StatusOK {
		t.Fatalf("ping with credentials: %d, want 200", resp.StatusCode)
	}

	shroudsOwn := "Basic " + b64("shroud-svc:svc-pass")
	rec.assertNoClientSecrets(t, []string{shroudsOwn}, "alice-s3cret", "bob-s3cret",
		b64("alice:alice-s3cret"), b64("bob:bob-s3cret"), b64("alice:wrong"), b64("bob:wrong"))
	if !slices.ContainsFunc(rec.requests(), func(r recordedRequest) bool { return r.header.Get("Authorization") == shroudsOwn }) {
		t.Fatal("the upstream never saw shroud's own credentials")
	}
	for _, s := range []string{"alice-s3cret", "bob-s3cret", "level=ERROR"} {
		if strings.Contains(logs.String(), s) {
			t.Fatalf("shroud's log holds %q:\n%s", s, logs)
		}
	}
}

// JWT: tokens an identity provider signed (a JWKS file) authenticate
// skopeo (--src/dest-registry-token) and crane (a DOCKER_CONFIG
// registrytoken); the rule grants the token's group. The anonymous 401
// names realm, service and the scope asked for; an expired token, one
// signed by another key, one naming an unknown key and one for another
// audience get 401; a valid token without the group gets 403. No token
// reaches the upstream.
func ownAuthJWT(t *testing.T, bin string) {
	up := distributionV3(t)
	rec := recordUpstream(t, up.URL)
	const iss, aud = "https://idp.example.com", "shroud-e2e"
	idp := newTokenIssuer(t, "idp-1")
	cfg := writeOwnAuthConfig(t, rec.URL, fmt.Sprintf(`auth:
  jwt:
    issuer: %s
    audience: %s
    jwks: %s
    realm: https://idp.example.com/token
    service: shroud.example.com
  challenge: bearer
policy:
  - repositories: "team-j/**"
    action: encrypt
    push: ["group:builders"]
`, iss, aud, writeJWKS(t, idp)))
	addr, _, logs := startShroud(t, bin, "--config", cfg)
	base := "http://" + addr

	claims := func(sub, audience string, exp time.Time) jwt.Claims {
		return jwt.Claims{Issuer: iss, Audience: jwt.Audience{audience}, Subject: sub,
			IssuedAt: jwt.NewNumericDate(time.Now().Add(-time.Minute)), Expiry: jwt.NewNumericDate(exp)}
	}
	soon := time.Now().Add(10 * time.Minute)
	tok := idp.sign(t, claims("ci-bot", aud, soon), []string{"staff", "builders"})

	src, img := ociLayout(t, 2, 100_000)
	ref := "docker://" + addr + "/team-j/app:1"
	skopeo(t, "copy", "--dest-tls-verify=false", "--dest-registry-token", tok, src, ref)
	back := filepath.Join(t.TempDir(), "back")
	skopeo(t, "copy", "--src-tls-verify=false", "--src-registry-token", tok, ref, "oci:"+back+":app")
	assertSameImage(t, img, back)
	cranePushPull(t, tokenDockerConfig(t, addr, tok), addr+"/team-j/crane:1")

	// The anonymous challenge tells where to get a token, for what.
	const challenge = `Bearer realm="https://idp.example.com/token",service="shroud.example.com"`
	for _, c := range []struct{ method, path, want string }{
		{"GET", "/v2/", challenge},
		{"GET", "/v2/team-j/app/manifests/1", challenge + `,scope="repository:team-j/app:pull"`},
		{"POST", "/v2/team-j/app/blobs/uploads/", challenge + `,scope="repository:team-j/app:pull,push"`},
	} {
		resp, _ := send(t, nil, c.method, base+c.path, nil)
		if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") != c.want {
			t.Fatalf("anonymous %s %s: %d %q, want 401 %s", c.method, c.path, resp.StatusCode, resp.Header.Get("WWW-Authenticate"), c.want)
		}
	}

	// Tokens that do not check are refused.
	plain := layerPrefix(t, img, 256)
	expired := idp.sign(t, claims("ci-bot", aud, time.Now().Add(-time.Hour)), []string{"builders"})
	rogue := newTokenIssuer(t, "idp-1").sign(t, claims("ci-bot", aud, soon), []string{"builders"})
	unknownKey := newTokenIssuer(t, "idp-2").sign(t, claims("ci-bot", aud, soon), []string{"builders"})
	otherAud := idp.sign(t, claims("ci-bot", "another-service", soon), []string{"builders"})
	for what, bad := range map[string]string{"expired": expired, "another key's": rogue, "an unknown key's": unknownKey, "another audience's": otherAud} {
		resp, body := send(t, nil, "GET", base+"/v2/team-j/app/manifests/1", bearer(bad))
		if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), challenge) {
			t.Fatalf("GET with an %s token: %d %q %s, want 401 with the challenge", what, resp.StatusCode, resp.Header.Get("WWW-Authenticate"), body)
		}
		if bytes.Contains(body, []byte(`"layers"`)) || bytes.Contains(body, []byte(bad)) {
			t.Fatalf("the refusal of an %s token holds content or the token: %s", what, body)
		}
	}
	if out, err := skopeoErr(t, "copy", "--src-tls-verify=false", "--src-registry-token", expired, ref, "oci:"+filepath.Join(t.TempDir(), "x")+":app"); err == nil ||
		!strings.Contains(strings.ToLower(out), "unauthorized") {
		t.Fatalf("skopeo pull with an expired token: %v %s; want unauthorized", err, out)
	}
	if _, errOut, err := craneAs(t, tokenDockerConfig(t, addr, rogue), "pull", addr+"/team-j/crane:1", filepath.Join(t.TempDir(), "x.tar")); err == nil ||
		!strings.Contains(strings.ToLower(errOut), "unauthorized") {
		t.Fatalf("crane pull with another key's token: %v %s; want unauthorized", err, errOut)
	}

	// A valid token without the group: authenticated, not granted.
	reader := idp.sign(t, claims("someone", aud, soon), []string{"staff"})
	ls, _ := img.Layers()
	layer, _ := ls[0].Digest()
	for _, path := range []string{"/v2/team-j/app/manifests/1", "/v2/team-j/app/blobs/" + layer.String()} {
		resp, body := send(t, nil, "GET", base+path, bearer(reader))
		if resp.StatusCode != http.StatusForbidden || !bytes.Contains(body, []byte(`"DENIED"`)) || bytes.Contains(body, plain) || bytes.Contains(body, []byte(`"layers"`)) {
			t.Fatalf("GET %s with a token outside the group: %d %s, want 403 DENIED and no content", path, resp.StatusCode, body)
		}
	}

	rec.assertNoClientSecrets(t, nil, tok, expired, rogue, unknownKey, otherAud, reader)
	for _, s := range []string{tok, "level=ERROR"} {
		if strings.Contains(logs.String(), s) {
			t.Fatalf("shroud's log holds %.20q:\n%s", s, logs)
		}
	}
}

// Client certificates (mTLS): a certificate of the configured CA whose
// subject the rule grants pushes and pulls with skopeo
// (--dest/src-cert-dir) and with go-containerregistry's remote package
// over a transport carrying the certificate (crane itself has no
// client-certificate flag). No certificate: 401; a subject the rule does
// not grant: 403; a certificate of another CA, even with the granted
// subject: the handshake fails.
func ownAuthClientCertificate(t *testing.T, bin string) {
	up := distributionV3(t)
	rec := recordUpstream(t, up.URL)
	ca, otherCA := newTestCA(t, "shroud-e2e-ca"), newTestCA(t, "another-ca")
	srvCert, srvKey := ca.issue(t, t.TempDir(), "shroud", "crt", pkix.Name{CommonName: "shroud"}, true)
	cfg := writeOwnAuthConfig(t, rec.URL, fmt.Sprintf(`tls-cert: %s
tls-key: %s
auth:
  client-ca: %s
policy:
  - repositories: "cluster/**"
    action: encrypt
    push: ["subject:CN=node-*,O=cluster"]
`, srvCert, srvKey, ca.File))
	noCert := &http.Client{Transport: mtlsTransport(t, ca, "")}
	addr, _, logs := startShroudWith(t, bin, "https", noCert, "--config", cfg)
	base := "https://" + addr

	node := pkix.Name{CommonName: "node-1", Organization: []string{"cluster"}}
	good := clientCertDir(t, ca, ca, node)
	src, img := ociLayout(t, 2, 100_000)
	ref := "docker://" + addr + "/cluster/app:1"
	skopeo(t, "copy", "--dest-cert-dir", good, src, ref)
	back := filepath.Join(t.TempDir(), "back")
	skopeo(t, "copy", "--src-cert-dir", good, ref, "oci:"+back+":app")
	assertSameImage(t, img, back)

	// go-containerregistry's remote, crane's library, with the certificate.
	withCert := remote.WithTransport(mtlsTransport(t, ca, good))
	img2, err := random.Image(100_000, 2)
	if err != nil {
		t.Fatal(err)
	}
	gref, err := name.ParseReference(addr + "/cluster/ggcr:1")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(gref, img2, withCert); err != nil {
		t.Fatalf("remote.Write with a client certificate: %v", err)
	}
	pulled, err := remote.Image(gref, withCert)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := digestOf(t, pulled), digestOf(t, img2); got != want {
		t.Fatalf("remote.Image digest %s, want %s", got, want)
	}
	assertLayerBytes(t, img2, func(d string) []byte {
		h, _ := v1.NewHash(d)
		l, err := pulled.LayerByDigest(h)
		if err != nil {
			t.Fatal(err)
		}
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
	if _, err := remote.Image(gref, remote.WithTransport(mtlsTransport(t, ca, ""))); err == nil || !strings.Contains(err.Error(), "UNAUTHORIZED") {
		t.Fatalf("remote.Image without a client certificate: %v, want UNAUTHORIZED", err)
	}

	// No certificate: asked for credentials, shown nothing.
	plain := layerPrefix(t, img, 256)
	ls, _ := img.Layers()
	layer, _ := ls[0].Digest()
	paths := []string{"/v2/cluster/app/manifests/1", "/v2/cluster/app/blobs/" + layer.String()}
	for _, path := range paths {
		resp, body := send(t, noCert, "GET", base+path, nil)
		if resp.StatusCode != http.StatusUnauthorized || bytes.Contains(body, plain) || bytes.Contains(body, []byte(`"layers"`)) {
			t.Fatalf("GET %s without a certificate: %d %s, want 401 and no content", path, resp.StatusCode, body)
		}
	}
	if out, err := skopeoErr(t, "copy", "--src-cert-dir", certDir(t, ca.File), ref, "oci:"+filepath.Join(t.TempDir(), "x")+":app"); err == nil || !strings.Contains(strings.ToLower(out), "unauthorized") {
		t.Fatalf("skopeo pull without a client certificate: %v %s; want unauthorized", err, out)
	}

	// A certificate of the CA whose subject the rule does not grant.
	laptop := clientCertDir(t, ca, ca, pkix.Name{CommonName: "laptop", Organization: []string{"cluster"}})
	for _, path := range paths {
		resp, body := send(t, &http.Client{Transport: mtlsTransport(t, ca, laptop)}, "GET", base+path, nil)
		if resp.StatusCode != http.StatusForbidden || !bytes.Contains(body, []byte(`"DENIED"`)) || bytes.Contains(body, plain) {
			t.Fatalf("GET %s with an ungranted subject: %d %s, want 403 DENIED", path, resp.StatusCode, body)
		}
	}
	if out, err := skopeoErr(t, "copy", "--dest-cert-dir", laptop, src, "docker://"+addr+"/cluster/app:2"); err == nil || !isDenied(out) {
		t.Fatalf("skopeo push with an ungranted subject: %v %s; want denied (403)", err, out)
	}

	// A certificate of another CA, with the granted subject: no handshake.
	// Go's TLS client (skopeo's too) sends no certificate the server's
	// CertificateRequest does not name the CA of, so this client insists
	// on sending it; skopeo, holding only that certificate, is anonymous.
	foreign := clientCertDir(t, ca, otherCA, node)
	insist := mtlsTransport(t, ca, foreign)
	forced := insist.TLSClientConfig.Certificates[0]
	insist.TLSClientConfig.Certificates = nil
	insist.TLSClientConfig.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &forced, nil }
	for _, path := range paths {
		req, _ := http.NewRequest("GET", base+path, nil)
		resp, err := (&http.Client{Transport: insist}).Do(req)
		if err == nil {
			resp.Body.Close()
			t.Fatalf("GET %s with another CA's certificate: %d, want a failed handshake", path, resp.StatusCode)
		}
		if !strings.Contains(err.Error(), "tls") {
			t.Fatalf("GET %s with another CA's certificate: %v, want a TLS error", path, err)
		}
	}
	if out, err := skopeoErr(t, "copy", "--src-cert-dir", foreign, ref, "oci:"+filepath.Join(t.TempDir(), "x")+":app"); err == nil || !strings.Contains(strings.ToLower(out), "unauthorized") {
		t.Fatalf("skopeo pull with another CA's certificate: %v %s; want it anonymous, unauthorized", err, out)
	}

	rec.assertNoClientSecrets(t, nil)
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Fatalf("shroud logged errors:\n%s", logs)
	}
}

// Grants: team-a/** is pulled by alice and pushed by bob, public/** pulled
// by anyone. carol (authenticated, no grant) gets 403 DENIED, anonymous
// clients 401 on team-a; alice may not push. A refused client's answer is
// the same for what exists and what never did (tags, manifest and blob
// digests, mounts): no existence or size hint. Anonymous clients pull
// public/** (crane, plain HTTP); a mount needs pull on its source. The
// catalog lists what the client may pull.
func ownAuthGrants(t *testing.T, bin string) {
	up := distributionV3(t)
	rec := recordUpstream(t, up.URL)
	users := map[string]string{"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw", "dave": "dave-pw"}
	cfg := writeOwnAuthConfig(t, rec.URL, fmt.Sprintf(`auth:
  htpasswd: %s
policy:
  - repositories: "team-a/**"
    action: encrypt
    pull: ["user:alice"]
    push: ["user:bob"]
  - repositories: "public/**"
    action: encrypt
    pull: ["anonymous"]
    push: ["user:bob", "user:dave"]
`, writeHtpasswd(t, users)))
	addr, _, logs := startShroud(t, bin, "--config", cfg)
	base := "http://" + addr

	src, img := ociLayout(t, 2, 100_000)
	ref := "docker://" + addr + "/team-a/app:1"
	pub := "docker://" + addr + "/public/app:1"
	skopeo(t, "copy", "--dest-tls-verify=false", "--dest-creds", "bob:bob-pw", src, ref)
	psrc, pimg := ociLayout(t, 1, 50_000)
	skopeo(t, "copy", "--dest-tls-verify=false", "--dest-creds", "bob:bob-pw", psrc, pub)
	back := filepath.Join(t.TempDir(), "back")
	skopeo(t, "copy", "--src-tls-verify=false", "--src-creds", "alice:alice-pw", ref, "oci:"+back+":app")
	assertSameImage(t, img, back)

	// alice pulls, does not push; carol does neither.
	if out, err := skopeoErr(t, "copy", "--dest-tls-verify=false", "--dest-creds", "alice:alice-pw", src, "docker://"+addr+"/team-a/app:2"); err == nil ||
		!isDenied(out) {
		t.Fatalf("alice pushed to team-a (%v), want denied:\n%s", err, out)
	}
	if out, err := skopeoErr(t, "copy", "--src-tls-verify=false", "--src-creds", "carol:carol-pw", ref, "oci:"+filepath.Join(t.TempDir(), "x")+":app"); err == nil ||
		!isDenied(out) {
		t.Fatalf("carol pulled from team-a (%v), want denied:\n%s", err, out)
	}

	// What a refused client is told does not depend on what exists.
	wantDigest, _ := img.Digest()
	ls, _ := img.Layers()
	layer, _ := ls[0].Digest()
	never := digest.FromString("never pushed anywhere").String()
	plain := layerPrefix(t, img, 256)
	type probe struct{ method, exists, missing string }
	reads := []probe{
		{"GET", "/v2/team-a/app/manifests/1", "/v2/team-a/app/manifests/never"},
		{"HEAD", "/v2/team-a/app/manifests/1", "/v2/team-a/app/manifests/never"},
		{"GET", "/v2/team-a/app/manifests/" + wantDigest.String(), "/v2/team-a/app/manifests/" + never},
		{"GET", "/v2/team-a/app/blobs/" + layer.String(), "/v2/team-a/app/blobs/" + never},
		{"HEAD", "/v2/team-a/app/blobs/" + layer.String(), "/v2/team-a/app/blobs/" + never},
		{"GET", "/v2/team-a/app/tags/list", "/v2/team-a/zzz/tags/list"},
	}
	writes := []probe{
		{"POST", "/v2/team-a/app/blobs/uploads/?mount=" + layer.String() + "&from=public/app", "/v2/team-a/app/blobs/uploads/?mount=" + never + "&from=public/app"},
		{"DELETE", "/v2/team-a/app/manifests/" + wantDigest.String(), "/v2/team-a/app/manifests/" + never},
	}
	for _, c := range []struct {
		who    string
		set    func(*http.Request)
		probes []probe
		status int
	}{
		{"carol", basicAuth("carol", "carol-pw"), append(reads, writes...), http.StatusForbidden},
		{"anonymous", nil, append(reads, writes...), http.StatusUnauthorized},
		{"alice", basicAuth("alice", "alice-pw"), writes, http.StatusForbidden},
	} {
		for _, p := range c.probes {
			r1, b1 := send(t, nil, p.method, base+p.exists, c.set)
			r2, b2 := send(t, nil, p.method, base+p.missing, c.set)
			if r1.StatusCode != c.status {
				t.Fatalf("%s: %s %s: %d %s, want %d", c.who, p.method, p.exists, r1.StatusCode, b1, c.status)
			}
			if p.method != "HEAD" && !bytes.Contains(b1, []byte(map[int]string{401: `"UNAUTHORIZED"`, 403: `"DENIED"`}[c.status])) {
				t.Fatalf("%s: %s %s: %s, want the error code", c.who, p.method, p.exists, b1)
			}
			// The tags probe compares two repositories (names of one
			// length), which the answer may name; the others compare
			// within one.
			a1, a2 := answer(r1, b1), answer(r2, b2)
			if strings.HasSuffix(p.exists, "/tags/list") {
				a2 = strings.ReplaceAll(a2, "team-a/zzz", "team-a/app")
			}
			if a1 != a2 {
				t.Fatalf("%s is told apart what exists from what does not:\n%s %s:\n%s\n%s %s:\n%s", c.who, p.method, p.exists, a1, p.method, p.missing, a2)
			}
			if bytes.Contains(b1, plain) || bytes.Contains(b1, []byte(`"layers"`)) || bytes.Contains(b1, []byte(wantDigest.Hex[:16])) && !strings.Contains(p.exists, wantDigest.Hex) {
				t.Fatalf("%s: %s %s leaks content: %s", c.who, p.method, p.exists, b1)
			}
			if c.status == http.StatusUnauthorized && r1.Header.Get("WWW-Authenticate") != `Basic realm="shroud"` {
				t.Fatalf("anonymous %s %s: challenge %q", p.method, p.exists, r1.Header.Get("WWW-Authenticate"))
			}
		}
	}

	// public/**: anyone pulls, with crane, skopeo and plain HTTP; nobody
	// anonymous pushes.
	anon := t.TempDir()
	if got, want := craneOK(t, anon, "digest", addr+"/public/app:1"), digestOf(t, pimg); got != want {
		t.Fatalf("anonymous crane digest of public/app:1: %s, want %s", got, want)
	}
	pubTar := filepath.Join(t.TempDir(), "pub.tar")
	craneOK(t, anon, "pull", "--format", "tarball", addr+"/public/app:1", pubTar)
	if pulled, err := tarball.ImageFromPath(pubTar, nil); err != nil || !slices.Equal(layerDigests(t, pulled), layerDigests(t, pimg)) {
		t.Fatalf("anonymous crane pull of public/app:1: %v, another image", err)
	}
	pls, _ := pimg.Layers()
	pubLayer, _ := pls[0].Digest()
	if resp, body := send(t, nil, "GET", base+"/v2/public/app/blobs/"+pubLayer.String(), nil); resp.StatusCode != http.StatusOK || digest.FromBytes(body).String() != pubLayer.String() {
		t.Fatalf("anonymous GET of a public blob: %d, %d bytes", resp.StatusCode, len(body))
	}
	if resp, _ := send(t, nil, "POST", base+"/v2/public/app/blobs/uploads/", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("anonymous POST of an upload to public: %d, want 401", resp.StatusCode)
	}

	// A mount needs pull on its source: dave pushes to public/** but may
	// not read team-a/**, and mounting a layer only team-a holds mounts
	// nothing, and answers as for a blob that is nowhere.
	var mountStatus []int
	for _, d := range []string{layer.String(), never} {
		resp, body := send(t, nil, "POST", base+"/v2/public/dave/blobs/uploads/?mount="+d+"&from=team-a/app", basicAuth("dave", "dave-pw"))
		if resp.StatusCode == http.StatusCreated || resp.StatusCode >= 500 {
			t.Fatalf("dave's mount of %s from team-a: %d %s, want no mount", d, resp.StatusCode, body)
		}
		mountStatus = append(mountStatus, resp.StatusCode)
		if loc := resp.Header.Get("Location"); resp.StatusCode == http.StatusAccepted && loc != "" {
			send(t, nil, "DELETE", base+loc, basicAuth("dave", "dave-pw"))
		}
	}
	if mountStatus[0] != mountStatus[1] {
		t.Fatalf("dave's mounts from team-a of a layer it holds and of one nowhere: %v, want the same answer", mountStatus)
	}
	if resp, _ := send(t, nil, "HEAD", base+"/v2/public/dave/blobs/"+layer.String(), basicAuth("dave", "dave-pw")); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("after dave's refused mount public/dave holds the blob: HEAD %d", resp.StatusCode)
	}

	// The catalog lists what the client may pull.
	for who, want := range map[string]string{"carol": `{"repositories":["public/app"]}`, "dave": `{"repositories":["public/app"]}`, "alice": `{"repositories":["public/app","team-a/app"]}`} {
		resp, body := send(t, nil, "GET", base+"/v2/_catalog", basicAuth(who, users[who]))
		if resp.StatusCode != 200 || strings.TrimSpace(string(body)) != want {
			t.Fatalf("%s's catalog: %d %s, want %s", who, resp.StatusCode, body, want)
		}
	}

	var secrets []string
	for u, p := range users {
		secrets = append(secrets, p, b64(u+":"+p))
	}
	rec.assertNoClientSecrets(t, nil, secrets...)
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Fatalf("shroud logged errors:\n%s", logs)
	}
}

// skopeo (containers/image: podman, CRI-O, buildah alike) pulls
// anonymously from a rule granting pull to anonymous under htpasswd.
// /v2/ answers an anonymous client 401 with the Basic challenge, and
// containers/image then sends the empty credentials it holds, an
// Authorization of "Basic Og==" (":"), on every request: shroud must take
// that for anonymous, as crane's absent header is.
func ownAuthAnonymousSkopeo(t *testing.T, bin string) {
	up := distributionV3(t)
	cfg := writeOwnAuthConfig(t, up.URL, fmt.Sprintf(`auth:
  htpasswd: %s
policy:
  - repositories: "public/**"
    action: encrypt
    pull: ["anonymous"]
    push: ["user:bob"]
`, writeHtpasswd(t, map[string]string{"bob": "bob-pw"})))
	addr, _, _ := startShroud(t, bin, "--config", cfg)
	src, img := ociLayout(t, 1, 50_000)
	pub := "docker://" + addr + "/public/app:1"
	skopeo(t, "copy", "--dest-tls-verify=false", "--dest-creds", "bob:bob-pw", src, pub)

	if resp, body := send(t, nil, "GET", "http://"+addr+"/v2/public/app/manifests/1", func(r *http.Request) { r.Header.Set("Authorization", "Basic Og==") }); resp.StatusCode != http.StatusOK {
		t.Errorf("GET of a public manifest with the empty Basic credentials skopeo sends: %d %s, want 200 as anonymous", resp.StatusCode, body)
	}
	back := filepath.Join(t.TempDir(), "pub")
	if out, err := skopeoErr(t, "copy", "--src-tls-verify=false", "--src-no-creds", pub, "oci:"+back+":app"); err != nil {
		t.Fatalf("anonymous skopeo pull of public/app:1: %v\n%s", err, out)
	}
	assertSameImage(t, img, back)
}

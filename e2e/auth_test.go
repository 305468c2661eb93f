package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	"golang.org/x/crypto/bcrypt"

	"github.com/shroud-oci/shroud/internal/shroudtest"
)

// An upstream with htpasswd basic auth: skopeo with the right credentials
// pushes and pulls through shroud; a wrong password gets the upstream's
// 401 from shroud and not one byte of plaintext.
func TestHtpasswdUpstream(t *testing.T) {
	up := htpasswdRegistry(t, "alice", "s3cret")
	s := shroudtest.Start(t, up)

	src, img := ociLayout(t, 2, 200_000)
	dst := "docker://" + s.Host() + "/private/app:1"
	if out, err := skopeoErr(t, "copy", "--dest-tls-verify=false", src, dst); err == nil {
		t.Fatalf("anonymous push through shroud to an htpasswd upstream succeeded:\n%s", out)
	}
	skopeo(t, "copy", "--dest-tls-verify=false", "--dest-creds", "alice:s3cret", src, dst)
	back := filepath.Join(t.TempDir(), "back")
	skopeo(t, "copy", "--src-tls-verify=false", "--src-creds", "alice:s3cret", dst, "oci:"+back+":app")
	raw, _ := layoutManifest(t, back)
	if want, _ := img.RawManifest(); !bytes.Equal(raw, want) {
		t.Fatal("pull with credentials returned another manifest")
	}

	msg, err := skopeoErr(t, "copy", "--src-tls-verify=false", "--src-creds", "alice:wrong", dst, "oci:"+filepath.Join(t.TempDir(), "x")+":app")
	if err == nil || !strings.Contains(strings.ToLower(msg), "unauthorized") {
		t.Fatalf("pull with a wrong password: %v %s; want unauthorized", err, msg)
	}
	ls, _ := img.Layers()
	d, _ := ls[0].Digest()
	rc, _ := ls[0].Compressed()
	plain, _ := io.ReadAll(io.LimitReader(rc, 4096))
	rc.Close()
	for _, path := range []string{"/v2/private/app/manifests/1", "/v2/private/app/blobs/" + d.String()} {
		req, _ := http.NewRequest("GET", s.URL+path, nil)
		req.SetBasicAuth("alice", "wrong")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 401 || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `realm="e2e-realm"`) {
			t.Fatalf("GET %s with a wrong password: %d %q, want the upstream's 401 challenge", path, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
		if bytes.Contains(body, plain[:64]) || bytes.Contains(body, []byte(`"layers"`)) {
			t.Fatalf("GET %s with a wrong password leaked content", path)
		}
	}
}

// htpasswdRegistry runs distribution v3 with one htpasswd user.
func htpasswdRegistry(t *testing.T, user, password string) shroudtest.Upstream {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(t.TempDir(), "htpasswd")
	os.WriteFile(htpasswd, []byte(user+":"+string(hash)+"\n"), 0o600)
	return startRegistryProcess(t, "distribution-v3-htpasswd", tool("registry"),
		"auth:\n  htpasswd:\n    realm: e2e-realm\n    path: "+htpasswd+"\n")
}

// authFile writes a Docker config.json with one entry, as `docker login`
// or a Kubernetes dockerconfigjson secret has it.
func authFile(t *testing.T, host, user, password string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.json")
	b, _ := json.Marshal(map[string]any{"auths": map[string]any{
		host: map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(user + ":" + password))},
	}})
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// get sends a request without credentials, as containerd asks a mirror
// it holds none for.
func get(t *testing.T, method, url string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// credentialedMirror runs the shroud binary in front of up, which wants
// alice:s3cret, with those credentials in --upstream-auth-file, and shows
// what the nodes of a cluster see: containerd holds no credentials and
// asks anonymously (HEAD by tag, GET by digest, blobs by digest) and gets
// the image as pushed; an anonymous push is refused by the upstream,
// through shroud; a push with the client's own credentials works.
func credentialedMirror(t *testing.T, bin string, up shroudtest.Upstream) (addr string) {
	t.Helper()
	addr, _, logs := startShroud(t, bin, "--data-dir", t.TempDir(), "--upstream", up.URL,
		"--upstream-auth-file", authFile(t, up.Host(), "alice", "s3cret"))
	base := "http://" + addr

	src, img := ociLayout(t, 2, 200_000)
	if out, err := skopeoErr(t, "copy", "--dest-tls-verify=false", src, "docker://"+addr+"/private/app:1"); err == nil {
		t.Fatalf("an anonymous push through shroud succeeded with shroud's credentials:\n%s", out)
	}
	if resp, _ := get(t, "POST", base+"/v2/private/app/blobs/uploads/"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("anonymous POST of an upload: %d, want the upstream's 401", resp.StatusCode)
	}
	skopeo(t, "copy", "--dest-tls-verify=false", "--dest-creds", "alice:s3cret", src, "docker://"+addr+"/private/app:1")

	want, _ := img.RawManifest()
	wantDigest, _ := img.Digest()
	resp, _ := get(t, "HEAD", base+"/v2/private/app/manifests/1", "Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")
	if resp.StatusCode != 200 || resp.Header.Get("Docker-Content-Digest") != wantDigest.String() {
		t.Fatalf("anonymous HEAD by tag: %d %q, want 200 %s\n%s", resp.StatusCode, resp.Header.Get("Docker-Content-Digest"), wantDigest, logs)
	}
	if resp, body := get(t, "GET", base+"/v2/private/app/manifests/"+wantDigest.String()); resp.StatusCode != 200 || !bytes.Equal(body, want) {
		t.Fatalf("anonymous GET by digest: %d", resp.StatusCode)
	}
	for _, d := range layerDigests(t, img) {
		resp, body := get(t, "GET", base+"/v2/private/app/blobs/"+d)
		if resp.StatusCode != 200 || digest.FromBytes(body).String() != d {
			t.Fatalf("anonymous GET of blob %s: %d, %d bytes", d, resp.StatusCode, len(body))
		}
	}
	// The upstream itself still wants credentials, and holds ciphertext.
	if resp, _ := get(t, "GET", up.URL+"/v2/private/app/manifests/1"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the upstream answered an anonymous GET: %d", resp.StatusCode)
	}
	if out := skopeo(t, "inspect", "--raw", "--tls-verify=false", "--creds", "alice:s3cret", "docker://"+up.Host()+"/private/app:1"); !strings.Contains(out, "+encrypted") {
		t.Fatalf("upstream manifest is not encrypted:\n%s", out)
	}
	return addr
}

// shroud as the cluster's mirror of a registry with basic auth (htpasswd);
// wrong credentials in the file get the anonymous reader the upstream's
// 401, nothing else.
func TestUpstreamCredentials(t *testing.T) {
	bin := buildShroud(t)
	up := htpasswdRegistry(t, "alice", "s3cret")
	credentialedMirror(t, bin, up)

	addr, _, _ := startShroud(t, bin, "--data-dir", t.TempDir(), "--upstream", up.URL,
		"--upstream-auth-file", authFile(t, up.Host(), "alice", "wrong"))
	if resp, body := get(t, "GET", "http://"+addr+"/v2/private/app/manifests/1"); resp.StatusCode != http.StatusUnauthorized || bytes.Contains(body, []byte(`"layers"`)) {
		t.Fatalf("anonymous GET through a shroud with a wrong password: %d %s, want 401", resp.StatusCode, body)
	}
}

// The same with token auth (the Bearer flow of Docker Hub, Harbor,
// GitLab): skopeo gets its own token through the challenge shroud passes
// on; shroud's tokens are scoped to the repository it reads, pull only.
func TestUpstreamCredentialsToken(t *testing.T) {
	bin := buildShroud(t)
	ts := startTokenServer(t, "alice", "s3cret")
	up := startRegistryProcess(t, "distribution-v3-token", tool("registry"), ts.registryConfig())
	credentialedMirror(t, bin, up)
	var fromShroud int
	for _, g := range ts.grants() {
		if strings.HasPrefix(g.userAgent, "skopeo/") { // the test's own client
			continue
		}
		fromShroud++
		if g.user != "alice" || g.scope != "repository:private/app:pull" {
			t.Fatalf("shroud (%s) was granted %s to %q; want pull on the repository it reads, only", g.userAgent, g.user, g.scope)
		}
	}
	if fromShroud == 0 {
		t.Fatalf("shroud read the upstream without a token; grants: %v", ts.grants())
	}
}

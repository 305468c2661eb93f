package e2e

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/shroud-oci/shroud/internal/shroudtest"
)

// An upstream with htpasswd basic auth: skopeo with the right credentials
// pushes and pulls through shroud; a wrong password gets the upstream's
// 401 from shroud and not one byte of plaintext.
func TestHtpasswdUpstream(t *testing.T) {
	dir := t.TempDir()
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(dir, "htpasswd")
	os.WriteFile(htpasswd, []byte("alice:"+string(hash)+"\n"), 0o600)
	up := startRegistryProcess(t, "distribution-v3-htpasswd", tool("registry"),
		"auth:\n  htpasswd:\n    realm: e2e-realm\n    path: "+htpasswd+"\n")
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

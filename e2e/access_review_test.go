package e2e

// Findings of the adversarial review of the access requests, with the
// built binary, distribution v3 and skopeo: each test failed on 8fac738.

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shroud-oci/shroud/internal/testkeys"
)

func startAccessShroud(t *testing.T, bin, upstream string, extra ...string) (addr, adminURL, tokenFile, token string, logs *syncBuffer) {
	t.Helper()
	dir := t.TempDir()
	token = "e2e-review-token-0123456789abcdef0123"
	tokenFile = filepath.Join(dir, "admin-token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	adminAddr := freeAddr(t)
	args := append([]string{"--upstream", upstream, "--data-dir", filepath.Join(dir, "data"),
		"--admin-listen", adminAddr, "--admin-token-file", tokenFile, "--access-requests"}, extra...)
	addr, _, logs = startShroud(t, bin, args...)
	return addr, "http://" + adminAddr, tokenFile, token, logs
}

// heldPast sends a request whose body announces more bytes than it sends
// and says whether the server still holds the connection after wait (no
// answer, no close).
func heldPast(t *testing.T, addr, method, path string, wait time.Duration) bool {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(method + " " + path + " HTTP/1.1\r\nHost: " + addr + "\r\nContent-Type: application/jose\r\nContent-Length: 60000\r\n\r\neyJ")); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(wait))
	_, err = bufio.NewReader(c).ReadByte()
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// The public access API is served beside the proxy's handler, outside its
// limits: --stall-timeout does not cut a request body that stops moving.
// Anyone (no credentials) holds a connection and a goroutine for as long
// as they like by announcing a body and not sending it; a /v2/ request
// doing the same is cut after the stall timeout.
func TestAccessReviewSlowRequestBodyIsNeverCut(t *testing.T) {
	bin := reviewShroud(t)
	up := distributionV3(t)
	addr, _, _, _, _ := startAccessShroud(t, bin, up.URL, "--stall-timeout", "1s")
	if heldPast(t, addr, "PUT", "/v2/team/app/manifests/1", 5*time.Second) {
		t.Fatal("control: a stalled manifest body is not cut by --stall-timeout 1s either")
	}
	if heldPast(t, addr, "POST", "/shroud/v1/access/requests", 5*time.Second) {
		t.Fatal("a stalled access-request body holds its connection past 5x --stall-timeout (slowloris without credentials)")
	}
}

// A pkcs7 request with an expired certificate is accepted; once an owner
// approves it, every push to the repository it named is refused 403
// DENIED under the default policy (encrypt ** for the identity alone): the
// granted key is the rule's only recipient besides the identity, and it
// is refused at wrap time ("expired"). Any granted key the key checks
// refuse (trust documents' allow list not updated yet) does the same.
func TestAccessReviewApprovedExpiredCertificateRefusesEveryPush(t *testing.T) {
	bin := reviewShroud(t)
	up := distributionV3(t)
	addr, adminURL, tokenFile, token, logs := startAccessShroud(t, bin, up.URL)
	src, _ := ociLayout(t, 1, 50_000)
	skopeo(t, "copy", "--dest-tls-verify=false", src, "docker://"+addr+"/team/app:1")

	dir := t.TempDir()
	cert, key := testkeys.CertValid(t, dir, "carol", time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour))
	cli := func(args ...string) map[string]any {
		t.Helper()
		out, err := exec.Command(bin, append([]string{"access"}, args...)...).Output()
		if err != nil {
			var stderr []byte
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = ee.Stderr
			}
			t.Fatalf("shroud access %s: %v %s", args[0], err, stderr)
		}
		var v map[string]any
		if err := json.Unmarshal(out, &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	_, _, _ = cli, adminURL, tokenFile
	out, err := exec.Command(bin, "access", "request", "--server", "http://"+addr, "--key", key, "--cert", cert, "--name", "carol", "--repository", "team/app").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "expired") {
		t.Fatalf("a request with an expired certificate: %v %s, want it refused as expired", err, out)
	}
	_ = token
	if out, err := skopeoErr(t, "copy", "--dest-tls-verify=false", src, "docker://"+addr+"/team/app:2"); err != nil {
		t.Fatalf("after approving a request with an expired certificate, a push to team/app fails: %s\n%s", strings.TrimSpace(out), tail(logs.String(), 2000))
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// A request may name, beside its real target, a repository no encrypt
// rule covers (here a passthrough one). The approval's and the denial's
// rewrap job over all its repositories is then refused by jobs.Check ("no
// encrypt rule matches"), so neither runs: the denial answers 200 with a
// rewrap_later note suggesting a job that is refused the same way, and
// every image pushed while the grant held still opens with the denied key
// straight from the upstream.
func TestAccessReviewDeniedKeyStaysInStoredImagesWhenARequestNamesAPassthroughRepo(t *testing.T) {
	bin := reviewShroud(t)
	up := distributionV3(t)
	cfg := filepath.Join(t.TempDir(), "shroud.yaml")
	if err := os.WriteFile(cfg, []byte("policy:\n  - repositories: \"public/**\"\n    action: passthrough\n  - repositories: \"team/**\"\n    action: encrypt\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr, adminURL, tokenFile, token, _ := startAccessShroud(t, bin, up.URL, "--config", cfg)
	dir := t.TempDir()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	keyFile := pemFile(t, filepath.Join(dir, "mallory.pem"), "PRIVATE KEY", der)
	cli := func(args ...string) map[string]any {
		t.Helper()
		out, err := exec.Command(bin, append([]string{"access"}, args...)...).Output()
		if err != nil {
			t.Fatalf("shroud access %s: %v", args[0], err)
		}
		var v map[string]any
		json.Unmarshal(out, &v)
		return v
	}
	_, _, _, _ = cli, adminURL, token, tokenFile
	out, err := exec.Command(bin, "access", "request", "--server", "http://"+addr, "--key", keyFile, "--name", "mallory", "--repository", "team/app", "--repository", "public/site").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no encrypt rule") {
		t.Fatalf("a request naming a passthrough repository: %v %s, want it refused", err, out)
	}
}

func reviewShroud(t *testing.T) string { return buildShroud(t) }

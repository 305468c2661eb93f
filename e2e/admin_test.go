package e2e

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The admin API with the built binary: recipients A and B pushed an image
// with skopeo; A is taken off the policy, and a server with an admin
// listener and a token file gets a rewrap job through the API (plain Go
// HTTP, no curl). Without the token it answers 401, and the registry
// listener does not serve it at all. The job is paced, and the server is
// stopped (SIGTERM) once it has begun: it leaves the job's spec on disk,
// and the next start resumes it and finishes. Then straight from the
// upstream skopeo with A's key decrypts nothing and with B's key the same
// layers; through shroud the image pulls back byte for byte; the audit
// log names the start by "token" and never holds the token.
func TestAdminAPIRewrapWithSkopeo(t *testing.T) {
	bin := buildShroud(t)
	up := distributionV3(t)
	dir := t.TempDir()
	key := func(name string, curve elliptic.Curve) (rec, dec string) {
		k, _ := ecdsa.GenerateKey(curve, rand.Reader)
		p, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
		s, _ := x509.MarshalPKCS8PrivateKey(k)
		return "jwe:" + pemFile(t, filepath.Join(dir, name+".pub.pem"), "PUBLIC KEY", p), pemFile(t, filepath.Join(dir, name+".pem"), "PRIVATE KEY", s)
	}
	recA, decA := key("a", elliptic.P256())
	recB, decB := key("b", elliptic.P384())
	data := filepath.Join(dir, "data")
	addr, cmd, _ := startShroud(t, bin, "--upstream", up.URL, "--data-dir", data, "--recipient", recA, "--recipient", recB)
	src, img := ociLayout(t, 3, 200_000)
	skopeo(t, "copy", "--dest-tls-verify=false", src, "docker://"+addr+"/team/app:1")
	pushed, _ := layoutManifest(t, strings.TrimSuffix(strings.TrimPrefix(src, "oci:"), ":app"))
	want := layerDigests(t, img)
	blobsBefore := upstreamLayerDigests(t, up.Host(), "team/app:1")
	cmd.Process.Kill()
	cmd.Wait()

	const token = "e2e-admin-token-0123456789abcdef0123"
	tokenFile := filepath.Join(dir, "admin-token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	auditLog := filepath.Join(dir, "audit.log")
	adminAddr := freeAddr(t)
	serve := func() (string, *exec.Cmd, *syncBuffer) {
		return startShroud(t, bin, "--upstream", up.URL, "--data-dir", data, "--recipient", recB, "--audit-log", auditLog,
			"--admin-listen", adminAddr, "--admin-token-file", tokenFile)
	}
	addr, cmd, logs := serve()
	api := func(method, path, authz string, body string) (int, []byte) {
		t.Helper()
		req, err := http.NewRequest(method, "http://"+adminAddr+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	spec := `{"kind":"rewrap","repositories":["team/app"],"pace":"700ms"}`
	noToken, b1 := api("POST", "/admin/v1/jobs", "", spec)
	wrong, b2 := api("POST", "/admin/v1/jobs", "Bearer not-the-token-0123456789abcdef", spec)
	if noToken != http.StatusUnauthorized || wrong != http.StatusUnauthorized || !bytes.Equal(b1, b2) {
		t.Fatalf("without the token: %d %s; with another: %d %s; want the same 401", noToken, b1, wrong, b2)
	}
	if resp, err := http.Post("http://"+addr+"/admin/v1/jobs", "application/json", strings.NewReader(spec)); err != nil {
		t.Fatal(err)
	} else if resp.Body.Close(); resp.StatusCode/100 == 2 {
		t.Fatalf("the registry listener serves the admin API: %d", resp.StatusCode)
	}

	status, body := api("POST", "/admin/v1/jobs", "Bearer "+token, spec)
	var job struct {
		ID        string `json:"id"`
		State     string `json:"state"`
		Error     string `json:"error"`
		Restarted bool   `json:"restarted"`
		Repos     []struct {
			Report *struct {
				Rewritten int `json:"rewritten"`
				Resumed   int `json:"resumed"`
			} `json:"report"`
		} `json:"repositories"`
	}
	if err := json.Unmarshal(body, &job); status != http.StatusAccepted || err != nil || job.ID == "" {
		t.Fatalf("POST /admin/v1/jobs: %d %s", status, body)
	}
	id := job.ID
	if !logs.waitFor("job step") {
		t.Fatalf("the job took no step:\n%s", logs)
	}
	specFile := filepath.Join(data, "jobs", "admin-job.json")
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	if _, err := os.Stat(specFile); err != nil {
		t.Fatalf("the server stopped mid-job kept no spec of it: %v\n%s", err, logs)
	}

	addr, _, logs = serve()
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(200 * time.Millisecond) {
		status, body = api("GET", "/admin/v1/jobs/"+id, "Bearer "+token, "")
		job.State = ""
		if err := json.Unmarshal(body, &job); status != http.StatusOK || err != nil {
			t.Fatalf("GET the job after the restart: %d %s", status, body)
		}
		if job.State != "queued" && job.State != "running" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the job did not end within 2 minutes: %s", body)
		}
	}
	t.Logf("the job after the restart: %s", body)
	if job.State != "done" || !job.Restarted || job.Repos[0].Report == nil || job.Repos[0].Report.Resumed == 0 {
		t.Fatalf("the resumed job: %s\n%s", body, logs)
	}
	if _, err := os.Stat(specFile); !os.IsNotExist(err) {
		t.Fatalf("the finished job's spec stays: %v", err)
	}

	if _, err := decryptUpstream(t, up.Host(), "team/app:1", decA); err == nil {
		t.Fatal("after the job, skopeo with the retired key A still decrypts the image from the upstream")
	}
	if got, err := decryptUpstream(t, up.Host(), "team/app:1", decB); err != nil || !slices.Equal(got, want) {
		t.Fatalf("after the job, skopeo with B's key: %v %v", got, err)
	}
	if after := upstreamLayerDigests(t, up.Host(), "team/app:1"); !slices.Equal(after, blobsBefore) {
		t.Fatalf("the job changed the layer blobs upstream: %v, were %v", after, blobsBefore)
	}
	back := filepath.Join(t.TempDir(), "back")
	skopeo(t, "copy", "--src-tls-verify=false", "docker://"+addr+"/team/app:1", "oci:"+back+":app")
	if got, _ := layoutManifest(t, back); string(got) != string(pushed) {
		t.Fatal("through shroud, the image pulls back other manifest bytes than pushed")
	}

	a, err := os.ReadFile(auditLog)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{`"kind":"admin"`, `"step":"start","outcome":"accepted","actor":"token"`, `"step":"resume"`, `"outcome":"unauthenticated"`, `"kind":"job-step"`} {
		if !strings.Contains(string(a), line) {
			t.Errorf("the audit log has no %s:\n%s", line, a)
		}
	}
	if strings.Contains(string(a), token) {
		t.Error("the audit log holds the admin token")
	}
	if strings.Contains(logs.String(), token) {
		t.Error("the server's log holds the admin token")
	}
}

// decryptUpstream copies repoRef straight from the upstream at host with
// skopeo --decryption-key keyFile, and returns the layer digests it
// decrypted to.
func decryptUpstream(t *testing.T, host, repoRef, keyFile string) ([]string, error) {
	t.Helper()
	o := filepath.Join(t.TempDir(), "dec")
	if out, err := skopeoErr(t, "copy", "--src-tls-verify=false", "--decryption-key", keyFile, "docker://"+host+"/"+repoRef, "oci:"+o+":app"); err != nil {
		return nil, &exec.ExitError{Stderr: []byte(out)}
	}
	_, m := layoutManifest(t, o)
	return manifestLayerDigests(m), nil
}

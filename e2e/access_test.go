package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shroud-oci/shroud/access"
)

// Access requests with the built binary and skopeo: two images are pushed
// through shroud; alice's new key asks for team/app with `shroud access
// request`, and bob's too. While they are pending neither key opens
// anything upstream. Requests that are unsigned, signed by another key
// than the one they submit, or for another shroud are refused (400) and
// kept nowhere. The owner denies bob and approves alice with `shroud
// access approve`, which starts a rewrap job; once it is done skopeo with
// alice's key decrypts both old images straight from the upstream, with
// the layer blobs unchanged, and an image pushed after the approval too;
// it opens nothing in team/other, which it did not ask for; bob's key
// opens nothing. Through shroud the images pull back byte for byte. At
// last the owner denies alice's approved request: its rewrap takes her
// key back from the stored images.
func TestAccessRequestApprovedOpensTheOldImagesWithSkopeo(t *testing.T) {
	bin := buildShroud(t)
	up := distributionV3(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	token := "e2e-access-token-0123456789abcdef0123"
	tokenFile := filepath.Join(dir, "admin-token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	auditLog := filepath.Join(dir, "audit.log")
	adminAddr := freeAddr(t)
	addr, _, logs := startShroud(t, bin, "--upstream", up.URL, "--data-dir", data, "--audit-log", auditLog,
		"--admin-listen", adminAddr, "--admin-token-file", tokenFile, "--access-requests")
	server, adminURL := "http://"+addr, "http://"+adminAddr

	src, img := ociLayout(t, 2, 150_000)
	for _, ref := range []string{"team/app:1", "team/app:2", "team/other:1"} {
		skopeo(t, "copy", "--dest-tls-verify=false", src, "docker://"+addr+"/"+ref)
	}
	pushed, _ := layoutManifest(t, strings.TrimSuffix(strings.TrimPrefix(src, "oci:"), ":app"))
	want := layerDigests(t, img)
	blobsBefore := upstreamLayerDigests(t, up.Host(), "team/app:1")

	newKey := func(name string) (keyFile string, k *ecdsa.PrivateKey) {
		k, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		der, _ := x509.MarshalPKCS8PrivateKey(k)
		return pemFile(t, filepath.Join(dir, name+".pem"), "PRIVATE KEY", der), k
	}
	aliceKey, alice := newKey("alice")
	bobKey, _ := newKey("bob")
	shroudCLI := func(args ...string) (map[string]any, error) {
		t.Helper()
		out, err := exec.Command(bin, append([]string{"access"}, args...)...).Output()
		var v map[string]any
		if err == nil {
			if jerr := json.Unmarshal(out, &v); jerr != nil {
				t.Fatalf("shroud access %s: %v\n%s", args[0], jerr, out)
			}
		} else if ee, ok := err.(*exec.ExitError); ok {
			t.Logf("shroud access %s: %s", args[0], ee.Stderr)
		}
		return v, err
	}
	req, err := shroudCLI("request", "--server", server, "--key", aliceKey, "--name", "alice", "--repository", "team/app")
	if err != nil || req["state"] != "pending" {
		t.Fatalf("alice's request: %v %v", req, err)
	}
	aliceID, _ := req["id"].(string)
	breq, err := shroudCLI("request", "--server", server, "--key", bobKey, "--name", "bob", "--repository", "team/app")
	if err != nil {
		t.Fatal(err)
	}
	bobID, _ := breq["id"].(string)
	if _, err := decryptUpstream(t, up.Host(), "team/app:1", aliceKey); err == nil {
		t.Fatal("a pending request's key decrypts the image from the upstream")
	}

	// Requests that prove nothing are refused.
	post := func(body string) (int, string) {
		resp, err := http.Post(server+access.PathPrefix+"/requests", "application/jose", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	var info struct{ Audience string }
	resp, err := http.Get(server + access.PathPrefix)
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&info)
	resp.Body.Close()
	malloryKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	pubDER, _ := x509.MarshalPKIXPublicKey(&alice.PublicKey)
	alicePub := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}))
	payload := func(aud string) access.Payload {
		return access.Payload{Audience: aud, Name: "mallory", Repositories: []string{"team/other"}, Scheme: "jwe", Key: alicePub, Created: time.Now().UTC()}
	}
	misSigned, _ := access.Sign(payload(info.Audience), malloryKey)
	otherShroud, _ := access.Sign(payload("sha256:0000000000000000000000000000000000000000000000000000000000000000"), alice)
	unsigned, _ := json.Marshal(payload(info.Audience))
	for name, body := range map[string]string{"unsigned": string(unsigned), "signed by another key": misSigned, "for another shroud": otherShroud} {
		if code, b := post(body); code != http.StatusBadRequest {
			t.Errorf("a request %s: %d %s, want 400", name, code, b)
		} else {
			t.Logf("a request %s: %s", name, strings.TrimSpace(b))
		}
	}

	// The owner decides.
	if _, err := shroudCLI("approve", "--admin", adminURL, "--admin-token-file", dir+"/missing", aliceID); err == nil {
		t.Fatal("approve without the token file succeeded")
	}
	denied, err := shroudCLI("deny", "--admin", adminURL, "--admin-token-file", tokenFile, "--reason", "unknown requester", bobID)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := denied["job"]; ok {
		t.Fatalf("denying a request never approved started a job: %v", denied)
	}
	approved, err := shroudCLI("approve", "--admin", adminURL, "--admin-token-file", tokenFile, aliceID)
	if err != nil {
		t.Fatal(err)
	}
	waitJob(t, adminURL, token, approved)
	if st, err := shroudCLI("status", "--server", server, aliceID); err != nil || st["state"] != "approved" {
		t.Fatalf("alice polls her request: %v %v", st, err)
	}
	if st, err := shroudCLI("status", "--server", server, bobID); err != nil || st["state"] != "denied" || st["reason"] != "unknown requester" {
		t.Fatalf("bob polls his request: %v %v", st, err)
	}

	skopeo(t, "copy", "--dest-tls-verify=false", src, "docker://"+addr+"/team/app:3")
	for _, ref := range []string{"team/app:1", "team/app:2", "team/app:3"} {
		if got, err := decryptUpstream(t, up.Host(), ref, aliceKey); err != nil || !slices.Equal(got, want) {
			t.Fatalf("after the approval, skopeo with alice's key on %s: %v %v\n%s", ref, got, err, logs)
		}
		if _, err := decryptUpstream(t, up.Host(), ref, bobKey); err == nil {
			t.Fatalf("the denied key decrypts %s from the upstream", ref)
		}
	}
	if _, err := decryptUpstream(t, up.Host(), "team/other:1", aliceKey); err == nil {
		t.Fatal("alice's key decrypts team/other, which it never asked for")
	}
	if after := upstreamLayerDigests(t, up.Host(), "team/app:1"); !slices.Equal(after, blobsBefore) {
		t.Fatalf("the approval re-encrypted the layers: %v, were %v", after, blobsBefore)
	}
	back := filepath.Join(t.TempDir(), "back")
	skopeo(t, "copy", "--src-tls-verify=false", "docker://"+addr+"/team/app:1", "oci:"+back+":app")
	if got, _ := layoutManifest(t, back); string(got) != string(pushed) {
		t.Fatal("through shroud, the image pulls back other manifest bytes than pushed")
	}

	// Denying the approved request takes the key back from the stored
	// images.
	revoked, err := shroudCLI("deny", "--admin", adminURL, "--admin-token-file", tokenFile, "--reason", "left the team", aliceID)
	if err != nil {
		t.Fatal(err)
	}
	waitJob(t, adminURL, token, revoked)
	for _, ref := range []string{"team/app:1", "team/app:3"} {
		if _, err := decryptUpstream(t, up.Host(), ref, aliceKey); err == nil {
			t.Fatalf("after the denial of her approved request, alice's key still decrypts %s from the upstream", ref)
		}
	}
	a, _ := os.ReadFile(auditLog)
	for _, line := range []string{`"step":"request","outcome":"pending","actor":"alice"`, `"step":"approve","outcome":"approved"`, `"step":"deny","outcome":"denied"`} {
		if !strings.Contains(string(a), line) {
			t.Errorf("the audit log has no %s", line)
		}
	}
}

// waitJob waits for the rewrap job an access decision started to end
// done.
func waitJob(t *testing.T, adminURL, token string, decision map[string]any) {
	t.Helper()
	job, _ := decision["job"].(map[string]any)
	id, _ := job["id"].(string)
	if id == "" {
		t.Fatalf("the decision started no rewrap: %v", decision)
	}
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(200 * time.Millisecond) {
		req, _ := http.NewRequest("GET", adminURL+"/admin/v1/jobs/"+id, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var v struct {
			State string `json:"state"`
			Error string `json:"error"`
		}
		json.NewDecoder(resp.Body).Decode(&v)
		resp.Body.Close()
		switch v.State {
		case "done":
			return
		case "failed", "cancelled":
			t.Fatalf("the rewrap job %s: %s %s", id, v.State, v.Error)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the rewrap job %s did not end in 2 minutes", id)
		}
	}
}

package e2e

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shroud-oci/shroud/access"
	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/softhsm"
)

// An encrypt-only edge, with the built binary and skopeo: shroud runs
// with --encrypt-only and the owner's public key as the only recipient.
// Two images pushed through it are stored encrypted for the owner alone:
// skopeo with the owner's key opens them straight from the upstream,
// shroud's identity (the only private key in its data dir) opens none,
// and a shroud started on a copy of the data dir (a stolen one) pulls
// nothing back. A pull through the edge gets the ciphertext, under the
// upstream's digests. A new key asks for access; shroud itself cannot
// approve it (it holds no layer key); the owner approves it with
// `shroud access approve --key owner.pem`, which unwraps and wraps on
// the owner's side, and skopeo with the new key then opens both old
// images from the upstream, the layer blobs unchanged. A key that is no
// recipient of the rule cannot approve.
func TestEncryptOnlyEdgeWithOwnerApproval(t *testing.T) {
	bin := buildShroud(t)
	up := distributionV3(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	token := "e2e-encrypt-only-token-0123456789abcdef"
	tokenFile := filepath.Join(dir, "admin-token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	newKey := func(name string) (priv, pub string) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		der, _ := x509.MarshalPKCS8PrivateKey(k)
		pder, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
		return pemFile(t, filepath.Join(dir, name+".pem"), "PRIVATE KEY", der), pemFile(t, filepath.Join(dir, name+".pub.pem"), "PUBLIC KEY", pder)
	}
	ownerKey, ownerPub := newKey("owner")
	aliceKey, alicePub := newKey("alice")
	adminAddr := freeAddr(t)
	addr, _, logs := startShroud(t, bin, "--upstream", up.URL, "--data-dir", data, "--encrypt-only", "--recipient", "jwe:"+ownerPub,
		"--admin-listen", adminAddr, "--admin-token-file", tokenFile, "--access-requests")
	server, adminURL := "http://"+addr, "http://"+adminAddr

	src, img := ociLayout(t, 3, 120_000)
	for _, ref := range []string{"team/app:1", "team/app:2"} {
		skopeo(t, "copy", "--dest-tls-verify=false", src, "docker://"+addr+"/"+ref)
	}
	want := layerDigests(t, img)
	blobsBefore := upstreamLayerDigests(t, up.Host(), "team/app:1")

	// The data dir holds one private key, the identity, and it opens
	// nothing.
	var privates []string
	filepath.Walk(data, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			if b, _ := os.ReadFile(p); strings.Contains(string(b), "PRIVATE KEY") {
				privates = append(privates, p)
			}
		}
		return nil
	})
	if len(privates) != 1 || filepath.Base(privates[0]) != "identity.pem" {
		t.Fatalf("the data dir's private keys: %v, want identity.pem alone", privates)
	}
	for _, ref := range []string{"team/app:1", "team/app:2"} {
		if got, err := decryptUpstream(t, up.Host(), ref, ownerKey); err != nil || !slices.Equal(got, want) {
			t.Fatalf("skopeo with the owner's key on %s: %v %v\n%s", ref, got, err, logs)
		}
		if _, err := decryptUpstream(t, up.Host(), ref, privates[0]); err == nil {
			t.Fatalf("shroud's identity decrypts %s from the upstream", ref)
		}
	}
	// A stolen data dir, run as an ordinary shroud, opens nothing.
	stolen := filepath.Join(dir, "stolen")
	if out, err := exec.Command("cp", "-a", data, stolen).CombinedOutput(); err != nil {
		t.Fatalf("copy the data dir: %v %s", err, out)
	}
	thief, _, _ := startShroud(t, bin, "--upstream", up.URL, "--data-dir", stolen)
	if out, err := skopeoErr(t, "copy", "--src-tls-verify=false", "docker://"+thief+"/team/app:1", "oci:"+filepath.Join(t.TempDir(), "t")+":app"); err == nil {
		t.Fatal("a shroud on the stolen data dir pulled the image")
	} else {
		t.Logf("a shroud on the stolen data dir: %s", lastLine(out))
	}
	// A pull through the edge gets the ciphertext, as the upstream
	// holds it.
	through := skopeo(t, "inspect", "--raw", "--tls-verify=false", "docker://"+addr+"/team/app:1")
	direct := skopeo(t, "inspect", "--raw", "--tls-verify=false", "docker://"+up.Host()+"/team/app:1")
	if through != direct || !strings.Contains(through, "+encrypted") {
		t.Fatal("a pull through the encrypt-only edge is not the upstream's encrypted manifest")
	}

	cli := func(args ...string) (map[string]any, string, error) {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"access"}, args...)...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		var v map[string]any
		if err == nil {
			if jerr := json.Unmarshal(out, &v); jerr != nil {
				t.Fatalf("shroud access %s: %v\n%s", args[0], jerr, out)
			}
		}
		return v, stderr.String(), err
	}
	req, _, err := cli("request", "--server", server, "--key", aliceKey, "--name", "alice", "--repository", "team/app")
	if err != nil || req["state"] != "pending" {
		t.Fatalf("alice's request: %v %v", req, err)
	}
	id, _ := req["id"].(string)
	if _, stderr, err := cli("approve", "--admin", adminURL, "--admin-token-file", tokenFile, id); err == nil || !strings.Contains(stderr, "encrypt-only") {
		t.Fatalf("shroud approved an encrypt-only request itself: %v %s", err, stderr)
	}
	if _, stderr, err := cli("approve", "--admin", adminURL, "--admin-token-file", tokenFile, "--key", aliceKey, id); err == nil || !strings.Contains(stderr, "opens none") {
		t.Fatalf("a key that is no recipient approved: %v %s", err, stderr)
	}
	// The server's own check, for a signer that skips the client's: wrapped
	// keys signed by a key that is no recipient of the rule are refused.
	var listing struct {
		Audience string `json:"audience"`
		Layers   []struct {
			CipherDigest string `json:"cipher_digest"`
		} `json:"layers"`
	}
	adminGet(t, adminURL+"/admin/v1/access/requests/"+id+"/layers", token, &listing)
	signer, err := parseECKey(aliceKey)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := access.SignOwnerApproval(access.OwnerApproval{Request: id, Audience: listing.Audience, Created: time.Now().UTC(),
		Wraps: []access.OwnerWrap{{Repository: "team/app", CipherDigest: digest.Digest(listing.Layers[0].CipherDigest), PlainDigest: digest.FromString("layer"),
			Annotations: map[string]string{"org.opencontainers.image.enc.keys.jwe": "Zm9yZ2Vk"}}}}, signer)
	if err != nil {
		t.Fatal(err)
	}
	code, body := adminPost(t, adminURL+"/admin/v1/access/requests/"+id+"/approve", token, map[string]string{"owner_approval": forged})
	if code != http.StatusConflict || !strings.Contains(body, "not a recipient") {
		t.Fatalf("wrapped keys signed by a key that is no recipient: %d %s, want 409 naming it", code, body)
	}
	if _, err := decryptUpstream(t, up.Host(), "team/app:1", aliceKey); err == nil {
		t.Fatal("the pending request's key decrypts the image")
	}
	if _, stderr, err := cli("approve", "--admin", adminURL, "--admin-token-file", tokenFile, "--key", ownerKey, "--request-key-id", "sha256:"+strings.Repeat("0", 64), id); err == nil || !strings.Contains(stderr, "nothing approved") {
		t.Fatalf("an approval expecting another key id went on: %v %s", err, stderr)
	}
	ok, stderr, err := cli("approve", "--admin", adminURL, "--admin-token-file", tokenFile, "--key", ownerKey, "--request-key-id", keyIDOf(t, alicePub), id)
	if err != nil {
		t.Fatalf("the owner's approval: %v %s\n%s", err, stderr, logs)
	}
	r, _ := ok["request"].(map[string]any)
	if r["state"] != "approved" || ok["rewritten"].(float64) < 1 {
		t.Fatalf("the owner's approval: %v", ok)
	}
	for _, ref := range []string{"team/app:1", "team/app:2"} {
		if got, err := decryptUpstream(t, up.Host(), ref, aliceKey); err != nil || !slices.Equal(got, want) {
			t.Fatalf("after the owner's approval, skopeo with alice's key on %s: %v %v\n%s", ref, got, err, logs)
		}
		if got, err := decryptUpstream(t, up.Host(), ref, ownerKey); err != nil || !slices.Equal(got, want) {
			t.Fatalf("after the owner's approval, the owner's key on %s: %v %v", ref, got, err)
		}
	}
	if after := upstreamLayerDigests(t, up.Host(), "team/app:1"); !slices.Equal(after, blobsBefore) {
		t.Fatalf("the approval re-encrypted the layers: %v, were %v", after, blobsBefore)
	}
	// Pushed after the approval: wrapped for alice too.
	if out, err := skopeoErr(t, "copy", "--dest-tls-verify=false", src, "docker://"+addr+"/team/app:3"); err != nil {
		t.Fatalf("push an image after the approval: %v %s\n%s", err, out, logs)
	}
	if got, err := decryptUpstream(t, up.Host(), "team/app:3", aliceKey); err != nil || !slices.Equal(got, want) {
		t.Fatalf("an image pushed after the approval, with alice's key: %v %v\n%s", got, err, logs)
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

func parseECKey(path string) (*ecdsa.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("no PEM")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, err
	}
	ec, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, errors.New("not an EC key")
	}
	return ec, nil
}

func adminGet(t *testing.T, url, token string, v any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

func adminPost(t *testing.T, url, token string, body any) (int, string) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(out)
}

// An encrypt-only edge whose identity is in a SoftHSM2 token: its data dir
// holds no private key at all (not the identity's either), and what it
// stored opens with the owner's key straight from the upstream, with
// shroud's token identity opening none of it (shroud inspect, the
// identity's only way in).
func TestEncryptOnlyEdgeWithTokenIdentityHoldsNoPrivateKey(t *testing.T) {
	bin := buildShroud(t)
	up := distributionV3(t)
	_, keyFile, key := softhsm.TokenKey(t, 2048, true)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	pder, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	ownerKey := pemFile(t, filepath.Join(dir, "owner.pem"), "PRIVATE KEY", der)
	ownerPub := pemFile(t, filepath.Join(dir, "owner.pub.pem"), "PUBLIC KEY", pder)
	cfg := filepath.Join(dir, "shroud.yaml")
	writeFile(t, cfg, "identity: pkcs11:"+keyFile+"\npkcs11:\n  allowed-module-paths: ["+softhsm.Module+"]\nencrypt-only: true\n")
	addr, _, logs := startShroud(t, bin, "--config", cfg, "--data-dir", data, "--upstream", up.URL, "--recipient", "jwe:"+ownerPub)
	src, img := ociLayout(t, 2, 200_000)
	skopeo(t, "copy", "--dest-tls-verify=false", src, "docker://"+addr+"/edge/app:1")
	if got, err := decryptUpstream(t, up.Host(), "edge/app:1", ownerKey); err != nil || !slices.Equal(got, layerDigests(t, img)) {
		t.Fatalf("skopeo with the owner's key: %v %v\n%s", got, err, logs)
	}
	walkFiles(t, data, func(p string, b []byte) {
		if bytes.Contains(b, []byte("PRIVATE KEY")) {
			t.Errorf("the data dir holds a private key: %s", p)
		}
	})
	assertNoPrivateKey(t, data, key)
	assertNoPlaintextIn(t, up.Dir, img)
	out, err := exec.Command(bin, "inspect", "--output", "json", "--insecure", "--config", cfg, up.Host()+"/edge/app:1").Output()
	var rep inspectJSON
	if err != nil || json.Unmarshal(out, &rep) != nil || len(rep.Images) != 1 || len(rep.Images[0].Layers) != 2 {
		t.Fatalf("shroud inspect with the token identity: %v\n%s", err, out)
	}
	for _, l := range rep.Images[0].Layers {
		if !l.Encrypted || l.Openable {
			t.Fatalf("shroud inspect with the edge's own identity: layer %+v, want encrypted and not openable", l)
		}
	}
}

// keyIDOf is the key id of a jwe public key file, as the requester tells
// it to the owner.
func keyIDOf(t *testing.T, pubFile string) string {
	t.Helper()
	r, err := crypto.ParseRecipient("jwe:" + pubFile)
	if err != nil {
		t.Fatal(err)
	}
	return r.KeyID()
}

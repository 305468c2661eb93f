package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// The day a recipient is retired: shroud (the built binary) pushed an
// image with skopeo for recipients A and B; A is taken off the policy and
// `shroud rotate rewrap` runs. Straight from the upstream, skopeo with
// A's key can no longer decrypt the image, with B's it can, to the same
// layers; the layer blobs upstream are those of before; through shroud
// the image pulls back with the digest pushed.
func TestRotateRewrapWithSkopeo(t *testing.T) {
	bin := buildShroud(t)
	up := distributionV3(t)
	dir := t.TempDir()
	ka, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	kb, _ := rsa.GenerateKey(rand.Reader, 2048)
	key := func(name string, pub, priv any) (rec, dec string) {
		p, _ := x509.MarshalPKIXPublicKey(pub)
		s, _ := x509.MarshalPKCS8PrivateKey(priv)
		return "jwe:" + pemFile(t, filepath.Join(dir, name+".pub.pem"), "PUBLIC KEY", p), pemFile(t, filepath.Join(dir, name+".pem"), "PRIVATE KEY", s)
	}
	recA, decA := key("a", &ka.PublicKey, ka)
	recB, decB := key("b", &kb.PublicKey, kb)
	data := filepath.Join(dir, "data")
	serveArgs := func(recipients ...string) []string {
		a := []string{"--upstream", up.URL, "--data-dir", data}
		for _, r := range recipients {
			a = append(a, "--recipient", r)
		}
		return a
	}
	addr, cmd, logs := startShroud(t, bin, serveArgs(recA, recB)...)
	src, img := ociLayout(t, 3, 200_000)
	skopeo(t, "copy", "--dest-tls-verify=false", src, "docker://"+addr+"/team/app:1")
	pushed, _ := layoutManifest(t, strings.TrimSuffix(strings.TrimPrefix(src, "oci:"), ":app"))
	want := layerDigests(t, img)
	decrypt := func(keyFile string) ([]string, error) {
		out := filepath.Join(t.TempDir(), "dec")
		o, err := skopeoErr(t, "copy", "--src-tls-verify=false", "--decryption-key", keyFile, "docker://"+up.Host()+"/team/app:1", "oci:"+out+":app")
		if err != nil {
			return nil, &exec.ExitError{Stderr: []byte(o)}
		}
		_, m := layoutManifest(t, out)
		return manifestLayerDigests(m), nil
	}
	for name, k := range map[string]string{"A": decA, "B": decB} {
		if got, err := decrypt(k); err != nil || !slices.Equal(got, want) {
			t.Fatalf("before the job, skopeo with %s's key: %v %v", name, got, err)
		}
	}
	blobsBefore := upstreamLayerDigests(t, up.Host(), "team/app:1")
	cmd.Process.Kill()
	cmd.Wait()
	_ = logs

	out, err := exec.Command(bin, append([]string{"rotate", "rewrap", "--repository", "team/app", "--"}, serveArgs(recB)...)...).CombinedOutput()
	t.Logf("shroud rotate rewrap:\n%s", out)
	if err != nil {
		t.Fatalf("shroud rotate rewrap: %v", err)
	}
	if !strings.Contains(string(out), "rewritten") {
		t.Fatal("the job's report says nothing rewritten")
	}
	if _, err := os.Stat(filepath.Join(data, "jobs", "rewrap.checkpoint")); !os.IsNotExist(err) {
		t.Fatalf("the finished job left its checkpoint, which a later job would resume from: %v", err)
	}
	if _, err := decrypt(decA); err == nil {
		t.Fatal("after the job, skopeo with the retired key A still decrypts the image from the upstream")
	}
	if got, err := decrypt(decB); err != nil || !slices.Equal(got, want) {
		t.Fatalf("after the job, skopeo with B's key: %v %v", got, err)
	}
	if after := upstreamLayerDigests(t, up.Host(), "team/app:1"); !slices.Equal(after, blobsBefore) {
		t.Fatalf("the job changed the layer blobs upstream: %v, were %v", after, blobsBefore)
	}
	addr, _, _ = startShroud(t, bin, serveArgs(recB)...)
	back := filepath.Join(t.TempDir(), "back")
	skopeo(t, "copy", "--src-tls-verify=false", "docker://"+addr+"/team/app:1", "oci:"+back+":app")
	if got, _ := layoutManifest(t, back); string(got) != string(pushed) {
		t.Fatal("through shroud, the image pulls back other manifest bytes than pushed")
	}
}

// upstreamLayerDigests are the layer digests of a manifest as the
// upstream holds it (the ciphertext's, for encrypted layers).
func upstreamLayerDigests(t *testing.T, host, repoRef string) []string {
	t.Helper()
	var m ocispec.Manifest
	if err := json.Unmarshal([]byte(skopeo(t, "inspect", "--raw", "--tls-verify=false", "docker://"+host+"/"+repoRef)), &m); err != nil {
		t.Fatal(err)
	}
	return manifestLayerDigests(m)
}

// The day a key leaks: `shroud rotate reencrypt` gives every layer a new
// key and new ciphertext. Straight from the upstream the leaked key A
// opens nothing (its old wrapped keys and the old ciphertext are gone),
// B's key decrypts the same layers; through shroud the old encrypted
// digests answer 410 naming the revocation and the image pulls back byte
// for byte.
func TestRotateReencryptWithSkopeo(t *testing.T) {
	bin := buildShroud(t)
	up := distributionV3(t)
	dir := t.TempDir()
	ka, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	kb, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	key := func(name string, pub, priv any) (rec, dec string) {
		p, _ := x509.MarshalPKIXPublicKey(pub)
		s, _ := x509.MarshalPKCS8PrivateKey(priv)
		return "jwe:" + pemFile(t, filepath.Join(dir, name+".pub.pem"), "PUBLIC KEY", p), pemFile(t, filepath.Join(dir, name+".pem"), "PRIVATE KEY", s)
	}
	recA, decA := key("a", &ka.PublicKey, ka)
	recB, decB := key("b", &kb.PublicKey, kb)
	data := filepath.Join(dir, "data")
	serveArgs := func(recipients ...string) []string {
		a := []string{"--upstream", up.URL, "--data-dir", data}
		for _, r := range recipients {
			a = append(a, "--recipient", r)
		}
		return a
	}
	addr, cmd, _ := startShroud(t, bin, serveArgs(recA, recB)...)
	src, img := ociLayout(t, 2, 300_000)
	skopeo(t, "copy", "--dest-tls-verify=false", src, "docker://"+addr+"/team/app:1")
	pushed, _ := layoutManifest(t, strings.TrimSuffix(strings.TrimPrefix(src, "oci:"), ":app"))
	want := layerDigests(t, img)
	oldBlobs := upstreamLayerDigests(t, up.Host(), "team/app:1")
	cmd.Process.Kill()
	cmd.Wait()

	out, err := exec.Command(bin, append([]string{"rotate", "reencrypt", "--key-id", "sha256:60cb0264f067b82086bf37362f4341ee232a83909f6afdbccea57e32323c16a0", "--repository", "team/app", "--"}, serveArgs(recB)...)...).CombinedOutput()
	t.Logf("shroud rotate reencrypt:\n%s", out)
	if err != nil {
		t.Fatalf("shroud rotate reencrypt: %v", err)
	}
	decrypt := func(keyFile string) ([]string, error) {
		o := filepath.Join(t.TempDir(), "dec")
		if out, err := skopeoErr(t, "copy", "--src-tls-verify=false", "--decryption-key", keyFile, "docker://"+up.Host()+"/team/app:1", "oci:"+o+":app"); err != nil {
			return nil, &exec.ExitError{Stderr: []byte(out)}
		}
		_, m := layoutManifest(t, o)
		return manifestLayerDigests(m), nil
	}
	if _, err := decrypt(decA); err == nil {
		t.Fatal("after re-encryption, skopeo with the leaked key still decrypts the image from the upstream")
	}
	if got, err := decrypt(decB); err != nil || !slices.Equal(got, want) {
		t.Fatalf("after re-encryption, skopeo with B's key: %v %v", got, err)
	}
	newBlobs := upstreamLayerDigests(t, up.Host(), "team/app:1")
	for _, old := range oldBlobs {
		if slices.Contains(newBlobs, old) {
			t.Fatalf("layer %s was not re-encrypted", old)
		}
	}
	addr, _, _ = startShroud(t, bin, serveArgs(recB)...)
	resp, err := http.Get("http://" + addr + "/v2/team/app/blobs/" + oldBlobs[0])
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusGone || !strings.Contains(string(body), "sha256:60cb0264f067b82086bf37362f4341ee232a83909f6afdbccea57e32323c16a0") {
		t.Fatalf("the old ciphertext through shroud: %d %s, want 410 naming the revocation", resp.StatusCode, body)
	}
	back := filepath.Join(t.TempDir(), "back")
	skopeo(t, "copy", "--src-tls-verify=false", "docker://"+addr+"/team/app:1", "oci:"+back+":app")
	if got, _ := layoutManifest(t, back); string(got) != string(pushed) {
		t.Fatal("through shroud, the image pulls back other manifest bytes than pushed")
	}
}

// Identity rotation, with the built binary and skopeo: an image pushed
// under the identity shroud generated; `shroud rotate identity` with a new
// --identity and the old one as --previous-identity; then a server with
// the new identity alone pulls the image back byte for byte, by tag and
// by digest, and skopeo with the old identity's key (taken from a stolen
// data dir) opens nothing upstream.
func TestRotateIdentityWithSkopeo(t *testing.T) {
	bin := buildShroud(t)
	up := distributionV3(t)
	dir := t.TempDir()
	kb, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p, _ := x509.MarshalPKIXPublicKey(&kb.PublicKey)
	s, _ := x509.MarshalPKCS8PrivateKey(kb)
	recB := "jwe:" + pemFile(t, filepath.Join(dir, "b.pub.pem"), "PUBLIC KEY", p)
	decB := pemFile(t, filepath.Join(dir, "b.pem"), "PRIVATE KEY", s)
	data := filepath.Join(dir, "data")
	addr, cmd, _ := startShroud(t, bin, "--upstream", up.URL, "--data-dir", data, "--recipient", recB)
	src, img := ociLayout(t, 2, 200_000)
	skopeo(t, "copy", "--dest-tls-verify=false", src, "docker://"+addr+"/team/app:1")
	pushed, _ := layoutManifest(t, strings.TrimSuffix(strings.TrimPrefix(src, "oci:"), ":app"))
	want := layerDigests(t, img)
	cmd.Process.Kill()
	cmd.Wait()
	oldID := filepath.Join(data, "identity.pem")
	decrypt := func(keyFile string) ([]string, error) {
		o := filepath.Join(t.TempDir(), "dec")
		if out, err := skopeoErr(t, "copy", "--src-tls-verify=false", "--decryption-key", keyFile, "docker://"+up.Host()+"/team/app:1", "oci:"+o+":app"); err != nil {
			return nil, &exec.ExitError{Stderr: []byte(out)}
		}
		_, m := layoutManifest(t, o)
		return manifestLayerDigests(m), nil
	}
	if got, err := decrypt(oldID); err != nil || !slices.Equal(got, want) {
		t.Fatalf("before the rotation, skopeo with the identity's key: %v %v", got, err)
	}

	if out, err := exec.Command(bin, "keygen", "--out", dir, "--name", "identity2").CombinedOutput(); err != nil {
		t.Fatalf("shroud keygen: %v\n%s", err, out)
	}
	newID := filepath.Join(dir, "identity2.pem")
	out, err := exec.Command(bin, "rotate", "identity", "--repository", "team/app", "--",
		"--upstream", up.URL, "--data-dir", data, "--identity", newID, "--previous-identity", oldID, "--recipient", recB).CombinedOutput()
	t.Logf("shroud rotate identity:\n%s", out)
	if err != nil {
		t.Fatalf("shroud rotate identity: %v", err)
	}
	if !strings.Contains(string(out), "re-sealed from a previous identity") || !strings.Contains(string(out), "shroud trust revoke --key-id") {
		t.Fatal("the job's report does not say what it re-sealed and how to retire the old identity")
	}
	if _, err := decrypt(oldID); err == nil {
		t.Fatal("after the rotation, skopeo with the old identity's key still decrypts the image from the upstream")
	}
	if got, err := decrypt(decB); err != nil || !slices.Equal(got, want) {
		t.Fatalf("after the rotation, skopeo with the recipient's key: %v %v", got, err)
	}
	addr, _, _ = startShroud(t, bin, "--upstream", up.URL, "--data-dir", filepath.Join(dir, "fresh"), "--identity", newID, "--recipient", recB)
	d := digest.FromBytes(pushed)
	for _, r := range []string{"team/app@" + d.String(), "team/app:1"} {
		back := filepath.Join(t.TempDir(), "back")
		skopeo(t, "copy", "--src-tls-verify=false", "docker://"+addr+"/"+r, "oci:"+back+":app")
		if got, _ := layoutManifest(t, back); string(got) != string(pushed) {
			t.Fatalf("through shroud with the new identity alone, %s pulls back other manifest bytes than pushed", r)
		}
	}
}

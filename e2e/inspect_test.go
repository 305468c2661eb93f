package e2e

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/shroudtest"
)

type inspectJSON struct {
	Digest string `json:"digest"`
	Images []struct {
		Platform       string `json:"platform"`
		PlainDigest    string `json:"plainDigest"`
		UpstreamDigest string `json:"upstreamDigest"`
		Layers         []struct {
			Encrypted    bool     `json:"encrypted"`
			PlainDigest  string   `json:"plainDigest"`
			CipherDigest string   `json:"cipherDigest"`
			Schemes      []string `json:"schemes"`
			Recipients   []string `json:"recipients"`
			Openable     bool     `json:"openable"`
			OpenedBy     string   `json:"openedBy"`
		} `json:"layers"`
	} `json:"images"`
}

// keygen writes usable key pairs and never overwrites one; inspect shows,
// through shroud or straight at the registry, per layer the plain and
// cipher digests, schemes, recipients and which local key opens it.
func TestKeygenAndInspect(t *testing.T) {
	bin := buildShroud(t)
	dir := t.TempDir()
	out, err := exec.Command(bin, "keygen", "--out", dir, "--name", "ops", "--type", "rsa").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "jwe:"+filepath.Join(dir, "ops.pub.pem")) {
		t.Fatalf("keygen: %v %s", err, out)
	}
	if st, err := os.Stat(filepath.Join(dir, "ops.pem")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("ops.pem: %v %v", err, st)
	}
	if out, err := exec.Command(bin, "keygen", "--out", dir, "--name", "ops").CombinedOutput(); err == nil {
		t.Fatalf("keygen overwrote a key: %s", out)
	}
	rec, err := crypto.ParseRecipient("jwe:" + filepath.Join(dir, "ops.pub.pem"))
	if err != nil {
		t.Fatal(err)
	}
	s := sharedShroud(t, shroudtest.WithRecipients(rec))
	src, img := ociLayout(t, 2, 100_000)
	recordLayers(t, img)
	skopeo(t, "copy", "--dest-tls-verify=false", src, "docker://"+s.Host()+"/inspect/app:1")
	want := layerDigests(t, img)

	run := func(args ...string) inspectJSON {
		t.Helper()
		out, err := exec.Command(bin, append([]string{"inspect", "--output", "json", "--insecure"}, args...)...).Output()
		if err != nil {
			t.Fatalf("inspect %v: %v", args, err)
		}
		var r inspectJSON
		if err := json.Unmarshal(out, &r); err != nil || len(r.Images) != 1 || len(r.Images[0].Layers) != 2 {
			t.Fatalf("inspect %v: %s", args, out)
		}
		return r
	}
	id, err := crypto.LoadIdentity(s.IdentityFile())
	if err != nil {
		t.Fatal(err)
	}
	pubPEM, _ := os.ReadFile(filepath.Join(dir, "ops.pub.pem"))
	blk, _ := pem.Decode(pubPEM)
	opsPub, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	wantKeys := []string{"ECDH-ES+A256KW kid " + id.Fingerprint(), "RSA-OAEP kid " + crypto.Fingerprint(opsPub)}
	for _, host := range []string{s.Host(), shared.up.Host()} {
		// With shroud's identity: everything is known.
		r := run("--identity", s.IdentityFile(), host+"/inspect/app:1")
		img0 := r.Images[0]
		if d, _ := img.Digest(); img0.PlainDigest != d.String() {
			t.Fatalf("%s: plain manifest digest %s, want %s", host, img0.PlainDigest, d)
		}
		for _, l := range img0.Layers {
			if !l.Encrypted || !strings.HasPrefix(l.CipherDigest, "sha256:") || !contains(want, l.PlainDigest) ||
				len(l.Schemes) != 1 || l.Schemes[0] != "jwe" || !l.Openable || !strings.HasPrefix(l.OpenedBy, "shroud identity ") {
				t.Fatalf("%s: layer %+v", host, l)
			}
			if len(l.Recipients) != 1 || !strings.Contains(l.Recipients[0], wantKeys[0]) || !strings.Contains(l.Recipients[0], wantKeys[1]) {
				t.Fatalf("%s: recipients %v, want the identity and the recipient by key id: %v", host, l.Recipients, wantKeys)
			}
		}
		// With only the recipient's key: it opens, and says which key.
		r = run("--data-dir", t.TempDir(), "--decryption-key", filepath.Join(dir, "ops.pem"), host+"/inspect/app:1")
		for _, l := range r.Images[0].Layers {
			if !l.Openable || l.OpenedBy != filepath.Join(dir, "ops.pem") || !contains(want, l.PlainDigest) {
				t.Fatalf("%s: with the recipient's key: %+v", host, l)
			}
		}
		// With no key: encrypted, not openable.
		r = run("--data-dir", t.TempDir(), host+"/inspect/app:1")
		for _, l := range r.Images[0].Layers {
			if !l.Encrypted || l.Openable {
				t.Fatalf("%s: without keys: %+v", host, l)
			}
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

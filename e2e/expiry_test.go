package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shroud-oci/shroud/internal/testkeys"
)

// Keys expire with no trust documents at all: an X.509 certificate past
// its NotAfter is a recipient shroud no longer wraps for. With the
// built binary and skopeo: a rule naming an expired pkcs7 certificate and
// a valid jwe key pushes an image whose layers carry no pkcs7 wrapped key
// (skopeo with the expired certificate's key cannot decrypt it from the
// upstream; with the jwe key it can); a rule left with the expired
// certificate alone refuses the push, naming the rule and the key's
// expiry.
func TestExpiredRecipientRefusedAtPushWithSkopeo(t *testing.T) {
	bin := buildShroud(t)
	up := distributionV3(t)
	dir := t.TempDir()
	cert, certKey := testkeys.CertValid(t, dir, "expired", time.Now().Add(-30*24*time.Hour), time.Now().Add(-24*time.Hour))
	kb, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p, _ := x509.MarshalPKIXPublicKey(&kb.PublicKey)
	s, _ := x509.MarshalPKCS8PrivateKey(kb)
	recB := "jwe:" + pemFile(t, filepath.Join(dir, "b.pub.pem"), "PUBLIC KEY", p)
	decB := pemFile(t, filepath.Join(dir, "b.pem"), "PRIVATE KEY", s)

	addr, _, logs := startShroud(t, bin, "--upstream", up.URL, "--data-dir", filepath.Join(dir, "data"), "--recipient", "pkcs7:"+cert, "--recipient", recB)
	src, img := ociLayout(t, 2, 100_000)
	want := layerDigests(t, img)
	skopeo(t, "copy", "--dest-tls-verify=false", src, "docker://"+addr+"/team/app:1")
	var m ocispec.Manifest
	if err := json.Unmarshal([]byte(skopeo(t, "inspect", "--raw", "--tls-verify=false", "docker://"+up.Host()+"/team/app:1")), &m); err != nil {
		t.Fatal(err)
	}
	for _, l := range m.Layers {
		if _, ok := l.Annotations["org.opencontainers.image.enc.keys.pkcs7"]; ok {
			t.Errorf("layer %s upstream carries a key wrapped for the expired certificate", l.Digest)
		}
		if _, ok := l.Annotations["org.opencontainers.image.enc.keys.jwe"]; !ok {
			t.Errorf("layer %s upstream is not wrapped for the valid jwe recipient", l.Digest)
		}
	}
	decrypt := func(keys ...string) ([]string, error) {
		o := filepath.Join(t.TempDir(), "dec")
		args := []string{"copy", "--src-tls-verify=false"}
		for _, k := range keys {
			args = append(args, "--decryption-key", k)
		}
		if out, err := skopeoErr(t, append(args, "docker://"+up.Host()+"/team/app:1", "oci:"+o+":app")...); err != nil {
			return nil, &testError{out}
		}
		_, m := layoutManifest(t, o)
		return manifestLayerDigests(m), nil
	}
	if _, err := decrypt(certKey, cert); err == nil {
		t.Error("skopeo with the expired certificate's key decrypts the image pushed after it expired")
	}
	if got, err := decrypt(decB); err != nil || !slices.Equal(got, want) {
		t.Fatalf("skopeo with the valid recipient's key: %v %v", got, err)
	}
	if !strings.Contains(logs.String(), "expired") {
		t.Errorf("shroud's log does not say it left the expired recipient out:\n%s", logs)
	}

	addr, _, _ = startShroud(t, bin, "--upstream", up.URL, "--data-dir", filepath.Join(dir, "data2"), "--recipient", "pkcs7:"+cert)
	out, err := skopeoErr(t, "copy", "--dest-tls-verify=false", src, "docker://"+addr+"/team/app:2")
	if err == nil || !strings.Contains(out, "no recipient") || !strings.Contains(out, "expired") {
		t.Fatalf("a push whose every recipient expired: %v\n%s", err, out)
	}
}

type testError struct{ out string }

func (e *testError) Error() string { return e.out }

package e2e

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shroud-oci/shroud/internal/testkeys"
)

// certDir is a directory skopeo reads as --*-cert-dir: the CA certificate
// cert, and nothing else.
func certDir(t *testing.T, cert string) string {
	t.Helper()
	dir := t.TempDir()
	b, err := os.ReadFile(cert)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// clientTrusting is an HTTPS client whose only root is cert.
func clientTrusting(t *testing.T, cert string) *http.Client {
	t.Helper()
	b, err := os.ReadFile(cert)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(b)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// HTTPS on both sides, as at an organization's edge: shroud serves its
// own certificate, verifies the upstream's against --upstream-ca, and
// skopeo verifies shroud's. The round trip is exact; a client that does
// not trust shroud's CA, and a shroud that does not trust the upstream's,
// fail and say why.
func TestServeTLS(t *testing.T) {
	bin := buildShroud(t)
	keys := t.TempDir()
	upCert, upKey := testkeys.Cert(t, keys, "upstream", true)
	up := startRegistryProcess(t, "distribution-v3-tls", tool("registry"),
		"  tls:\n    certificate: "+upCert+"\n    key: "+upKey+"\n")
	upURL := strings.Replace(up.URL, "http://", "https://", 1)
	cert, key := testkeys.Cert(t, keys, "shroud", true)
	addr, _, logs := startShroudWith(t, bin, "https", clientTrusting(t, cert),
		"--data-dir", t.TempDir(), "--upstream", upURL, "--upstream-ca", upCert, "--tls-cert", cert, "--tls-key", key)

	src, img := ociLayout(t, 2, 300_000)
	ref := "docker://" + addr + "/edge/app:1"
	if out, err := skopeoErr(t, "copy", src, ref); err == nil || !strings.Contains(out, "certificate") {
		t.Fatalf("skopeo pushed to shroud without trusting its certificate (err %v):\n%s", err, out)
	}
	skopeo(t, "copy", "--dest-cert-dir", certDir(t, cert), src, ref)
	back := filepath.Join(t.TempDir(), "back")
	skopeo(t, "copy", "--src-cert-dir", certDir(t, cert), ref, "oci:"+back+":app")
	raw, _ := layoutManifest(t, back)
	if want, _ := img.RawManifest(); !bytes.Equal(raw, want) {
		t.Fatal("round trip over HTTPS changed the manifest")
	}
	// What went upstream over HTTPS is ciphertext.
	if out := skopeo(t, "inspect", "--raw", "--cert-dir", certDir(t, upCert), "docker://"+up.Host()+"/edge/app:1"); !strings.Contains(out, "+encrypted") {
		t.Fatalf("upstream manifest is not encrypted:\n%s", out)
	}
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Fatalf("shroud logged errors:\n%s", logs)
	}

	// A shroud that does not trust the upstream's CA refuses to talk to it,
	// and says it is not ready.
	addr2, _, logs2 := startShroud(t, bin, "--data-dir", t.TempDir(), "--upstream", upURL)
	resp, err := http.Get("http://" + addr2 + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz of a shroud that cannot reach its upstream: %s, want 503", resp.Status)
	}
	out, err := skopeoErr(t, "copy", "--dest-tls-verify=false", src, "docker://"+addr2+"/edge/app:2")
	if err == nil {
		t.Fatalf("push through a shroud that does not trust the upstream succeeded:\n%s", out)
	}
	if !logs2.waitFor("certificate signed by unknown authority") {
		t.Fatalf("shroud's log does not say the upstream's certificate is untrusted:\n%s", logs2)
	}
}

// A certificate replaced on disk (cert-manager rotating a secret) is
// served from the next handshake on, without a restart; a replacement
// that does not load leaves the loaded one in service.
func TestServeTLSReload(t *testing.T) {
	bin := buildShroud(t)
	keys := t.TempDir()
	cert, key := testkeys.Cert(t, keys, "shroud", true)
	addr, _, logs := startShroudWith(t, bin, "https", clientTrusting(t, cert),
		"--data-dir", t.TempDir(), "--tls-cert", cert, "--tls-key", key)
	served := func() string {
		t.Helper()
		conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	if cn := served(); cn != "shroud" {
		t.Fatalf("serving %q, want the certificate of CN shroud", cn)
	}

	next := t.TempDir()
	nextCert, nextKey := testkeys.Cert(t, next, "rotated", true)
	for _, f := range [][2]string{{nextKey, key}, {nextCert, cert}} {
		b, _ := os.ReadFile(f[0])
		if err := os.WriteFile(f[1], b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if cn := served(); cn != "rotated" {
		t.Fatalf("after rotation serving %q, want the certificate of CN rotated", cn)
	}
	if !logs.waitFor("reloaded the TLS certificate") {
		t.Fatalf("no reload in the log:\n%s", logs)
	}

	os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("junk")}), 0o600)
	if cn := served(); cn != "rotated" {
		t.Fatalf("after a broken replacement serving %q, want the loaded certificate", cn)
	}
	if !logs.waitFor("cannot be loaded") {
		t.Fatalf("the broken replacement is not in the log:\n%s", logs)
	}
}

package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	ocicryptconfig "github.com/containers/ocicrypt/config"
	keyproviderconfig "github.com/containers/ocicrypt/config/keyprovider-config"
	ockp "github.com/containers/ocicrypt/keywrap/keyprovider"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/testkeys"
)

// A node that holds no key: shroud serve encrypts for provider:shroud
// through `shroud keyprovider`; imgcrypt's ctd-decoder, given a layer
// straight from the upstream (ciphertext) and the key provider in
// OCICRYPT_KEYPROVIDER_CONFIG, writes the plaintext layer (its sha256 is
// the client's layer digest). It fails, writing nothing, for a repository
// the key provider's policy denies, when the key provider is down, and
// against a key provider that requires a client certificate it has not.
func TestKeyproviderNodeWithoutKey(t *testing.T) {
	bin := replicaBinary(t)
	ctdDecoder(t) // built before anything runs, outside the timings
	up := distributionV3(t)
	dir := t.TempDir()

	kpAddr := freeAddr(t)
	kpConfig := filepath.Join(dir, "keyprovider.yaml")
	writeFile(t, kpConfig, `policy:
  - repositories: "kp/denied/**"
    action: deny
  - repositories: "**"
    action: encrypt
    recipients: ["provider:shroud"]
`)
	kpData := filepath.Join(dir, "kp-data")
	kp := startProcess(t, "shroud keyprovider", bin, "keyprovider", "--listen", kpAddr, "--data-dir", kpData, "--config", kpConfig)
	t.Cleanup(func() { kp.stop(syscall.SIGTERM) })
	waitTCP(t, kp, kpAddr)

	// shroud serve's own policy encrypts both repositories: the deny is
	// the key provider's, as a node-side policy.
	serveConfig := filepath.Join(dir, "serve.yaml")
	writeFile(t, serveConfig, fmt.Sprintf(`key-providers:
  shroud:
    grpc: %s
policy:
  - repositories: "kp/app"
    action: encrypt
    recipients: ["provider:shroud:kp/app"]
  - repositories: "kp/denied/app"
    action: encrypt
    recipients: ["provider:shroud:kp/denied/app"]
`, kpAddr))
	addr, _, logs := startShroud(t, bin, "--upstream", up.URL, "--data-dir", filepath.Join(dir, "serve-data"), "--config", serveConfig)

	nodeConfig := filepath.Join(dir, "ocicrypt_keyprovider.json")
	writeFile(t, nodeConfig, fmt.Sprintf(`{"key-providers":{"shroud":{"grpc":%q}}}`, kpAddr))

	src, img := ociLayout(t, 1, 200_000)
	recordLayers(t, img)
	want := layerDigests(t, img)[0]
	for _, repo := range []string{"kp/app", "kp/denied/app"} {
		skopeo(t, "copy", "--dest-tls-verify=false", src, "docker://"+addr+"/"+repo+":1")
	}
	_ = logs

	layer, desc := upstreamLayer(t, up.URL, "kp/app")
	if !strings.HasSuffix(desc.MediaType, "+encrypted") || desc.Annotations["org.opencontainers.image.enc.keys.provider.shroud"] == "" {
		t.Fatalf("the upstream layer is not encrypted for provider:shroud: %s %v", desc.MediaType, desc.Annotations)
	}
	if sha256Of(layer) == want {
		t.Fatal("the upstream holds the plaintext layer")
	}
	out, stderr, err := runCtdDecoder(t, layer, desc, nodeConfig)
	if err != nil {
		t.Fatalf("ctd-decoder: %v\n%s\nkey provider:\n%s", err, stderr, kp.logs)
	}
	if got := sha256Of(out); got != want {
		t.Fatalf("ctd-decoder wrote %d bytes of %s, want the layer %s", len(out), got, want)
	}

	fails := func(name string, layer []byte, desc ocispec.Descriptor, config string, wantMsg string) {
		t.Helper()
		out, stderr, err := runCtdDecoder(t, layer, desc, config)
		if err == nil || len(out) > 0 {
			t.Fatalf("%s: ctd-decoder succeeded (%v) writing %d bytes", name, err, len(out))
		}
		if !strings.Contains(string(stderr), wantMsg) {
			t.Fatalf("%s: ctd-decoder says %q, want it to mention %q", name, stderr, wantMsg)
		}
	}
	denied, deniedDesc := upstreamLayer(t, up.URL, "kp/denied/app")
	fails("denied repository", denied, deniedDesc, nodeConfig, "policy-deny")
	if !strings.Contains(kp.logs.String(), "key provider refused") {
		t.Fatalf("the key provider did not log the refusal:\n%s", kp.logs)
	}

	// A key provider requiring client certificates signed by a CA: this
	// ctd-decoder (imgcrypt v1.1.8's ocicrypt) speaks plain gRPC only, so
	// it is refused at the handshake, as any caller without a certificate.
	certs := t.TempDir()
	cert, key := testkeys.Cert(t, certs, "kp", true)
	tlsAddr := freeAddr(t)
	kpTLS := startProcess(t, "shroud keyprovider (mTLS)", bin, "keyprovider", "--listen", tlsAddr, "--data-dir", kpData,
		"--tls-cert", cert, "--tls-key", key, "--client-ca", cert)
	t.Cleanup(func() { kpTLS.stop(syscall.SIGTERM) })
	waitTCP(t, kpTLS, tlsAddr)
	tlsConfig := filepath.Join(dir, "ocicrypt_keyprovider_tls.json")
	writeFile(t, tlsConfig, fmt.Sprintf(`{"key-providers":{"shroud":{"grpc":%q}}}`, tlsAddr))
	fails("no client certificate", layer, desc, tlsConfig, "Error from grpc method")

	kp.stop(syscall.SIGTERM)
	fails("key provider stopped", layer, desc, nodeConfig, "Error from grpc method")
	summarize("keyprovider: ctd-decoder (imgcrypt " + imgcryptVersion + ") with no private key opened a layer through shroud keyprovider; refused for a denied repository, without a client certificate, with the provider down")
}

// upstreamLayer is the first layer of repo:1 as the upstream holds it, and
// its descriptor from the upstream's manifest.
func upstreamLayer(t *testing.T, upURL, repo string) ([]byte, ocispec.Descriptor) {
	t.Helper()
	resp, body := get(t, "GET", upURL+"/v2/"+repo+"/manifests/1", "Accept", ocispec.MediaTypeImageManifest)
	if resp.StatusCode != 200 {
		t.Fatalf("upstream manifest of %s: %d %s", repo, resp.StatusCode, body)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(body, &m); err != nil || len(m.Layers) == 0 {
		t.Fatalf("upstream manifest of %s: %v %s", repo, err, body)
	}
	d := m.Layers[0]
	resp, blob := get(t, "GET", upURL+"/v2/"+repo+"/blobs/"+d.Digest.String())
	if resp.StatusCode != 200 || sha256Of(blob) != d.Digest.String() {
		t.Fatalf("upstream blob %s: %d", d.Digest, resp.StatusCode)
	}
	return blob, d
}

func sha256Of(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// `shroud keyprovider --config` with trust documents: a key it wrapped
// opens through ocicrypt's key-provider client until the identity is
// revoked in the deny list, then the unwrap is refused as revoked.
func TestKeyproviderRevokedIdentity(t *testing.T) {
	bin := replicaBinary(t)
	dir := t.TempDir()
	run := shroudCommand(t, bin)
	keys := filepath.Join(dir, "keys")
	run("keygen", "--out", keys, "--name", "identity")
	repo := filepath.Join(dir, "trust")
	tk := func(n string) string { return filepath.Join(dir, "tuf", n+".pem") }
	run("trust", "init", "--dir", repo, "--root-key", tk("root"), "--targets-key", tk("targets"), "--snapshot-key", tk("snapshot"), "--timestamp-key", tk("timestamp"), "--generate")
	publish := []string{"--targets-key", tk("targets"), "--snapshot-key", tk("snapshot"), "--timestamp-key", tk("timestamp")}
	pub := filepath.Join(keys, "identity.pub.pem")
	run(append([]string{"trust", "add-key", "--dir", repo, "--public-key", pub, "--scheme", "jwe", "--scope", "**"}, publish...)...)
	cfg := filepath.Join(dir, "kp.yaml")
	writeFile(t, cfg, fmt.Sprintf("trust:\n  source: %s\n  root: %s\n  refresh: 200ms\n", repo, filepath.Join(repo, "metadata", "1.root.json")))
	addr := freeAddr(t)
	kp := startProcess(t, "shroud keyprovider", bin, "keyprovider", "--listen", addr, "--data-dir", filepath.Join(dir, "data"),
		"--identity", filepath.Join(keys, "identity.pem"), "--config", cfg)
	t.Cleanup(func() { kp.stop(syscall.SIGTERM) })
	waitTCP(t, kp, addr)

	w := ockp.NewKeyWrapper("shroud", keyproviderconfig.KeyProviderAttrs{Grpc: addr})
	opts := []byte(`{"symkey":"a2V5"}`)
	ann, err := w.WrapKeys(&ocicryptconfig.EncryptConfig{Parameters: map[string][][]byte{"shroud": {[]byte("team/app")}}}, opts)
	if err != nil {
		t.Fatalf("wrap: %v\n%s", err, kp.logs)
	}
	if got, err := w.UnwrapKey(&ocicryptconfig.DecryptConfig{}, ann); err != nil || !bytes.Equal(got, opts) {
		t.Fatalf("before the revocation: %q %v\n%s", got, err, kp.logs)
	}
	r, err := crypto.ParseRecipient("jwe:" + pub)
	if err != nil {
		t.Fatal(err)
	}
	run(append([]string{"trust", "revoke", "--dir", repo, "--key-id", r.KeyID(), "--reason", "keyCompromise"}, publish...)...)
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := w.UnwrapKey(&ocicryptconfig.DecryptConfig{}, ann)
		if err != nil && strings.Contains(err.Error(), "revoked") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the revocation: %v\n%s", err, kp.logs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// imgcrypt's ctd-decoder, as containerd's stream processor on a node that
// holds shroud's key (--decryption-keys-path, imgcrypt's own option),
// opens the ciphertext shroud stored straight from the registry: the
// layer it writes has the plaintext digest skopeo pushed. The same
// decoder with another key opens nothing.
func TestCtdDecoderOpensShroudsLayerWithShroudsKey(t *testing.T) {
	bin := buildShroud(t)
	ctdDecoder(t)
	up := distributionV3(t)
	data := t.TempDir()
	addr, _, _ := startShroud(t, bin, "--upstream", up.URL, "--data-dir", data)
	src, img := ociLayout(t, 1, 300_000)
	want := layerDigests(t, img)[0]
	skopeo(t, "copy", "--dest-tls-verify=false", src, "docker://"+addr+"/node/app:1")

	layer, desc := upstreamLayer(t, up.URL, "node/app")
	if !strings.HasSuffix(desc.MediaType, "+encrypted") || sha256Of(layer) == want {
		t.Fatalf("the upstream layer is not shroud's ciphertext: %s", desc.MediaType)
	}
	keys := t.TempDir()
	b, err := os.ReadFile(filepath.Join(data, "identity.pem"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(keys, "identity.pem"), string(b))
	noProviders := filepath.Join(t.TempDir(), "ocicrypt_keyprovider.json")
	writeFile(t, noProviders, `{"key-providers":{}}`)
	out, stderr, err := runCtdDecoder(t, layer, desc, noProviders, "--decryption-keys-path", keys)
	if err != nil {
		t.Fatalf("ctd-decoder with shroud's key: %v\n%s", err, stderr)
	}
	if got := sha256Of(out); got != want {
		t.Fatalf("ctd-decoder wrote %d bytes of %s, want the layer %s", len(out), got, want)
	}

	other := t.TempDir()
	run := shroudCommand(t, bin)
	run("keygen", "--out", other, "--name", "other")
	os.Remove(filepath.Join(other, "other.pub.pem")) // the private key alone, as with shroud's
	if out, _, err := runCtdDecoder(t, layer, desc, noProviders, "--decryption-keys-path", other); err == nil || len(out) > 0 {
		t.Fatalf("ctd-decoder with another key succeeded (%v), writing %d bytes", err, len(out))
	}
}

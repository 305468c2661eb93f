package proxy_test

// Helpers shared by the attack tests (attack_*_test.go): each of those
// files models one way a hostile upstream, or a client without the right
// credentials, tries to get plaintext out of shroud or make it do work.

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/containers/ocicrypt"
	"github.com/containers/ocicrypt/config"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shroud-oci/shroud/internal/shroudtest"
)

// atkBasicAuth is an Authorization header value.
func atkBasicAuth(user, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
}

// atkPushBlob uploads b monolithically (POST ?digest=) with the given
// headers and wants 201.
func atkPushBlob(t *testing.T, c call, repo string, b []byte, hdr ...string) digest.Digest {
	t.Helper()
	d := digest.FromBytes(b)
	a := c.do("POST", "/v2/"+repo+"/blobs/uploads/?digest="+d.String(), bytes.NewReader(b), hdr...)
	if a.status != 201 {
		t.Fatalf("push blob %s to %s: %d %s", d, repo, a.status, a.body)
	}
	return d
}

// atkPushUpstreamBlob uploads b straight at the upstream, around shroud.
func atkPushUpstreamBlob(t *testing.T, up shroudtest.Upstream, repo string, b []byte) digest.Digest {
	t.Helper()
	r := ref(t, up.Host(), repo).Context()
	if err := remote.WriteLayer(r, static.NewLayer(b, types.OCILayer)); err != nil {
		t.Fatal(err)
	}
	return digest.FromBytes(b)
}

// atkPlainConfig is a linux/amd64 image config.
var atkPlainConfig = []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)

// atkImageManifest is an OCI image manifest of a config and layers.
func atkImageManifest(t *testing.T, cfg ocispec.Descriptor, layers ...ocispec.Descriptor) []byte {
	t.Helper()
	if layers == nil {
		layers = []ocispec.Descriptor{}
	}
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: cfg, Layers: layers}
	m.SchemaVersion = 2
	return must[[]byte](t)(json.Marshal(m))
}

// atkLayerDesc describes a plaintext gzip layer of bytes b.
func atkLayerDesc(b []byte) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromBytes(b), Size: int64(len(b))}
}

// atkStaticImage is an OCI linux/amd64 image whose layers are exactly the
// given bytes (their digests are the bytes' digests).
func atkStaticImage(t *testing.T, layers ...[]byte) v1.Image {
	t.Helper()
	img := mutate.MediaType(mutate.ConfigMediaType(empty.Image, types.OCIConfigJSON), types.OCIManifestSchema1)
	for _, b := range layers {
		img = must[v1.Image](t)(mutate.AppendLayers(img, static.NewLayer(b, types.OCILayer)))
	}
	cf := must[*v1.ConfigFile](t)(img.ConfigFile())
	cf.OS, cf.Architecture = "linux", "amd64"
	return must[v1.Image](t)(mutate.ConfigFile(img, cf))
}

// atkRandBytes returns n random bytes.
func atkRandBytes(t *testing.T, n int) []byte {
	b, _ := randBlob(t, n)
	return b
}

// atkStorageHolding returns the first file of a distribution storage root
// holding any of needles (each at least 64 bytes, so that no chance match
// counts), or "".
func atkStorageHolding(t *testing.T, up shroudtest.Upstream, needles ...[]byte) string {
	t.Helper()
	if up.Dir == "" {
		t.Fatal("atkStorageHolding needs a distribution upstream")
	}
	for _, f := range atkStorageFiles(t, up.Dir) {
		b := must[[]byte](t)(os.ReadFile(f))
		for _, n := range needles {
			if len(n) < 64 {
				t.Fatalf("needle of %d bytes is too short to mean anything", len(n))
			}
			if bytes.Contains(b, n) {
				return f
			}
		}
	}
	return ""
}

// atkStorageFiles lists every regular file under a distribution storage root
// (blob data, and anything else distribution keeps).
func atkStorageFiles(t *testing.T, dir string) []string {
	t.Helper()
	files := shroudtest.BlobFiles(t, dir)
	if len(files) == 0 {
		t.Fatalf("no blob files under %s: the scan would prove nothing", dir)
	}
	return files
}

// atkPlaintextNeedles are the parts of a plaintext blob whose presence in
// upstream storage means it leaked: its first 4 KiB (or all of it) and its
// base64 encoding, as a descriptor's data field would carry it.
func atkPlaintextNeedles(b []byte) [][]byte {
	head := b[:min(len(b), 4096)]
	b64 := base64.StdEncoding.EncodeToString(b)
	return [][]byte{head, []byte(b64[:min(len(b64), 4096)])}
}

// atkDecryptUpstreamLayer fetches an encrypted layer straight from the
// upstream and decrypts it with ocicrypt and shroud's identity key (what
// skopeo --decryption-key does), verifying its HMAC.
func atkDecryptUpstreamLayer(t *testing.T, up shroudtest.Upstream, s shroudtest.Shroud, repo string, l ocispec.Descriptor) ([]byte, error) {
	t.Helper()
	blob := must[v1.Layer](t)(remote.Layer(ref(t, up.Host(), repo).Context().Digest(l.Digest.String())))
	rc := must[io.ReadCloser](t)(blob.Compressed())
	ct := must[[]byte](t)(io.ReadAll(rc))
	rc.Close()
	priv := must[[]byte](t)(os.ReadFile(s.IdentityFile()))
	dc := must[config.CryptoConfig](t)(config.DecryptWithPrivKeys([][]byte{priv}, [][]byte{{}}))
	r, _, err := ocicrypt.DecryptLayer(dc.DecryptConfig, bytes.NewReader(ct), l, false)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

// atkReadLayers reads every layer of an image, reporting the first error
// instead of failing.
func atkReadLayers(img v1.Image) (map[v1.Hash][]byte, error) {
	ls, err := img.Layers()
	if err != nil {
		return nil, err
	}
	out := map[v1.Hash][]byte{}
	for _, l := range ls {
		d, err := l.Digest()
		if err != nil {
			return nil, err
		}
		rc, err := l.Compressed()
		if err != nil {
			return nil, fmt.Errorf("layer %s: %w", d, err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("layer %s: %w", d, err)
		}
		out[d] = b
	}
	return out, nil
}

// atkRawRequest writes a request line as it is on a new connection (Go's
// client would clean or re-encode the path) and reads the answer.
func atkRawRequest(t *testing.T, host, method, target string) (int, http.Header, []byte) {
	t.Helper()
	conn := must[net.Conn](t)(net.Dial("tcp", host))
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", method, target, host)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// atkRawJSON reads a JSON object keeping each field's bytes.
func atkRawJSON(t *testing.T, b []byte) map[string]json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("not a JSON object: %v: %.200s", err, b)
	}
	return m
}

// atkUpstreamRaw reads a manifest straight from the upstream, as it is.
func atkUpstreamRaw(t *testing.T, up shroudtest.Upstream, repoRef string) []byte {
	t.Helper()
	return must[*remote.Descriptor](t)(remote.Get(ref(t, up.Host(), repoRef))).Manifest
}

// atkPutUpstream PUTs a manifest straight at the upstream, around shroud.
func atkPutUpstream(t *testing.T, up shroudtest.Upstream, repo, reference, mediaType string, body []byte) {
	t.Helper()
	a := call{t, up.URL}.do("PUT", "/v2/"+repo+"/manifests/"+reference, bytes.NewReader(body), "Content-Type", mediaType)
	if a.status != 201 {
		t.Fatalf("PUT %s:%s at the upstream: %d %s", repo, reference, a.status, a.body)
	}
}

// atkWantDenied asserts an answer is 403 DENIED and does not carry the bytes
// an attack wanted out.
func atkWantDenied(t *testing.T, what string, a answer, leaked ...[]byte) {
	t.Helper()
	for _, l := range leaked {
		if len(l) > 0 && bytes.Contains(a.body, l) {
			t.Errorf("%s: the answer (%d) carries the protected bytes", what, a.status)
		}
	}
	if a.status != 403 || a.errorCode() != "DENIED" {
		t.Errorf("%s: %d %.300s, want 403 DENIED", what, a.status, a.body)
	}
}

// atkNoPlaintextBlob asserts a blob GET did not hand out the plaintext.
func atkNoPlaintextBlob(t *testing.T, what string, a answer, plain []byte) {
	t.Helper()
	if a.status/100 == 2 || bytes.Contains(a.body, plain[:min(len(plain), 1024)]) {
		t.Errorf("%s: %d with %d bytes (plaintext: %v), want a refusal", what, a.status, len(a.body),
			bytes.Contains(a.body, plain[:min(len(plain), 1024)]))
	}
}

// atkIsManifestGet matches upstream GETs of manifests.
func atkIsManifestGet(r shroudtest.Request) bool {
	return r.Method == http.MethodGet && strings.Contains(r.Path, "/manifests/")
}

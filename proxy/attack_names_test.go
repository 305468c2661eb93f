package proxy_test

import (
	"bytes"
	"encoding/base64"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/shroudtest"
)

// atkWellFormedPubOpts is a pubopts annotation ocicrypt would parse: the
// cipher and an HMAC of the right length.
func atkWellFormedPubOpts() string {
	hmac := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0x5a}, 32))
	return base64.StdEncoding.EncodeToString([]byte(`{"cipher":"AES_256_CTR_HMAC_SHA256","hmac":"` + hmac + `","cipheroptions":{}}`))
}

// Attack: "already encrypted" judged by names. A client uploads a layer
// through shroud (which encrypts it at upload), then names it in a
// manifest with an +encrypted media type and an enc.keys.jwe annotation
// that wraps nothing ("eA==", or not even base64). shroud takes the layer
// for encrypted elsewhere, decrypts its own ciphertext and stores the
// plaintext upstream "as pushed". A user checks the manifest is refused
// with 400 MANIFEST_INVALID (never 500) and that the layer's bytes are
// nowhere in upstream storage.
func TestFakeWrappedKeyLayer(t *testing.T) {
	for _, tc := range []struct{ name, keys string }{
		{"wraps nothing", "eA=="},
		{"not base64", "%%% not base64 %%%"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := shroudtest.Distribution(t)
			s := shroudtest.Start(t, up)
			c := call{t, s.URL}
			cd := atkPushBlob(t, c, "fake/app", atkPlainConfig)
			layer := atkRandBytes(t, 30_000)
			atkPushBlob(t, c, "fake/app", layer)
			if f := atkStorageHolding(t, up, atkPlaintextNeedles(layer)...); f != "" {
				t.Fatalf("the upload itself left plaintext in %s", f)
			}
			l := atkLayerDesc(layer)
			l.MediaType = ocispec.MediaTypeImageLayerGzip + "+encrypted"
			l.Annotations = map[string]string{crypto.AnnotationKeys + "jwe": tc.keys, crypto.AnnotationPubOpts: atkWellFormedPubOpts()}
			body := atkImageManifest(t, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: cd, Size: int64(len(atkPlainConfig))}, l)
			a := c.do("PUT", "/v2/fake/app/manifests/1", bytes.NewReader(body), "Content-Type", ocispec.MediaTypeImageManifest)
			if a.status != 400 || (tc.name == "wraps nothing" && a.errorCode() != "MANIFEST_INVALID") {
				t.Errorf("manifest naming a fake encrypted layer: %d %.300s, want 400 MANIFEST_INVALID", a.status, a.body)
			}
			if f := atkStorageHolding(t, up, atkPlaintextNeedles(layer)...); f != "" {
				t.Errorf("upstream storage file %s holds the layer's plaintext", f)
			}
		})
	}
}

// Attack: a layer named as a config. shroud stores a manifest's config in
// plaintext (decrypting its own ciphertext of it); a second manifest in
// the same repository whose config descriptor names one of an image's
// LAYER digests makes shroud store that layer's plaintext upstream. A
// user checks the manifest is refused with 400 MANIFEST_INVALID and that
// the layer's plaintext is nowhere upstream.
func TestLayerNamedAsConfig(t *testing.T) {
	for _, mediaType := range []string{ocispec.MediaTypeImageConfig, "application/vnd.example.artifact.config.v1+json"} {
		t.Run(mediaType, func(t *testing.T) {
			up := shroudtest.Distribution(t)
			s := shroudtest.Start(t, up)
			l1, l2 := atkRandBytes(t, 30_000), atkRandBytes(t, 20_000)
			if err := remote.Write(ref(t, s.Host(), "cfg/app:1"), atkStaticImage(t, l1, l2)); err != nil {
				t.Fatal(err)
			}
			atkCheckAllLayersEncrypted(t, up, "cfg/app:1", l1, l2)
			body := atkImageManifest(t, ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(l1), Size: int64(len(l1))})
			a := call{t, s.URL}.do("PUT", "/v2/cfg/app/manifests/2", bytes.NewReader(body), "Content-Type", ocispec.MediaTypeImageManifest)
			if a.status != 400 || a.errorCode() != "MANIFEST_INVALID" {
				t.Errorf("manifest whose config is a layer: %d %.300s, want 400 MANIFEST_INVALID", a.status, a.body)
			}
			if f := atkStorageHolding(t, up, atkPlaintextNeedles(l1)...); f != "" {
				t.Errorf("upstream storage file %s holds the layer's plaintext", f)
			}
		})
	}
}

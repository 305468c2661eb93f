package proxy_test

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"testing"

	"github.com/containers/ocicrypt"
	"github.com/containers/ocicrypt/config"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/shroudtest"
)

func ref(t testing.TB, host, repo string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(host+"/"+repo, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func must[T any](t testing.TB) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// images returns a Docker schema 2 image and an OCI image.
func images(t *testing.T) map[string]v1.Image {
	docker := must[v1.Image](t)(random.Image(300_000, 3))
	oci := mutate.MediaType(mutate.ConfigMediaType(empty.Image, types.OCIConfigJSON), types.OCIManifestSchema1)
	for i := 0; i < 2; i++ {
		l := must[v1.Layer](t)(random.Layer(200_000, types.OCILayer))
		oci = must[v1.Image](t)(mutate.AppendLayers(oci, l))
	}
	oci = mutate.Annotations(oci, map[string]string{"org.example.note": "kept"}).(v1.Image)
	return map[string]v1.Image{"docker": docker, "oci": oci}
}

// layerBytes returns each layer's compressed bytes by digest.
func layerBytes(t *testing.T, img v1.Image) map[v1.Hash][]byte {
	out := map[v1.Hash][]byte{}
	for _, l := range must[[]v1.Layer](t)(img.Layers()) {
		rc := must[io.ReadCloser](t)(l.Compressed())
		b := must[[]byte](t)(io.ReadAll(rc))
		rc.Close()
		out[must[v1.Hash](t)(l.Digest())] = b
	}
	return out
}

func TestRoundTrip(t *testing.T) {
	for _, up := range shroudtest.Upstreams(t) {
		for kind, img := range images(t) {
			t.Run(up.Name+"/"+kind, func(t *testing.T) {
				s := shroudtest.Start(t, up)
				repo := "team/app-" + kind + ":1"
				if err := remote.Write(ref(t, s.Host(), repo), img); err != nil {
					t.Fatalf("push through shroud: %v", err)
				}
				plainLayers := layerBytes(t, img)
				wantRaw := must[[]byte](t)(img.RawManifest())

				// Pull back through shroud: same manifest bytes, same digests.
				desc := must[*remote.Descriptor](t)(remote.Get(ref(t, s.Host(), repo)))
				if !bytes.Equal(desc.Manifest, wantRaw) {
					t.Fatalf("pulled manifest differs from pushed one:\n got %s\nwant %s", desc.Manifest, wantRaw)
				}
				if desc.Digest != must[v1.Hash](t)(img.Digest()) || string(desc.MediaType) != string(must[types.MediaType](t)(img.MediaType())) {
					t.Fatalf("pulled digest %s %s, want %s", desc.Digest, desc.MediaType, must[v1.Hash](t)(img.Digest()))
				}
				pulled := must[v1.Image](t)(desc.Image())
				got := layerBytes(t, pulled)
				for d, b := range plainLayers {
					if !bytes.Equal(got[d], b) {
						t.Fatalf("layer %s differs after the round trip", d)
					}
				}
				byDigest := must[*remote.Descriptor](t)(remote.Get(ref(t, s.Host(), "team/app-"+kind+"@"+desc.Digest.String())))
				if !bytes.Equal(byDigest.Manifest, wantRaw) {
					t.Fatal("manifest pulled by digest differs")
				}

				checkUpstreamEncrypted(t, up, s, repo, img, plainLayers)
			})
		}
	}
}

// checkUpstreamEncrypted reads the upstream directly: an encrypted OCI
// manifest in the ocicrypt format, the config in plaintext, no plaintext
// layer anywhere, and each layer decryptable by ocicrypt with shroud's
// identity (what skopeo --decryption-key does).
func checkUpstreamEncrypted(t *testing.T, up shroudtest.Upstream, s shroudtest.Shroud, repo string, img v1.Image, plainLayers map[v1.Hash][]byte) {
	t.Helper()
	upDesc := must[*remote.Descriptor](t)(remote.Get(ref(t, up.Host(), repo)))
	var m ocispec.Manifest
	if err := json.Unmarshal(upDesc.Manifest, &m); err != nil {
		t.Fatal(err)
	}
	if m.MediaType != ocispec.MediaTypeImageManifest {
		t.Fatalf("upstream manifest media type %q, want an OCI manifest", m.MediaType)
	}
	if m.Annotations[crypto.AnnotationOriginal] == "" {
		t.Fatal("upstream manifest carries no sealed original")
	}
	if bytes.Contains(upDesc.Manifest, must[[]byte](t)(img.RawManifest())[:40]) {
		t.Fatal("upstream manifest contains the plaintext manifest")
	}
	cfgName := must[v1.Hash](t)(img.ConfigName())
	if m.Config.Digest.String() != cfgName.String() {
		t.Fatalf("upstream config %s, want the plaintext config %s", m.Config.Digest, cfgName)
	}
	upImg := must[v1.Image](t)(remote.Image(ref(t, up.Host(), repo)))
	if cfg := must[[]byte](t)(upImg.RawConfigFile()); !bytes.Equal(cfg, must[[]byte](t)(img.RawConfigFile())) {
		t.Fatal("upstream config is not the plaintext config")
	}
	priv := must[[]byte](t)(os.ReadFile(s.IdentityFile()))
	dc := must[config.CryptoConfig](t)(config.DecryptWithPrivKeys([][]byte{priv}, [][]byte{{}}))
	if len(m.Layers) != len(plainLayers) {
		t.Fatalf("upstream has %d layers, want %d", len(m.Layers), len(plainLayers))
	}
	for _, l := range m.Layers {
		if !crypto.IsEncryptedMediaType(l.MediaType) || l.Annotations["org.opencontainers.image.enc.keys.jwe"] == "" || l.Annotations["org.opencontainers.image.enc.pubopts"] == "" {
			t.Fatalf("upstream layer %+v is not an ocicrypt layer", l)
		}
		blob := must[v1.Layer](t)(remote.Layer(ref(t, up.Host(), repo).Context().Digest(l.Digest.String())))
		rc := must[io.ReadCloser](t)(blob.Compressed())
		ct := must[[]byte](t)(io.ReadAll(rc))
		rc.Close()
		for d, p := range plainLayers {
			if bytes.Equal(ct, p) || bytes.Contains(ct, p[:min(len(p), 4096)]) {
				t.Fatalf("upstream blob %s holds plaintext layer %s", l.Digest, d)
			}
		}
		r, _, err := ocicrypt.DecryptLayer(dc.DecryptConfig, bytes.NewReader(ct), l, false)
		if err != nil {
			t.Fatalf("ocicrypt cannot decrypt upstream layer %s with shroud's identity: %v", l.Digest, err)
		}
		plain := must[[]byte](t)(io.ReadAll(r))
		if _, ok := plainLayers[v1.Hash{Algorithm: "sha256", Hex: sha256Hex(plain)}]; !ok {
			t.Fatalf("ocicrypt decrypted layer %s to no pushed layer", l.Digest)
		}
	}
	if up.Dir != "" {
		for _, f := range shroudtest.BlobFiles(t, up.Dir) {
			b := must[[]byte](t)(os.ReadFile(f))
			for d, p := range plainLayers {
				if bytes.Contains(b, p[:min(len(p), 4096)]) {
					t.Fatalf("upstream storage file %s holds plaintext of layer %s", f, d)
				}
			}
		}
	}
}

func TestIndexRoundTrip(t *testing.T) {
	for _, up := range shroudtest.Upstreams(t) {
		for _, mt := range []types.MediaType{types.OCIImageIndex, types.DockerManifestList} {
			t.Run(up.Name+"/"+string(mt), func(t *testing.T) {
				s := shroudtest.Start(t, up)
				idx := must[v1.ImageIndex](t)(random.Index(100_000, 2, 3))
				idx = mutate.IndexMediaType(idx, mt)
				r := ref(t, s.Host(), "multi/arch:latest")
				if err := remote.WriteIndex(r, idx); err != nil {
					t.Fatalf("push index: %v", err)
				}
				got := must[v1.ImageIndex](t)(remote.Index(r))
				if must[v1.Hash](t)(got.Digest()) != must[v1.Hash](t)(idx.Digest()) {
					t.Fatal("index digest changed in the round trip")
				}
				if !bytes.Equal(must[[]byte](t)(got.RawManifest()), must[[]byte](t)(idx.RawManifest())) {
					t.Fatal("index bytes changed in the round trip")
				}
				im := must[*v1.IndexManifest](t)(idx.IndexManifest())
				for _, child := range im.Manifests {
					want := must[v1.Image](t)(idx.Image(child.Digest))
					img := must[v1.Image](t)(remote.Image(r.Context().Digest(child.Digest.String())))
					if must[v1.Hash](t)(img.Digest()) != child.Digest {
						t.Fatalf("child %s pulled with digest %s", child.Digest, must[v1.Hash](t)(img.Digest()))
					}
					wantLayers, gotLayers := layerBytes(t, want), layerBytes(t, img)
					for d, b := range wantLayers {
						if !bytes.Equal(gotLayers[d], b) {
							t.Fatalf("child %s layer %s differs", child.Digest, d)
						}
					}
				}
				// Upstream: an OCI index naming encrypted children.
				up := must[*remote.Descriptor](t)(remote.Get(ref(t, up.Host(), "multi/arch:latest")))
				var upIdx ocispec.Index
				json.Unmarshal(up.Manifest, &upIdx)
				if upIdx.MediaType != ocispec.MediaTypeImageIndex || len(upIdx.Manifests) != len(im.Manifests) {
					t.Fatalf("upstream index %s", up.Manifest)
				}
				for i, c := range upIdx.Manifests {
					if c.Digest.String() == im.Manifests[i].Digest.String() {
						t.Fatalf("upstream index child %d names the plaintext manifest", i)
					}
				}
			})
		}
	}
}

// After a restart (empty cache, same identity) pulls by tag and by digest
// still work: the upstream is the source of truth.
func TestRestartRebuildsFromUpstream(t *testing.T) {
	up := shroudtest.Distribution(t)
	s := shroudtest.Start(t, up)
	idx := must[v1.ImageIndex](t)(random.Index(50_000, 1, 2))
	if err := remote.WriteIndex(ref(t, s.Host(), "app:v1"), idx); err != nil {
		t.Fatal(err)
	}
	s2 := shroudtest.StartWithKeyring(t, up, s.Keyring, s.DataDir, nil)
	child := must[*v1.IndexManifest](t)(idx.IndexManifest()).Manifests[1].Digest
	img := must[v1.Image](t)(remote.Image(ref(t, s2.Host(), "app@"+child.String())))
	if must[v1.Hash](t)(img.Digest()) != child {
		t.Fatal("pull by digest after restart returned another manifest")
	}
	if _, err := img.Layers(); err != nil {
		t.Fatal(err)
	}
	want := layerBytes(t, must[v1.Image](t)(idx.Image(child)))
	for d, b := range layerBytes(t, img) {
		if !bytes.Equal(want[d], b) {
			t.Fatalf("layer %s differs after restart", d)
		}
	}
}

// Layers the upstream already holds in plaintext (pushed before shroud
// stood in front of it) are not uploaded again by the client (HEAD says
// they exist), yet the manifest shroud stores names only ciphertext: shroud
// encrypts them from the upstream copy.
func TestPlaintextAlreadyUpstreamIsEncrypted(t *testing.T) {
	for _, up := range shroudtest.Upstreams(t) {
		t.Run(up.Name, func(t *testing.T) {
			img := must[v1.Image](t)(random.Image(80_000, 2))
			if err := remote.Write(ref(t, up.Host(), "legacy/app:plain"), img); err != nil {
				t.Fatal(err)
			}
			s := shroudtest.Start(t, up)
			if err := remote.Write(ref(t, s.Host(), "legacy/app:1"), img); err != nil {
				t.Fatalf("push through shroud: %v", err)
			}
			checkUpstreamEncryptedManifest(t, up, "legacy/app:1")
			got := layerBytes(t, must[v1.Image](t)(remote.Image(ref(t, s.Host(), "legacy/app:1"))))
			for d, b := range layerBytes(t, img) {
				if !bytes.Equal(got[d], b) {
					t.Fatalf("layer %s differs", d)
				}
			}
		})
	}
}

// checkUpstreamEncryptedManifest asserts every layer of an upstream
// manifest is encrypted.
func checkUpstreamEncryptedManifest(t *testing.T, up shroudtest.Upstream, repo string) {
	t.Helper()
	d := must[*remote.Descriptor](t)(remote.Get(ref(t, up.Host(), repo)))
	var m ocispec.Manifest
	json.Unmarshal(d.Manifest, &m)
	if len(m.Layers) == 0 {
		t.Fatalf("upstream manifest %s has no layers", repo)
	}
	for _, l := range m.Layers {
		if !crypto.IsEncryptedMediaType(l.MediaType) {
			t.Fatalf("upstream manifest %s names plaintext layer %s", repo, l.Digest)
		}
	}
}

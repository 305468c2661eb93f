package proxy_test

import (
	"bytes"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/shroudtest"
)

// atkAmd64Policy encrypts linux/amd64 images of every repository.
func atkAmd64Policy() shroudtest.Option {
	return shroudtest.WithPolicy(shroudtest.Rule{Pattern: "**", Action: crypto.Encrypt, Platforms: []string{"linux/amd64"}})
}

// atkCheckAllLayersEncrypted asserts the upstream manifest of repoRef names
// only ocicrypt layers and that storage holds none of the plaintexts.
func atkCheckAllLayersEncrypted(t *testing.T, up shroudtest.Upstream, repoRef string, plains ...[]byte) {
	t.Helper()
	m := upstreamManifest(t, up, repoRef)
	if len(m.Layers) != len(plains) {
		t.Fatalf("upstream manifest %s has %d layers, want %d", repoRef, len(m.Layers), len(plains))
	}
	for i, l := range m.Layers {
		if !crypto.IsEncryptedMediaType(l.MediaType) || l.Annotations[crypto.AnnotationKeys+"jwe"] == "" {
			t.Errorf("upstream layer %d of %s is %s %s: stored in plaintext", i, repoRef, l.MediaType, l.Digest)
		}
	}
	var needles [][]byte
	for _, p := range plains {
		needles = append(needles, atkPlaintextNeedles(p)...)
	}
	if f := atkStorageHolding(t, up, needles...); f != "" {
		t.Errorf("upstream storage file %s holds a plaintext layer of %s", f, repoRef)
	}
}

// Attack: a platform-limited encrypt rule ("linux/amd64") fails open when
// the config names no platform: an image whose config is {} (or an
// artifact's empty config) is taken for "another platform" and its layers
// leave in plaintext. A user checks that an image shroud cannot place on a
// platform is encrypted (shroud cannot decide, so it encrypts).
func TestPlatformRuleEncryptsImageWithoutPlatform(t *testing.T) {
	for _, tc := range []struct {
		name, mediaType string
		config          []byte
	}{
		{"empty OCI config", ocispec.MediaTypeImageConfig, []byte(`{}`)},
		{"OCI empty artifact config", "application/vnd.oci.empty.v1+json", []byte(`{}`)},
		{"artifact config", "application/vnd.example.thing.config.v1+json", []byte(`{"name":"thing","version":"1"}`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := shroudtest.Distribution(t)
			s := shroudtest.Start(t, up, atkAmd64Policy())
			c := call{t, s.URL}
			cd := atkPushBlob(t, c, "noplat/app", tc.config)
			l1, l2 := atkRandBytes(t, 20_000), atkRandBytes(t, 30_000)
			atkPushBlob(t, c, "noplat/app", l1)
			atkPushBlob(t, c, "noplat/app", l2)
			body := atkImageManifest(t, ocispec.Descriptor{MediaType: tc.mediaType, Digest: cd, Size: int64(len(tc.config))}, atkLayerDesc(l1), atkLayerDesc(l2))
			a := c.do("PUT", "/v2/noplat/app/manifests/1", bytes.NewReader(body), "Content-Type", ocispec.MediaTypeImageManifest)
			if a.status != 201 {
				t.Fatalf("push of an image whose config names no platform: %d %s", a.status, a.body)
			}
			atkCheckAllLayersEncrypted(t, up, "noplat/app:1", l1, l2)
			if got := c.do("GET", "/v2/noplat/app/manifests/1", nil); got.status != 200 || !bytes.Equal(got.body, body) {
				t.Fatalf("pull back: %d, want the pushed bytes", got.status)
			}
		})
	}
}

// Attack: the upstream decides the platform. shroud reads the config back
// from the upstream to learn the image's platform; a hostile upstream
// serves another config there ({"os":"windows","architecture":"arm64"})
// and a linux/amd64 image's layers leave in plaintext. A user checks that
// the decision comes from the client's own config bytes.
func TestPlatformRuleIgnoresConfigServedByUpstream(t *testing.T) {
	dist := shroudtest.Distribution(t)
	var cfgPath atomic.Value // the config's blob path suffix, once known
	cfgPath.Store("\x00")
	var rewritten atomic.Int64
	fake := []byte(`{"os":"windows","architecture":"arm64"}`)
	up := shroudtest.Behind(t, dist, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, cfgPath.Load().(string)) {
				rewritten.Add(1)
				w.Header().Set("Content-Type", "application/octet-stream")
				w.Header().Set("Content-Length", strconv.Itoa(len(fake)))
				w.Write(fake)
				return
			}
			next.ServeHTTP(w, r)
		})
	})
	s := shroudtest.Start(t, up, atkAmd64Policy())
	c := call{t, s.URL}
	l1, l2 := atkRandBytes(t, 20_000), atkRandBytes(t, 30_000)
	img := atkStaticImage(t, l1, l2)
	cfg := must[[]byte](t)(img.RawConfigFile())
	if !bytes.Contains(cfg, []byte(`"architecture":"amd64"`)) || !bytes.Contains(cfg, []byte(`"os":"linux"`)) {
		t.Fatalf("test image is not linux/amd64: %s", cfg)
	}
	cfgPath.Store("/blobs/" + digest.FromBytes(cfg).String())
	if err := remote.Write(ref(t, s.Host(), "plat/app:1"), img); err != nil {
		t.Fatalf("push of a linux/amd64 image: %v", err)
	}
	t.Logf("the upstream served the forged config %d times", rewritten.Load())
	atkCheckAllLayersEncrypted(t, dist, "plat/app:1", l1, l2)
	got := c.do("GET", "/v2/plat/app/manifests/1", nil)
	if got.status != 200 || !bytes.Equal(got.body, must[[]byte](t)(img.RawManifest())) {
		t.Fatalf("pull back: %d, want the pushed manifest", got.status)
	}
}

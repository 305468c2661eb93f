package proxy_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/shroud-oci/shroud/cache"
	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/shroudtest"
)

// An encrypt-only rule: the upstream holds ciphertext whose layer keys
// only the rule's recipient opens; shroud's identity (all a stolen data
// dir holds) opens none of them, nor is any original sealed into the
// manifest; the config is stored in plaintext, as ocicrypt consumers need
// it. A pull through shroud gets the upstream's encrypted manifest with
// its own digest and the ciphertext; a pull by the client's plaintext
// digest finds nothing; a rule that refuses pulls answers 403.
func TestEncryptOnlyRuleHoldsNoKey(t *testing.T) {
	up := shroudtest.Distribution(t)
	rec, dk := keyPair(t, "ec")
	store := must[*cache.LRU](t)(cache.NewLRU(0))
	s := shroudtest.Start(t, up, shroudtest.WithCache(store), shroudtest.WithPolicy(
		shroudtest.Rule{Pattern: "edge/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{rec}, EncryptOnly: true},
		shroudtest.Rule{Pattern: "closed/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{rec}, EncryptOnly: true, RefusePulls: true},
	))
	img := must[v1.Image](t)(random.Image(50_000, 3))
	plain := layerBytes(t, img)
	for _, repo := range []string{"edge/app", "closed/app"} {
		if err := remote.Write(ref(t, s.Host(), repo+":1"), img); err != nil {
			t.Fatalf("push %s: %v", repo, err)
		}
		m := upstreamManifest(t, up, repo+":1")
		if _, ok := m.Annotations[crypto.AnnotationOriginal]; ok {
			t.Fatalf("%s: the upstream manifest carries a sealed original", repo)
		}
		if len(m.Layers) != 3 {
			t.Fatalf("%s: %d layers upstream", repo, len(m.Layers))
		}
		for i, l := range m.Layers {
			if !crypto.IsEncryptedMediaType(l.MediaType) {
				t.Fatalf("%s: layer %d is not encrypted: %s", repo, i, l.MediaType)
			}
			if !opens(t, dk, l) {
				t.Fatalf("%s: layer %d does not open with the rule's recipient", repo, i)
			}
			// What a stolen data dir holds: the identity, and nothing
			// else that opens anything.
			if opensAll(t, l, s.IdentityFile()) {
				t.Fatalf("%s: layer %d opens with shroud's identity", repo, i)
			}
			if _, plainLayer := plain[v1.Hash{Algorithm: "sha256", Hex: l.Digest.Encoded()}]; plainLayer {
				t.Fatalf("%s: layer %d is stored under its plaintext digest", repo, i)
			}
		}
		cfgName := must[*v1.ConfigFile](t)(img.ConfigFile())
		raw := must[[]byte](t)(img.RawConfigFile())
		cfg := fetchUpstreamBlob(t, up, repo, m.Config.Digest)
		if !bytes.Equal(cfg, raw) || cfgName == nil {
			t.Fatalf("%s: the upstream config is not the client's plaintext config", repo)
		}
		// No layer key is left pending once the manifest named them.
		for _, l := range must[[]v1.Layer](t)(img.Layers()) {
			d := must[v1.Hash](t)(l.Digest())
			b, ok, _ := store.Blob(t.Context(), repo, digest.Digest(d.String()))
			if !ok || b.WrappedFor == nil {
				t.Fatalf("%s: no encrypt-only mapping of layer %s", repo, d)
			}
			if b.Pending != nil {
				t.Fatalf("%s: layer %s still has its key pending", repo, d)
			}
		}
	}

	// Pulls through shroud.
	upDesc := must[*remote.Descriptor](t)(remote.Get(ref(t, up.Host(), "edge/app:1")))
	got := must[*remote.Descriptor](t)(remote.Get(ref(t, s.Host(), "edge/app:1")))
	if got.Digest != upDesc.Digest || !bytes.Equal(got.Manifest, upDesc.Manifest) {
		t.Fatalf("a pull through shroud got %s, the upstream holds %s", got.Digest, upDesc.Digest)
	}
	var em ocispec.Manifest
	json.Unmarshal(got.Manifest, &em)
	for i, l := range em.Layers {
		c := fetchBlob(t, s.URL, "edge/app", l.Digest, http.StatusOK)
		if digest.FromBytes(c) != l.Digest {
			t.Fatalf("layer %d through shroud is not the ciphertext", i)
		}
	}
	if _, err := remote.Get(ref(t, s.Host(), "edge/app@"+must[v1.Hash](t)(img.Digest()).String())); !isStatus(err, http.StatusNotFound) {
		t.Fatalf("a pull by the plaintext digest: %v, want 404", err)
	}
	_, err := remote.Get(ref(t, s.Host(), "closed/app:1"))
	if !isStatus(err, http.StatusForbidden) || !strings.Contains(err.Error(), "encrypt-only") {
		t.Fatalf("a pull from the refusing rule: %v, want 403 naming encrypt-only", err)
	}
	fetchBlob(t, s.URL, "closed/app", em.Layers[0].Digest, http.StatusForbidden)
}

func fetchUpstreamBlob(t *testing.T, up shroudtest.Upstream, repo string, d digest.Digest) []byte {
	t.Helper()
	return fetchBlob(t, "http://"+up.Host(), repo, d, http.StatusOK)
}

func fetchBlob(t *testing.T, base, repo string, d digest.Digest, want int) []byte {
	t.Helper()
	resp, err := http.Get(base + "/v2/" + repo + "/blobs/" + d.String())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("GET blob %s of %s: %d, want %d: %s", d, repo, resp.StatusCode, want, b)
	}
	return b
}

func isStatus(err error, code int) bool {
	var te *transport.Error
	if e, ok := err.(*transport.Error); ok {
		te = e
	}
	return te != nil && te.StatusCode == code
}

package proxy_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/shroudtest"
)

// keyPair writes a key pair and returns the recipient and the decryption
// key made of it.
func keyPair(t testing.TB, kind string) (crypto.Recipient, crypto.DecryptionKey) {
	t.Helper()
	dir := t.TempDir()
	priv, pub, err := crypto.GenerateKeyPair(kind)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "k.pem"), priv, 0o600)
	os.WriteFile(filepath.Join(dir, "k.pub.pem"), pub, 0o644)
	r := must[crypto.Recipient](t)(crypto.ParseRecipient("jwe:" + filepath.Join(dir, "k.pub.pem")))
	k := must[crypto.DecryptionKey](t)(crypto.ParseDecryptionKey(filepath.Join(dir, "k.pem")))
	return r, k
}

// upstreamManifest reads a manifest straight from the upstream.
func upstreamManifest(t *testing.T, up shroudtest.Upstream, repo string) ocispec.Manifest {
	t.Helper()
	d := must[*remote.Descriptor](t)(remote.Get(ref(t, up.Host(), repo)))
	var m ocispec.Manifest
	json.Unmarshal(d.Manifest, &m)
	return m
}

// opens says whether a keyring holding only key can open a layer.
func opens(t *testing.T, key crypto.DecryptionKey, l ocispec.Descriptor) bool {
	t.Helper()
	dir := t.TempDir()
	id, _, _ := crypto.LoadOrCreateIdentity(dir)
	kr := must[*crypto.Keyring](t)(crypto.NewKeyring(id, []crypto.DecryptionKey{key}))
	_, err := kr.Unwrap(l.Annotations)
	if err != nil && !errors.Is(err, crypto.ErrNoKey) {
		t.Fatal(err)
	}
	return err == nil
}

func TestPolicyActions(t *testing.T) {
	up := shroudtest.Distribution(t)
	recA, keyA := keyPair(t, "ec")
	s := shroudtest.Start(t, up, shroudtest.WithPolicy(
		shroudtest.Rule{Pattern: "forbidden/**", Action: crypto.Deny},
		shroudtest.Rule{Pattern: "public/**", Action: crypto.Passthrough},
		shroudtest.Rule{Pattern: "partial/*", Action: crypto.Encrypt, Recipients: []crypto.Recipient{recA}, Layers: []int{0, -1}},
		shroudtest.Rule{Pattern: "amd64-only/**", Action: crypto.Encrypt, Platforms: []string{"linux/amd64"}},
	))
	img := must[v1.Image](t)(random.Image(50_000, 4))

	t.Run("deny", func(t *testing.T) {
		c := call{t, s.URL}
		a := c.do("POST", "/v2/forbidden/app/blobs/uploads/", nil)
		a.want(t, 403, "DENIED")
		if !strings.Contains(string(a.body), `policy rule 0 (deny \"forbidden/**\")`) {
			t.Fatalf("DENIED does not name the rule: %s", a.body)
		}
		c.do("GET", "/v2/forbidden/app/manifests/1", nil).want(t, 403, "DENIED")
		c.do("GET", "/v2/unmatched/app/manifests/1", nil).want(t, 403, "DENIED")
		if _, err := remote.Image(ref(t, s.Host(), "unmatched/app:1")); err == nil {
			t.Fatal("a repository no rule matches was served")
		}
	})
	t.Run("passthrough", func(t *testing.T) {
		if err := remote.Write(ref(t, s.Host(), "public/app:1"), img); err != nil {
			t.Fatalf("push through a passthrough rule: %v", err)
		}
		direct := must[*remote.Descriptor](t)(remote.Get(ref(t, up.Host(), "public/app:1")))
		if direct.Digest != must[v1.Hash](t)(img.Digest()) {
			t.Fatal("passthrough: the upstream does not hold the image as pushed")
		}
		got := must[v1.Image](t)(remote.Image(ref(t, s.Host(), "public/app:1")))
		for d, b := range layerBytes(t, img) {
			if !bytes.Equal(layerBytes(t, got)[d], b) {
				t.Fatal("passthrough pull differs")
			}
		}
	})
	t.Run("layers", func(t *testing.T) {
		if err := remote.Write(ref(t, s.Host(), "partial/app:1"), img); err != nil {
			t.Fatal(err)
		}
		m := upstreamManifest(t, up, "partial/app:1")
		plain := must[*v1.Manifest](t)(img.Manifest())
		for i, l := range m.Layers {
			encrypted := crypto.IsEncryptedMediaType(l.MediaType)
			if want := i == 0 || i == 3; encrypted != want {
				t.Fatalf("layer %d encrypted=%v, want %v (rule layers [0, -1])", i, encrypted, want)
			}
			if !encrypted && l.Digest.String() != plain.Layers[i].Digest.String() {
				t.Fatalf("unselected layer %d is not stored as pushed", i)
			}
			if encrypted && !opens(t, keyA, l) {
				t.Fatalf("layer %d is not wrapped for the rule's recipient", i)
			}
		}
		got := must[v1.Image](t)(remote.Image(ref(t, s.Host(), "partial/app:1")))
		if must[v1.Hash](t)(got.Digest()) != must[v1.Hash](t)(img.Digest()) {
			t.Fatal("round trip digest")
		}
		for d, b := range layerBytes(t, img) {
			if !bytes.Equal(layerBytes(t, got)[d], b) {
				t.Fatalf("layer %s differs", d)
			}
		}
	})
	t.Run("platforms", func(t *testing.T) {
		for arch, wantEnc := range map[string]bool{"amd64": true, "arm64": false} {
			cf := must[*v1.ConfigFile](t)(img.ConfigFile())
			cf.OS, cf.Architecture = "linux", arch
			pimg := must[v1.Image](t)(mutate.ConfigFile(img, cf))
			if err := remote.Write(ref(t, s.Host(), "amd64-only/app:"+arch), pimg); err != nil {
				t.Fatal(err)
			}
			for _, l := range upstreamManifest(t, up, "amd64-only/app:"+arch).Layers {
				if crypto.IsEncryptedMediaType(l.MediaType) != wantEnc {
					t.Fatalf("%s: layer encrypted=%v, want %v", arch, !wantEnc, wantEnc)
				}
			}
		}
	})
	t.Run("catalog", func(t *testing.T) {
		// Repositories shroud denies exist upstream (pushed around it) but
		// are not listed through it, whole or page by page.
		for _, repo := range []string{"forbidden/app:1", "unmatched/app:1"} {
			if err := remote.Write(ref(t, up.Host(), repo), img); err != nil {
				t.Fatal(err)
			}
		}
		want := "[amd64-only/app partial/app public/app]"
		var whole map[string][]string
		json.Unmarshal(call{t, s.URL}.do("GET", "/v2/_catalog", nil).body, &whole)
		if got := fmt.Sprint(whole["repositories"]); got != want {
			t.Fatalf("catalog %s, want %s", got, want)
		}
		if got := fmt.Sprint(collectPages(t, call{t, s.URL}, "/v2/_catalog?n=1", "repositories", up.Host())); got != want {
			t.Fatalf("paginated catalog %s, want %s", got, want)
		}
	})
}

// The same layer pushed to two repositories with different recipients is
// uploaded once (mounted upstream) where the rules' dedup scope is global;
// each repository's manifest wraps the layer key for its own recipients.
func TestDedupAcrossRecipients(t *testing.T) {
	up := shroudtest.Distribution(t)
	target, _ := url.Parse(up.URL)
	rp := httputil.NewSingleHostReverseProxy(target)
	var received atomic.Int64
	counting := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil {
			b, _ := io.ReadAll(r.Body)
			received.Add(int64(len(b)))
			r.Body = io.NopCloser(bytes.NewReader(b))
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(counting.Close)
	countedUp := shroudtest.Upstream{Name: "counted", URL: counting.URL, Dir: up.Dir}

	recA, keyA := keyPair(t, "ec")
	recB, keyB := keyPair(t, "rsa")
	s := shroudtest.Start(t, countedUp, shroudtest.WithPolicy(
		shroudtest.Rule{Pattern: "team-a/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{recA}, DedupScope: crypto.DedupGlobal},
		shroudtest.Rule{Pattern: "team-b/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{recB}, DedupScope: crypto.DedupGlobal},
	))
	img := must[v1.Image](t)(random.Image(2<<20, 3))
	var layerTotal int64
	for _, b := range layerBytes(t, img) {
		layerTotal += int64(len(b))
	}
	if err := remote.Write(ref(t, s.Host(), "team-a/app:1"), img); err != nil {
		t.Fatal(err)
	}
	first := received.Load()
	if err := remote.Write(ref(t, s.Host(), "team-b/app:1"), img); err != nil {
		t.Fatal(err)
	}
	second := received.Load() - first
	t.Logf("upstream received %d bytes for the first push, %d for the second (layers: %d bytes)", first, second, layerTotal)
	if first < layerTotal || second > layerTotal/20 {
		t.Fatalf("upstream received %d then %d bytes for %d bytes of layers: the second push uploaded layers again", first, second, layerTotal)
	}
	for repo, keys := range map[string][2]crypto.DecryptionKey{"team-a/app:1": {keyA, keyB}, "team-b/app:1": {keyB, keyA}} {
		for _, l := range upstreamManifest(t, up, repo).Layers {
			if !opens(t, keys[0], l) || opens(t, keys[1], l) {
				t.Fatalf("%s: layer %s is not wrapped for its own recipients only", repo, l.Digest)
			}
		}
	}
}

package proxy_test

// A hostile upstream makes shroud spend CPU (or key-provider calls, token
// logins) on unwrapping: a manifest shroud did not seal is restored by
// opening each of its encrypted layers with the decryption keys the rule
// allows, and the 64 wrapped keys a layer may carry are a bound per layer
// only. These tests count the unwrap attempts with a key provider that
// counts its calls (one call per wrapped key tried), not with a clock.

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	keyproviderconfig "github.com/containers/ocicrypt/config/keyprovider-config"
	pb "github.com/containers/ocicrypt/utils/keyprovider"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc"

	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/keyprovidertest"
	"github.com/shroud-oci/shroud/internal/shroudtest"
)

// The bounds README's "Crafted wrapped keys and manifests" documents.
const (
	atkUnwrapsPerManifest = 1024
	atkUnwrapsPerRequest  = 16384
)

// atkCountingProvider is the tests' key provider, over gRPC, counting the
// unwraps it is asked for.
type atkCountingProvider struct {
	keyprovidertest.Server
	unwraps atomic.Int64
}

func (p *atkCountingProvider) UnWrapKey(ctx context.Context, in *pb.KeyProviderKeyWrapProtocolInput) (*pb.KeyProviderKeyWrapProtocolOutput, error) {
	p.unwraps.Add(1)
	return p.Server.UnWrapKey(ctx, in)
}

// atkStartCountingProvider serves a counting provider and returns it with
// the configuration that names it.
func atkStartCountingProvider(t *testing.T) (*atkCountingProvider, map[string]keyproviderconfig.KeyProviderAttrs) {
	t.Helper()
	p := &atkCountingProvider{}
	s := grpc.NewServer()
	pb.RegisterKeyProviderServiceServer(s, p)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	t.Cleanup(s.Stop)
	return p, map[string]keyproviderconfig.KeyProviderAttrs{keyprovidertest.Name: {Grpc: ln.Addr().String()}}
}

// atkServedManifests is a hostile upstream's manifests, served by path
// (/v2/<repo>/manifests/<reference>) in front of a real registry.
type atkServedManifests struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (s *atkServedManifests) put(repo, reference string, body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string][]byte{}
	}
	s.m["/v2/"+repo+"/manifests/"+reference] = body
}

func (s *atkServedManifests) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		body, ok := s.m[r.URL.Path]
		s.mu.Unlock()
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		var mt struct {
			MediaType string `json:"mediaType"`
		}
		json.Unmarshal(body, &mt)
		w.Header().Set("Content-Type", mt.MediaType)
		w.Header().Set("Docker-Content-Digest", digest.FromBytes(body).String())
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		if r.Method != http.MethodHead {
			w.Write(body)
		}
	})
}

// atkProviderKeysAnnotation is the annotation of the test provider's
// wrapped keys.
const atkProviderKeysAnnotation = crypto.AnnotationKeys + "provider." + keyprovidertest.Name

// atkHostileLayers are n encrypted layers (of no blob: only the manifest
// is restored) each wrapped for the test provider behind 63 junk wrapped
// keys of that provider, so that opening one costs 64 provider calls.
func atkHostileLayers(t *testing.T, providers map[string]keyproviderconfig.KeyProviderAttrs, n int, tag string) []ocispec.Descriptor {
	t.Helper()
	hid, _, err := crypto.LoadOrCreateIdentity(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	hk := must[*crypto.Keyring](t)(crypto.NewKeyring(hid, nil, crypto.WithKeyProviders(providers)))
	t.Cleanup(func() { hk.Close() })
	rs := must[*crypto.Recipients](t)(hk.Recipients([]crypto.Recipient{must[crypto.Recipient](t)(crypto.ParseRecipient("provider:" + keyprovidertest.Name + ":kms-key"))}))
	var layers []ocispec.Descriptor
	for i := range n {
		key := must[crypto.LayerKey](t)(crypto.NewLayerKey())
		plain := digest.FromString(fmt.Sprint(tag, " layer ", i))
		ann := must[map[string]string](t)(hk.Wrap(crypto.PrivateOptions{Key: key, PlainDigest: plain}, crypto.PublicOptions{HMAC: make([]byte, 32)}, rs))
		var parts []string
		for j := range crypto.MaxWrappedKeys - 1 {
			nonce, data := make([]byte, 12), make([]byte, 48)
			rand.Read(nonce)
			rand.Read(data)
			junk := must[[]byte](t)(json.Marshal(map[string]any{"kid": fmt.Sprint("junk", j), "nonce": nonce, "data": data}))
			parts = append(parts, base64.StdEncoding.EncodeToString(junk))
		}
		ann[atkProviderKeysAnnotation] = strings.Join(append(parts, ann[atkProviderKeysAnnotation]), ",")
		delete(ann, crypto.AnnotationKeys+"jwe") // the helper's identity: not shroud's
		layers = append(layers, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip + "+encrypted",
			Digest: digest.FromString(fmt.Sprint(tag, " cipher ", i)), Size: 10, Annotations: ann})
	}
	return layers
}

// atkWantStatus asserts an answer's status and error code, quoting little
// of a body that is not what was wanted.
func atkWantStatus(t *testing.T, a answer, status int, code string) {
	t.Helper()
	if a.status != status || a.errorCode() != code {
		t.Fatalf("answer %d %s %.300s, want %d %s", a.status, a.errorCode(), a.body, status, code)
	}
}

// atkConfigDesc is a config descriptor (of no blob) unique to tag.
func atkConfigDesc(tag string) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromString("config " + tag), Size: 2}
}

// A hostile upstream serves, for a tag of a repository whose rule opens
// layers no seal vouches for (a key provider is configured), a manifest
// of 85 encrypted layers each carrying 63 junk wrapped keys before the one
// that opens: 5440 attempts (27 s of CPU with an RSA-3072 decryption key
// before the bound). shroud stops within its per-manifest budget with
// MANIFEST_INVALID, and a second GET of the same manifest tries nothing.
func TestAttackUnwrapBudgetHostileManifest(t *testing.T) {
	p, providers := atkStartCountingProvider(t)
	var served atkServedManifests
	up := shroudtest.Behind(t, shroudtest.Distribution(t), served.middleware)
	s := shroudtest.Start(t, up, shroudtest.WithKeyProviders(providers))
	layers := atkHostileLayers(t, providers, 85, "evil")
	served.put("dos/app", "evil", atkImageManifest(t, atkConfigDesc("evil"), layers...))
	c := call{t, s.URL}

	p.unwraps.Store(0)
	a := c.do("GET", "/v2/dos/app/manifests/evil", nil)
	n := p.unwraps.Load()
	t.Logf("GET of 85 layers x 64 wrapped keys: %d %s after %d unwrap attempts", a.status, a.errorCode(), n)
	atkWantStatus(t, a, http.StatusBadRequest, "MANIFEST_INVALID")
	if n > atkUnwrapsPerManifest {
		t.Errorf("shroud tried %d wrapped keys for one manifest, more than its budget of %d", n, atkUnwrapsPerManifest)
	}

	p.unwraps.Store(0)
	a = c.do("GET", "/v2/dos/app/manifests/evil", nil)
	atkWantStatus(t, a, http.StatusBadRequest, "MANIFEST_INVALID")
	if n := p.unwraps.Load(); n != 0 {
		t.Errorf("the second GET of a manifest that failed tried %d wrapped keys again", n)
	}
}

// A hostile upstream serves an index of 20 distinct children, each of 15
// layers x 64 wrapped keys: 960 attempts, within the budget of one
// manifest, 19200 in all. The children share the request's budget.
func TestAttackUnwrapBudgetHostileIndex(t *testing.T) {
	p, providers := atkStartCountingProvider(t)
	var served atkServedManifests
	up := shroudtest.Behind(t, shroudtest.Distribution(t), served.middleware)
	s := shroudtest.Start(t, up, shroudtest.WithKeyProviders(providers))
	var children []ocispec.Descriptor
	for i := range 20 {
		// Layers of their own: a wrapped key that failed is not tried
		// again for a minute, and the attack pays for every child.
		layers := atkHostileLayers(t, providers, 15, fmt.Sprint("child", i))
		child := atkImageManifest(t, atkConfigDesc(fmt.Sprint("child", i)), layers...)
		served.put("dos/app", digest.FromBytes(child).String(), child)
		children = append(children, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(child), Size: int64(len(child)),
			Platform: &ocispec.Platform{OS: "linux", Architecture: fmt.Sprint("arch", i)}})
	}
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: children}
	idx.SchemaVersion = 2
	served.put("dos/app", "evil", must[[]byte](t)(json.Marshal(idx)))

	p.unwraps.Store(0)
	a := call{t, s.URL}.do("GET", "/v2/dos/app/manifests/evil", nil)
	n := p.unwraps.Load()
	t.Logf("GET of an index of 20 x 15 layers x 64 wrapped keys: %d %s after %d unwrap attempts", a.status, a.errorCode(), n)
	atkWantStatus(t, a, http.StatusBadRequest, "MANIFEST_INVALID")
	if n > atkUnwrapsPerRequest {
		t.Errorf("shroud tried %d wrapped keys for one request, more than its budget of %d", n, atkUnwrapsPerRequest)
	}
}

// A real image encrypted elsewhere, as large as images get: an index of
// 50 platforms, each of 64 layers wrapped for four recipients (one JWE),
// shroud's decryption key last; and an image of 128 such layers. Both
// restore: the budget refuses none of them.
func TestAttackUnwrapBudgetLargeForeignImageRestores(t *testing.T) {
	dir := t.TempDir()
	var recipients []crypto.Recipient
	var mine crypto.DecryptionKey
	for i := range 3 {
		priv, pub, err := crypto.GenerateKeyPair("ec")
		if err != nil {
			t.Fatal(err)
		}
		pubFile, privFile := filepath.Join(dir, fmt.Sprint(i, ".pub.pem")), filepath.Join(dir, fmt.Sprint(i, ".pem"))
		os.WriteFile(pubFile, pub, 0o644)
		os.WriteFile(privFile, priv, 0o600)
		recipients = append(recipients, must[crypto.Recipient](t)(crypto.ParseRecipient("jwe:"+pubFile)))
		if i == 2 {
			mine = must[crypto.DecryptionKey](t)(crypto.ParseDecryptionKey(privFile))
		}
	}
	var served atkServedManifests
	up := shroudtest.Behind(t, shroudtest.Distribution(t), served.middleware)
	s := shroudtest.Start(t, up, shroudtest.WithDecryptionKeys(mine))

	// The other tool's keyring: its identity is the first recipient.
	hid, _, err := crypto.LoadOrCreateIdentity(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	hk := must[*crypto.Keyring](t)(crypto.NewKeyring(hid, nil))
	rs := must[*crypto.Recipients](t)(hk.Recipients(recipients))
	layers := make([]ocispec.Descriptor, 128)
	plains := make([]digest.Digest, len(layers))
	for i := range layers {
		key := must[crypto.LayerKey](t)(crypto.NewLayerKey())
		plains[i] = digest.FromString(fmt.Sprint("layer ", i))
		ann := must[map[string]string](t)(hk.Wrap(crypto.PrivateOptions{Key: key, PlainDigest: plains[i]}, crypto.PublicOptions{HMAC: make([]byte, 32)}, rs))
		layers[i] = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip + "+encrypted", Digest: digest.FromString(fmt.Sprint("cipher ", i)), Size: 10, Annotations: ann}
	}
	wantPlain := func(t *testing.T, body []byte, n int) {
		t.Helper()
		var m ocispec.Manifest
		if err := json.Unmarshal(body, &m); err != nil || len(m.Layers) != n {
			t.Fatalf("restored manifest: %v, %d layers, want %d", err, len(m.Layers), n)
		}
		for i, l := range m.Layers {
			if l.Digest != plains[i] || crypto.IsEncryptedMediaType(l.MediaType) {
				t.Fatalf("layer %d restored as %s %s, want %s", i, l.MediaType, l.Digest, plains[i])
			}
		}
	}
	c := call{t, s.URL}

	t.Run("image of 128 layers", func(t *testing.T) {
		served.put("foreign/app", "big", atkImageManifest(t, atkConfigDesc("big"), layers...))
		a := c.do("GET", "/v2/foreign/app/manifests/big", nil, "Accept", ocispec.MediaTypeImageManifest)
		a.want(t, http.StatusOK, "")
		wantPlain(t, a.body, 128)
	})
	t.Run("index of 50 platforms", func(t *testing.T) {
		var children []ocispec.Descriptor
		for i := range 50 {
			child := atkImageManifest(t, atkConfigDesc(fmt.Sprint("platform", i)), layers[:64]...)
			served.put("foreign/multi", digest.FromBytes(child).String(), child)
			children = append(children, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(child), Size: int64(len(child)),
				Platform: &ocispec.Platform{OS: "linux", Architecture: fmt.Sprint("arch", i)}})
		}
		idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: children}
		idx.SchemaVersion = 2
		served.put("foreign/multi", "latest", must[[]byte](t)(json.Marshal(idx)))
		a := c.do("GET", "/v2/foreign/multi/manifests/latest", nil, "Accept", ocispec.MediaTypeImageIndex)
		a.want(t, http.StatusOK, "")
		var got ocispec.Index
		if err := json.Unmarshal(a.body, &got); err != nil || len(got.Manifests) != 50 {
			t.Fatalf("restored index: %v, %d children", err, len(got.Manifests))
		}
		for _, ch := range got.Manifests {
			a := c.do("GET", "/v2/foreign/multi/manifests/"+ch.Digest.String(), nil, "Accept", ocispec.MediaTypeImageManifest)
			a.want(t, http.StatusOK, "")
			wantPlain(t, a.body, 64)
		}
	})
}

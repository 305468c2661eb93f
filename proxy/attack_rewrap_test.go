package proxy_test

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/containers/ocicrypt"
	"github.com/containers/ocicrypt/config"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/shroudtest"
)

// a client with push rights to team-m/** (whose rule's recipients
// include a key the client holds) and the ability to read/copy ciphertext
// at the upstream (the threat model's "re-hosted ciphertext") gets shroud
// to unwrap team-a's layer key with its identity and re-wrap it to the
// client's own key, by pushing a manifest naming team-a's layer as an
// already-encrypted layer. team-a's seal is never consulted.
func TestRewrapDeputyWrapsAnotherRepositorysKeyForAttacker(t *testing.T) {
	up := shroudtest.Distribution(t)
	dir := t.TempDir()
	priv, pub, err := crypto.GenerateKeyPair("ec")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "m.pem"), priv, 0o600)
	os.WriteFile(filepath.Join(dir, "m.pub.pem"), pub, 0o644)
	recM := must[crypto.Recipient](t)(crypto.ParseRecipient("jwe:" + filepath.Join(dir, "m.pub.pem")))
	s := shroudtest.Start(t, up, shroudtest.WithPolicy(
		shroudtest.Rule{Pattern: "team-a/**", Action: crypto.Encrypt},
		shroudtest.Rule{Pattern: "team-m/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{recM}},
	))

	// Victim pushes a secret layer to team-a/app:1.
	secret := atkRandBytes(t, 50_000)
	img := atkStaticImage(t, secret)
	if err := remote.Write(ref(t, s.Host(), "team-a/app:1"), img); err != nil {
		t.Fatal(err)
	}

	// Attacker reads team-a's encrypted manifest (ciphertext only) at the upstream.
	var victim ocispec.Manifest
	json.Unmarshal(atkUpstreamRaw(t, up, "team-a/app:1"), &victim)
	encLayer := victim.Layers[0]
	if !crypto.IsEncryptedMediaType(encLayer.MediaType) {
		t.Fatal("layer not encrypted upstream")
	}
	// ... and uploads the ciphertext bytes THROUGH SHROUD to a repository
	// of theirs (no write access at the upstream needed): shroud encrypts
	// them once more and stores them as they came at manifest PUT.
	ct := call{t, up.URL}.do("GET", "/v2/team-a/app/blobs/"+encLayer.Digest.String(), nil).body
	var a answer
	atkPushBlob(t, call{t, s.URL}, "team-m/x", ct)

	// Attacker pushes through shroud, as an ordinary team-m client, a manifest
	// naming that layer "already encrypted".
	c := call{t, s.URL}
	cfg := atkPushBlob(t, c, "team-m/x", atkPlainConfig)
	attackLayer := ocispec.Descriptor{MediaType: encLayer.MediaType, Digest: encLayer.Digest, Size: encLayer.Size, Annotations: map[string]string{}}
	for k, v := range encLayer.Annotations {
		attackLayer.Annotations[k] = v
	}
	m := atkImageManifest(t, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: cfg, Size: int64(len(atkPlainConfig))}, attackLayer)
	a = c.do("PUT", "/v2/team-m/x/manifests/1", bytes.NewReader(m), "Content-Type", ocispec.MediaTypeImageManifest)
	if a.status != 201 {
		t.Fatalf("push attack manifest: %d %s", a.status, a.body)
	}

	// The upstream form of team-m/x:1 (readable through shroud with
	// X-Shroud-View: upstream, or straight at the registry).
	a = c.do("GET", "/v2/team-m/x/manifests/1", nil, "X-Shroud-View", "upstream", "Accept", ocispec.MediaTypeImageManifest)
	var out ocispec.Manifest
	json.Unmarshal(a.body, &out)
	l := out.Layers[0]
	blob := call{t, up.URL}.do("GET", "/v2/team-m/x/blobs/"+l.Digest.String(), nil).body
	dc := must[config.CryptoConfig](t)(config.DecryptWithPrivKeys([][]byte{priv}, [][]byte{{}}))
	r, _, err := ocicrypt.DecryptLayer(dc.DecryptConfig, bytes.NewReader(blob), l, false)
	if err != nil {
		t.Logf("attacker's key does not open the layer: %v (held)", err)
		return
	}
	got, err := io.ReadAll(r)
	if err == nil && bytes.Equal(got, secret) {
		t.Errorf("team-a's secret layer %s decrypted with the attacker's own key after a push to team-m", digest.FromBytes(secret))
	}
}

package proxy_test

import (
	"slices"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/shroudtest"
	"github.com/shroud-oci/shroud/proxy"
)

// A hostile upstream copies the encrypted manifest of secret/db (whose
// rule has the same owner as team/app's) into team/app under a tag of
// its own. An owner approving a request for team/app wraps the key of
// every layer shroud lists for team/app: secret/db's layers among them,
// so the requester would open a repository it never asked for. shroud
// lists, and adds wrapped keys to, only the layers of manifests it stored
// for that repository (a keyed binding of the repository and the layers'
// digests in the manifest, which the upstream cannot make).
func TestAttackUpstreamSteersOwnerApprovalToAnotherRepositorysLayers(t *testing.T) {
	up := shroudtest.Distribution(t)
	rec, _ := keyPair(t, "ec")
	s := shroudtest.Start(t, up, shroudtest.WithPolicy(
		shroudtest.Rule{Pattern: "team/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{rec}, EncryptOnly: true},
		shroudtest.Rule{Pattern: "secret/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{rec}, EncryptOnly: true},
	))
	for _, repo := range []string{"team/app", "secret/db"} {
		if err := remote.Write(ref(t, s.Host(), repo+":1"), must[v1.Image](t)(random.Image(10_000, 2))); err != nil {
			t.Fatal(err)
		}
	}
	secret := upstreamManifest(t, up, "secret/db:1")
	stolen := must[*remote.Descriptor](t)(remote.Get(ref(t, up.Host(), "secret/db:1")))
	if err := remote.Write(ref(t, up.Host(), "team/app:evil"), must[v1.Image](t)(stolen.Image())); err != nil {
		t.Fatal(err)
	}
	layers := must[[]proxy.EncryptedLayer](t)(s.Handler.EncryptedLayers(t.Context(), "team/app"))
	if len(layers) != 2 {
		t.Errorf("shroud lists %d layers for team/app, want its own 2", len(layers))
	}
	var wraps []proxy.LayerWraps
	for _, l := range secret.Layers {
		if slices.ContainsFunc(layers, func(e proxy.EncryptedLayer) bool { return e.CipherDigest == l.Digest }) {
			t.Errorf("shroud lists secret/db's layer %s for team/app", l.Digest)
		}
		wraps = append(wraps, proxy.LayerWraps{CipherDigest: l.Digest, Annotations: map[string]string{crypto.AnnotationKeys + "jwe": "d3JhcHBlZA=="}})
	}
	rep, err := s.Handler.AddWrappedKeys(t.Context(), "team/app", "sha256:"+digest.FromString("alice").Encoded(), wraps)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Rewritten != 0 {
		t.Fatalf("shroud added wrapped keys to %d manifests the upstream planted in team/app", rep.Rewritten)
	}
}

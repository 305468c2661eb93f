package proxy_test

import (
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/shroudtest"
)

// A hostile upstream copies the encrypted manifest of secret/db (whose
// rule has the same owner as team/app's) into team/app under a tag of
// its own. An owner approving a request for team/app wraps the key of
// every layer shroud lists for team/app: secret/db's layers among them,
// so the requester would open a repository it never asked for. shroud
// lists, and adds wrapped keys to, only the layers of manifests it stored
// for that repository from the plaintext the owner's unwrapping finds (a
// keyed binding of the repository and the layer's two digests, which the
// upstream cannot make).
func TestAttackUpstreamSteersOwnerApprovalToAnotherRepositorysLayers(t *testing.T) {
	up := shroudtest.Distribution(t)
	rec, ownerDK := keyPair(t, "ec")
	requester, requesterDK := keyPair(t, "ec")
	s := shroudtest.Start(t, up, shroudtest.WithPolicy(
		shroudtest.Rule{Pattern: "team/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{rec}, EncryptOnly: true},
		shroudtest.Rule{Pattern: "secret/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{rec}, EncryptOnly: true},
	))
	for _, repo := range []string{"team/app", "secret/db"} {
		if err := remote.Write(ref(t, s.Host(), repo+":1"), must[v1.Image](t)(random.Image(10_000, 2))); err != nil {
			t.Fatal(err)
		}
	}
	stolen := must[*remote.Descriptor](t)(remote.Get(ref(t, up.Host(), "secret/db:1")))
	if err := remote.Write(ref(t, up.Host(), "team/app:evil"), must[v1.Image](t)(stolen.Image())); err != nil {
		t.Fatal(err)
	}
	// The owner's side of `shroud access approve --key` for a request of
	// team/app: whatever shroud lists, unwrapped with the owner's key and
	// wrapped for the requester.
	wraps, err := ownerWraps(t, s, "team/app", ownerDK, requester)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := s.Handler.AddWrappedKeys(t.Context(), "team/app", requester.KeyID(), wraps)
	if err != nil {
		t.Fatal(err)
	}
	got := upstreamManifest(t, up, "team/app:evil")
	for i, l := range got.Layers {
		if opens(t, requesterDK, l) {
			t.Errorf("the requester of team/app opens layer %d of the manifest the upstream copied in from secret/db", i)
		}
	}
	for i, l := range upstreamManifest(t, up, "team/app:1").Layers {
		if !opens(t, requesterDK, l) {
			t.Errorf("the requester does not open layer %d of team/app's own image", i)
		}
	}
	if rep.Foreign == 0 {
		t.Error("the job reports no layer it refused")
	}
}

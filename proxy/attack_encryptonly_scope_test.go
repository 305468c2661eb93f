package proxy_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/shroudtest"
	"github.com/shroud-oci/shroud/proxy"
)

// A pusher of team/app who knows only the plaintext digest and size of a
// layer of secret/db (or of team/secret, under the same rule) (e.g. an uncompressed layer: its digest is the
// diff_id in secret/db's plaintext config) names it in a manifest of
// team/app. encryptLayer finds no mapping in team/app and mountOrigin
// mounts secret/db's ciphertext (dedup scope global on both rules, same
// recipients): encryptOnlyLayer binds the layer to team/app. An owner's
// approval of a request for team/app alone now wraps secret/db's layer key
// for the requester.
func TestAttackDedupMountLaundersForeignLayerIntoApprovedRepo(t *testing.T) {
	for _, tc := range []struct {
		name  string
		rules []shroudtest.Rule
		src   string
	}{
		{"global scope, two rules", nil, "secret/db"},
		{"same rule, default scope", nil, "team/secret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := shroudtest.Distribution(t)
			owner, ownerDK := keyPair(t, "ec")
			requester, requesterDK := keyPair(t, "ec")
			s := shroudtest.Start(t, up, shroudtest.WithPolicy(
				shroudtest.Rule{Pattern: "team/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{owner}, EncryptOnly: true, DedupScope: crypto.DedupGlobal},
				shroudtest.Rule{Pattern: "secret/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{owner}, EncryptOnly: true, DedupScope: crypto.DedupGlobal},
			))
			secretImg := must[v1.Image](t)(random.Image(10_000, 1))
			if err := remote.Write(ref(t, s.Host(), tc.src+":1"), secretImg); err != nil {
				t.Fatal(err)
			}
			sl := must[[]v1.Layer](t)(secretImg.Layers())[0]
			secretPlain := digest.Digest(must[v1.Hash](t)(sl.Digest()).String())
			secretSize := must[int64](t)(sl.Size())

			// The attacker: a config of its own, and a manifest of team/app
			// naming secret/db's layer by digest and size (no bytes).
			cfgBytes := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
			if err := remote.WriteLayer(ref(t, s.Host(), "team/app:1").Context(), static.NewLayer(cfgBytes, ocispec.MediaTypeImageConfig)); err != nil {
				t.Fatal(err)
			}
			m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest,
				Config: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(cfgBytes), Size: int64(len(cfgBytes))},
				Layers: []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: secretPlain, Size: secretSize}}}
			m.SchemaVersion = 2
			// A cross-repository mount (the spec's own request), then the
			// manifest: shroud's mountOrigin would mount the source's
			// ciphertext for either if the scopes let it.
			req, _ := http.NewRequest(http.MethodPost, s.URL+"/v2/team/app/blobs/uploads/?mount="+secretPlain.String()+"&from="+tc.src, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted {
				t.Errorf("mount of %s's layer into encrypt-only team/app: %d, want 202 (an upload session: nothing mounted)", tc.src, resp.StatusCode)
			}
			mb := must[[]byte](t)(json.Marshal(m))
			preq, _ := http.NewRequest(http.MethodPut, s.URL+"/v2/team/app/manifests/1", bytes.NewReader(mb))
			preq.Header.Set("Content-Type", ocispec.MediaTypeImageManifest)
			presp, err := http.DefaultClient.Do(preq)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(presp.Body)
			presp.Body.Close()
			if presp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "MANIFEST_BLOB_UNKNOWN") {
				t.Errorf("a manifest of team/app naming %s's layer by digest alone: %d %s, want 400 MANIFEST_BLOB_UNKNOWN", tc.src, presp.StatusCode, body)
			}

			// A pusher that has the bytes uploads its own copy; the owner
			// approves a request for team/app alone.
			if err := remote.Write(ref(t, s.Host(), "team/app:1"), secretImg); err != nil {
				t.Fatal(err)
			}
			wraps, err := ownerWraps(t, s, "team/app", ownerDK, requester)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Handler.AddWrappedKeys(t.Context(), "team/app", requester.KeyID(), wraps); err != nil {
				t.Fatal(err)
			}
			rkr := ownerKeyring(t, requesterDK)
			for _, l := range upstreamManifest(t, up, "team/app:1").Layers {
				if _, err := rkr.Unwrap(l.Annotations); err != nil {
					t.Errorf("the approved requester does not open team/app's own layer %s: %v", l.Digest, err)
				}
			}
			for _, l := range upstreamManifest(t, up, tc.src+":1").Layers {
				if opts, err := rkr.Unwrap(l.Annotations); err == nil {
					t.Fatalf("an approval of team/app gave the requester the key of %s's layer %s (%s), which the attacker named by digest only", tc.src, l.Digest, opts.PlainDigest)
				}
			}
		})
	}
}

// grantsOf is the proxy.Grants of approved access requests: what
// access.Store.Extend does (Keyring.Extend of the rule's recipients with
// each approved request's key), here for one key granted on every repo.
type grantsOf struct {
	kr  **crypto.Keyring
	key crypto.Recipient
}

func (g grantsOf) Extend(_ string, rule *crypto.Rule) (*crypto.Recipients, error) {
	return (*g.kr).Extend(rule.Recipients, []crypto.Recipient{g.key})
}

// cmd/shroud's opensItself refuses a static recipient of an encrypt-only
// rule that shroud can open (one of its decryption keys), but a key
// granted by an approved access request is added to the same rule
// (access.Store.Extend -> Keyring.Extend) with no such check. A team whose
// key shroud holds as a decryption key (for an accept-foreign rule of its
// own repositories) asks for secret/**, the owner approves: every image
// pushed to the encrypt-only repository from then on opens with shroud's
// keyring, which the rule promises never happens.
func TestAttackGrantedKeyShroudHoldsOpensEncryptOnlyLayers(t *testing.T) {
	up := shroudtest.Distribution(t)
	owner, _ := keyPair(t, "ec")
	team, teamDK := keyPair(t, "ec")
	var kr *crypto.Keyring
	s := shroudtest.Start(t, up, shroudtest.WithDecryptionKeys(teamDK), shroudtest.WithGrants(grantsOf{&kr, team}), shroudtest.WithPolicy(
		shroudtest.Rule{Pattern: "ci/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{team}, DecryptionKeys: []string{team.KeyIDs()[0]}},
		shroudtest.Rule{Pattern: "secret/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{owner}, EncryptOnly: true},
	))
	kr = s.Keyring
	if err := remote.Write(ref(t, s.Host(), "secret/db:1"), must[v1.Image](t)(random.Image(10_000, 2))); err != nil {
		t.Fatal(err)
	}
	for i, l := range upstreamManifest(t, up, "secret/db:1").Layers {
		if _, err := s.Keyring.Unwrap(l.Annotations); err == nil {
			t.Errorf("layer %d of the encrypt-only secret/db opens with shroud's own keyring (a granted key it holds as a decryption key)", i)
		}
	}
	// Nor may an owner add wrapped keys for it to the images stored.
	if _, err := s.Handler.AddWrappedKeys(t.Context(), "secret/db", team.KeyID(), nil); !errors.Is(err, proxy.ErrHeldKey) {
		t.Errorf("owner wraps for a key shroud holds, on encrypt-only secret/db: %v, want ErrHeldKey", err)
	}
	if err := s.Handler.GrantAllowed("ci/app", team.KeyID()); err != nil {
		t.Errorf("the same key granted on ordinary ci/app: %v", err)
	}
}

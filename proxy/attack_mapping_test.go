package proxy_test

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/shroudtest"
)

// Attack: mapping poisoning by position. The attacker pushes an image of
// two layers through shroud, then, straight at the upstream, swaps the two
// encrypted layer descriptors of its manifest (or only their enc.*
// annotations) and tags the result. A pull of that tag through shroud
// pairs the sealed original's layers with the swapped ciphertexts by
// position and records "plaintext L1 is ciphertext C2". A victim who then
// pushes an image sharing L1 is told L1 already exists (HEAD), skips the
// upload, and gets a manifest that points L1 at the wrong ciphertext. A
// user checks that the victim's image pulls back byte for byte and that
// the victim's upstream layer decrypts, with shroud's identity key, to the
// victim's own bytes.
func TestMappingPoisonedBySwappedDescriptors(t *testing.T) {
	for _, swap := range []string{"descriptors", "annotations"} {
		t.Run(swap, func(t *testing.T) {
			up := shroudtest.Distribution(t)
			s := shroudtest.Start(t, up)
			// Layers of one size, so that no size check gives the swap away.
			l1, l2, l3 := atkRandBytes(t, 40_000), atkRandBytes(t, 40_000), atkRandBytes(t, 40_000)
			attacker := atkStaticImage(t, l1, l2)
			if err := remote.Write(ref(t, s.Host(), "attacker/app:1"), attacker); err != nil {
				t.Fatal(err)
			}

			// Straight at the upstream: swap layers 0 and 1, tag it "evil".
			raw := atkRawJSON(t, atkUpstreamRaw(t, up, "attacker/app:1"))
			var layers []map[string]json.RawMessage
			if err := json.Unmarshal(raw["layers"], &layers); err != nil {
				t.Fatal(err)
			}
			if len(layers) != 2 {
				t.Fatalf("upstream manifest has %d layers", len(layers))
			}
			switch swap {
			case "descriptors":
				layers[0], layers[1] = layers[1], layers[0]
			case "annotations":
				layers[0]["annotations"], layers[1]["annotations"] = layers[1]["annotations"], layers[0]["annotations"]
			}
			raw["layers"] = must[[]byte](t)(json.Marshal(layers))
			evil := must[[]byte](t)(json.Marshal(raw))
			atkPutUpstream(t, up, "attacker/app", "evil", ocispec.MediaTypeImageManifest, evil)
			a := call{t, s.URL}.do("GET", "/v2/attacker/app/manifests/evil", nil)
			t.Logf("pull of the swapped manifest through shroud: %d", a.status)

			// The victim pushes an image sharing L1 (HEAD, then skip).
			victim := atkStaticImage(t, l1, l3)
			if err := remote.Write(ref(t, s.Host(), "victim/app:1"), victim); err != nil {
				t.Fatalf("victim push: %v", err)
			}
			desc, err := remote.Get(ref(t, s.Host(), "victim/app:1"))
			if err != nil {
				t.Fatalf("victim pull: %v", err)
			}
			if !bytes.Equal(desc.Manifest, must[[]byte](t)(victim.RawManifest())) {
				t.Fatalf("victim's manifest differs after the round trip")
			}
			got, err := atkReadLayers(must[v1.Image](t)(desc.Image()))
			if err != nil {
				t.Errorf("victim's image does not pull back: %v", err)
			}
			for i, want := range [][]byte{l1, l3} {
				d := v1.Hash{Algorithm: "sha256", Hex: sha256Hex(want)}
				if got != nil && !bytes.Equal(got[d], want) {
					t.Errorf("victim's layer %d (%s) differs after the round trip", i, d)
				}
			}
			// The victim's upstream manifest: layer 0 decrypts to L1.
			m := upstreamManifest(t, up, "victim/app:1")
			for i, want := range [][]byte{l1, l3} {
				l := m.Layers[i]
				if !crypto.IsEncryptedMediaType(l.MediaType) {
					t.Fatalf("victim's upstream layer %d is not encrypted", i)
				}
				plain, err := atkDecryptUpstreamLayer(t, up, s, "victim/app", l)
				switch {
				case err != nil:
					t.Errorf("victim's upstream layer %d (%s) does not decrypt with shroud's identity: %v", i, l.Digest, err)
				case bytes.Equal(plain, l2):
					t.Errorf("victim's upstream layer %d (%s) is the attacker's other layer L2", i, l.Digest)
				case !bytes.Equal(plain, want):
					t.Errorf("victim's upstream layer %d (%s) decrypts to other bytes", i, l.Digest)
				}
			}
		})
	}
}

// Attack: the mapping is an oracle. shroud answers HEAD and Range requests
// for a blob from its cache of plaintext digests, whoever asks: an
// anonymous client learns whether a plaintext digest was pushed (200 vs
// 404) and its size (a 416 for an unsatisfiable range carries
// "Content-Range: bytes */<size>"), although the upstream lets no
// anonymous request through. A user checks that an anonymous HEAD or
// Range GET gets the upstream's 401, as any other anonymous request does.
func TestMappingOracleForAnonymousClient(t *testing.T) {
	up := shroudtest.Behind(t, shroudtest.Distribution(t), shroudtest.RequireAuth(true))
	s := shroudtest.Start(t, up)
	c := call{t, s.URL}
	auth := atkBasicAuth("alice", "s3cret")
	b := atkRandBytes(t, 54_321)
	d := atkPushBlob(t, c, "oracle/app", b, "Authorization", auth)
	path := "/v2/oracle/app/blobs/" + d.String()
	if a := c.do("HEAD", path, nil, "Authorization", auth); a.status != 200 {
		t.Fatalf("HEAD with credentials: %d, want 200", a.status)
	}
	if a := c.do("GET", "/v2/", nil); a.status != 401 {
		t.Fatalf("anonymous /v2/: %d; the upstream should want credentials", a.status)
	}

	head := c.do("HEAD", path, nil)
	if head.status != 401 {
		t.Errorf("anonymous HEAD of a pushed blob: %d (Content-Length %q), want 401", head.status, head.header.Get("Content-Length"))
	}
	rng := c.do("GET", path, nil, "Range", "bytes=99999999-")
	if rng.status != 401 {
		t.Errorf("anonymous GET Range bytes=99999999-: %d, want 401", rng.status)
	}
	size := strconv.Itoa(len(b))
	if cr := rng.header.Get("Content-Range"); cr != "" || strings.Contains(string(rng.body), size) {
		t.Errorf("anonymous Range GET tells the size: Content-Range %q, body %.200s", cr, rng.body)
	}
	if cl := head.header.Get("Content-Length"); cl == size {
		t.Errorf("anonymous HEAD tells the size: Content-Length %s", cl)
	}
}

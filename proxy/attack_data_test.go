package proxy_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/shroudtest"
)

// atkDescriptorsOf reads the raw descriptors of a manifest's field ("layers"
// or "manifests").
func atkDescriptorsOf(t *testing.T, manifest []byte, field string) []map[string]json.RawMessage {
	t.Helper()
	var ds []map[string]json.RawMessage
	if err := json.Unmarshal(atkRawJSON(t, manifest)[field], &ds); err != nil {
		t.Fatalf("%s: %v", field, err)
	}
	return ds
}

// Attack: plaintext rides in a descriptor's data field. The OCI spec lets
// a descriptor embed its content, base64, in "data"; shroud encrypts the
// layer and rewrites the descriptor but keeps every other field, so the
// upstream manifest carries the layer's plaintext (and an index carries a
// child manifest's plaintext) next to the ciphertext's digest. A user
// checks that no descriptor of the upstream manifests has data, that
// upstream storage holds neither the bytes nor their base64, and that the
// pull through shroud returns the client's bytes, data included.
func TestDescriptorDataCarriesPlaintext(t *testing.T) {
	for _, up := range shroudtest.Upstreams(t) {
		t.Run(up.Name, func(t *testing.T) {
			s := shroudtest.Start(t, up)
			c := call{t, s.URL}
			cd := atkPushBlob(t, c, "data/app", atkPlainConfig)
			cfg := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: cd, Size: int64(len(atkPlainConfig))}
			layer := atkRandBytes(t, 3_000)
			atkPushBlob(t, c, "data/app", layer)
			l := atkLayerDesc(layer)
			l.Data = layer
			child := atkImageManifest(t, cfg, l)
			if !bytes.Contains(child, []byte(base64.StdEncoding.EncodeToString(layer))) {
				t.Fatal("the test manifest carries no data field")
			}
			childDigest := digest.FromBytes(child)
			c.do("PUT", "/v2/data/app/manifests/"+childDigest.String(), bytes.NewReader(child), "Content-Type", ocispec.MediaTypeImageManifest).want(t, 201, "")
			c.do("PUT", "/v2/data/app/manifests/img", bytes.NewReader(child), "Content-Type", ocispec.MediaTypeImageManifest).want(t, 201, "")

			idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{{
				MediaType: ocispec.MediaTypeImageManifest, Digest: childDigest, Size: int64(len(child)), Data: child,
				Platform: &ocispec.Platform{OS: "linux", Architecture: "amd64"},
			}}}
			idx.SchemaVersion = 2
			index := must[[]byte](t)(json.Marshal(idx))
			c.do("PUT", "/v2/data/app/manifests/idx", bytes.NewReader(index), "Content-Type", ocispec.MediaTypeImageIndex).want(t, 201, "")

			upImg := atkUpstreamRaw(t, up, "data/app:img")
			for i, d := range atkDescriptorsOf(t, upImg, "layers") {
				var mt string
				json.Unmarshal(d["mediaType"], &mt)
				if !crypto.IsEncryptedMediaType(mt) {
					t.Fatalf("upstream layer %d is not encrypted: %s", i, mt)
				}
				if d["data"] != nil {
					t.Errorf("upstream encrypted layer %d carries data (%d bytes of JSON)", i, len(d["data"]))
				}
			}
			for i, d := range atkDescriptorsOf(t, atkUpstreamRaw(t, up, "data/app:idx"), "manifests") {
				if d["data"] != nil {
					t.Errorf("upstream index child %d carries data (%d bytes of JSON)", i, len(d["data"]))
				}
			}
			for what, m := range map[string][]byte{"image": upImg, "index": atkUpstreamRaw(t, up, "data/app:idx")} {
				for _, n := range append(atkPlaintextNeedles(layer), atkPlaintextNeedles(child)...) {
					if bytes.Contains(m, n) {
						t.Errorf("the upstream %s manifest holds plaintext", what)
						break
					}
				}
			}
			if up.Dir != "" {
				if f := atkStorageHolding(t, up, append(atkPlaintextNeedles(layer), atkPlaintextNeedles(child)...)...); f != "" {
					t.Errorf("upstream storage file %s holds plaintext (a layer or a child manifest)", f)
				}
			}

			for ref, want := range map[string][]byte{"img": child, "idx": index, childDigest.String(): child} {
				if got := c.do("GET", "/v2/data/app/manifests/"+ref, nil); got.status != 200 || !bytes.Equal(got.body, want) {
					t.Errorf("pull of %s through shroud: %d, want the pushed bytes", ref, got.status)
				}
			}
			if got := c.do("GET", "/v2/data/app/blobs/"+l.Digest.String(), nil); got.status != 200 || !bytes.Equal(got.body, layer) {
				t.Errorf("layer pull through shroud: %d", got.status)
			}
		})
	}
}

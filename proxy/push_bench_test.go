package proxy_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/shroudtest"
	"github.com/shroud-oci/shroud/internal/testkeys"
)

// BenchmarkManifestPush is the manifest PUT of an image of 10 layers,
// already uploaded, to a rule of three recipients (jwe, pkcs7, pgp):
// each PUT checks the keys (keycheck.go), wraps 10 layer keys for them
// and the identity, seals and stores the manifest in go-containerregistry's
// in-memory registry. "one-refused" has the KeyChecker refuse one
// recipient, so the wraps go through a subset of the compiled set.
//
//	go test -run xxx -bench ManifestPush -benchtime 200x -count 6 ./proxy/
func BenchmarkManifestPush(b *testing.B) {
	dir := b.TempDir()
	_, pub, _ := crypto.GenerateKeyPair("ec")
	pubFile := dir + "/k.pub.pem"
	writeBench(b, pubFile, pub)
	cert, _ := testkeys.Cert(b, dir, "bob", false)
	pgpPub, _, _ := testkeys.PGP(b, dir, "alice", true)
	var rs []crypto.Recipient
	for _, spec := range []string{"jwe:" + pubFile, "pkcs7:" + cert, "pgp:" + pgpPub} {
		r, err := crypto.ParseRecipient(spec)
		if err != nil {
			b.Fatal(err)
		}
		rs = append(rs, r)
	}
	for _, c := range []struct {
		name string
		opts []shroudtest.Option
	}{
		{"all-valid", nil},
		{"one-refused", []shroudtest.Option{shroudtest.WithKeyCheck(refuseOne(rs[1].KeyID()))}},
	} {
		b.Run(c.name, func(b *testing.B) {
			up := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
			b.Cleanup(up.Close)
			opts := append([]shroudtest.Option{shroudtest.WithPolicy(shroudtest.Rule{Pattern: "**", Action: crypto.Encrypt, Recipients: rs})}, c.opts...)
			s := shroudtest.Start(b, shroudtest.Upstream{Name: "ggcr", URL: up.URL}, opts...)
			var layers []ocispec.Descriptor
			for range 10 {
				l := make([]byte, 4096)
				rand.Read(l)
				layers = append(layers, benchPushBlob(b, s.URL, "bench/app", l))
			}
			cfg := benchPushBlob(b, s.URL, "bench/app", atkPlainConfig)
			cfg.MediaType = ocispec.MediaTypeImageConfig
			body := benchManifest(b, cfg, layers)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				req, _ := http.NewRequest("PUT", s.URL+"/v2/bench/app/manifests/1", bytes.NewReader(body))
				req.Header.Set("Content-Type", ocispec.MediaTypeImageManifest)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusCreated {
					b.Fatalf("manifest PUT: %d", resp.StatusCode)
				}
			}
		})
	}
}

func writeBench(b *testing.B, path string, data []byte) {
	if err := os.WriteFile(path, data, 0o644); err != nil {
		b.Fatal(err)
	}
}

// benchPushBlob uploads a blob monolithically and describes it as a gzip
// layer.
func benchPushBlob(b *testing.B, base, repo string, data []byte) ocispec.Descriptor {
	d := digest.FromBytes(data)
	resp, err := http.Post(base+"/v2/"+repo+"/blobs/uploads/?digest="+d.String(), "application/octet-stream", bytes.NewReader(data))
	if err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		b.Fatalf("push blob: %d", resp.StatusCode)
	}
	return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: d, Size: int64(len(data))}
}

func benchManifest(b *testing.B, cfg ocispec.Descriptor, layers []ocispec.Descriptor) []byte {
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: cfg, Layers: layers}
	m.SchemaVersion = 2
	body, err := json.Marshal(m)
	if err != nil {
		b.Fatal(err)
	}
	return body
}

// refuseOne is a KeyChecker refusing one key for wrap.
type refuseOne string

func (r refuseOne) Check(ctx context.Context, op, repo, keyID string, now time.Time) error {
	if op == "wrap" && keyID == string(r) {
		return errors.New("revoked")
	}
	return nil
}

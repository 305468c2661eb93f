package proxy_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/shroudtest"
)

// isBlobUpload matches the requests that carry blob bytes upstream.
func isBlobUpload(r shroudtest.Request) bool {
	return (r.Method == http.MethodPatch || r.Method == http.MethodPut || r.Method == http.MethodPost) &&
		strings.Contains(r.Path, "/blobs/uploads/") && r.Query.Get("mount") == ""
}

// upstreamLayers lists the ciphertext digests of an image's layers as the
// upstream holds them.
func upstreamLayers(t *testing.T, up shroudtest.Upstream, repoRef string) []digest.Digest {
	t.Helper()
	var m ocispec.Manifest
	if err := json.Unmarshal(atkUpstreamRaw(t, up, repoRef), &m); err != nil {
		t.Fatal(err)
	}
	var out []digest.Digest
	for _, l := range m.Layers {
		out = append(out, l.Digest)
	}
	return out
}

// Attack: dedup as a fingerprinting oracle across tenants. team-a pushes
// an image; team-b (another rule: another tenant) wants to know whether
// anyone pushed a given layer (a known base image, a leaked file). It asks
// HEAD in its own repository, asks for a mount from team-a's, and pushes
// the image itself. A user checks that under the default dedup scope
// (rule) team-b learns nothing — its HEAD answers as for a layer never
// pushed, the mount opens a fresh upload (202) — and its push uploads
// every layer itself, under keys of its own (other ciphertext digests
// upstream); within team-a's rule the dedup holds (HEAD 200, no upload);
// scope repository confines even that; scope global dedups across rules.
func TestDedupOracleAcrossTenants(t *testing.T) {
	for _, tc := range []struct {
		scope               crypto.DedupScope
		sameRule, crossRule bool // whether dedup happens
	}{
		{"", true, false}, // the default: rule
		{crypto.DedupRepository, false, false},
		{crypto.DedupGlobal, true, true},
	} {
		name := string(tc.scope)
		if name == "" {
			name = "default"
		}
		t.Run(name, func(t *testing.T) {
			dist := shroudtest.Distribution(t)
			rec := &shroudtest.Recorder{}
			up := shroudtest.Behind(t, dist, rec.Middleware)
			s := shroudtest.Start(t, up, shroudtest.WithPolicy(
				shroudtest.Rule{Pattern: "team-a/**", Action: crypto.Encrypt, DedupScope: tc.scope},
				shroudtest.Rule{Pattern: "team-b/**", Action: crypto.Encrypt, DedupScope: tc.scope}))
			c := call{t, s.URL}
			secret := atkRandBytes(t, 30_000)
			img := atkStaticImage(t, secret)
			if err := remote.Write(ref(t, s.Host(), "team-a/app:1"), img); err != nil {
				t.Fatal(err)
			}
			ld := digest.FromBytes(secret)
			_, never := randBlob(t, 30_000)

			for _, target := range []struct {
				repo  string
				dedup bool
			}{{"team-a/other", tc.sameRule}, {"team-b/app", tc.crossRule}} {
				head := c.do("HEAD", "/v2/"+target.repo+"/blobs/"+ld.String(), nil)
				control := c.do("HEAD", "/v2/"+target.repo+"/blobs/"+never.String(), nil)
				mount := c.do("POST", "/v2/"+target.repo+"/blobs/uploads/?mount="+ld.String()+"&from=team-a/app", nil)
				if target.dedup {
					if head.status != 200 || mount.status != 201 {
						t.Errorf("%s within the scope: HEAD %d, mount %d; want 200 and 201", target.repo, head.status, mount.status)
					}
				} else {
					if head.status != control.status || head.header.Get("Content-Length") != control.header.Get("Content-Length") ||
						head.header.Get("Docker-Content-Digest") != "" {
						t.Errorf("%s outside the scope: HEAD of the pushed layer %d %v differs from one never pushed %d %v",
							target.repo, head.status, head.header, control.status, control.header)
					}
					if mount.status != 202 {
						t.Errorf("%s outside the scope: mount from team-a/app %d, want 202 (a fresh upload)", target.repo, mount.status)
					}
				}
				if loc := mount.header.Get("Location"); mount.status == 202 && loc != "" {
					c.do("DELETE", loc, nil)
				}

				rec.Reset()
				if err := remote.Write(ref(t, s.Host(), target.repo+":1"), img); err != nil {
					t.Fatal(err)
				}
				uploads := rec.Count(isBlobUpload)
				aLayers, tLayers := upstreamLayers(t, dist, "team-a/app:1"), upstreamLayers(t, dist, target.repo+":1")
				if target.dedup {
					if aLayers[0] != tLayers[0] {
						t.Errorf("%s within the scope: its layer is %s upstream, team-a's %s; want the one ciphertext", target.repo, tLayers[0], aLayers[0])
					}
				} else {
					if uploads == 0 {
						t.Errorf("%s outside the scope: its push uploaded nothing: it reused team-a's layer", target.repo)
					}
					if aLayers[0] == tLayers[0] {
						t.Errorf("%s outside the scope: its layer has team-a's ciphertext digest %s upstream", target.repo, aLayers[0])
					}
				}
				back, err := remote.Image(ref(t, s.Host(), target.repo+":1"))
				if err != nil {
					t.Fatal(err)
				}
				if got, err := atkReadLayers(back); err != nil || len(got) != 1 {
					t.Fatalf("%s pulls back: %v", target.repo, err)
				}
			}
		})
	}
}

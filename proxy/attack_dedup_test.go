package proxy_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"reflect"
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

// isCommitOf matches the upload commits of blob d into repo upstream.
func isCommitOf(repo string, d digest.Digest) func(shroudtest.Request) bool {
	return func(r shroudtest.Request) bool {
		return r.Method == http.MethodPut && strings.HasPrefix(r.Path, "/v2/"+repo+"/blobs/uploads/") && r.Query.Get("digest") == d.String()
	}
}

// isMountInto matches the cross-repository mounts into repo upstream.
func isMountInto(repo string) func(shroudtest.Request) bool {
	return func(r shroudtest.Request) bool {
		return r.Method == http.MethodPost && strings.HasPrefix(r.Path, "/v2/"+repo+"/blobs/uploads/") && r.Query.Get("mount") != ""
	}
}

// headersApartFromRequest returns h without what differs between any two
// requests (the request id, the date).
func headersApartFromRequest(h http.Header) http.Header {
	h = h.Clone()
	h.Del("X-Request-Id")
	h.Del("Date")
	return h
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
// (rule) team-b learns nothing — its HEAD answers exactly as for a layer
// never pushed (status and headers), the mount opens a fresh upload (202),
// shroud asks the upstream for no mount into team-b — and its push uploads
// every blob itself, as team-a's did, under keys of its own (another
// ciphertext digest upstream); within team-a's rule the dedup holds (HEAD
// 200, mount 201, the layer is not uploaded again); scope repository
// confines even that; scope global dedups across rules that both choose
// it, and a rule that keeps the default is not reached from a global one.
func TestDedupOracleAcrossTenants(t *testing.T) {
	for _, tc := range []struct {
		name                string
		scopeA, scopeB      crypto.DedupScope
		sameRule, crossRule bool // whether dedup happens
	}{
		{"default", "", "", true, false},
		{"rule", crypto.DedupRule, crypto.DedupRule, true, false},
		{"repository", crypto.DedupRepository, crypto.DedupRepository, false, false},
		{"global", crypto.DedupGlobal, crypto.DedupGlobal, true, true},
		// team-b's global scope does not open team-a, whose rule keeps
		// its layers to itself.
		{"global-into-rule", "", crypto.DedupGlobal, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dist := shroudtest.Distribution(t)
			rec := &shroudtest.Recorder{}
			up := shroudtest.Behind(t, dist, rec.Middleware)
			s := shroudtest.Start(t, up, shroudtest.WithPolicy(
				shroudtest.Rule{Pattern: "team-a/**", Action: crypto.Encrypt, DedupScope: tc.scopeA},
				shroudtest.Rule{Pattern: "team-b/**", Action: crypto.Encrypt, DedupScope: tc.scopeB}))
			c := call{t, s.URL}
			secret := atkRandBytes(t, 30_000)
			img := atkStaticImage(t, secret)
			if err := remote.Write(ref(t, s.Host(), "team-a/app:1"), img); err != nil {
				t.Fatal(err)
			}
			aUploads := rec.Count(isBlobUpload)
			aLayers := upstreamLayers(t, dist, "team-a/app:1")
			if aUploads == 0 || rec.Count(isCommitOf("team-a/app", aLayers[0])) != 1 {
				t.Fatalf("team-a's push: %d uploads, layer %s committed %d times; want it uploaded once",
					aUploads, aLayers[0], rec.Count(isCommitOf("team-a/app", aLayers[0])))
			}
			ld := digest.FromBytes(secret)
			_, never := randBlob(t, 30_000)

			for _, target := range []struct {
				repo  string
				dedup bool
			}{{"team-a/other", tc.sameRule}, {"team-b/app", tc.crossRule}} {
				rec.Reset()
				head := c.do("HEAD", "/v2/"+target.repo+"/blobs/"+ld.String(), nil)
				control := c.do("HEAD", "/v2/"+target.repo+"/blobs/"+never.String(), nil)
				mount := c.do("POST", "/v2/"+target.repo+"/blobs/uploads/?mount="+ld.String()+"&from=team-a/app", nil)
				if target.dedup {
					if head.status != 200 || mount.status != 201 {
						t.Errorf("%s within the scope: HEAD %d, mount %d; want 200 and 201", target.repo, head.status, mount.status)
					}
				} else {
					if got, want := headersApartFromRequest(head.header), headersApartFromRequest(control.header); head.status != control.status || !reflect.DeepEqual(got, want) {
						t.Errorf("%s outside the scope: HEAD of the pushed layer %d %v differs from one never pushed %d %v",
							target.repo, head.status, got, control.status, want)
					}
					if mount.status != 202 {
						t.Errorf("%s outside the scope: mount from team-a/app %d, want 202 (a fresh upload)", target.repo, mount.status)
					}
				}
				if loc := mount.header.Get("Location"); mount.status == 202 && loc != "" {
					c.do("DELETE", loc, nil)
				}
				probeMounts := rec.Count(isMountInto(target.repo))

				rec.Reset()
				if err := remote.Write(ref(t, s.Host(), target.repo+":1"), img); err != nil {
					t.Fatal(err)
				}
				uploads := rec.Count(isBlobUpload)
				tLayers := upstreamLayers(t, dist, target.repo+":1")
				committed := rec.Count(isCommitOf(target.repo, tLayers[0]))
				if target.dedup {
					if aLayers[0] != tLayers[0] || committed != 0 {
						t.Errorf("%s within the scope: its layer is %s upstream (team-a's %s), committed %d times; want team-a's ciphertext, mounted",
							target.repo, tLayers[0], aLayers[0], committed)
					}
				} else {
					if uploads != aUploads || committed != 1 {
						t.Errorf("%s outside the scope: its push made %d uploads (team-a's %d) and committed its layer %d times: it reused team-a's",
							target.repo, uploads, aUploads, committed)
					}
					if aLayers[0] == tLayers[0] {
						t.Errorf("%s outside the scope: its layer has team-a's ciphertext digest %s upstream", target.repo, aLayers[0])
					}
					if n := rec.Count(isMountInto(target.repo)); n+probeMounts != 0 {
						t.Errorf("%s outside the scope: shroud asked the upstream for %d mounts into it", target.repo, n+probeMounts)
					}
				}
				back, err := remote.Image(ref(t, s.Host(), target.repo+":1"))
				if err != nil {
					t.Fatal(err)
				}
				got, err := atkReadLayers(back)
				if err != nil || len(got) != 1 {
					t.Fatalf("%s pulls back: %d layers, %v", target.repo, len(got), err)
				}
				for _, b := range got {
					if !bytes.Equal(b, secret) {
						t.Fatalf("%s pulls back another layer than it pushed", target.repo)
					}
				}
			}
		})
	}
}

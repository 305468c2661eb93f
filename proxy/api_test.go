package proxy_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shroud-oci/shroud/internal/shroudtest"
)

// Tags list and catalog paginate through shroud: every Link points at
// shroud, never at the upstream, and following them yields every name.
func TestPagination(t *testing.T) {
	up := shroudtest.Distribution(t)
	s := shroudtest.Start(t, up)
	img := must[v1.Image](t)(random.Image(1000, 1))
	want := []string{"a", "b", "c", "d", "e"}
	for _, tag := range want {
		if err := remote.Write(ref(t, s.Host(), "pages/app:"+tag), img); err != nil {
			t.Fatal(err)
		}
	}
	for _, repo := range []string{"pages/other", "pages/third"} {
		if err := remote.Write(ref(t, s.Host(), repo+":x"), img); err != nil {
			t.Fatal(err)
		}
	}
	collect := func(path, field string) []string { return collectPages(t, call{t, s.URL}, path, field, up.Host()) }
	if got := collect("/v2/pages/app/tags/list?n=2", "tags"); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("paginated tags %v, want %v", got, want)
	}
	got := collect("/v2/_catalog?n=1", "repositories")
	sort.Strings(got)
	if fmt.Sprint(got) != "[pages/app pages/other pages/third]" {
		t.Fatalf("paginated catalog %v", got)
	}
}

// collectPages follows a paginated list (tags or catalog) from path
// through its Link headers, which must point at shroud, and returns the
// names of field on every page.
func collectPages(t *testing.T, c call, path, field, upstreamHost string) []string {
	t.Helper()
	var got []string
	for path != "" {
		a := c.do("GET", path, nil)
		a.want(t, 200, "")
		var page map[string][]string
		json.Unmarshal(a.body, &page)
		got = append(got, page[field]...)
		link := a.header.Get("Link")
		if strings.Contains(link, upstreamHost) {
			t.Fatalf("Link %q points at the upstream", link)
		}
		path = ""
		if i, j := strings.Index(link, "<"), strings.Index(link, ">"); i >= 0 && j > i {
			path = link[i+1 : j]
		}
	}
	return got
}

// Deletes by digest reach the upstream's encrypted manifest and ciphertext.
func TestDeletes(t *testing.T) {
	up := shroudtest.Distribution(t)
	s := shroudtest.Start(t, up)
	c := call{t, s.URL}
	img := must[v1.Image](t)(random.Image(10_000, 1))
	if err := remote.Write(ref(t, s.Host(), "del/app:1"), img); err != nil {
		t.Fatal(err)
	}
	d := must[v1.Hash](t)(img.Digest())
	layer := must[v1.Hash](t)(must[[]v1.Layer](t)(img.Layers())[0].Digest())
	c.do("DELETE", "/v2/del/app/blobs/"+layer.String(), nil).want(t, 202, "")
	c.do("GET", "/v2/del/app/blobs/"+layer.String(), nil).want(t, 404, "BLOB_UNKNOWN")
	c.do("DELETE", "/v2/del/app/manifests/"+d.String(), nil).want(t, 202, "")
	c.do("GET", "/v2/del/app/manifests/"+d.String(), nil).want(t, 404, "MANIFEST_UNKNOWN")
	c.do("GET", "/v2/del/app/manifests/1", nil).want(t, 404, "MANIFEST_UNKNOWN")
}

// An artifact with a subject: its layers are encrypted like an image's, its
// subject points at the encrypted image upstream, and it comes back byte for
// byte.
func TestArtifactWithSubject(t *testing.T) {
	for _, up := range shroudtest.Upstreams(t) {
		t.Run(up.Name, func(t *testing.T) {
			s := shroudtest.Start(t, up)
			c := call{t, s.URL}
			img := must[v1.Image](t)(random.Image(10_000, 1))
			if err := remote.Write(ref(t, s.Host(), "art/app:1"), img); err != nil {
				t.Fatal(err)
			}
			imgDigest := must[v1.Hash](t)(img.Digest())
			imgSize := must[int64](t)(img.Size())
			push := func(b []byte) digest.Digest {
				d := digest.FromBytes(b)
				c.do("POST", "/v2/art/app/blobs/uploads/?digest="+d.String(), bytes.NewReader(b)).want(t, 201, "")
				return d
			}
			emptyCfg := push([]byte("{}"))
			sbom := []byte(`{"spdxVersion":"SPDX-2.3","name":"secret inventory"}`)
			sbomDigest := push(sbom)
			art := ocispec.Manifest{
				MediaType:    ocispec.MediaTypeImageManifest,
				ArtifactType: "application/spdx+json",
				Config:       ocispec.Descriptor{MediaType: "application/vnd.oci.empty.v1+json", Digest: emptyCfg, Size: 2},
				Layers:       []ocispec.Descriptor{{MediaType: "application/spdx+json", Digest: sbomDigest, Size: int64(len(sbom))}},
				Subject:      &ocispec.Descriptor{MediaType: string(must[string](t)(mediaType(img))), Digest: digest.Digest(imgDigest.String()), Size: imgSize},
			}
			art.SchemaVersion = 2
			body, _ := json.Marshal(art)
			artDigest := digest.FromBytes(body)
			a := c.do("PUT", "/v2/art/app/manifests/"+artDigest.String(), bytes.NewReader(body), "Content-Type", ocispec.MediaTypeImageManifest)
			a.want(t, 201, "")
			if a.header.Get("Docker-Content-Digest") != artDigest.String() {
				t.Fatalf("PUT answered digest %q, want %s", a.header.Get("Docker-Content-Digest"), artDigest)
			}
			got := c.do("GET", "/v2/art/app/manifests/"+artDigest.String(), nil)
			if got.status != 200 || !bytes.Equal(got.body, body) {
				t.Fatalf("artifact pulled back: %d %s", got.status, got.body)
			}
			if b := c.do("GET", "/v2/art/app/blobs/"+sbomDigest.String(), nil); !bytes.Equal(b.body, sbom) {
				t.Fatal("artifact blob differs")
			}
			// Upstream: find the encrypted artifact through the image's
			// encrypted digest (the upstream's own subject index).
			upImg := must[*remote.Descriptor](t)(remote.Get(ref(t, up.Host(), "art/app:1")))
			raw := upstreamManifests(t, up, "art/app")
			var found bool
			for _, m := range raw {
				var um ocispec.Manifest
				json.Unmarshal(m, &um)
				if um.ArtifactType != "application/spdx+json" {
					continue
				}
				found = true
				if um.Subject == nil || um.Subject.Digest.String() != upImg.Digest.String() {
					t.Fatalf("upstream artifact subject %v, want the encrypted image %s", um.Subject, upImg.Digest)
				}
				if um.Layers[0].MediaType != "application/spdx+json+encrypted" || bytes.Contains(m, []byte("secret inventory")) {
					t.Fatalf("upstream artifact layer not encrypted: %s", m)
				}
			}
			if !found && up.Dir != "" {
				t.Fatal("no encrypted artifact manifest upstream")
			}
			// Referrers in plaintext terms, on every upstream: the
			// upstream's API (ggcr), or the list shroud keeps
			// (distribution has none).
			for _, q := range []string{"", "?artifactType=application/spdx+json", "?artifactType=application%2Fspdx%2Bjson"} {
				ref := c.do("GET", "/v2/art/app/referrers/"+imgDigest.String()+q, nil)
				var idx ocispec.Index
				if err := json.Unmarshal(ref.body, &idx); err != nil || ref.status != 200 || len(idx.Manifests) != 1 {
					t.Fatalf("referrers%s: %d %s", q, ref.status, ref.body)
				}
				got := idx.Manifests[0]
				if got.Digest != artDigest || got.Size != int64(len(body)) || got.ArtifactType != "application/spdx+json" || got.MediaType != ocispec.MediaTypeImageManifest {
					t.Fatalf("referrer %+v, want the artifact as pushed (%s)", got, artDigest)
				}
			}
			none := c.do("GET", "/v2/art/app/referrers/"+imgDigest.String()+"?artifactType=application/other", nil)
			// shroud filters, and says so.
			if none.header.Get("OCI-Filters-Applied") != "artifactType" || !strings.Contains(string(none.body), `"manifests":[]`) {
				t.Fatalf("filtered referrers: %v %s", none.header, none.body)
			}
		})
	}
}

func mediaType(img v1.Image) (string, error) {
	mt, err := img.MediaType()
	return string(mt), err
}

// upstreamManifests reads every manifest revision a distribution storage
// root holds for a repository (none for other upstreams).
func upstreamManifests(t *testing.T, up shroudtest.Upstream, repo string) [][]byte {
	if up.Dir == "" {
		return nil
	}
	var out [][]byte
	for _, f := range shroudtest.BlobFiles(t, up.Dir) {
		b := must[[]byte](t)(readFile(f))
		if bytes.HasPrefix(b, []byte("{")) && bytes.Contains(b, []byte(`"schemaVersion"`)) {
			out = append(out, b)
		}
	}
	return out
}

// A PATCH cut short (the client hangs up before its Content-Length) leaves
// nothing recorded and the session unusable; a new upload succeeds.
func TestTruncatedUpload(t *testing.T) {
	up := shroudtest.Distribution(t)
	s := shroudtest.Start(t, up)
	c := call{t, s.URL}
	b, d := randBlob(t, 100_000)
	a := c.do("POST", "/v2/trunc/app/blobs/uploads/", nil)
	loc := a.header.Get("Location")

	conn := must[net.Conn](t)(net.Dial("tcp", s.Host()))
	fmt.Fprintf(conn, "PATCH %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\nContent-Type: application/octet-stream\r\n\r\n", loc, s.Host(), len(b))
	conn.Write(b[:len(b)/2])
	conn.Close()

	deadline := time.Now().Add(10 * time.Second)
	for {
		st := c.do("GET", loc, nil)
		if st.status == 404 && st.errorCode() == "BLOB_UPLOAD_UNKNOWN" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("session after a truncated PATCH: %d %s, want BLOB_UPLOAD_UNKNOWN", st.status, st.body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.do("PUT", withQuery(loc, "digest", d.String()), nil).want(t, 404, "BLOB_UPLOAD_UNKNOWN")
	c.do("HEAD", "/v2/trunc/app/blobs/"+d.String(), nil).want(t, 404, "")
	c.do("POST", "/v2/trunc/app/blobs/uploads/?digest="+d.String(), bytes.NewReader(b)).want(t, 201, "")
	checkBlob(t, c, "trunc/app", b)
}

package e2e

import (
	"bytes"
	"io"
	"net/http"
	"net/url"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
)

// pusher is a small client that pushes blobs the way one of docker's two
// push paths does.
type pusher struct {
	t    *testing.T
	base string
	repo string
}

func (p pusher) do(method, u string, body io.Reader, length int64, hdr ...string) *http.Response {
	p.t.Helper()
	if !bytes.HasPrefix([]byte(u), []byte("http")) {
		u = p.base + u
	}
	req, _ := http.NewRequest(method, u, body)
	if body != nil {
		req.ContentLength = length
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatalf("%s %s: %v", method, u, err)
	}
	return resp
}

func (p pusher) start() string {
	p.t.Helper()
	resp := p.do("POST", "/v2/"+p.repo+"/blobs/uploads/", nil, 0)
	resp.Body.Close()
	if resp.StatusCode != 202 {
		p.t.Fatalf("POST upload: %d", resp.StatusCode)
	}
	loc, _ := url.Parse(resp.Header.Get("Location"))
	return p.base + loc.String()
}

func withDigest(loc string, d digest.Digest) string {
	u, _ := url.Parse(loc)
	q := u.Query()
	q.Set("digest", d.String())
	u.RawQuery = q.Encode()
	return u.String()
}

// classic is docker's push: one PATCH streaming the whole blob with no
// length, then an empty PUT; the returned digest is not looked at.
func (p pusher) classic(b []byte) {
	p.t.Helper()
	loc := p.start()
	resp := p.do("PATCH", loc, io.MultiReader(bytes.NewReader(b)), -1, "Content-Type", "application/octet-stream")
	resp.Body.Close()
	if resp.StatusCode != 202 {
		p.t.Fatalf("PATCH: %d", resp.StatusCode)
	}
	next, _ := url.Parse(resp.Header.Get("Location"))
	resp = p.do("PUT", withDigest(p.base+next.String(), digest.FromBytes(b)), nil, 0)
	resp.Body.Close()
	if resp.StatusCode != 201 {
		p.t.Fatalf("PUT: %d", resp.StatusCode)
	}
}

// containerd is containerd's pusher (docker with the containerd image
// store): the blob in the body of the PUT, and the returned
// Docker-Content-Digest checked.
func (p pusher) containerd(b []byte) {
	p.t.Helper()
	d := digest.FromBytes(b)
	resp := p.do("PUT", withDigest(p.start(), d), bytes.NewReader(b), int64(len(b)), "Content-Type", "application/octet-stream")
	resp.Body.Close()
	if resp.StatusCode != 201 || resp.Header.Get("Docker-Content-Digest") != d.String() {
		p.t.Fatalf("PUT with body: %d, digest %q, want 201 %s", resp.StatusCode, resp.Header.Get("Docker-Content-Digest"), d)
	}
}

func (p pusher) manifest(tag, mediaType string, body []byte) {
	p.t.Helper()
	resp := p.do("PUT", "/v2/"+p.repo+"/manifests/"+tag, bytes.NewReader(body), int64(len(body)), "Content-Type", mediaType)
	resp.Body.Close()
	if resp.StatusCode != 201 || resp.Header.Get("Docker-Content-Digest") != digest.FromBytes(body).String() {
		p.t.Fatalf("manifest PUT: %d, digest %q", resp.StatusCode, resp.Header.Get("Docker-Content-Digest"))
	}
}

// Both docker push paths push a Docker image through shroud; it pulls
// back (go-containerregistry) with every digest as pushed.
func TestDockerPushPatterns(t *testing.T) {
	s := sharedShroud(t)
	for _, style := range []string{"classic", "containerd"} {
		t.Run(style, func(t *testing.T) {
			img, err := random.Image(250_000, 2)
			if err != nil {
				t.Fatal(err)
			}
			recordLayers(t, img)
			p := pusher{t: t, base: s.URL, repo: "docker/" + style}
			push := p.classic
			if style == "containerd" {
				push = p.containerd
			}
			ls, _ := img.Layers()
			for _, l := range ls {
				rc, _ := l.Compressed()
				b, _ := io.ReadAll(rc)
				rc.Close()
				// docker HEADs each blob first; not there yet.
				d, _ := l.Digest()
				if resp := p.do("HEAD", "/v2/"+p.repo+"/blobs/"+d.String(), nil, 0); resp.StatusCode != 404 {
					t.Fatalf("HEAD before push: %d", resp.StatusCode)
				}
				push(b)
			}
			cfg, _ := img.RawConfigFile()
			push(cfg)
			raw, _ := img.RawManifest()
			mt, _ := img.MediaType()
			p.manifest("1", string(mt), raw)

			ref, _ := name.ParseReference(s.Host()+"/"+p.repo+":1", name.Insecure)
			got, err := remote.Image(ref)
			if err != nil {
				t.Fatal(err)
			}
			if digestOf(t, got) != digestOf(t, img) {
				t.Fatal("pulled digest differs")
			}
			gls, _ := got.Layers()
			for i, l := range gls {
				rc, err := l.Compressed()
				if err != nil {
					t.Fatal(err)
				}
				b, err := io.ReadAll(rc)
				rc.Close()
				want, _ := ls[i].Compressed()
				wb, _ := io.ReadAll(want)
				if err != nil || !bytes.Equal(b, wb) {
					t.Fatalf("layer %d differs after the round trip (%v)", i, err)
				}
			}
			// A second push of the same image: docker's HEADs say every
			// blob is there, nothing is uploaded again.
			for _, l := range ls {
				d, _ := l.Digest()
				if resp := p.do("HEAD", "/v2/"+p.repo+"/blobs/"+d.String(), nil, 0); resp.StatusCode != 200 {
					t.Fatalf("HEAD after push: %d", resp.StatusCode)
				}
			}
		})
	}
}

package proxy_test

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/shroud-oci/shroud/internal/shroudtest"
)

// call is one raw HTTP request against shroud.
type call struct {
	t    *testing.T
	base string
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func (c call) do(method, path string, body io.Reader, hdr ...string) answer {
	c.t.Helper()
	u := path
	if !strings.HasPrefix(path, "http") {
		u = c.base + path
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		c.t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	if br, ok := body.(*bytes.Reader); ok {
		req.ContentLength = int64(br.Len())
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, header: resp.Header, body: b}
}

// errorCode returns the first OCI error code of an answer.
func (a answer) errorCode() string {
	var e struct {
		Errors []struct{ Code, Message string } `json:"errors"`
	}
	json.Unmarshal(a.body, &e)
	if len(e.Errors) == 0 {
		return ""
	}
	return e.Errors[0].Code
}

func (a answer) want(t *testing.T, status int, code string) {
	t.Helper()
	if a.status != status || (code != "" && a.errorCode() != code) {
		t.Fatalf("answer %d %s %s, want %d %s", a.status, a.errorCode(), a.body, status, code)
	}
}

// withQuery adds a query parameter to an upload Location, which carries
// a query (_state) of its own, as clients do.
func withQuery(loc, key, value string) string {
	u, err := url.Parse(loc)
	if err != nil {
		panic(err)
	}
	q := u.Query()
	q.Set(key, value)
	u.RawQuery = q.Encode()
	return u.String()
}

// unsized hides a body's length so that it goes out chunked, as docker's
// streamed PATCH does.
type unsized struct{ r io.Reader }

func (u unsized) Read(p []byte) (int, error) { return u.r.Read(p) }

func randBlob(t *testing.T, n int) ([]byte, digest.Digest) {
	b := make([]byte, n)
	rand.Read(b)
	return b, digest.FromBytes(b)
}

// checkBlob pulls a blob back through shroud and compares it.
func checkBlob(t *testing.T, c call, repo string, want []byte) {
	t.Helper()
	d := digest.FromBytes(want)
	head := c.do("HEAD", "/v2/"+repo+"/blobs/"+d.String(), nil)
	if head.status != 200 || head.header.Get("Content-Length") != fmt.Sprint(len(want)) || head.header.Get("Docker-Content-Digest") != d.String() {
		t.Fatalf("HEAD blob: %d %v, want 200 with the plaintext size and digest", head.status, head.header)
	}
	get := c.do("GET", "/v2/"+repo+"/blobs/"+d.String(), nil)
	if get.status != 200 || !bytes.Equal(get.body, want) {
		t.Fatalf("GET blob: %d, %d bytes; want 200 and the pushed bytes", get.status, len(get.body))
	}
}

func TestUploadStyles(t *testing.T) {
	for _, up := range shroudtest.Upstreams(t) {
		t.Run(up.Name, func(t *testing.T) {
			s := shroudtest.Start(t, up)
			c := call{t, s.URL}
			const repo = "styles/app"
			post := func() string {
				a := c.do("POST", "/v2/"+repo+"/blobs/uploads/", nil)
				a.want(t, 202, "")
				loc := a.header.Get("Location")
				if !strings.HasPrefix(loc, "/v2/"+repo+"/blobs/uploads/") || a.header.Get("Docker-Upload-Uuid") == "" {
					t.Fatalf("POST Location %q does not point at shroud", loc)
				}
				return loc
			}
			withDigest := func(loc string, d digest.Digest) string { return withQuery(loc, "digest", d.String()) }

			t.Run("monolithic POST", func(t *testing.T) {
				b, d := randBlob(t, 70_000)
				a := c.do("POST", "/v2/"+repo+"/blobs/uploads/?digest="+d.String(), bytes.NewReader(b), "Content-Type", "application/octet-stream")
				a.want(t, 201, "")
				if a.header.Get("Docker-Content-Digest") != d.String() || a.header.Get("Location") != "/v2/"+repo+"/blobs/"+d.String() {
					t.Fatalf("201 headers %v", a.header)
				}
				checkBlob(t, c, repo, b)
			})
			t.Run("streamed PATCH then empty PUT (docker)", func(t *testing.T) {
				b, d := randBlob(t, 1<<20+3)
				loc := post()
				a := c.do("PATCH", loc, unsized{bytes.NewReader(b)})
				a.want(t, 202, "")
				if a.header.Get("Range") != fmt.Sprintf("0-%d", len(b)-1) {
					t.Fatalf("Range after PATCH = %q", a.header.Get("Range"))
				}
				c.do("PUT", withDigest(a.header.Get("Location"), d), nil).want(t, 201, "")
				checkBlob(t, c, repo, b)
			})
			t.Run("chunked PATCH with Content-Range", func(t *testing.T) {
				b, d := randBlob(t, 30_000)
				loc := post()
				for off := 0; off < len(b); off += 7000 {
					end := min(off+7000, len(b))
					a := c.do("PATCH", loc, bytes.NewReader(b[off:end]), "Content-Range", fmt.Sprintf("%d-%d", off, end-1))
					a.want(t, 202, "")
					loc = a.header.Get("Location")
				}
				st := c.do("GET", loc, nil)
				if st.status != 204 || st.header.Get("Range") != fmt.Sprintf("0-%d", len(b)-1) {
					t.Fatalf("upload status %d Range %q", st.status, st.header.Get("Range"))
				}
				c.do("PUT", withDigest(loc, d), nil).want(t, 201, "")
				checkBlob(t, c, repo, b)
			})
			t.Run("PUT with the body (containerd)", func(t *testing.T) {
				b, d := randBlob(t, 50_000)
				a := c.do("PUT", withDigest(post(), d), bytes.NewReader(b))
				a.want(t, 201, "")
				if a.header.Get("Docker-Content-Digest") != d.String() {
					t.Fatalf("Docker-Content-Digest %q, want %s", a.header.Get("Docker-Content-Digest"), d)
				}
				checkBlob(t, c, repo, b)
			})
			t.Run("empty blob", func(t *testing.T) {
				d := digest.FromBytes(nil)
				c.do("PUT", withDigest(post(), d), nil).want(t, 201, "")
				checkBlob(t, c, repo, nil)
			})
			t.Run("wrong digest", func(t *testing.T) {
				b, d := randBlob(t, 20_000)
				wrong := digest.FromString("something else")
				loc := post()
				a := c.do("PATCH", loc, bytes.NewReader(b))
				c.do("PUT", withDigest(a.header.Get("Location"), wrong), nil).want(t, 400, "DIGEST_INVALID")
				c.do("HEAD", "/v2/"+repo+"/blobs/"+wrong.String(), nil).want(t, 404, "")
				c.do("HEAD", "/v2/"+repo+"/blobs/"+d.String(), nil).want(t, 404, "")
				c.do("PUT", withDigest(loc, d), nil).want(t, 404, "BLOB_UPLOAD_UNKNOWN")
			})
			t.Run("invalid digest", func(t *testing.T) {
				c.do("PUT", withQuery(post(), "digest", "sha256:nothex"), bytes.NewReader([]byte("x"))).want(t, 400, "DIGEST_INVALID")
			})
			t.Run("cancelled halfway", func(t *testing.T) {
				b, d := randBlob(t, 40_000)
				loc := post()
				a := c.do("PATCH", loc, bytes.NewReader(b[:20_000]))
				a.want(t, 202, "")
				loc = a.header.Get("Location")
				c.do("DELETE", loc, nil).want(t, 204, "")
				c.do("PATCH", loc, bytes.NewReader(b[20_000:])).want(t, 404, "BLOB_UPLOAD_UNKNOWN")
				c.do("PUT", withDigest(loc, d), nil).want(t, 404, "BLOB_UPLOAD_UNKNOWN")
				c.do("HEAD", "/v2/"+repo+"/blobs/"+d.String(), nil).want(t, 404, "")
			})
			t.Run("chunk out of order", func(t *testing.T) {
				b, d := randBlob(t, 30)
				loc := post()
				a := c.do("PATCH", loc, bytes.NewReader(b[:10]), "Content-Range", "0-9")
				a.want(t, 202, "")
				loc = a.header.Get("Location")
				a = c.do("PATCH", loc, bytes.NewReader(b[20:]), "Content-Range", "20-29")
				a.want(t, 416, "BLOB_UPLOAD_INVALID")
				if a.header.Get("Range") != "0-9" || a.header.Get("Location") != loc {
					t.Fatalf("416 Range %q Location %q, want 0-9 and the session", a.header.Get("Range"), a.header.Get("Location"))
				}
				// The session is intact: the right chunk continues it.
				a = c.do("PATCH", loc, bytes.NewReader(b[10:]), "Content-Range", "10-29")
				a.want(t, 202, "")
				c.do("PUT", withDigest(a.header.Get("Location"), d), nil).want(t, 201, "")
				checkBlob(t, c, repo, b)
			})
			t.Run("session of another repository", func(t *testing.T) {
				loc := post()
				other := strings.Replace(loc, "/v2/"+repo+"/", "/v2/other/repo/", 1)
				c.do("GET", other, nil).want(t, 404, "BLOB_UPLOAD_UNKNOWN")
			})
			t.Run("range GET", func(t *testing.T) {
				b, d := randBlob(t, 100_000)
				c.do("POST", "/v2/"+repo+"/blobs/uploads/?digest="+d.String(), bytes.NewReader(b)).want(t, 201, "")
				for _, tc := range []struct {
					hdr        string
					start, end int
				}{
					{"bytes=0-99", 0, 99}, {"bytes=17-4113", 17, 4113}, {"bytes=99000-99999", 99_000, 99_999},
					{"bytes=99990-", 99_990, 99_999}, {"bytes=-500", 99_500, 99_999}, {"bytes=99990-200000", 99_990, 99_999},
				} {
					a := c.do("GET", "/v2/"+repo+"/blobs/"+d.String(), nil, "Range", tc.hdr)
					wantCR := fmt.Sprintf("bytes %d-%d/%d", tc.start, tc.end, len(b))
					if a.status != 206 || !bytes.Equal(a.body, b[tc.start:tc.end+1]) || a.header.Get("Content-Range") != wantCR {
						t.Fatalf("Range %s: %d %q, %d bytes; want 206 %s and the plaintext range", tc.hdr, a.status, a.header.Get("Content-Range"), len(a.body), wantCR)
					}
				}
				a := c.do("GET", "/v2/"+repo+"/blobs/"+d.String(), nil, "Range", "bytes=100000-")
				if a.status != 416 || a.header.Get("Content-Range") != "bytes */100000" {
					t.Fatalf("Range past the end: %d %q, want 416 bytes */100000", a.status, a.header.Get("Content-Range"))
				}
				if a := c.do("GET", "/v2/"+repo+"/blobs/"+d.String(), nil, "Range", "bytes=500-0"); a.status != 416 {
					t.Fatalf("malformed Range: %d, want 416 as distribution answers", a.status)
				}
				if a := c.do("GET", "/v2/"+repo+"/blobs/"+d.String(), nil, "Range", "bytes=0-1,5-6"); a.status != 200 || !bytes.Equal(a.body, b) {
					t.Fatalf("multi-range: %d, want the whole blob", a.status)
				}
			})
		})
	}
}

// A blob pushed to one repository is mounted, not uploaded again, into
// another: by HEAD (docker's check before upload) and by ?mount=&from=.
func TestMountAndDedup(t *testing.T) {
	up := shroudtest.Distribution(t)
	s := shroudtest.Start(t, up)
	c := call{t, s.URL}
	b, d := randBlob(t, 200_000)
	c.do("POST", "/v2/a/app/blobs/uploads/?digest="+d.String(), bytes.NewReader(b)).want(t, 201, "")
	c.do("HEAD", "/v2/b/app/blobs/"+d.String(), nil).want(t, 200, "")
	checkBlob(t, c, "b/app", b)
	a := c.do("POST", "/v2/c/app/blobs/uploads/?mount="+d.String()+"&from=a/app", nil)
	a.want(t, 201, "")
	if a.header.Get("Docker-Content-Digest") != d.String() {
		t.Fatalf("mount answered digest %q", a.header.Get("Docker-Content-Digest"))
	}
	checkBlob(t, c, "c/app", b)
	// Upstream: one ciphertext blob for the three repositories.
	// Blob pointers are manifests (JSON) with {} as their config: not
	// counted.
	n := 0
	for _, f := range shroudtest.BlobFiles(t, up.Dir) {
		if b, err := os.ReadFile(f); err == nil && !json.Valid(b) {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("upstream holds %d blobs, want the one ciphertext", n)
	}
	// Unknown mount source: a new session, as the spec allows.
	other := digest.FromString("never pushed")
	c.do("POST", "/v2/d/app/blobs/uploads/?mount="+other.String()+"&from=a/app", nil).want(t, 202, "")
}

package upstream

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
)

// MaxManifestSize bounds the manifests read from the upstream, as
// distribution bounds those it accepts.
const MaxManifestSize = 4 << 20

// ManifestAccept lists every manifest type shroud can serve; it is sent
// upstream whatever the client accepts, since the upstream holds OCI
// manifests where the client pushed Docker ones.
var ManifestAccept = strings.Join([]string{
	"application/vnd.oci.image.manifest.v1+json",
	"application/vnd.oci.image.index.v1+json",
	"application/vnd.docker.distribution.manifest.v2+json",
	"application/vnd.docker.distribution.manifest.list.v2+json",
	"application/vnd.docker.distribution.manifest.v1+prettyjws",
	"application/vnd.docker.distribution.manifest.v1+json",
}, ", ")

// Client talks to one upstream registry. The zero value is not usable; use
// New. A Client is safe for concurrent use; WithAuthorization returns a copy
// for one client request.
type Client struct {
	base     *url.URL
	hostPort string // base's host:port, as hostPort gives it
	hc       *http.Client
	auth     string
	policy   addrPolicy // what a followed redirect may reach
}

// New returns a client for the registry at base ("http://host:port" or
// "https://..."). A nil hc means http.DefaultClient. The client uses a
// copy of hc whose CheckRedirect is its own: only blob downloads follow
// redirects, at most a few hops, to the upstream's own origin or to a
// host with public addresses only (install GuardedDialContext in the
// transport to hold that at connection time too); any other redirect is
// an error wrapping ErrRedirectRefused.
func New(base string, hc *http.Client) (*Client, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, fmt.Errorf("upstream URL %q: %w", redactString(base), redactErr(err))
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("upstream URL %q: want http://host[:port] or https://host[:port]", redactURL(u))
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	if hc == nil {
		hc = http.DefaultClient
	}
	c := &Client{base: u, hostPort: hostPort(u)}
	own := *hc
	own.CheckRedirect = checkRedirect
	c.hc = &own
	return c, nil
}

// HTTPClient returns the HTTP client the upstream is reached with: a copy
// of New's, with the Client's redirect policy (a request not made by the
// Client follows no redirect).
func (c *Client) HTTPClient() *http.Client { return c.hc }

// Base returns the upstream's base URL.
func (c *Client) Base() *url.URL { u := *c.base; return &u }

// WithAuthorization returns a client that sends the given Authorization
// header value (the downstream client's own) with every request.
func (c *Client) WithAuthorization(auth string) *Client {
	cc := *c
	cc.auth = auth
	return &cc
}

// URL returns the absolute upstream URL of an API path ("/v2/...").
func (c *Client) URL(path string, q url.Values) string {
	u := *c.base
	u.Path = c.base.Path + path
	u.RawQuery = q.Encode()
	return u.String()
}

// request is one upstream call.
type request struct {
	method string
	url    string
	header http.Header
	body   io.Reader
	length int64 // -1: unknown (chunked)
	want   []int
	// blobRead lets redirects be followed (blob GET and HEAD only; the
	// redirect check verifies the path too).
	blobRead bool
}

// do sends r and returns the response if its status is wanted; otherwise
// the body is read and closed and a *StatusError returned. A redirect not
// followed, whatever r wants, is a *TransportError wrapping
// ErrRedirectRefused: its body is never an answer.
func (c *Client) do(ctx context.Context, r request) (*http.Response, error) {
	ctx = context.WithValue(ctx, markKey{}, &hopMark{client: c, blobRead: r.blobRead})
	req, err := http.NewRequestWithContext(ctx, r.method, r.url, r.body)
	if err != nil {
		return nil, fmt.Errorf("upstream request: %w", redactErr(err))
	}
	if r.body != nil {
		req.ContentLength = r.length
		if r.length == 0 {
			req.Body = http.NoBody
		}
	}
	for k, v := range r.header {
		req.Header[k] = v
	}
	if c.auth != "" {
		req.Header.Set("Authorization", c.auth)
	}
	req.Header.Set("User-Agent", "shroud")
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, &TransportError{Method: r.method, Path: req.URL.Path, Err: redactErr(err)}
	}
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		drain(resp)
		return nil, &TransportError{Method: r.method, Path: req.URL.Path,
			Err: fmt.Errorf("%w: %d not followed", ErrRedirectRefused, resp.StatusCode)}
	}
	if !slices.Contains(r.want, resp.StatusCode) {
		return nil, statusError(resp)
	}
	return resp, nil
}

// Do forwards a request as it is (catalog, tags list, referrers, /v2/) and
// returns the response whatever its status, but for a redirect: that is
// not followed, and is an error.
func (c *Client) Do(ctx context.Context, method, path string, q url.Values, header http.Header) (*http.Response, error) {
	return c.do(ctx, request{method: method, url: c.URL(path, q), header: header, want: allStatuses})
}

// Ping asks the upstream's /v2/ without credentials: a registry answers
// 200, or 401 when it wants them.
func (c *Client) Ping(ctx context.Context) error {
	resp, err := c.do(ctx, request{method: http.MethodGet, url: c.URL("/v2/", nil), want: []int{http.StatusOK, http.StatusUnauthorized}})
	if err != nil {
		return err
	}
	drain(resp)
	return nil
}

var allStatuses = func() []int {
	s := make([]int, 0, 500)
	for i := 100; i < 600; i++ {
		s = append(s, i)
	}
	return s
}()

func drain(resp *http.Response) {
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
}

// location resolves a response's Location header, which must be on the
// upstream's origin: the client's Authorization goes there next.
func (c *Client) location(resp *http.Response) (string, error) {
	u, err := resp.Location()
	if err != nil {
		return "", fmt.Errorf("upstream %s %s: %d without a usable Location: %w",
			resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, redactErr(err))
	}
	if !c.onOrigin(u) {
		return "", fmt.Errorf("upstream %s %s: %d with Location %s: %w",
			resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, redactURL(u), ErrForeignLocation)
	}
	return u.String(), nil
}

// onOrigin says whether u is an absolute URL on the upstream's scheme,
// host and port, without userinfo.
func (c *Client) onOrigin(u *url.URL) bool {
	return u.Scheme == c.base.Scheme && u.Host != "" && u.User == nil && hostPort(u) == c.hostPort
}

// sessionURL parses an upload session location and checks that it is on
// the upstream's origin.
func (c *Client) sessionURL(loc string) (*url.URL, error) {
	u, err := url.Parse(loc)
	if err != nil {
		return nil, fmt.Errorf("upload location: %w", redactErr(err))
	}
	if !c.onOrigin(u) {
		return nil, fmt.Errorf("upload location %s: %w", redactURL(u), ErrForeignLocation)
	}
	return u, nil
}

func blobPath(repo string, d digest.Digest) string { return "/v2/" + repo + "/blobs/" + d.String() }

func manifestPath(repo, ref string) string { return "/v2/" + repo + "/manifests/" + ref }

// HeadBlob says whether the repository holds the blob, and its size.
func (c *Client) HeadBlob(ctx context.Context, repo string, d digest.Digest) (size int64, exists bool, err error) {
	resp, err := c.do(ctx, request{method: http.MethodHead, url: c.URL(blobPath(repo, d), nil), want: []int{200, 404}, blobRead: true})
	if err != nil {
		return 0, false, err
	}
	drain(resp)
	return resp.ContentLength, resp.StatusCode == 200, nil
}

// GetBlob opens a blob; rangeHeader, if set, is sent as Range and the
// answer may be 206. The caller closes the body.
func (c *Client) GetBlob(ctx context.Context, repo string, d digest.Digest, rangeHeader string) (*http.Response, error) {
	h := http.Header{}
	if rangeHeader != "" {
		h.Set("Range", rangeHeader)
	}
	return c.do(ctx, request{method: http.MethodGet, url: c.URL(blobPath(repo, d), nil), header: h, want: []int{200, 206}, blobRead: true})
}

// DeleteBlob deletes a blob from a repository.
func (c *Client) DeleteBlob(ctx context.Context, repo string, d digest.Digest) error {
	resp, err := c.do(ctx, request{method: http.MethodDelete, url: c.URL(blobPath(repo, d), nil), want: []int{200, 202, 204}})
	if err != nil {
		return err
	}
	drain(resp)
	return nil
}

// StartUpload opens an upload session and returns its location.
func (c *Client) StartUpload(ctx context.Context, repo string) (string, error) {
	resp, err := c.do(ctx, request{method: http.MethodPost, url: c.URL("/v2/"+repo+"/blobs/uploads/", nil), want: []int{202}})
	if err != nil {
		return "", err
	}
	drain(resp)
	return c.location(resp)
}

// Mount asks for a cross-repository mount of d from repository from. If the
// upstream mounted it, mounted is true; otherwise it opened an upload
// session at location (which the caller uses or cancels).
func (c *Client) Mount(ctx context.Context, repo string, d digest.Digest, from string) (mounted bool, loc string, err error) {
	q := url.Values{"mount": {d.String()}, "from": {from}}
	resp, err := c.do(ctx, request{method: http.MethodPost, url: c.URL("/v2/"+repo+"/blobs/uploads/", q), want: []int{201, 202}})
	if err != nil {
		return false, "", err
	}
	drain(resp)
	if resp.StatusCode == 201 {
		return true, "", nil
	}
	loc, err = c.location(resp)
	return false, loc, err
}

// PatchUpload streams body (length bytes, or -1 for unknown) into the
// session at loc, where it starts at byte offset, and returns the session's
// next location. A chunk of known length says where it goes with
// Content-Range, which some registries require after the first chunk.
func (c *Client) PatchUpload(ctx context.Context, loc string, body io.Reader, offset, length int64) (string, error) {
	if _, err := c.sessionURL(loc); err != nil {
		return "", err
	}
	h := http.Header{"Content-Type": {"application/octet-stream"}}
	if length > 0 {
		h.Set("Content-Range", fmt.Sprintf("%d-%d", offset, offset+length-1))
	}
	resp, err := c.do(ctx, request{method: http.MethodPatch, url: loc, header: h, body: body, length: length, want: []int{202, 204}})
	if err != nil {
		return "", err
	}
	drain(resp)
	return c.location(resp)
}

// UploadStatus asks for the state of the session at loc, changing
// nothing: whether the upstream lets the credentials at hand touch it,
// and the offset it holds (its Range, "0-<last>"; -1 when it names none).
// "0-0" is 0 or 1 byte: the spec's empty session says it too.
func (c *Client) UploadStatus(ctx context.Context, loc string) (int64, error) {
	if _, err := c.sessionURL(loc); err != nil {
		return -1, err
	}
	resp, err := c.do(ctx, request{method: http.MethodGet, url: loc, want: []int{200, 204}})
	if err != nil {
		return -1, err
	}
	drain(resp)
	return parseUploadRange(resp.Header.Get("Range")), nil
}

// parseUploadRange reads an upload's Range ("0-<last>", also with
// "bytes="): the number of bytes held, or -1.
func parseUploadRange(v string) int64 {
	v = strings.TrimPrefix(strings.TrimSpace(v), "bytes=")
	a, b, ok := strings.Cut(v, "-")
	if !ok || a != "0" {
		return -1
	}
	last, err := strconv.ParseInt(b, 10, 64)
	if err != nil || last < 0 {
		return -1
	}
	if last == 0 {
		return 0
	}
	return last + 1
}

// CommitUpload completes the session at loc as blob d.
func (c *Client) CommitUpload(ctx context.Context, loc string, d digest.Digest) error {
	u, err := c.sessionURL(loc)
	if err != nil {
		return err
	}
	q := u.Query()
	q.Set("digest", d.String())
	u.RawQuery = q.Encode()
	resp, err := c.do(ctx, request{method: http.MethodPut, url: u.String(), body: http.NoBody, length: 0, want: []int{201, 204}})
	if err != nil {
		return err
	}
	drain(resp)
	return nil
}

// CancelUpload deletes the session at loc.
func (c *Client) CancelUpload(ctx context.Context, loc string) error {
	if _, err := c.sessionURL(loc); err != nil {
		return err
	}
	resp, err := c.do(ctx, request{method: http.MethodDelete, url: loc, want: []int{200, 202, 204, 404}})
	if err != nil {
		return err
	}
	drain(resp)
	return nil
}

// Manifest is a manifest as the upstream served it.
type Manifest struct {
	Body        []byte
	ContentType string
	Digest      digest.Digest
}

// GetManifest fetches a manifest by tag or digest. A fetch by digest is
// verified against it.
func (c *Client) GetManifest(ctx context.Context, repo, ref string) (Manifest, error) {
	h := http.Header{"Accept": {ManifestAccept}}
	resp, err := c.do(ctx, request{method: http.MethodGet, url: c.URL(manifestPath(repo, ref), nil), header: h, want: []int{200}})
	if err != nil {
		return Manifest{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxManifestSize+1))
	if err != nil {
		return Manifest{}, &TransportError{Method: "GET", Path: resp.Request.URL.Path, Err: err}
	}
	if len(body) > MaxManifestSize {
		return Manifest{}, fmt.Errorf("upstream manifest %s:%s is larger than %d bytes", repo, ref, MaxManifestSize)
	}
	m := Manifest{Body: body, ContentType: resp.Header.Get("Content-Type"), Digest: digest.FromBytes(body)}
	if d, err := digest.Parse(ref); err == nil && d != m.Digest {
		return Manifest{}, fmt.Errorf("upstream manifest %s@%s: content has digest %s", repo, ref, m.Digest)
	}
	return m, nil
}

// HeadManifest returns a manifest's digest, content type and size without
// its body. The digest is empty if the upstream did not send it.
func (c *Client) HeadManifest(ctx context.Context, repo, ref string) (d digest.Digest, contentType string, size int64, err error) {
	h := http.Header{"Accept": {ManifestAccept}}
	resp, err := c.do(ctx, request{method: http.MethodHead, url: c.URL(manifestPath(repo, ref), nil), header: h, want: []int{200}})
	if err != nil {
		return "", "", 0, err
	}
	drain(resp)
	d, _ = digest.Parse(resp.Header.Get("Docker-Content-Digest"))
	return d, resp.Header.Get("Content-Type"), resp.ContentLength, nil
}

// PutManifest stores a manifest under ref (a tag, or its digest) and
// returns its digest and whether the upstream said it processed the
// manifest's subject (OCI-Subject).
func (c *Client) PutManifest(ctx context.Context, repo, ref, contentType string, body []byte) (d digest.Digest, subjectProcessed bool, err error) {
	h := http.Header{"Content-Type": {contentType}}
	resp, err := c.do(ctx, request{method: http.MethodPut, url: c.URL(manifestPath(repo, ref), nil), header: h, body: bytes.NewReader(body), length: int64(len(body)), want: []int{201, 200, 202}})
	if err != nil {
		return "", false, err
	}
	drain(resp)
	return digest.FromBytes(body), resp.Header.Get("OCI-Subject") != "", nil
}

// DeleteManifest deletes a manifest by digest (or a tag, where the upstream
// allows it).
func (c *Client) DeleteManifest(ctx context.Context, repo, ref string) error {
	resp, err := c.do(ctx, request{method: http.MethodDelete, url: c.URL(manifestPath(repo, ref), nil), want: []int{200, 202, 204}})
	if err != nil {
		return err
	}
	drain(resp)
	return nil
}

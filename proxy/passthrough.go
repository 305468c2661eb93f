package proxy

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"

	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/proxy/upstream"

	"github.com/gorilla/mux"
)

// ping answers /v2/ as the upstream does: 200 once the upstream answers,
// and the upstream's 401 challenge unchanged.
//
// Under shroud's own authentication shroud answers itself: a client with
// credentials that checked gets 200, an anonymous one the challenge, so
// that it learns to send its credentials.
func (h *Handler) ping(w http.ResponseWriter, r *http.Request) error {
	if h.ownAuth() {
		if principal(r.Context()).IsAnonymous() {
			return h.unauthorized(r, "", errors.New("credentials required"))
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "2")
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			io.WriteString(w, "{}")
		}
		return nil
	}
	return h.forward(w, r, "/v2/", nil)
}

// maxCatalogPage bounds the catalog page read from the upstream (a page of
// the default 100 names is a few KiB; distribution caps n at 1000).
const maxCatalogPage = 16 << 20

// catalog answers the upstream's catalog without the repositories the
// policy denies: their names are not for clients to learn either. A page
// may so hold fewer names than n; its Link still leads to the next.
// Under shroud's own authentication it lists only what the client may
// pull, and an anonymous client no rule grants anything to is asked for
// credentials.
func (h *Handler) catalog(w http.ResponseWriter, r *http.Request) error {
	if h.ownAuth() && principal(r.Context()).IsAnonymous() && !h.access.AnyAnonymous() {
		return h.unauthorized(r, "registry:catalog:*", errors.New("credentials required"))
	}
	be := h.backend(r)
	resp, err := be.cl.Do(r.Context(), r.Method, "/v2/_catalog", r.URL.Query(), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return h.passResponse(w, r, resp, be.cl.Base())
	}
	var page struct {
		Repositories []string `json:"repositories"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxCatalogPage)).Decode(&page); err != nil {
		return &apiError{status: http.StatusBadGateway, code: codeUnknown, message: "the upstream's catalog does not parse", cause: err}
	}
	visible := make([]string, 0, len(page.Repositories))
	for _, name := range page.Repositories {
		if rule := h.policy.Match(name); rule != nil && rule.Action != crypto.Deny && h.mayPull(r.Context(), name) {
			visible = append(visible, name)
		}
	}
	if link := resp.Header.Get("Link"); link != "" {
		w.Header().Set("Link", rewriteLink(be.cl.Base(), link))
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(map[string][]string{"repositories": visible})
}

// Bounds on a tag list page: the bytes read of one upstream page (a page
// of 1,000 tags is some 100 KiB), the upstream pages read for one client
// page, and the least shroud asks the upstream for when the client names
// n (pointer tags take room in the upstream's pages, and are not shown).
const (
	maxTagsPage     = 4 << 20
	maxTagPages     = 8
	minUpstreamTags = 100
)

// tags answers a repository's tag list without shroud's pointer tags
// (pointer.go). With n, the page is filled from as many upstream pages as
// it takes (at most maxTagPages): a page may hold fewer tags than n, even
// none, but its Link leads on as long as the upstream has more. The Link
// starts the next page after the last tag served when the page filled,
// else where the upstream's own next page starts. Without n the upstream's
// first page is answered, filtered, with a Link to its next. Only n and
// last are passed on (and ns, in the Link).
func (h *Handler) tags(w http.ResponseWriter, r *http.Request) error {
	repo := mux.Vars(r)["name"]
	ctx, be := r.Context(), h.backend(r)
	in := r.URL.Query()
	want := -1 // whatever the upstream's first page holds
	if n := in.Get("n"); n != "" {
		v, err := strconv.Atoi(n)
		if err != nil || v <= 0 {
			// Nothing to hide in no tags; the upstream's answer to an n
			// it does not take.
			return h.forward(w, r, "/v2/"+repo+"/tags/list", in)
		}
		want = v
	}
	cursor := in.Get("last")
	visible := []string{}
	more := false
	for page := 0; ; page++ {
		q := url.Values{}
		if cursor != "" {
			q.Set("last", cursor)
		}
		if want > 0 {
			q.Set("n", strconv.Itoa(max(want, minUpstreamTags)))
		}
		resp, err := be.cl.Do(ctx, http.MethodGet, "/v2/"+repo+"/tags/list", q, nil)
		if page == 0 {
			if err != nil {
				return err
			}
			if resp.StatusCode != http.StatusOK {
				defer resp.Body.Close()
				return h.passResponse(w, r, resp, be.cl.Base())
			}
		} else if err != nil || resp.StatusCode != http.StatusOK {
			// What has been read is served; the client asking for
			// the next page gets the upstream's answer itself.
			if err == nil {
				resp.Body.Close()
			}
			more = true
			break
		}
		var list struct {
			Tags []string `json:"tags"`
		}
		err = json.NewDecoder(io.LimitReader(resp.Body, maxTagsPage)).Decode(&list)
		next, hasNext := linkLast(resp.Header.Get("Link"))
		resp.Body.Close()
		if err != nil {
			return &apiError{status: http.StatusBadGateway, code: codeUnknown, message: "the upstream's tag list does not parse", cause: err}
		}
		full := false
		for _, tag := range list.Tags {
			if isPointerTag(tag) {
				continue
			}
			if len(visible) == want {
				full = true // want > 0: the page is full, this tag starts the next
				break
			}
			visible = append(visible, tag)
		}
		if full || (len(visible) == want && hasNext) {
			cursor, more = visible[len(visible)-1], true
			break
		}
		if !hasNext {
			more = false
			break
		}
		if next == "" && len(list.Tags) > 0 {
			next = list.Tags[len(list.Tags)-1]
		}
		if next == "" || next == cursor {
			// A Link that leads nowhere new: the upstream's list
			// ends here as far as shroud can follow it.
			more = false
			break
		}
		cursor, more = next, true
		if want < 0 || page+1 == maxTagPages {
			break
		}
	}
	if more {
		q := url.Values{"last": {cursor}}
		if want > 0 {
			q.Set("n", strconv.Itoa(want))
		}
		if ns := in.Get("ns"); ns != "" {
			q.Set("ns", ns)
		}
		w.Header().Set("Link", "</v2/"+repo+"/tags/list?"+q.Encode()+`>; rel="next"`)
	}
	body, err := json.Marshal(map[string]any{"name": repo, "tags": visible})
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	w.Write(body)
	return nil
}

// linkLast reads the last parameter of a Link header's next URL; ok says
// there is a next page.
func linkLast(link string) (last string, ok bool) {
	start, end := strings.Index(link, "<"), strings.Index(link, ">")
	if start < 0 || end < start {
		return "", false
	}
	u, err := url.Parse(link[start+1 : end])
	if err != nil {
		return "", true
	}
	return u.Query().Get("last"), true
}

// forward relays a read-only request to the upstream and its answer back,
// with a Link header pointing at shroud rather than the upstream.
func (h *Handler) forward(w http.ResponseWriter, r *http.Request, path string, q url.Values) error {
	hdr := http.Header{}
	if a := r.Header.Values("Accept"); len(a) > 0 {
		hdr["Accept"] = a
	}
	be := h.backend(r)
	resp, err := be.cl.Do(r.Context(), r.Method, path, q, hdr)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return h.passResponse(w, r, resp, be.cl.Base())
}

// passResponse relays an upstream answer (passResponse); under shroud's
// own authentication an upstream 401 is shroud's credentials refused, a
// 502, never the upstream's challenge, which a client would answer by
// sending the upstream's token service what it holds for shroud.
func (h *Handler) passResponse(w http.ResponseWriter, r *http.Request, resp *http.Response, base *url.URL) error {
	if h.ownAuth() && resp.StatusCode == http.StatusUnauthorized {
		return &apiError{status: http.StatusBadGateway, code: codeUnavailable, message: "the upstream registry refused shroud's credentials", cause: errUpstreamRefusedShroud}
	}
	return passResponse(w, r, resp, base)
}

// passResponse relays an upstream answer: status, the headers a client
// needs (Link pointing at shroud) and body.
func passResponse(w http.ResponseWriter, r *http.Request, resp *http.Response, base *url.URL) error {
	for _, k := range []string{"Content-Type", "Content-Length", "Www-Authenticate", "Docker-Distribution-Api-Version", "Retry-After", "Oci-Filters-Applied"} {
		if v := resp.Header.Values(k); len(v) > 0 {
			w.Header()[k] = v
		}
	}
	if link := resp.Header.Get("Link"); link != "" {
		w.Header().Set("Link", rewriteLink(base, link))
	}
	w.WriteHeader(resp.StatusCode)
	if r.Method != http.MethodHead {
		io.Copy(w, resp.Body)
	}
	return nil
}

// reverseProxy relays every request of a passthrough repository to the
// upstream as it is, streaming, with Location and Link pointing at shroud.
//
// With ownAuth the client's Authorization stays with shroud (the
// upstream is asked with shroud's credentials, its client's transport),
// and an upstream 401 is shroud's problem, a 502, not a challenge the
// client would answer with what it sent shroud.
func reverseProxy(up *upstream.Client, ownAuth bool) http.Handler {
	base := up.Base()
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			if ownAuth {
				pr.Out.Header.Del("Authorization")
			}
			pr.SetURL(base)
			q := pr.Out.URL.Query()
			q.Del("ns") // containerd's mirror parameter is shroud's, not the upstream's
			pr.Out.URL.RawQuery = q.Encode()
		},
		Transport: up.HTTPClient().Transport,
		ModifyResponse: func(resp *http.Response) error {
			if ownAuth && resp.StatusCode == http.StatusUnauthorized {
				return errUpstreamRefusedShroud
			}
			if loc := resp.Header.Get("Location"); loc != "" {
				resp.Header.Set("Location", relativeTo(base, loc))
			}
			if link := resp.Header.Get("Link"); link != "" {
				resp.Header.Set("Link", rewriteLink(base, link))
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			writeAPIError(w, r, &apiError{status: http.StatusBadGateway, code: codeUnavailable, message: "the upstream registry cannot be reached", cause: err})
		},
	}
}

var errUpstreamRefusedShroud = errors.New("the upstream registry refused shroud's credentials")

// relativeTo makes an absolute URL on the upstream relative, so that the
// client follows it to shroud.
func relativeTo(base *url.URL, s string) string {
	u, err := url.Parse(s)
	if err != nil || !u.IsAbs() || u.Host != base.Host {
		return s
	}
	rel := strings.TrimPrefix(u.Path, base.Path)
	if u.RawQuery != "" {
		rel += "?" + u.RawQuery
	}
	return rel
}

// rewriteLink makes a Link header's absolute upstream URLs relative, so
// that the client follows them to shroud.
func rewriteLink(base *url.URL, link string) string {
	var out []string
	for _, part := range strings.Split(link, ",") {
		start, end := strings.Index(part, "<"), strings.Index(part, ">")
		if start < 0 || end < start {
			out = append(out, part)
			continue
		}
		out = append(out, part[:start+1]+relativeTo(base, part[start+1:end])+part[end:])
	}
	return strings.Join(out, ",")
}

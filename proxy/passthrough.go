package proxy

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
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

func (h *Handler) tags(w http.ResponseWriter, r *http.Request) error {
	return h.forward(w, r, "/v2/"+mux.Vars(r)["name"]+"/tags/list", r.URL.Query())
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

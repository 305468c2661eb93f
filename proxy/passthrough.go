package proxy

import (
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/gorilla/mux"
)

// ping answers /v2/ as the upstream does: 200 once the upstream answers,
// and the upstream's 401 challenge unchanged.
func (h *Handler) ping(w http.ResponseWriter, r *http.Request) error {
	return h.forward(w, r, "/v2/", nil)
}

func (h *Handler) catalog(w http.ResponseWriter, r *http.Request) error {
	return h.forward(w, r, "/v2/_catalog", r.URL.Query())
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
	resp, err := h.backend(r).cl.Do(r.Context(), r.Method, path, q, hdr)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return h.passResponse(w, r, resp)
}

// passResponse relays an upstream answer: status, the headers a client
// needs (Link pointing at shroud) and body.
func (h *Handler) passResponse(w http.ResponseWriter, r *http.Request, resp *http.Response) error {
	for _, k := range []string{"Content-Type", "Content-Length", "Www-Authenticate", "Docker-Distribution-Api-Version", "Retry-After", "Oci-Filters-Applied"} {
		if v := resp.Header.Values(k); len(v) > 0 {
			w.Header()[k] = v
		}
	}
	if link := resp.Header.Get("Link"); link != "" {
		w.Header().Set("Link", h.rewriteLink(link))
	}
	w.WriteHeader(resp.StatusCode)
	if r.Method != http.MethodHead {
		io.Copy(w, resp.Body)
	}
	return nil
}

// rewriteLink makes a Link header's absolute upstream URLs relative, so
// that the client follows them to shroud.
func (h *Handler) rewriteLink(link string) string {
	base := h.def.cl.Base()
	var out []string
	for _, part := range strings.Split(link, ",") {
		start, end := strings.Index(part, "<"), strings.Index(part, ">")
		if start < 0 || end < start {
			out = append(out, part)
			continue
		}
		u, err := url.Parse(part[start+1 : end])
		if err != nil {
			out = append(out, part)
			continue
		}
		if u.IsAbs() && u.Host == base.Host {
			rel := strings.TrimPrefix(u.Path, base.Path)
			if u.RawQuery != "" {
				rel += "?" + u.RawQuery
			}
			part = part[:start+1] + rel + part[end:]
		}
		out = append(out, part)
	}
	return strings.Join(out, ",")
}

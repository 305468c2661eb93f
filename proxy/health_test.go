package proxy_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/shroud-oci/shroud/internal/shroudtest"
)

// Kubernetes probes: /healthz is 200 while shroud serves; /readyz is 200
// when every upstream answers /v2/ (a 401 asking for credentials counts:
// the registry is there) and 503 naming the upstream that does not, with
// the cause in shroud's log rather than in an unauthenticated answer.
func TestProbes(t *testing.T) {
	authed := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("WWW-Authenticate", `Basic realm="r"`)
		w.WriteHeader(http.StatusUnauthorized)
	}))
	defer authed.Close()
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()

	ready := func(s shroudtest.Shroud) (int, map[string]any) {
		t.Helper()
		a := call{t, s.URL}.do("GET", "/readyz", nil)
		var body map[string]any
		if err := json.Unmarshal(a.body, &body); err != nil {
			t.Fatalf("/readyz answered %d %q: %v", a.status, a.body, err)
		}
		return a.status, body
	}

	s := shroudtest.Start(t, shroudtest.Distribution(t), shroudtest.WithMirror("quay.io", shroudtest.Upstream{URL: authed.URL}))
	if a := (call{t, s.URL}).do("GET", "/healthz", nil); a.status != 200 || string(a.body) != "ok\n" {
		t.Fatalf("/healthz: %d %q", a.status, a.body)
	}
	if st, body := ready(s); st != 200 || body["ready"] != true {
		t.Fatalf("/readyz with a live upstream and one asking for credentials: %d %v", st, body)
	}

	s = shroudtest.Start(t, shroudtest.Distribution(t), shroudtest.WithMirror("docker.io", shroudtest.Upstream{URL: dead.URL}))
	st, body := ready(s)
	ups, _ := body["upstreams"].(map[string]any)
	if st != 503 || body["ready"] != false || ups["docker.io"] != "unavailable" || ups["default"] != "ok" {
		t.Fatalf("/readyz with a dead mirror upstream: %d %v", st, body)
	}
	// A probe is not a repository: the policy does not apply to it.
	if a := (call{t, s.URL}).do("GET", "/healthz", nil); a.status != 200 {
		t.Fatalf("/healthz with a dead mirror upstream: %d", a.status)
	}
}

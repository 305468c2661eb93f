package proxy

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"time"
)

// Probe paths, outside the distribution API's /v2/.
const (
	livePath  = "/healthz"
	readyPath = "/readyz"
)

// readyTimeout bounds each upstream's answer to a readiness probe.
const readyTimeout = 5 * time.Second

// healthz answers a liveness probe: the process serves requests.
func (h *Handler) healthz(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte("ok\n"))
	return nil
}

// readiness is the body of /readyz: each upstream by name ("default",
// or a mirror's origin host) and "ok" or what failed.
type readiness struct {
	Ready     bool              `json:"ready"`
	Upstreams map[string]string `json:"upstreams"`
	// Shared is the shared tier: "ok", or "degraded" while it fails
	// (shroud serves on, from memory and the upstream: still ready).
	Shared string `json:"shared,omitempty"`
	// Draining says the process is shutting down (SIGTERM): not ready,
	// finishing what is in flight.
	Draining bool `json:"draining,omitempty"`
}

// readyz answers a readiness probe: 200 when every upstream answers its
// /v2/ (200, or 401 asking for credentials), else 503; 503 at once while
// draining. A failing shared tier is "degraded", still 200: shroud
// serves correctly without it. Only the status of each part is answered;
// the cause is logged.
func (h *Handler) readyz(w http.ResponseWriter, r *http.Request) error {
	if h.draining.Load() {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		return json.NewEncoder(w).Encode(readiness{Draining: true, Upstreams: map[string]string{}})
	}
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	backends := map[string]*backend{"default": h.def}
	for ns, b := range h.mirrors {
		backends[ns] = b
	}
	rd := readiness{Ready: true, Upstreams: map[string]string{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for name, b := range backends {
		wg.Go(func() {
			err := b.cl.Ping(ctx)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				rd.Ready = false
				rd.Upstreams[name] = "unavailable"
				logger(r.Context()).Warn("readiness: upstream unavailable", "upstream", name, "err", err)
				return
			}
			rd.Upstreams[name] = "ok"
		})
	}
	if h.sharedHealth != nil {
		wg.Go(func() {
			err := h.sharedHealth(ctx)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				rd.Shared = "degraded"
				logger(r.Context()).Warn("readiness: shared tier unavailable, serving without it", "err", err)
				return
			}
			rd.Shared = "ok"
		})
	}
	wg.Wait()
	status := http.StatusOK
	if !rd.Ready {
		status = http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(rd)
}

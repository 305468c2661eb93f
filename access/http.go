package access

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/shroud-oci/shroud/audit"
)

// PathPrefix is where the public access API is served on shroud's
// registry listener, apart from the distribution API under /v2/.
const PathPrefix = "/shroud/v1/access"

// Handler serves the requesters' side of the access API:
//
//	GET  /shroud/v1/access                 {"audience": <identity key id>, "version": PayloadVersion}
//	POST /shroud/v1/access/requests        a signed request (compact JWS): 201 (or 200 for one pending already) {"id","state"}
//	GET  /shroud/v1/access/requests/{id}   {"id","state","decided_at","reason","expires"}: the requester polls
//
// Nobody needs credentials: a request opens nothing until an owner
// approves it, and a request id (128 random bits) is all a poll shows.
// Listing and deciding are the owners' (the admin API).
type Handler struct {
	Store  *Store
	Logger *slog.Logger
	Audit  *audit.Logger
	// ReadTimeout bounds the time a request's body takes to arrive
	// (anyone may send one); zero or less means 10 s.
	ReadTimeout time.Duration
	// AutoApprove, when set, is asked about each new request: it may
	// approve it at once (admin.Server.AutoApprove, by the signed allow
	// list) and returns it as it then is.
	AutoApprove func(ctx context.Context, id string) (Request, bool)
}

var _ http.Handler = (*Handler)(nil)

// status is what a requester sees of its request.
type status struct {
	ID        string    `json:"id"`
	State     State     `json:"state"`
	DecidedAt time.Time `json:"decided_at,omitzero"`
	Reason    string    `json:"reason,omitempty"`
	Expires   time.Time `json:"expires,omitzero"`
}

func statusOf(r Request) status {
	return status{ID: r.ID, State: r.State, DecidedAt: r.DecidedAt, Reason: r.Reason, Expires: r.Expires}
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	rest := strings.TrimPrefix(r.URL.Path, PathPrefix)
	switch {
	case rest == "" || rest == "/":
		if r.Method != http.MethodGet {
			WriteError(w, http.StatusMethodNotAllowed, "UNSUPPORTED", "method not allowed")
			return
		}
		WriteJSON(w, http.StatusOK, map[string]string{"audience": h.Store.Audience(), "version": PayloadVersion})
	case rest == "/requests":
		if r.Method != http.MethodPost {
			WriteError(w, http.StatusMethodNotAllowed, "UNSUPPORTED", "method not allowed")
			return
		}
		h.submit(w, r)
	case strings.HasPrefix(rest, "/requests/"):
		if r.Method != http.MethodGet {
			WriteError(w, http.StatusMethodNotAllowed, "UNSUPPORTED", "method not allowed")
			return
		}
		id := strings.TrimPrefix(rest, "/requests/")
		req, err := h.Store.Get(id)
		if !validID(id) || err != nil {
			WriteError(w, http.StatusNotFound, "NOT_FOUND", "no such access request")
			return
		}
		WriteJSON(w, http.StatusOK, statusOf(req))
	default:
		WriteError(w, http.StatusNotFound, "NOT_FOUND", "no such access resource")
	}
}

func (h *Handler) submit(w http.ResponseWriter, r *http.Request) {
	d := h.ReadTimeout
	if d <= 0 {
		d = 10 * time.Second
	}
	// A body that does not arrive in time is cut: a request is small.
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(d))
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxRequestBytes))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		WriteError(w, http.StatusRequestEntityTooLarge, "SIZE_INVALID", "a request is at most 64 KiB")
		return
	case err != nil:
		WriteError(w, http.StatusBadRequest, "INVALID", "the request's body did not arrive")
		return
	}
	remote, _, _ := net.SplitHostPort(r.RemoteAddr)
	req, created, err := h.Store.Submit(body, remote)
	var inv *InvalidError
	switch {
	case errors.As(err, &inv):
		// Anyone can send these: the debug log, not the audit log, so
		// that they cannot flood it.
		h.log().Debug("access: request refused", "remote", r.RemoteAddr, "err", inv.Error())
		WriteError(w, http.StatusBadRequest, "INVALID", inv.Error())
		return
	case errors.Is(err, ErrTooMany):
		w.Header().Set("Retry-After", "3600")
		WriteError(w, http.StatusTooManyRequests, "TOOMANYREQUESTS", err.Error())
		return
	case err != nil:
		h.log().Error("access: a request could not be kept", "err", err)
		WriteError(w, http.StatusInternalServerError, "INTERNAL", "the request could not be kept; see the server's log")
		return
	}
	code := http.StatusOK
	if created {
		code = http.StatusCreated
		h.audit(audit.Event{Step: "request", Outcome: "pending", KeyID: req.KeyID, Repository: strings.Join(req.Repositories, ","),
			Actor: req.Name, Detail: "access request " + req.ID + " from " + r.RemoteAddr})
		h.log().Info("access: request pending", "request", req.ID, "name", req.Name, "key_id", req.KeyID, "repositories", len(req.Repositories))
		if h.AutoApprove != nil {
			if approved, ok := h.AutoApprove(context.WithoutCancel(r.Context()), req.ID); ok {
				req = approved
			}
		}
	}
	w.Header().Set("Location", PathPrefix+"/requests/"+req.ID)
	WriteJSON(w, code, statusOf(req))
}

func (h *Handler) log() *slog.Logger {
	if h.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return h.Logger
}

func (h *Handler) audit(e audit.Event) {
	e.Kind = audit.Access
	if err := h.Audit.Log(e); err != nil {
		h.log().Error("audit log write failed", "err", err)
	}
}

// WriteJSON writes v with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// WriteError writes an error in the OCI error JSON's shape.
func WriteError(w http.ResponseWriter, status int, code, msg string) {
	WriteJSON(w, status, map[string]any{"errors": []map[string]string{{"code": code, "message": msg}}})
}

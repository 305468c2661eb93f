package admin

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/shroud-oci/shroud/access"
	"github.com/shroud-oci/shroud/audit"
	"github.com/shroud-oci/shroud/jobs"
)

// accessDecision is the answer to an approval or a denial: the request,
// and the rewrap job that applies the decision to the stored images (or
// why none was started: RewrapLater, a job running already).
type accessDecision struct {
	Request     access.Request `json:"request"`
	Job         *jobView       `json:"job,omitempty"`
	RewrapLater string         `json:"rewrap_later,omitempty"`
}

func (s *Server) listAccess(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, struct {
		Requests []access.Request `json:"requests"`
	}{s.o.Access.List()})
}

func (s *Server) getAccess(w http.ResponseWriter, r *http.Request) {
	req, err := s.o.Access.Get(mux.Vars(r)["id"])
	if err != nil {
		writeError(w, http.StatusNotFound, "NOT_FOUND", "no such access request")
		return
	}
	writeJSON(w, http.StatusOK, req)
}

func (s *Server) approveAccess(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Expires time.Time `json:"expires,omitzero"`
	}
	if !decodeOptional(w, r, &body) {
		return
	}
	id := mux.Vars(r)["id"]
	req, err := s.o.Access.Approve(id, "token", body.Expires)
	s.decided(w, r, "approve", id, req, err)
}

func (s *Server) denyAccess(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Reason string `json:"reason,omitempty"`
	}
	if !decodeOptional(w, r, &body) {
		return
	}
	id := mux.Vars(r)["id"]
	req, err := s.o.Access.Deny(id, "token", body.Reason)
	s.decided(w, r, "deny", id, req, err)
}

// decided answers a decision and starts the rewrap that applies it.
func (s *Server) decided(w http.ResponseWriter, r *http.Request, step, id string, req access.Request, err error) {
	var inv *access.InvalidError
	switch {
	case errors.Is(err, access.ErrNotFound):
		writeError(w, http.StatusNotFound, "NOT_FOUND", "no such access request")
		return
	case errors.Is(err, access.ErrNotPending), errors.As(err, &inv):
		s.audit(audit.Event{Kind: audit.Access, Step: step, Outcome: "refused", Actor: "token", Detail: "access request " + id + ": " + truncate(err.Error(), 300)})
		writeError(w, http.StatusConflict, "CONFLICT", err.Error())
		return
	case err != nil:
		s.log.Error("admin: an access decision could not be kept", "request", id, "err", err)
		writeError(w, http.StatusInternalServerError, "INTERNAL", "the decision could not be kept; see the server's log")
		return
	}
	s.audit(audit.Event{Kind: audit.Access, Step: step, Outcome: string(req.State), Actor: "token", KeyID: req.KeyID,
		Repository: strings.Join(req.Repositories, ","), Detail: "access request " + id + " (" + req.Name + ")"})
	s.log.Info("admin: access request decided", "request", id, "state", string(req.State), "key_id", req.KeyID)
	out := accessDecision{Request: req}
	if req.State == access.Denied && !req.WasGranted {
		// Nothing was ever wrapped for the key: nothing to take back.
		writeJSON(w, http.StatusOK, out)
		return
	}
	v, _, _, msg := s.start(r, jobs.Spec{Kind: jobs.Rewrap, Repositories: req.Repositories}, "token")
	if v != nil {
		out.Job = v
	} else {
		out.RewrapLater = "the stored images are not rewrapped yet (" + msg + "): start a rewrap job of " + strings.Join(req.Repositories, ", ")
	}
	writeJSON(w, http.StatusOK, out)
}

// decodeOptional reads an optional JSON body into v, answering 400 when
// it does not parse.
func decodeOptional(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, "INVALID", "the body: "+truncate(err.Error(), 200))
		return false
	}
	return true
}

package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/shroud-oci/shroud/access"
	"github.com/shroud-oci/shroud/audit"
	"github.com/shroud-oci/shroud/jobs"
	"github.com/shroud-oci/shroud/proxy"
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
		// OwnerApproval (encrypt-only repositories): the owner's signed
		// wrapped keys (access.OwnerApproval).
		OwnerApproval string `json:"owner_approval,omitempty"`
	}
	if !decodeOptional(w, r, &body) {
		return
	}
	id := mux.Vars(r)["id"]
	if body.OwnerApproval != "" {
		s.approveByOwner(w, r, id, body.OwnerApproval)
		return
	}
	req, err := s.o.Access.Approve(id, actorOf(r), body.Expires)
	s.decided(w, r, "approve", id, req, err)
}

// accessLayers lists the encrypted layers of a request's repositories
// (their ciphertext digests and wrapped keys, nothing secret): what an
// owner unwraps and wraps for the request's key (shroud access approve
// --key).
func (s *Server) accessLayers(w http.ResponseWriter, r *http.Request) {
	req, err := s.o.Access.Get(mux.Vars(r)["id"])
	if err != nil {
		writeError(w, http.StatusNotFound, "NOT_FOUND", "no such access request")
		return
	}
	out := struct {
		Request  access.Request         `json:"request"`
		Audience string                 `json:"audience"`
		Layers   []proxy.EncryptedLayer `json:"layers"`
	}{Request: req, Audience: s.o.Access.Audience(), Layers: []proxy.EncryptedLayer{}}
	for _, repo := range req.Repositories {
		ls, err := s.o.Handler.EncryptedLayers(r.Context(), repo)
		if err != nil {
			s.log.Error("admin: list the encrypted layers of an access request", "request", req.ID, "repository", repo, "err", err)
			writeError(w, http.StatusBadGateway, "UPSTREAM", "the layers of "+repo+" could not be listed; see the server's log")
			return
		}
		out.Layers = append(out.Layers, ls...)
	}
	writeJSON(w, http.StatusOK, out)
}

// approveByOwner grants a request of encrypt-only repositories with an
// owner's approval: the signer must be a recipient of each repository's
// rule; its wrapped keys are added to the stored images first, and the
// request is approved once they all are (until then it stays pending,
// and the approval can be submitted again).
func (s *Server) approveByOwner(w http.ResponseWriter, r *http.Request, id, jws string) {
	req, err := s.o.Access.Get(id)
	if err != nil {
		writeError(w, http.StatusNotFound, "NOT_FOUND", "no such access request")
		return
	}
	refuse := func(err error) {
		s.audit(audit.Event{Kind: audit.Access, Step: "approve", Outcome: "refused", Actor: actorOf(r), Detail: "access request " + id + " (owner approval): " + truncate(err.Error(), 300)})
		writeError(w, http.StatusConflict, "CONFLICT", err.Error())
	}
	if req.State != access.Pending {
		refuse(fmt.Errorf("%w: it is %s", access.ErrNotPending, req.State))
		return
	}
	a, ownerID, err := access.VerifyOwnerApproval(jws, req, s.o.Access.Audience(), time.Now())
	if err == nil {
		err = s.o.Access.OwnerMayApprove(req, ownerID)
	}
	for _, repo := range req.Repositories {
		if err == nil {
			if kerr := s.o.Handler.OwnerKeyAllowed(r.Context(), repo, ownerID); kerr != nil {
				err = fmt.Errorf("the owner key may not approve for %s: %w", repo, kerr)
			} else if kerr := s.o.Handler.GrantAllowed(repo, req.KeyID); kerr != nil {
				err = fmt.Errorf("the request's key may not be granted %s: %w", repo, kerr)
			}
		}
	}
	if err != nil {
		refuse(err)
		return
	}
	byRepo := map[string][]proxy.LayerWraps{}
	for _, wr := range a.Wraps {
		byRepo[wr.Repository] = append(byRepo[wr.Repository], proxy.LayerWraps{CipherDigest: wr.CipherDigest, PlainDigest: wr.PlainDigest, Annotations: wr.Annotations})
	}
	rewritten := 0
	for _, repo := range req.Repositories {
		rep, err := s.o.Handler.AddWrappedKeys(r.Context(), repo, req.KeyID, byRepo[repo])
		rewritten += rep.Rewritten
		if err != nil {
			s.log.Error("admin: an owner approval's wrapped keys could not all be stored", "request", id, "repository", repo, "err", err)
			s.audit(audit.Event{Kind: audit.Access, Step: "approve", Outcome: "failed", Actor: actorOf(r), KeyID: ownerID, Repository: repo,
				Detail: "access request " + id + ": " + truncate(err.Error(), 300)})
			writeError(w, http.StatusBadGateway, "UPSTREAM", "the wrapped keys could not all be stored in "+repo+" (the request stays pending: submit the approval again); see the server's log")
			return
		}
	}
	req, err = s.o.Access.ApproveByOwner(id, actorOf(r), ownerID, a.Expires)
	if err != nil {
		s.decided(w, r, "approve", id, req, err)
		return
	}
	s.audit(audit.Event{Kind: audit.Access, Step: "approve", Outcome: string(req.State), Actor: actorOf(r), KeyID: req.KeyID,
		Repository: strings.Join(req.Repositories, ","), Detail: fmt.Sprintf("access request %s (%s), by owner key %s: %d wrapped keys, %d manifests rewritten", id, req.Name, ownerID, len(a.Wraps), rewritten)})
	s.log.Info("admin: access request approved by an owner", "request", id, "owner_key_id", ownerID, "wrapped_keys", len(a.Wraps), "manifests", rewritten)
	writeJSON(w, http.StatusOK, struct {
		Request   access.Request `json:"request"`
		Rewritten int            `json:"rewritten"`
	}{req, rewritten})
}

func (s *Server) denyAccess(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Reason string `json:"reason,omitempty"`
	}
	if !decodeOptional(w, r, &body) {
		return
	}
	id := mux.Vars(r)["id"]
	req, err := s.o.Access.Deny(id, actorOf(r), body.Reason)
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
		s.audit(audit.Event{Kind: audit.Access, Step: step, Outcome: "refused", Actor: actorOf(r), Detail: "access request " + id + ": " + truncate(err.Error(), 300)})
		writeError(w, http.StatusConflict, "CONFLICT", err.Error())
		return
	case err != nil:
		s.log.Error("admin: an access decision could not be kept", "request", id, "err", err)
		writeError(w, http.StatusInternalServerError, "INTERNAL", "the decision could not be kept; see the server's log")
		return
	}
	s.audit(audit.Event{Kind: audit.Access, Step: step, Outcome: string(req.State), Actor: actorOf(r), KeyID: req.KeyID,
		Repository: strings.Join(req.Repositories, ","), Detail: "access request " + id + " (" + req.Name + ")"})
	s.log.Info("admin: access request decided", "request", id, "state", string(req.State), "key_id", req.KeyID)
	out := accessDecision{Request: req}
	if req.State == access.Denied && !req.WasGranted {
		// Nothing was ever wrapped for the key: nothing to take back.
		writeJSON(w, http.StatusOK, out)
		return
	}
	v, _, _, msg := s.start(r.Context(), jobs.Spec{Kind: jobs.Rewrap, Repositories: req.Repositories}, actorOf(r))
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

// AutoApprove approves request id by the allow list (Options.AllowList),
// if the allow list names its key for every repository it names and none
// is an encrypt-only rule's (only an owner's key opens those), and starts
// the rewrap that applies it. It returns the request and whether it
// approved it; access.Handler calls it for each new request.
func (s *Server) AutoApprove(ctx context.Context, id string) (access.Request, bool) {
	if s.o.Access == nil || s.o.AllowList == nil {
		return access.Request{}, false
	}
	req, err := s.o.Access.Get(id)
	if err != nil || req.State != access.Pending || s.o.Access.NeedsOwner(req) {
		return req, false
	}
	now := time.Now()
	for _, repo := range req.Repositories {
		if err := s.o.AllowList.Check(ctx, proxy.OpWrap, repo, req.KeyID, now); err != nil {
			return req, false // for the owners to decide
		}
	}
	const by = "trust allow list"
	req, err = s.o.Access.Approve(id, by, time.Time{})
	if err != nil {
		s.log.Warn("admin: an access request the allow list names could not be approved", "request", id, "err", err)
		return req, false
	}
	s.audit(audit.Event{Kind: audit.Access, Step: "approve", Outcome: string(req.State), Actor: by, KeyID: req.KeyID,
		Repository: strings.Join(req.Repositories, ","), Detail: "access request " + id + " (" + req.Name + "): the signed allow list names its key for every repository"})
	s.log.Info("admin: access request approved by the allow list", "request", id, "key_id", req.KeyID)
	if v, _, _, msg := s.start(ctx, jobs.Spec{Kind: jobs.Rewrap, Repositories: req.Repositories}, by); v == nil {
		s.log.Warn("admin: the rewrap of an approved access request is not started: start it", "request", id, "repositories", strings.Join(req.Repositories, ","), "reason", msg)
	}
	return req, true
}

package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/mux"
	"go.opentelemetry.io/otel/metric"

	"github.com/shroud-oci/shroud/access"
	"github.com/shroud-oci/shroud/audit"
	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/jobs"
	"github.com/shroud-oci/shroud/proxy"
)

// Options configure a Server. Handler, Dir and Token are required.
type Options struct {
	// Handler is the proxy the jobs run with: its policy, keys, key
	// checks, audit log and upstream credentials (writes need shroud's
	// own).
	Handler *proxy.Handler
	// Previous are the previous identities of the handler's keyring
	// (crypto.Keyring.Previous): an identity job needs one.
	Previous []*crypto.Identity
	// Dir holds the jobs' files: their checkpoints and admin-job.json
	// (<data-dir>/jobs, where `shroud rotate` keeps its checkpoints).
	Dir string
	// Token is the bearer token every request must carry (LoadToken).
	Token []byte
	// Logger receives the jobs' steps and ends; nil discards.
	Logger *slog.Logger
	// Audit receives a line per admin action and refusal; nil writes
	// none.
	Audit *audit.Logger
	// Meter records the jobs' metrics; nil records none.
	Meter metric.Meter
	// Access, when set, is the access requests owners list and decide
	// under /admin/v1/access/requests; an approval or a denial starts a
	// rewrap of the request's repositories.
	Access *access.Store
	// AllowList, when set, approves access requests by itself: a request
	// whose key it allows to be wrapped for (proxy.OpWrap) in every
	// repository the request names (the signed allow list of the trust
	// documents, trust.Checker) is approved at submission
	// (AutoApprove), and its rewrap started. nil: owners decide every
	// request.
	AllowList proxy.KeyChecker
	// Owners, when set, lets owners decide access requests with their
	// own credentials (shroud's authentication: htpasswd, JWT, client
	// certificate) instead of the bearer token: it names the owner a
	// request carries the credentials of, or says it carries none that
	// an owner grant names. Only the access requests' paths take them;
	// jobs need the token.
	Owners func(ctx context.Context, r *http.Request) (owner string, ok bool)
	// History is how many jobs GET /admin/v1/jobs lists, the one
	// running among them; zero means 20.
	History int
}

// Server serves the admin API and runs its jobs, one at a time.
type Server struct {
	o       Options
	token   tokenCheck
	router  *mux.Router
	metrics *metrics
	log     *slog.Logger
	history int

	mu       sync.Mutex
	jobs     []*job // the last ones, oldest first
	current  *job   // queued or running; nil: none
	resume   *persisted
	stopping bool
	wg       sync.WaitGroup
	// refusals bounds the audit lines of unauthenticated requests, which
	// anyone who reaches the port can send.
	refusals refusalWindow
}

// refusalWindow admits refusalsPerMinute audit lines a minute; past
// them, the next line admitted says how many it held back.
type refusalWindow struct {
	mu      sync.Mutex
	start   time.Time
	n, held int
}

// refusalsPerMinute is how many unauthenticated requests a minute get an
// audit line each.
const refusalsPerMinute = 60

// admit says whether a refusal at now gets its own line, and how many
// were held back before it.
func (w *refusalWindow) admit(now time.Time) (held int, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if now.Sub(w.start) >= time.Minute {
		w.start, w.n = now, 0
	}
	if w.n >= refusalsPerMinute {
		w.held++
		return 0, false
	}
	w.n++
	held, w.held = w.held, 0
	return held, true
}

var _ http.Handler = (*Server)(nil)

// maxBody bounds a request's body (a spec of MaxRepositories names).
const maxBody = 512 << 10

// New returns a Server. It reads the spec a server stopped mid-job left
// in Options.Dir, which Run resumes; one that does not parse is an error
// (the job would otherwise be forgotten).
func New(o Options) (*Server, error) {
	if o.Handler == nil || o.Dir == "" {
		return nil, errors.New("admin: Handler and Dir are required")
	}
	tc, err := newTokenCheck(o.Token)
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(o.Meter)
	if err != nil {
		return nil, err
	}
	s := &Server{o: o, token: tc, metrics: m, log: o.Logger, history: o.History}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.history <= 0 {
		s.history = 20
	}
	if s.resume, err = readSpecFile(o.Dir); err != nil {
		return nil, err
	}
	s.router = s.routes()
	return s, nil
}

func (s *Server) routes() *mux.Router {
	r := mux.NewRouter()
	r.HandleFunc("/admin/v1/jobs", s.listJobs).Methods(http.MethodGet)
	r.HandleFunc("/admin/v1/jobs", s.startJob).Methods(http.MethodPost)
	r.HandleFunc("/admin/v1/jobs/{id:[0-9a-f]{16}}", s.getJob).Methods(http.MethodGet)
	r.HandleFunc("/admin/v1/jobs/{id:[0-9a-f]{16}}/cancel", s.cancelJob).Methods(http.MethodPost)
	if s.o.Access != nil {
		r.HandleFunc("/admin/v1/access/requests", s.listAccess).Methods(http.MethodGet)
		r.HandleFunc("/admin/v1/access/requests/{id:[0-9a-f]{32}}", s.getAccess).Methods(http.MethodGet)
		r.HandleFunc("/admin/v1/access/requests/{id:[0-9a-f]{32}}/approve", s.approveAccess).Methods(http.MethodPost)
		r.HandleFunc("/admin/v1/access/requests/{id:[0-9a-f]{32}}/layers", s.accessLayers).Methods(http.MethodGet)
		r.HandleFunc("/admin/v1/access/requests/{id:[0-9a-f]{32}}/deny", s.denyAccess).Methods(http.MethodPost)
	}
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusNotFound, "NOT_FOUND", "no such admin resource")
	})
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusMethodNotAllowed, "UNSUPPORTED", "method not allowed")
	})
	return r
}

// ServeHTTP authenticates every request, then routes it: an
// unauthenticated one learns nothing, not even which paths exist.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	actor := "token"
	allowed := s.token.allows(r)
	if !allowed && s.o.Owners != nil && s.o.Access != nil && strings.HasPrefix(r.URL.Path, "/admin/v1/access/") {
		var owner string
		if owner, allowed = s.o.Owners(r.Context(), r); allowed {
			actor = "owner:" + owner
		}
	}
	if !allowed {
		if n, ok := s.refusals.admit(time.Now()); ok {
			detail := fmt.Sprintf("%s %.200q from %s", r.Method, r.URL.Path, r.RemoteAddr)
			if n > 0 {
				detail += fmt.Sprintf(" (and %d more refused requests in the minute before, not logged one by one)", n)
			}
			s.audit(audit.Event{Step: "request", Outcome: "unauthenticated", Detail: detail})
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="shroud admin"`)
		writeError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
		return
	}
	limit := int64(maxBody)
	if strings.HasSuffix(r.URL.Path, "/approve") {
		limit = access.MaxOwnerApprovalBytes + 4096 // an owner approval's wrapped keys
	}
	r.Body = http.MaxBytesReader(w, r.Body, limit)
	s.router.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), actorKey{}, actor)))
}

// Run resumes the job a server stopped mid-job left, then waits for ctx.
// Once ctx is done it takes no new job, stops the one running (its spec
// file and checkpoint stay, for the next start to resume it), waits for
// it and returns.
func (s *Server) Run(ctx context.Context) error {
	s.mu.Lock()
	if p := s.resume; p != nil && !s.stopping && s.current == nil {
		s.resume = nil
		j := newJob(*p)
		j.restarted = true
		s.launch(j)
		s.log.Warn("admin: resuming the job a stopped server left", "admin_job", p.ID, "job", string(p.Spec.Kind), "repositories", len(p.Spec.Repositories))
		s.audit(audit.Event{Step: "resume", Job: string(p.Spec.Kind), JobID: p.ID, Outcome: "accepted", Actor: "shroud", KeyID: p.Spec.KeyID,
			Detail: "repositories: " + strings.Join(p.Spec.Repositories, ", ")})
	}
	s.mu.Unlock()
	<-ctx.Done()
	s.mu.Lock()
	s.stopping = true
	cur := s.current
	s.mu.Unlock()
	if cur != nil {
		s.log.Info("admin: stopping the job running; it resumes at the next start", "admin_job", cur.ID)
		cur.cancel(errStopping)
	}
	s.wg.Wait()
	return nil
}

func newJob(p persisted) *job {
	j := &job{persisted: p, state: Queued}
	for _, r := range p.Spec.Repositories {
		j.repos = append(j.repos, &repoProgress{name: r, state: Queued})
	}
	return j
}

func (s *Server) startJob(w http.ResponseWriter, r *http.Request) {
	refuse := func(status int, code, msg string, spec jobs.Spec) {
		s.audit(audit.Event{Step: "start", Job: string(spec.Kind), Outcome: "refused", Actor: "token", KeyID: spec.KeyID, Detail: truncate(msg, 500)})
		writeError(w, status, code, msg)
	}
	var spec jobs.Spec
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&spec); err != nil {
		refuse(http.StatusBadRequest, "INVALID", "the body is not a job's spec: "+truncate(err.Error(), 200), jobs.Spec{})
		return
	}
	if dec.More() {
		refuse(http.StatusBadRequest, "INVALID", "the body holds more than one spec", jobs.Spec{})
		return
	}
	if spec.Kind == jobs.Reencrypt && spec.At.IsZero() {
		// Stamped now, so that a resumed run names the same revocation.
		spec.At = time.Now().UTC()
	}
	v, status, code, msg := s.start(r.Context(), spec, "token")
	if v == nil {
		refuse(status, code, msg, spec)
		return
	}
	w.Header().Set("Location", "/admin/v1/jobs/"+v.ID)
	writeJSON(w, http.StatusAccepted, v)
}

// start checks spec and launches its job for actor: the job's view as
// launched, or the refusal's status, code and message (audited by the
// caller).
func (s *Server) start(ctx context.Context, spec jobs.Spec, actor string) (_ *jobView, status int, code, msg string) {
	// What the job would refuse before it writes anything is refused
	// here, with the reason.
	if _, err := jobs.Check(ctx, s.o.Handler, spec, jobs.RunOptions{Previous: s.o.Previous}); err != nil {
		return nil, http.StatusBadRequest, "INVALID", truncate(err.Error(), 1000)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.stopping:
		return nil, http.StatusServiceUnavailable, "UNAVAILABLE", "the server is stopping"
	case s.current != nil:
		return nil, http.StatusConflict, "CONFLICT", fmt.Sprintf("job %s is %s: one job at a time", s.current.ID, s.current.state)
	case s.resume != nil:
		return nil, http.StatusConflict, "CONFLICT", fmt.Sprintf("job %s, which a stopped server left, resumes first", s.resume.ID)
	}
	p := persisted{ID: newJobID(), Spec: spec, Actor: actor, Created: time.Now().UTC()}
	if err := writeSpecFile(s.o.Dir, p); err != nil {
		s.log.Error("admin: the job's spec file could not be written; the job is not started", "err", err)
		return nil, http.StatusInternalServerError, "INTERNAL", "the job's spec could not be kept on disk; see the server's log"
	}
	j := newJob(p)
	s.launch(j)
	s.audit(audit.Event{Step: "start", Job: string(spec.Kind), JobID: p.ID, Outcome: "accepted", Actor: actor, KeyID: spec.KeyID,
		Detail: truncate("repositories: "+strings.Join(spec.Repositories, ", "), 2000)})
	s.log.Info("admin: job started", "admin_job", p.ID, "job", string(spec.Kind), "repositories", len(spec.Repositories))
	v := s.view(j) // under s.mu: the job's runner writes its state
	return &v, 0, "", ""
}

func (s *Server) listJobs(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	out := struct {
		Jobs []jobView `json:"jobs"`
	}{Jobs: []jobView{}}
	for i := len(s.jobs) - 1; i >= 0; i-- {
		out.Jobs = append(out.Jobs, s.view(s.jobs[i]))
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

// find returns the job named by the request's id. Called with s.mu held.
func (s *Server) find(r *http.Request) *job {
	id := mux.Vars(r)["id"]
	for _, j := range s.jobs {
		if j.ID == id {
			return j
		}
	}
	return nil
}

func (s *Server) getJob(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	j := s.find(r)
	var v jobView
	if j != nil {
		v = s.view(j)
	}
	s.mu.Unlock()
	if j == nil {
		writeError(w, http.StatusNotFound, "NOT_FOUND", "no such job")
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// cancelWait is how long a cancel waits for the job to stop before it
// answers 202 (still stopping) instead of 200.
const cancelWait = 10 * time.Second

func (s *Server) cancelJob(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	j := s.find(r)
	over := j != nil && j.over()
	var kind jobs.Kind
	if j != nil {
		kind = j.Spec.Kind
	}
	s.mu.Unlock()
	id := mux.Vars(r)["id"]
	switch {
	case j == nil:
		s.audit(audit.Event{Step: "cancel", JobID: id, Outcome: "refused", Actor: "token", Detail: "no such job"})
		writeError(w, http.StatusNotFound, "NOT_FOUND", "no such job")
		return
	case over:
		s.audit(audit.Event{Step: "cancel", Job: string(kind), JobID: id, Outcome: "refused", Actor: "token", Detail: "the job has ended"})
		writeError(w, http.StatusConflict, "CONFLICT", "the job has ended")
		return
	}
	s.audit(audit.Event{Step: "cancel", Job: string(kind), JobID: id, Outcome: "accepted", Actor: "token"})
	s.log.Info("admin: cancelling the job", "admin_job", id)
	status := http.StatusAccepted
	if cancelJob(j, errCancelled, cancelWait) {
		status = http.StatusOK
	}
	s.mu.Lock()
	v := s.view(j)
	s.mu.Unlock()
	writeJSON(w, status, v)
}

// audit writes an admin event.
func (s *Server) audit(e audit.Event) {
	if e.Kind == "" {
		e.Kind = audit.Admin
	}
	if err := s.o.Audit.Log(e); err != nil {
		s.log.Warn("audit log", "err", err)
	}
}

// jobView is a job as the API answers it.
type jobView struct {
	ID    string    `json:"id"`
	State State     `json:"state"`
	Spec  jobs.Spec `json:"spec"`
	// Job is the job's name as its checkpoint has it (proxy's JobID).
	Job     string    `json:"job,omitempty"`
	Actor   string    `json:"actor"`
	Created time.Time `json:"created"`
	Started time.Time `json:"started,omitzero"`
	Ended   time.Time `json:"ended,omitzero"`
	// ResumedSteps are the steps an earlier, killed run left in the
	// checkpoint; Restarted says the job was resumed at a start.
	ResumedSteps int          `json:"resumed_steps,omitempty"`
	Restarted    bool         `json:"restarted,omitempty"`
	Repositories []repoView   `json:"repositories"`
	Error        string       `json:"error,omitempty"`
	Retire       []retireView `json:"retire,omitempty"`
}

type repoView struct {
	Repository string      `json:"repository"`
	State      State       `json:"state"`
	Done       int         `json:"done"`
	Total      int         `json:"total"`
	Report     *reportView `json:"report,omitempty"`
}

type reportView struct {
	Manifests int      `json:"manifests"`
	Rewritten int      `json:"rewritten"`
	Pointers  int      `json:"pointers"`
	Resealed  int      `json:"resealed"`
	Resumed   int      `json:"resumed"`
	Foreign   int      `json:"foreign"`
	KeptOld   []string `json:"kept_old,omitempty"`
}

// retireView names a previous identity an identity job left nothing
// for: drop it from the servers and revoke its key id.
type retireView struct {
	Fingerprint string `json:"fingerprint"`
	KeyID       string `json:"key_id"`
}

// view is j as the API answers it. Called with s.mu held.
func (s *Server) view(j *job) jobView {
	v := jobView{ID: j.ID, State: j.state, Spec: j.Spec, Job: j.checkJob, Actor: j.Actor, Created: j.Created, Started: j.started, Ended: j.ended,
		ResumedSteps: j.resumed, Restarted: j.restarted, Error: j.err, Repositories: []repoView{}}
	for _, r := range j.repos {
		rv := repoView{Repository: r.name, State: r.state, Done: r.done, Total: r.total}
		if rep := r.report; rep != nil {
			rv.Report = &reportView{Manifests: rep.Manifests, Rewritten: rep.Rewritten, Pointers: rep.Pointers, Resealed: rep.Resealed,
				Resumed: rep.Resumed, Foreign: rep.Foreign, KeptOld: rep.KeptOld}
		}
		v.Repositories = append(v.Repositories, rv)
	}
	if j.state == Done && j.Spec.Kind == jobs.Identity {
		for _, p := range s.o.Previous {
			v.Retire = append(v.Retire, retireView{Fingerprint: p.Fingerprint(), KeyID: p.KeyID()})
		}
	}
	return v
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // a client gone: nothing to tell it
}

// writeError answers the OCI error JSON shape the distribution API
// answers with.
func writeError(w http.ResponseWriter, status int, code, msg string) {
	type apiError struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	writeJSON(w, status, struct {
		Errors []apiError `json:"errors"`
	}{Errors: []apiError{{Code: code, Message: msg}}})
}

type actorKey struct{}

// actorOf names who made an admin request: "token", or "owner:<name>".
func actorOf(r *http.Request) string {
	if a, ok := r.Context().Value(actorKey{}).(string); ok {
		return a
	}
	return "token"
}

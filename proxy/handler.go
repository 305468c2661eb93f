package proxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gorilla/mux"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/shroud-oci/shroud/audit"
	"github.com/shroud-oci/shroud/auth"
	"github.com/shroud-oci/shroud/cache"
	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/proxy/upstream"
)

// Route patterns of the distribution spec. Repository names may hold
// slashes; groups are non-capturing, as mux requires.
const (
	namePattern   = `[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*`
	digestPattern = `[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+`
	refPattern    = `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}|` + digestPattern
)

// Options configure a Handler. Upstream, Keyring and Cache are required.
type Options struct {
	// Upstream is the default registry behind shroud, and Cache the
	// mappings of what it holds.
	Upstream *upstream.Client
	Cache    cache.Store
	// Mirrors are registries of their own for the origin hosts containerd
	// names with ?ns= when it uses shroud as a mirror; an origin not
	// listed here is served by Upstream.
	Mirrors map[string]Backend
	Keyring *crypto.Keyring
	// Policy decides per repository: encrypt (for which recipients),
	// pass through, or deny. A repository no rule matches is denied.
	Policy *crypto.Policy
	// Logger receives one line per failed request; nil discards.
	Logger *slog.Logger
	// UploadTTL is how long an idle upload session is kept; zero means
	// one hour.
	UploadTTL time.Duration
	// SpoolDir is where concurrent pulls of one blob share the upstream
	// fetch (unlinked files, as large as the blob); empty means the
	// system's temporary directory.
	SpoolDir string
	// Meter records shroud's metrics (metrics.go); nil records none.
	Meter metric.Meter
	// TracerProvider traces requests, blob crypto and key wraps
	// (trace.go); nil traces nothing.
	TracerProvider trace.TracerProvider
	// StallTimeout is how long a response or a request body may go
	// without progress before it is cut; zero means two minutes, negative
	// none. It bounds no stream's length: a multi-GiB pull that keeps
	// moving runs as long as it needs (limits.go).
	StallTimeout time.Duration
	// MaxStreams bounds the blob streams served at once (blob GETs and
	// upload requests with a body); one more is answered 429
	// TOOMANYREQUESTS with a Retry-After, not queued. Zero means 256,
	// negative no bound.
	MaxStreams int
	// Auth, when set, has shroud authenticate clients itself and
	// authorize each request by Access, the policy rules' grants; the
	// upstream is then asked with shroud's own credentials (its client's
	// transport), never the client's. Nil: the upstream decides, asked
	// with the client's credentials.
	Auth *auth.Authenticator
	// Access holds each policy rule's pull and push grants, by rule
	// index; nil with Auth set lets every authenticated client pull and
	// push everywhere.
	Access *auth.Access
	// Ledger is the shared tier's register of where each upload session
	// stands (cache.RedisLedger): with it a sealed session state is taken
	// at most once across every replica. Nil: this process keeps the
	// records, and a session another replica opened is checked against
	// the upstream's offset.
	Ledger cache.Ledger
	// SharedHealth, when set, reports the shared tier's health: /readyz
	// says "degraded" while it fails (shroud still serves, slower).
	SharedHealth func(ctx context.Context) error
	// KeyCheck, when set, is asked about every key before a push wraps a
	// layer key for it and before a pull unwraps with it (trust
	// documents: keycheck.go); nil: only the validity of the key
	// material itself (X.509, OpenPGP expiry) is checked.
	KeyCheck KeyChecker
	// Grants adds the keys of approved access requests to the recipients
	// of a repository's rule (keycheck.go); nil adds none.
	Grants Grants
	// Now is the clock key validity is checked at; nil is time.Now.
	Now func() time.Time
	// Audit receives a line per refused wrap and unwrap; nil writes none.
	Audit *audit.Logger
}

// Handler serves the OCI distribution API in front of an upstream registry.
type Handler struct {
	tracer  trace.Tracer
	def     *backend
	mirrors map[string]*backend
	keys    *crypto.Keyring
	policy  *crypto.Policy
	log     *slog.Logger
	uploads *sessions
	fetches *fetches
	metrics *metrics
	router  *mux.Router
	limits  *limits
	// restored remembers restored manifests by upstream digest.
	restored *restoredCache
	// authn and access are shroud's own authentication (access.go); nil
	// authn: the upstream decides.
	authn  *auth.Authenticator
	access *auth.Access
	// Keys derived from the identity, the same on every replica that
	// holds it: pointers names the upstream tags that find a manifest
	// by the digest its client pushed (pointer.go); stateBox seals
	// upload session state into Location URLs (session_state.go).
	pointers *crypto.KeyedHash
	stateBox *crypto.Box
	// pending seals the layer keys of encrypt-only blobs until a
	// manifest names them (encryptonly.go).
	pending *crypto.PendingKeys
	epochs  *pendingEpochs
	// binding binds an encrypt-only manifest to its repository.
	binding *crypto.KeyedHash
	// prevPointers are the previous identities' pointer keys (identity
	// rotation): pointers named under them are still found, never
	// written.
	prevPointers []*crypto.KeyedHash
	// sharedHealth is Options.SharedHealth; draining is set once the
	// process stops taking new work (Drain).
	sharedHealth func(ctx context.Context) error
	draining     atomic.Bool
	// emptyJSON remembers the repositories known to hold {} (the blob
	// pointers' config), so it is uploaded once, not once per blob.
	emptyJSON emptyJSONRepos
	// gate decides which keys may wrap and unwrap (keycheck.go).
	gate keyGate
	// grants is Options.Grants.
	grants Grants
	// referrerLocks serialize updates of the referrers indexes shroud
	// keeps (referrers_kept.go).
	referrerLocks referrerLocks
	// copyScans finds the copies of a subject pushed before a push reused
	// the copy (referrers_copies.go).
	copyScans *copyScans
	// ledger is Options.Ledger (nil: none shared): the referrers
	// indexes' lock across replicas.
	ledger cache.Ledger
}

var _ http.Handler = (*Handler)(nil)

// New returns a Handler.
func New(o Options) (*Handler, error) {
	if o.Upstream == nil || o.Keyring == nil || o.Cache == nil || o.Policy == nil {
		return nil, errors.New("proxy: Upstream, Cache, Keyring and Policy are required")
	}
	m, err := newMetrics(o.Meter)
	if err != nil {
		return nil, err
	}
	h := &Handler{
		tracer:    newTracer(o.TracerProvider),
		keys:      o.Keyring,
		policy:    o.Policy,
		mirrors:   map[string]*backend{},
		log:       o.Logger,
		fetches:   newFetches(o.SpoolDir),
		metrics:   m,
		limits:    newLimits(o.MaxStreams, o.StallTimeout),
		restored:  newRestoredCache(),
		copyScans: newCopyScans(),
		ledger:    o.Ledger,
		authn:     o.Auth,
		access:    o.Access,

		sharedHealth: o.SharedHealth,
		gate:         newKeyGate(o),
		grants:       o.Grants,
	}
	if h.authn != nil && h.access == nil {
		if h.access, err = auth.NewAccess(make([]auth.RuleGrants, len(o.Policy.Rules()))); err != nil {
			return nil, err
		}
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if err := h.deriveKeys(); err != nil {
		return nil, err
	}
	epochLedger := o.Ledger
	if epochLedger == nil {
		epochLedger = cache.NewMemoryLedger(0)
	}
	h.epochs = newPendingEpochs(epochLedger, h.stateBox, o.UploadTTL, time.Now)
	h.uploads = newSessions(h.stateBox, cache.NewMemoryLedger(maxLocalSessions), o.Ledger, o.UploadTTL, m.uploads,
		func(ctx context.Context, err error) { h.SharedFailed(ctx, "ledger", err) })
	if h.def, err = newBackend("", Backend{Upstream: o.Upstream, Cache: o.Cache}, m, h.ownAuth(), h.dedupScope); err != nil {
		return nil, err
	}
	for ns, b := range o.Mirrors {
		if h.mirrors[ns], err = newBackend(ns, b, m, h.ownAuth(), h.dedupScope); err != nil {
			return nil, err
		}
	}
	h.router = h.routes()
	return h, nil
}

func (h *Handler) routes() *mux.Router {
	r := mux.NewRouter()
	r.UseEncodedPath()
	name := "/v2/{name:" + namePattern + "}"
	e := h.errorHandler
	r.Handle(livePath, e(h.healthz)).Methods("GET", "HEAD")
	r.Handle(readyPath, e(h.readyz)).Methods("GET", "HEAD")
	r.Handle("/v2/", e(h.ping)).Methods("GET", "HEAD")
	r.Handle("/v2/_catalog", e(h.catalog)).Methods("GET")
	r.Handle(name+"/tags/list", e(h.tags)).Methods("GET")
	r.Handle(name+"/referrers/{digest:"+digestPattern+"}", e(h.referrers)).Methods("GET")
	r.Handle(name+"/manifests/{reference:"+refPattern+"}", e(h.orGone("reference", codeManifestUnknown, h.getManifest))).Methods("GET", "HEAD")
	r.Handle(name+"/manifests/{reference:"+refPattern+"}", e(h.putManifest)).Methods("PUT")
	r.Handle(name+"/manifests/{reference:"+refPattern+"}", e(h.deleteManifest)).Methods("DELETE")
	r.Handle(name+"/blobs/uploads/", e(h.startUpload)).Methods("POST")
	r.Handle(name+"/blobs/uploads/{uuid:[a-f0-9]+}", e(h.uploadStatus)).Methods("GET")
	r.Handle(name+"/blobs/uploads/{uuid:[a-f0-9]+}", e(h.patchUpload)).Methods("PATCH")
	r.Handle(name+"/blobs/uploads/{uuid:[a-f0-9]+}", e(h.finishUpload)).Methods("PUT")
	r.Handle(name+"/blobs/uploads/{uuid:[a-f0-9]+}", e(h.cancelUpload)).Methods("DELETE")
	r.Handle(name+"/blobs/{digest:"+digestPattern+"}", e(h.orGone("digest", codeBlobUnknown, h.getBlob))).Methods("GET", "HEAD")
	r.Handle(name+"/blobs/{digest:"+digestPattern+"}", e(h.deleteBlob)).Methods("DELETE")
	r.NotFoundHandler = e(func(w http.ResponseWriter, r *http.Request) error {
		return apiErr(http.StatusNotFound, codeNameInvalid, "no such endpoint or invalid repository name: %s", r.URL.Path)
	})
	r.MethodNotAllowedHandler = e(func(w http.ResponseWriter, r *http.Request) error {
		return apiErr(http.StatusMethodNotAllowed, codeUnsupported, "%s is not supported on %s", r.Method, r.URL.Path)
	})
	return r
}

// ServeHTTP implements http.Handler. Every request is logged once it is
// answered (status, bytes, duration), at info level; probes at debug.
func (h *Handler) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	id := newID(8)
	r, span := h.startRequestSpan(r)
	log := h.log.With("request_id", id, "method", r.Method, "path", r.URL.Path)
	if sc := span.SpanContext(); sc.IsSampled() {
		log = log.With("trace_id", sc.TraceID().String())
	}
	r = r.WithContext(context.WithValue(r.Context(), loggerKey{}, log))
	w := &accessLog{ResponseWriter: rw, status: http.StatusOK}
	start := time.Now()
	level := slog.LevelInfo
	if r.URL.Path == livePath || r.URL.Path == readyPath {
		level = slog.LevelDebug
	}
	defer func() {
		d := time.Since(start)
		log.Log(r.Context(), level, "request", "status", w.status, "bytes", w.bytes, "duration", d)
		endRequestSpan(span, w.status, w.bytes)
		h.metrics.request(r.Context(), r, w.status, d)
	}()
	w.Header().Set("Docker-Distribution-Api-Version", "registry/2.0")
	w.Header().Set("X-Request-Id", id)
	if err := checkPath(r.URL); err != nil {
		// The policy decides on the path as it is: one a registry
		// would normalise to another repository must not reach it.
		writeAPIError(w, r, err)
		return
	}
	if h.ownAuth() && r.URL.Path != livePath && r.URL.Path != readyPath {
		var ae *apiError
		if r, ae = h.authenticate(r); ae != nil {
			writeAPIError(w, r, ae)
			return
		}
	}
	if m := repoPath.FindStringSubmatch(r.URL.Path); m != nil {
		repo := m[1]
		rule := h.policy.Match(repo)
		var refused *apiError
		switch {
		case rule == nil:
			refused = apiErr(http.StatusForbidden, codeDenied, "no policy rule matches repository %s", repo)
		case rule.Action == crypto.Deny:
			refused = apiErr(http.StatusForbidden, codeDenied, "repository %s is denied by %s", repo, rule)
		case h.ownAuth():
			refused = h.authorize(r, rule, repo) // counts its own refusals
		}
		if refused != nil {
			if refused.status == http.StatusForbidden && refused.code == codeDenied && (rule == nil || rule.Action == crypto.Deny) {
				h.metrics.denied.Add(r.Context(), 1)
			}
			writeAPIError(w, r, refused)
			return
		}
		if rule.Action == crypto.Passthrough {
			if ae := h.checkArtifactDenied(r, repo); ae != nil {
				writeAPIError(w, r, ae)
				return
			}
			h.limits.serve(w, r, h.backend(r).passthrough)
			return
		}
		if h.serveEncryptOnlyPull(w, r, h.backend(r), repo, rule) {
			return
		}
	}
	h.limits.serve(w, r, h.router)
}

// checkPath refuses a request path that is not in its clean form: dot
// segments, empty segments, encoded dots, slashes or backslashes. Paths of
// the distribution API never have them.
func checkPath(u *url.URL) *apiError {
	p := u.EscapedPath()
	lower := strings.ToLower(p)
	bad := strings.Contains(lower, "%2e") || strings.Contains(lower, "%2f") || strings.Contains(lower, "%5c") || strings.ContainsRune(p, '\\')
	segs := strings.Split(strings.TrimSuffix(strings.TrimPrefix(p, "/"), "/"), "/")
	for i, seg := range segs {
		if seg == "." || seg == ".." || (seg == "" && i > 0) {
			bad = true
		}
	}
	if bad {
		return apiErr(http.StatusBadRequest, codeNameInvalid, "the request path is not in its clean form")
	}
	return nil
}

// repoPath finds the repository of a request under /v2/.
var repoPath = regexp.MustCompile(`^/v2/(` + namePattern + `)/(?:manifests|blobs|tags|referrers)/`)

// accessLog records what a response carried, for the request's log line.
type accessLog struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (a *accessLog) WriteHeader(status int) {
	a.status = status
	a.ResponseWriter.WriteHeader(status)
}

func (a *accessLog) Write(b []byte) (int, error) {
	n, err := a.ResponseWriter.Write(b)
	a.bytes += int64(n)
	return n, err
}

// ReadFrom keeps the connection's own ReadFrom for io.Copy.
func (a *accessLog) ReadFrom(r io.Reader) (int64, error) {
	n, err := io.Copy(a.ResponseWriter, r)
	a.bytes += n
	return n, err
}

// Unwrap lets http.ResponseController (the reverse proxy's flushes) reach
// the connection's writer.
func (a *accessLog) Unwrap() http.ResponseWriter { return a.ResponseWriter }

type loggerKey struct{}

// logger returns the request-scoped logger.
func logger(ctx context.Context) *slog.Logger {
	if l, ok := ctx.Value(loggerKey{}).(*slog.Logger); ok {
		return l
	}
	return slog.New(slog.DiscardHandler)
}

// newID returns n random bytes in hex.
func newID(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// maxLocalSessions bounds the upload records one process keeps.
const maxLocalSessions = 100_000

// SharedFailed counts a failed call to the shared tier (op names it:
// blob, manifest, ledger...) and logs it at debug level; the caller went
// on without it.
func (h *Handler) SharedFailed(ctx context.Context, op string, err error) {
	h.metrics.sharedErrors.Add(ctx, 1, metric.WithAttributes(attribute.String("shroud.op", op)))
	h.log.Debug("shared tier call failed", "op", op, "err", err)
}

// Drain makes /readyz answer 503 from now on, so that a load balancer
// sends no new work while the requests in flight finish (the server's
// Shutdown waits for them).
func (h *Handler) Drain() { h.draining.Store(true) }

// deriveKeys sets the keys the Handler derives from shroud's identity.
func (h *Handler) deriveKeys() error {
	id := h.keys.Identity()
	pk, err := id.DeriveKey(crypto.PurposeManifestPointer)
	if err != nil {
		return err
	}
	if h.pointers, err = crypto.NewKeyedHash(pk); err != nil {
		return err
	}
	for _, p := range h.keys.Previous() {
		ppk, err := p.DeriveKey(crypto.PurposeManifestPointer)
		if err != nil {
			return err
		}
		kh, err := crypto.NewKeyedHash(ppk)
		if err != nil {
			return err
		}
		h.prevPointers = append(h.prevPointers, kh)
	}
	sk, err := id.DeriveKey(crypto.PurposeUploadState)
	if err != nil {
		return err
	}
	if h.stateBox, err = crypto.NewBox(sk); err != nil {
		return err
	}
	pk2, err := id.DeriveKey(crypto.PurposePendingKey)
	if err != nil {
		return err
	}
	if h.pending, err = crypto.NewPendingKeys(pk2); err != nil {
		return err
	}
	bk, err := id.DeriveKey(crypto.PurposeBinding)
	if err != nil {
		return err
	}
	h.binding, err = crypto.NewKeyedHash(bk)
	return err
}

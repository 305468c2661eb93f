package proxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/gorilla/mux"
	lru "github.com/hashicorp/golang-lru/v2"

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

// deletedEntries bounds the memory of deleted blobs.
const deletedEntries = 10_000

// Options configure a Handler. Upstream, Keyring and Cache are required.
type Options struct {
	Upstream *upstream.Client
	Keyring  *crypto.Keyring
	Cache    cache.Store
	// Logger receives one line per failed request; nil discards.
	Logger *slog.Logger
	// UploadTTL is how long an idle upload session is kept; zero means
	// one hour.
	UploadTTL time.Duration
	// MaxConfigSize bounds the config blobs shroud decrypts in memory to
	// store them upstream in plaintext; zero means 16 MiB.
	MaxConfigSize int64
	// MaxTagScan bounds the tags read to find a manifest by a digest the
	// cache has forgotten; zero means 256.
	MaxTagScan int
}

// Handler serves the OCI distribution API in front of an upstream registry.
type Handler struct {
	up      *upstream.Client
	keys    *crypto.Keyring
	cache   cache.Store
	log     *slog.Logger
	uploads *sessions
	// deleted remembers blobs and manifests a client deleted from a
	// repository, so that a HEAD does not mount a blob back from another
	// repository nor a tag scan find a manifest again.
	deleted *lru.Cache[string, struct{}]
	maxCfg  int64
	maxScan int
	router  *mux.Router
}

var _ http.Handler = (*Handler)(nil)

// New returns a Handler.
func New(o Options) (*Handler, error) {
	if o.Upstream == nil || o.Keyring == nil || o.Cache == nil {
		return nil, errors.New("proxy: Upstream, Keyring and Cache are required")
	}
	h := &Handler{
		up:      o.Upstream,
		keys:    o.Keyring,
		cache:   o.Cache,
		log:     o.Logger,
		uploads: newSessions(o.UploadTTL),
		maxCfg:  o.MaxConfigSize,
		maxScan: o.MaxTagScan,
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.maxCfg <= 0 {
		h.maxCfg = 16 << 20
	}
	if h.maxScan <= 0 {
		h.maxScan = 256
	}
	var err error
	if h.deleted, err = lru.New[string, struct{}](deletedEntries); err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	h.router = h.routes()
	return h, nil
}

func (h *Handler) routes() *mux.Router {
	r := mux.NewRouter()
	r.UseEncodedPath()
	name := "/v2/{name:" + namePattern + "}"
	e := h.errorHandler
	r.Handle("/v2/", e(h.ping)).Methods("GET", "HEAD")
	r.Handle("/v2/_catalog", e(h.catalog)).Methods("GET")
	r.Handle(name+"/tags/list", e(h.tags)).Methods("GET")
	r.Handle(name+"/referrers/{digest:"+digestPattern+"}", e(h.referrers)).Methods("GET")
	r.Handle(name+"/manifests/{reference:"+refPattern+"}", e(h.getManifest)).Methods("GET", "HEAD")
	r.Handle(name+"/manifests/{reference:"+refPattern+"}", e(h.putManifest)).Methods("PUT")
	r.Handle(name+"/manifests/{reference:"+refPattern+"}", e(h.deleteManifest)).Methods("DELETE")
	r.Handle(name+"/blobs/uploads/", e(h.startUpload)).Methods("POST")
	r.Handle(name+"/blobs/uploads/{uuid:[a-f0-9]+}", e(h.uploadStatus)).Methods("GET")
	r.Handle(name+"/blobs/uploads/{uuid:[a-f0-9]+}", e(h.patchUpload)).Methods("PATCH")
	r.Handle(name+"/blobs/uploads/{uuid:[a-f0-9]+}", e(h.finishUpload)).Methods("PUT")
	r.Handle(name+"/blobs/uploads/{uuid:[a-f0-9]+}", e(h.cancelUpload)).Methods("DELETE")
	r.Handle(name+"/blobs/{digest:"+digestPattern+"}", e(h.getBlob)).Methods("GET", "HEAD")
	r.Handle(name+"/blobs/{digest:"+digestPattern+"}", e(h.deleteBlob)).Methods("DELETE")
	r.NotFoundHandler = e(func(w http.ResponseWriter, r *http.Request) error {
		return apiErr(http.StatusNotFound, codeNameInvalid, "no such endpoint or invalid repository name: %s", r.URL.Path)
	})
	r.MethodNotAllowedHandler = e(func(w http.ResponseWriter, r *http.Request) error {
		return apiErr(http.StatusMethodNotAllowed, codeUnsupported, "%s is not supported on %s", r.Method, r.URL.Path)
	})
	return r
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := newID(8)
	log := h.log.With("request_id", id, "method", r.Method, "path", r.URL.Path)
	r = r.WithContext(context.WithValue(r.Context(), loggerKey{}, log))
	w.Header().Set("Docker-Distribution-Api-Version", "registry/2.0")
	w.Header().Set("X-Request-Id", id)
	h.router.ServeHTTP(w, r)
}

type loggerKey struct{}

// logger returns the request-scoped logger.
func logger(ctx context.Context) *slog.Logger {
	if l, ok := ctx.Value(loggerKey{}).(*slog.Logger); ok {
		return l
	}
	return slog.New(slog.DiscardHandler)
}

// client returns the upstream client carrying the request's credentials.
func (h *Handler) client(r *http.Request) *upstream.Client {
	return h.up.WithAuthorization(r.Header.Get("Authorization"))
}

// newID returns n random bytes in hex.
func newID(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

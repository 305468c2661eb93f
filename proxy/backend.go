package proxy

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/shroud-oci/shroud/cache"
	"github.com/shroud-oci/shroud/proxy/upstream"
)

// Backend is one upstream registry and the cache of its mappings.
type Backend struct {
	Upstream *upstream.Client
	Cache    cache.Store
}

// backend is a Backend serving one request: its client carries the
// request's credentials.
type backend struct {
	name  string // "" for the default upstream, else the mirror's origin host
	cl    *upstream.Client
	cache cache.Store
	// passthrough relays requests for repositories a policy rule leaves
	// alone.
	passthrough http.Handler
	metrics     *metrics
	// scope names the dedup scope of a repository (Handler.dedupScope),
	// under which its bound mappings are origins.
	scope func(repo string) string
	// auth is a hash of the request's Authorization: what tells clients
	// apart where shroud remembers something per client.
	auth string
	// principal names who the request's credentials say the client is
	// (principalOf), what an upload session is bound to.
	principal string
}

func newBackend(name string, b Backend, m *metrics, ownAuth bool, scope func(repo string) string) (*backend, error) {
	if b.Upstream == nil || b.Cache == nil {
		return nil, fmt.Errorf("proxy: upstream %q needs a client and a cache", name)
	}
	return &backend{name: name, cl: b.Upstream, cache: b.Cache, passthrough: reverseProxy(b.Upstream, ownAuth), metrics: m, scope: scope}, nil
}

// backend returns the backend a request is for: containerd names the
// registry it mirrors with ?ns=<origin host>; without it, or for an origin
// with no upstream of its own, the default upstream serves.
func (h *Handler) backend(r *http.Request) *backend {
	return h.backendNamed(r.URL.Query().Get("ns"), r)
}

func (h *Handler) backendNamed(ns string, r *http.Request) *backend {
	b, ok := h.mirrors[ns]
	if !ok {
		b = h.def
	}
	bb := *b
	if h.ownAuth() {
		// shroud authorized the request itself: the upstream is asked
		// with shroud's credentials (the client's transport), the
		// client's never leave shroud, and every client shares what
		// shroud fetched.
		bb.auth = authHash("shroud's own\x00")
		bb.principal = authHash("principal\x00" + principal(r.Context()).ID())
		return &bb
	}
	bb.cl = b.cl.WithAuthorization(r.Header.Get("Authorization"))
	bb.auth = authHash(r.Header.Get("Authorization"))
	bb.principal = principalOf(r.Header.Get("Authorization"))
	return &bb
}

// authHash names a client by its Authorization header, for comparisons:
// never logged, never sent.
func authHash(authorization string) string {
	h := sha256.Sum256([]byte("shroud client\x00" + authorization))
	return hex.EncodeToString(h[:16])
}

// principalOf names the client an Authorization header speaks for, so
// that an upload session stays with the client that opened it across a
// token refresh: the issuer and subject of a bearer JWT, else the header
// itself (Basic credentials: user and password, so that a wrong password
// reaches no session); all hashed. Credentials the upstream has not
// accepted for a session yet are checked upstream before they touch it
// (lockUpload): a forged token naming another subject gets no further.
func principalOf(authorization string) string {
	scheme, cred, _ := strings.Cut(authorization, " ")
	who := "header\x00" + authorization
	switch strings.ToLower(scheme) {
	case "bearer":
		if parts := strings.Split(cred, "."); len(parts) == 3 {
			var claims struct {
				Iss string `json:"iss"`
				Sub string `json:"sub"`
			}
			if b, err := base64.RawURLEncoding.DecodeString(parts[1]); err == nil && json.Unmarshal(b, &claims) == nil && claims.Sub != "" {
				who = "jwt\x00" + claims.Iss + "\x00" + claims.Sub
			}
		}
	}
	return authHash(who)
}

// blob looks up repo's mapping of a plaintext digest; a failing cache is a
// miss.
func (b *backend) blob(ctx context.Context, repo string, plainDigest digest.Digest) (cache.Blob, bool) {
	bl, ok, err := b.cache.Blob(ctx, repo, plainDigest)
	if err != nil {
		logger(ctx).Warn("cache lookup failed", "plain_digest", plainDigest, "err", err)
		ok = false
	}
	b.metrics.cacheLookup(ctx, "blob", ok)
	return bl, ok
}

// origin looks up a bound mapping of a plaintext digest recorded in
// repo's dedup scope, in a repository accept takes.
func (b *backend) origin(ctx context.Context, repo string, plainDigest digest.Digest, accept func(repo string) bool) (cache.Blob, bool) {
	bl, ok, err := b.cache.Origin(ctx, b.scope(repo), plainDigest, accept)
	if err != nil {
		logger(ctx).Warn("cache lookup failed", "plain_digest", plainDigest, "err", err)
		ok = false
	}
	return bl, ok && bl.Bound
}

// putRestoredBlob records a mapping a manifest's restoration found,
// unless the cache holds one of the same pairing already (the upload's,
// wrapped for the identity alone, or an earlier restoration's): then a
// replica's first pull of an image costs the shared tier a read per layer,
// not the three commands of a write, and the entry is not rewritten back
// and forth between its two forms by every replica new to the image.
func (b *backend) putRestoredBlob(ctx context.Context, bl cache.Blob) {
	if old, ok := b.blob(ctx, bl.Repository, bl.PlainDigest); ok && old.Bound == bl.Bound && old.CipherDigest == bl.CipherDigest &&
		old.Size == bl.Size && (old.Layer || !bl.Layer) {
		return
	}
	b.putBlob(ctx, bl)
}

// putRestoredManifest records a manifest mapping a restoration found,
// unless the cache holds it as it is (read from the shared tier, where
// the replica that pushed it wrote it).
func (b *backend) putRestoredManifest(ctx context.Context, m cache.Manifest) {
	if old, ok, err := b.cache.Manifest(ctx, m.Repository, m.PlainDigest); err == nil && ok && old == m {
		return
	}
	b.putManifestMapping(ctx, m)
}

// putBlob records a mapping, a bound one as an origin in its repository's
// dedup scope.
func (b *backend) putBlob(ctx context.Context, bl cache.Blob) {
	bl.Scope = b.scope(bl.Repository)
	if err := b.cache.PutBlob(ctx, bl); err != nil {
		logger(ctx).Warn("cache store failed", "plain_digest", bl.PlainDigest, "err", err)
	}
}

func (b *backend) manifestMapping(ctx context.Context, repo string, d digest.Digest) (cache.Manifest, bool) {
	m, ok, err := b.cache.Manifest(ctx, repo, d)
	if err != nil {
		logger(ctx).Warn("cache lookup failed", "plain_digest", d, "err", err)
		ok = false
	}
	b.metrics.cacheLookup(ctx, "manifest", ok)
	return m, ok
}

// liveManifestMapping is manifestMapping for a request by digest: a
// mapping of a manifest a client deleted (through any replica: the mark is
// the shared tier's) is dropped and a miss. Another replica may map the
// digest to another encrypted copy of the same manifest (one pushed twice)
// than the one the delete removed: the upstream would still serve that.
// It costs a manifest request by digest one shared-tier read.
func (b *backend) liveManifestMapping(ctx context.Context, repo string, d digest.Digest) (cache.Manifest, bool) {
	mm, ok := b.manifestMapping(ctx, repo, d)
	if ok && b.deleted(ctx, repo, d) {
		b.cache.Stale(ctx, repo, d)
		return cache.Manifest{}, false
	}
	return mm, ok
}

func (b *backend) putManifestMapping(ctx context.Context, m cache.Manifest) {
	if err := b.cache.PutManifest(ctx, m); err != nil {
		logger(ctx).Warn("cache store failed", "plain_digest", m.PlainDigest, "err", err)
	}
}

// deleted says whether a client deleted the blob or manifest d from repo
// through shroud (on any replica sharing the cache), so that a HEAD does
// not mount the blob back from another repository nor a pointer find it
// again; a failing cache says no.
func (b *backend) deleted(ctx context.Context, repo string, d digest.Digest) bool {
	del, err := b.cache.Deleted(ctx, repo, d)
	if err != nil {
		logger(ctx).Warn("cache lookup failed", "plain_digest", d, "err", err)
	}
	return del
}

// setDeleted records that d was deleted from repo (deleted), or pushed
// again (!deleted).
func (b *backend) setDeleted(ctx context.Context, repo string, d digest.Digest, deleted bool) {
	if err := b.cache.SetDeleted(ctx, repo, d, deleted); err != nil {
		logger(ctx).Warn("cache store failed", "plain_digest", d, "err", err)
	}
}

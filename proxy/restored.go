package proxy

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shroud-oci/shroud/cache"
	"github.com/shroud-oci/shroud/crypto"
)

// Bounds on the work one manifest can ask for.
const (
	// maxIndexChildren bounds the distinct children of an index that
	// shroud restores (fetches and opens) for one GET.
	maxIndexChildren = 1024
	// maxDescriptors bounds the descriptors (config, layers, children) of
	// a manifest a client pushes; repeats count once toward the work.
	maxDescriptors = 10_000
	// maxReferrers bounds the referrers of one subject shroud restores.
	maxReferrers = 1024
	// maxUnwrapsPerManifest bounds the unwrap attempts (a key tried on a
	// wrapped key, one per recipient it lists: crypto.UnwrapBudget) that
	// restoring one manifest may take: 128 layers of 8 (recipients x keys
	// tried) each. A manifest shroud sealed may take
	// maxUnwrapsPerSealedLayer per layer its seal names, if that is more.
	maxUnwrapsPerManifest    = 1024
	maxUnwrapsPerSealedLayer = 8
	// maxUnwrapsPerRequest bounds them for all the restorations of one
	// request: an index's children, the referrers of a subject, the
	// manifests an index or a referrer pushed names, found through their
	// pointers. 64 platforms of 128 layers of 2, say.
	maxUnwrapsPerRequest = 16384
	// restoredEntries and restoredBody bound the memory of restored
	// manifests: 1024 entries of at most 256 KiB.
	restoredEntries = 1024
	restoredBody    = 256 << 10
	// restoredTTL is how long a restoration is reused.
	restoredTTL = 10 * time.Minute
	// restoredFailureTTL is how long a manifest whose content made its
	// restoration fail is refused without trying again.
	restoredFailureTTL = time.Minute
)

// restoration is what restoring one upstream manifest gave: what is served
// and the mappings it vouches for, which a reuse records again (the blob
// cache may have evicted them since).
type restoration struct {
	served    served
	blobs     []cache.Blob
	manifests []cache.Manifest
}

// restoredCache remembers restorations by backend, repository and upstream
// digest: an upstream manifest is content-addressed, so the same digest
// restores to the same result. The upstream GET that yields the manifest is
// still made for each request (it is the client's authorization). It also
// remembers, for less long, the restorations that failed for the
// manifest's own content (ownFailure): a hostile manifest asked for again
// costs no unwrap.
type restoredCache struct {
	lru    *timedLRU[*restoration]
	failed *timedLRU[error]
}

func newRestoredCache() *restoredCache {
	return &restoredCache{lru: newTimedLRU[*restoration](restoredEntries, restoredTTL),
		failed: newTimedLRU[error](restoredEntries, restoredFailureTTL)}
}

// failure returns the error a restoration failed with less than
// restoredFailureTTL ago.
func (c *restoredCache) failure(key string) (error, bool) { return c.failed.Get(key) }

func (c *restoredCache) fail(key string, err error) { c.failed.Add(key, err) }

// ownFailure says whether a restoration failed for its manifest's content
// alone, so that restoring it again fails the same way: no key the rule
// allows opens a layer, the wrapped keys are not ocicrypt's, or the
// manifest (or an index child) took more unwraps than one manifest may.
// Running out of the request's budget (drawn on by other manifests before
// it) is not the manifest's failure.
func ownFailure(err error, request *crypto.UnwrapBudget) bool {
	var spent *crypto.UnwrapBudgetError
	if errors.As(err, &spent) {
		return spent.Budget != request
	}
	return errors.Is(err, crypto.ErrNoKey) || errors.Is(err, crypto.ErrInvalidEncryption)
}

// spentBy says whether err is budget's refusal.
func spentBy(err error, budget *crypto.UnwrapBudget) bool {
	var spent *crypto.UnwrapBudgetError
	return errors.As(err, &spent) && spent.Budget == budget
}

// restoredKey names a restoration; nested says it was one level deep (an
// index then is not opened), which restores differently.
func restoredKey(be *backend, repo string, upDigest digest.Digest, nested bool) string {
	return fmt.Sprintf("%s\x00%s\x00%s\x00%t", be.name, repo, upDigest, nested)
}

func (c *restoredCache) get(key string) (*restoration, bool) { return c.lru.Get(key) }

func (c *restoredCache) add(key string, r *restoration) {
	if len(r.served.body) <= restoredBody {
		c.lru.Add(key, r)
	}
}

// checkFanOut refuses an index naming more distinct children than shroud
// restores for one request.
func checkFanOut(children []ocispec.Descriptor) error {
	seen := map[digest.Digest]struct{}{}
	for _, c := range children {
		seen[c.Digest] = struct{}{}
	}
	if len(seen) > maxIndexChildren {
		return apiErr(http.StatusBadRequest, codeManifestInvalid, "the index names %d distinct manifests, more than the %d shroud restores", len(seen), maxIndexChildren)
	}
	return nil
}

// timedLRU is an LRU whose entries also expire a TTL after they were
// added, checked when read (no goroutine of its own, unlike golang-lru's
// expirable package).
type timedLRU[V any] struct {
	c   *lru.Cache[string, timed[V]]
	ttl time.Duration
	now func() time.Time
}

type timed[V any] struct {
	v       V
	expires time.Time
}

func newTimedLRU[V any](size int, ttl time.Duration) *timedLRU[V] {
	c, _ := lru.New[string, timed[V]](size) // size > 0: never fails
	return &timedLRU[V]{c: c, ttl: ttl, now: time.Now}
}

func (t *timedLRU[V]) Add(key string, v V) { t.c.Add(key, timed[V]{v, t.now().Add(t.ttl)}) }

func (t *timedLRU[V]) Get(key string) (V, bool) {
	e, ok := t.c.Get(key)
	if !ok || t.now().After(e.expires) {
		var zero V
		return zero, false
	}
	return e.v, true
}

func (t *timedLRU[V]) Contains(key string) bool {
	_, ok := t.Get(key)
	return ok
}

package proxy

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/shroud-oci/shroud/cache"
	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/proxy/upstream"
)

// Durable manifest pointers (DESIGN §5). Every manifest shroud stores
// upstream is also tagged there with a pointer: a tag named by a keyed
// hash of the backend, the repository and the digest the client pushed
// (h.pointers, derived from the identity, so every replica holding it
// names the same tag, and the registry learns no plaintext digest). A pull
// by a digest the cache does not know reads the pointer and trusts what it
// names only once the manifest restored from its seal has that digest: the
// registry may point the tag anywhere.
//
// Pointer tags are shroud's: tag lists through shroud do not show them,
// and a client may neither read, push nor delete one by name.

// pointerPrefix starts every pointer tag; 64 hex digits follow.
const pointerPrefix = "shroud-"

// pointerTag names the pointer of plainDigest in repo.
func (h *Handler) pointerTag(be *backend, repo string, plainDigest digest.Digest) string {
	return h.pointerNames(be.name, repo, plainDigest.String())[0]
}

// pointerNames are the tags of the pointer keyed by parts: its name under
// the identity (the one written), then under each previous identity
// (identity rotation: still found and deleted until the rotation job has
// moved every pointer to the new name).
func (h *Handler) pointerNames(parts ...string) []string {
	names := []string{pointerPrefix + h.pointers.Sum(parts...)}
	for _, p := range h.prevPointers {
		names = append(names, pointerPrefix+p.Sum(parts...))
	}
	return names
}

// getPointer reads the first of names the upstream has; its error is the
// last name's when none is there (a 404), or the first other failure.
func (h *Handler) getPointer(ctx context.Context, be *backend, repo string, names []string) (upstream.Manifest, error) {
	var err error
	for _, name := range names {
		var um upstream.Manifest
		um, err = be.cl.GetManifest(ctx, repo, name)
		if !upstream.IsStatus(err, http.StatusNotFound) {
			return um, err
		}
	}
	return upstream.Manifest{}, err
}

// isPointerTag says whether a tag has the form of a pointer: such tags are
// shroud's, never a client's.
func isPointerTag(tag string) bool {
	hex, ok := strings.CutPrefix(tag, pointerPrefix)
	if !ok || len(hex) != 64 {
		return false
	}
	for _, c := range hex {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// errPointerTag refuses a client's use of a pointer tag's name.
func errPointerTag(method, tag string) *apiError {
	if method == http.MethodPut {
		return apiErr(http.StatusForbidden, codeDenied, "tag %s is of the form shroud-<64 hex digits>, which shroud reserves for its manifest pointers", tag)
	}
	return apiErr(http.StatusNotFound, codeManifestUnknown, "manifest %s is unknown", tag)
}

// pointed finds the manifest a client pushed with digest plainDigest
// through its pointer tag, and returns it as the client pushed it with
// the upstream manifest it was restored from. ok is false when there is
// no pointer, or when what it names is not a manifest sealed for this
// repository (its seal checked as any seal is: restore) whose original
// has that digest: the upstream may have pointed the tag at another
// manifest, sealed or not. An upstream failure (not a 404) is an error.
// The mappings the restoration vouches for are recorded.
func (h *Handler) pointed(ctx context.Context, be *backend, repo string, plainDigest digest.Digest, budget *crypto.UnwrapBudget) (s served, um upstream.Manifest, ok bool, err error) {
	um, err = h.getPointer(ctx, be, repo, h.pointerNames(be.name, repo, plainDigest.String()))
	if upstream.IsStatus(err, http.StatusNotFound) {
		return served{}, upstream.Manifest{}, false, nil
	}
	if err != nil {
		return served{}, upstream.Manifest{}, false, err
	}
	s, err = h.restore(ctx, be, repo, um, 0, budget)
	if err != nil && !pointedFailure(err) {
		return served{}, upstream.Manifest{}, false, err
	}
	if err == nil && s.sealed && s.is(plainDigest) {
		return s.as(plainDigest), um, true, nil
	}
	// Never served, nor its error passed on: the pointer vouches for
	// nothing, the manifest it names is not the one asked for.
	logger(ctx).Warn("a pointer tag names a manifest that is not the one it points for: ignored", "repository", repo,
		"plain_digest", plainDigest, "upstream_digest", um.Digest, "sealed", err == nil && s.sealed, "err", err)
	return served{}, upstream.Manifest{}, false, nil
}

// pointedFailure says whether restoring what a pointer names failed for
// that manifest's content (no key opens it, it is not sealed here, it does
// not parse as what its seal says): the pointer then names no manifest
// the client pushed, and the failure is not the client's to see. Upstream
// and transport failures, a request's cancellation and the errors shroud
// answers on purpose (a fan-out or unwrap budget refused) are passed on.
func pointedFailure(err error) bool {
	var (
		se *upstream.StatusError
		te *upstream.TransportError
		ae *apiError
	)
	switch {
	case errors.As(err, &se), errors.As(err, &te), errors.As(err, &ae),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return false
	}
	return true
}

// liveManifestFor is manifestFor for what a push or a referrers listing
// names (an index's child, a referrer's subject): a mapping is checked
// against the upstream (one HEAD), since a job on another replica may
// have replaced and deleted the copy this process's cache names; one
// gone is dropped from this process and found again (the shared tier,
// else the pointer), so that what the push writes upstream names the
// copy there is.
func (h *Handler) liveManifestFor(ctx context.Context, be *backend, repo string, plainDigest digest.Digest, budget *crypto.UnwrapBudget) (cache.Manifest, bool, error) {
	mm, ok, err := h.manifestFor(ctx, be, repo, plainDigest, budget)
	if err != nil || !ok {
		return mm, ok, err
	}
	got, _, _, err := be.cl.HeadManifest(ctx, repo, mm.UpstreamDigest.String())
	switch {
	case err == nil && got == mm.UpstreamDigest:
		return mm, true, nil
	case err != nil && !upstream.IsStatus(err, http.StatusNotFound):
		return cache.Manifest{}, false, err
	}
	be.cache.Stale(ctx, repo, plainDigest)
	return h.manifestFor(ctx, be, repo, plainDigest, budget)
}

// manifestFor returns repo's mapping of a manifest by the digest its
// client pushed: the cache's, else what its pointer names (after a
// restart, on another replica). ok is false for a digest shroud stored no
// manifest for, or one the client deleted through this process.
func (h *Handler) manifestFor(ctx context.Context, be *backend, repo string, plainDigest digest.Digest, budget *crypto.UnwrapBudget) (cache.Manifest, bool, error) {
	if mm, ok := be.manifestMapping(ctx, repo, plainDigest); ok {
		return mm, true, nil
	}
	if be.deleted(ctx, repo, plainDigest) {
		return cache.Manifest{}, false, nil
	}
	s, um, ok, err := h.pointed(ctx, be, repo, plainDigest, budget)
	if err != nil || !ok {
		return cache.Manifest{}, false, err
	}
	return cache.Manifest{Repository: repo, PlainDigest: plainDigest, ContentType: s.contentType, Size: int64(len(s.body)),
		UpstreamDigest: um.Digest, UpstreamMediaType: um.ContentType, UpstreamSize: int64(len(um.Body))}, true, nil
}

package proxy

import (
	"context"

	"github.com/opencontainers/go-digest"

	"github.com/shroud-oci/shroud/cache"
)

// mountOrigin mounts into repo the ciphertext of the bound mapping of
// plainDigest in another repository, and records the mapping for repo.
func (h *Handler) mountOrigin(ctx context.Context, be *backend, repo string, plainDigest digest.Digest) (cache.Blob, bool) {
	o, ok := be.origin(ctx, plainDigest)
	if !ok || o.Repository == repo || !h.mountCipher(ctx, be, repo, o, o.Repository) {
		return cache.Blob{}, false
	}
	o.Repository = repo
	be.putBlob(ctx, o)
	return o, true
}

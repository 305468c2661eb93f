package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shroud-oci/shroud/cache"
	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/proxy/upstream"
)

// Blob pointers (DESIGN §5: every mapping can be rebuilt from the
// upstream). A blob's plain<->cipher pairing is known, when its upload
// commits, to the replica that took it; its manifest may arrive on
// another replica, after a restart, or while the shared tier is down or
// evicted the mapping. So each committed blob is also recorded upstream:
// a small manifest, tagged with a pointer name (a keyed hash of the
// backend, repository and plaintext digest, hidden and reserved like the
// manifest pointers), whose one layer is the ciphertext and whose seal,
// signed by the identity and bound to the repository, pairs it with the
// plaintext. A replica that does not know a blob reads its pointer and
// trusts only what the seal vouches for (restore). What a pointer maps
// counts as a layer: the pointer cannot tell a config from a layer, so
// a blob known only through it is never stored in plaintext as a config
// (a manifest whose config was uploaded through another replica while
// the shared tier was down is refused; the replica that took the config,
// or any once the tier is back, takes it).

// blobPointerType is the artifact type of a blob pointer's original.
const blobPointerType = "application/vnd.dev.shroud.blob-pointer.v1"

// blobPointerTag names the pointer of a blob.
func (h *Handler) blobPointerTag(be *backend, repo string, plainDigest digest.Digest) string {
	return h.blobPointerNames(be, repo, plainDigest)[0]
}

// blobPointerNames are the names of a blob's pointer, the identity's
// first (pointerNames).
func (h *Handler) blobPointerNames(be *backend, repo string, plainDigest digest.Digest) []string {
	return h.pointerNames("blob", be.name, repo, plainDigest.String())
}

// forIdentity is b with its layer key wrapped for shroud's identity
// alone. A mapping restored from a manifest carries the wrapped keys of
// every recipient the manifest had when it was read; what shroud writes
// upstream from a mapping (a blob pointer) or keeps for another
// repository (a mount) carries none of them on, or a recipient a rewrap
// job took away would find its wrapped key upstream again. The key is
// opened with the identity only: a mapping the identity cannot open is
// not shroud's to copy.
func (h *Handler) forIdentity(b cache.Blob) (cache.Blob, error) {
	opts, _, err := h.keys.UnwrapWith(b.Annotations, crypto.IsIdentityKey)
	if err != nil {
		return cache.Blob{}, fmt.Errorf("blob %s: %w", b.PlainDigest, err)
	}
	pub, err := crypto.ParsePublicOptions(b.Annotations)
	if err != nil {
		return cache.Blob{}, err
	}
	ann, err := h.keys.WrapForIdentity(opts, pub)
	if err != nil {
		return cache.Blob{}, err
	}
	b.Annotations = ann
	return b, nil
}

// writeBlobPointer records b's pairing upstream. b's layer key is
// wrapped for the identity alone: as an upload commits it, or as
// forIdentity makes a mapping a mount copies (the callers' part, so that
// a commit does not unwrap and wrap its key a second time).
func (h *Handler) writeBlobPointer(ctx context.Context, be *backend, b cache.Blob) error {
	pub, err := crypto.ParsePublicOptions(b.Annotations)
	if err != nil {
		return err
	}
	if err := h.ensureEmptyJSON(ctx, be, b.Repository); err != nil {
		return err
	}
	empty := ocispec.Descriptor{MediaType: ocispec.MediaTypeEmptyJSON, Digest: emptyJSONDigest, Size: 2}
	plain := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		ArtifactType: blobPointerType, Config: empty,
		Layers: []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageLayer, Digest: b.PlainDigest, Size: b.Size}}}
	plainBody, err := json.Marshal(plain)
	if err != nil {
		return fmt.Errorf("blob pointer: %w", err)
	}
	sealed, err := h.keys.Identity().Seal(crypto.Seal{Upstream: be.name, Repository: b.Repository,
		ContentType: ocispec.MediaTypeImageManifest, Manifest: plainBody,
		Layers: []crypto.SealedLayer{{PlainDigest: b.PlainDigest, CipherDigest: b.CipherDigest, Size: b.Size, HMAC: pub.HMAC}}})
	if err != nil {
		return err
	}
	enc := plain
	enc.Layers = []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageLayer + "+encrypted", Digest: b.CipherDigest, Size: b.Size, Annotations: b.Annotations}}
	enc.Annotations = map[string]string{crypto.AnnotationOriginal: sealed}
	body, err := json.Marshal(enc)
	if err != nil {
		return fmt.Errorf("blob pointer: %w", err)
	}
	if _, _, err := be.cl.PutManifest(ctx, b.Repository, h.blobPointerTag(be, b.Repository, b.PlainDigest), ocispec.MediaTypeImageManifest, body); err != nil {
		return fmt.Errorf("record the blob's pairing upstream: %w", err)
	}
	return nil
}

// recordBlobPointer writes b's pointer; a failure leaves the mapping to
// the caches (this replica's, the shared tier's) and is logged.
func (h *Handler) recordBlobPointer(ctx context.Context, be *backend, b cache.Blob) {
	if err := h.writeBlobPointer(ctx, be, b); err != nil {
		logger(ctx).Warn("blob pairing not recorded upstream: only the caches know it", "repository", b.Repository, "plain_digest", b.PlainDigest, "err", err)
	}
}

// emptyJSONRepos is the set of repositories (per backend) known to hold
// {}; its lock makes concurrent commits in one repository upload it once.
type emptyJSONRepos struct {
	mu   sync.Mutex
	have map[string]bool
}

// ensureEmptyJSON uploads {} (the blob pointers' config) to repo unless
// the upstream has it.
func (h *Handler) ensureEmptyJSON(ctx context.Context, be *backend, repo string) error {
	k := be.name + "\x00" + repo
	h.emptyJSON.mu.Lock()
	defer h.emptyJSON.mu.Unlock()
	if h.emptyJSON.have[k] {
		return nil
	}
	if _, ok, err := be.cl.HeadBlob(ctx, repo, emptyJSONDigest); err != nil {
		return err
	} else if !ok {
		loc, err := be.cl.StartUpload(ctx, repo)
		if err != nil {
			return err
		}
		if loc, err = be.cl.PatchUpload(ctx, loc, bytes.NewReader([]byte("{}")), 0, 2); err != nil {
			h.cancelUpstream(ctx, be, loc)
			return err
		}
		if err := be.cl.CommitUpload(ctx, loc, emptyJSONDigest); err != nil {
			return err
		}
	}
	if h.emptyJSON.have == nil || len(h.emptyJSON.have) >= maxLocalSessions {
		h.emptyJSON.have = map[string]bool{}
	}
	h.emptyJSON.have[k] = true
	return nil
}

// blobMapping is repo's mapping of a blob: the cache's, else what its
// pointer upstream vouches for (recorded on the way). A blob deleted
// through this process, or one shroud never stored, is a miss.
func (h *Handler) blobMapping(ctx context.Context, be *backend, repo string, plainDigest digest.Digest) (cache.Blob, bool) {
	if b, ok := be.blob(ctx, repo, plainDigest); ok {
		return b, true
	}
	if be.deleted(ctx, repo, plainDigest) {
		return cache.Blob{}, false
	}
	um, err := h.getPointer(ctx, be, repo, h.blobPointerNames(be, repo, plainDigest))
	if err != nil {
		if !upstream.IsStatus(err, http.StatusNotFound) {
			logger(ctx).Warn("read a blob pointer", "repository", repo, "plain_digest", plainDigest, "err", err)
		}
		return cache.Blob{}, false
	}
	if _, err := h.restore(ctx, be, repo, um, 0, crypto.NewUnwrapBudget(maxUnwrapsPerManifest)); err != nil {
		logger(ctx).Warn("a blob pointer does not restore: ignored", "repository", repo, "plain_digest", plainDigest, "err", err)
		return cache.Blob{}, false
	}
	return be.blob(ctx, repo, plainDigest)
}

// deleteBlobPointer removes a deleted blob's pointer, so that no replica
// (nor this one after a restart) maps the blob again: by its digest (a
// registry that cannot delete tags drops them with it), then by its tag
// (one that keeps tags, as ggcr's does). Failures are logged.
func (h *Handler) deleteBlobPointer(ctx context.Context, be *backend, repo string, plainDigest digest.Digest) {
	for _, tag := range h.blobPointerNames(be, repo, plainDigest) {
		d, _, _, err := be.cl.HeadManifest(ctx, repo, tag)
		if upstream.IsStatus(err, http.StatusNotFound) {
			continue
		}
		if err == nil && d != "" {
			err = be.cl.DeleteManifest(ctx, repo, d.String())
		}
		if terr := be.cl.DeleteManifest(ctx, repo, tag); terr != nil && !upstream.IsStatus(terr, http.StatusNotFound) && err == nil {
			err = terr
		}
		if err != nil && !upstream.IsStatus(err, http.StatusNotFound) {
			logger(ctx).Info("the upstream kept the pointer of a deleted blob", "repository", repo, "plain_digest", plainDigest, "err", err)
		}
	}
}

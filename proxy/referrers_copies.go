package proxy

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"
)

// Copies pushed before one encrypted manifest per plaintext manifest
// (manifest_reuse.go): every push of a manifest stored a copy of its own,
// and referrers were attached to whichever copy the subject mapped to
// then. Those copies are known by their tags alone, so a referrers
// request on an upstream with the referrers API also asks about the
// copies the repository's tags name: a scan of at most maxCopyScanTags
// client tags (a HEAD each), remembered per repository for copyScanTTL,
// and of each tagged manifest's seal (which plaintext manifest it is a
// copy of), remembered by upstream digest (content-addressed).

const (
	maxCopyScanTags = 256
	copyScanTTL     = 30 * time.Second
	copyScanEntries = 256
	sealedOfEntries = 8192
)

// copyScans holds the scans (the upstream digests a repository's client
// tags name) and the seal readings.
type copyScans struct {
	scans    *timedLRU[[]digest.Digest]
	sealedOf *timedLRU[digest.Digest]
}

func newCopyScans() *copyScans {
	return &copyScans{scans: newTimedLRU[[]digest.Digest](copyScanEntries, copyScanTTL), sealedOf: newTimedLRU[digest.Digest](sealedOfEntries, 24*time.Hour)}
}

// taggedCopiesOf adds to copies the upstream manifests the repository's
// client tags name that are shroud's copies of subject.
func (h *Handler) taggedCopiesOf(ctx context.Context, be *backend, repo string, subject digest.Digest, copies []digest.Digest) ([]digest.Digest, error) {
	tagged, err := h.scanTags(ctx, be, repo)
	if err != nil {
		return nil, err
	}
	for _, d := range tagged {
		if slices.Contains(copies, d) {
			continue
		}
		plain, err := h.sealedPlain(ctx, be, repo, d)
		if err != nil {
			return nil, err
		}
		if plain == subject {
			copies = append(copies, d)
		}
	}
	return copies, nil
}

// scanTags reads the distinct upstream manifests the repository's client
// tags name.
func (h *Handler) scanTags(ctx context.Context, be *backend, repo string) ([]digest.Digest, error) {
	key := be.name + "\x00" + repo
	if s, ok := h.copyScans.scans.Get(key); ok {
		return s, nil
	}
	tags, err := h.upstreamTags(ctx, be, repo)
	if err != nil {
		return nil, fmt.Errorf("tags of %s: %w", repo, err)
	}
	tags = slices.DeleteFunc(tags, isPointerTag)
	if len(tags) > maxCopyScanTags {
		logger(ctx).Info("referrers: the repository has more tags than shroud scans for earlier copies of a subject", "repository", repo,
			"tags", len(tags), "scanned", maxCopyScanTags)
		tags = tags[:maxCopyScanTags]
	}
	var scan []digest.Digest
	for _, tag := range tags {
		d, _, _, err := be.cl.HeadManifest(ctx, repo, tag)
		if err != nil || d == "" || slices.Contains(scan, d) {
			continue // gone since the list, or not answered: not a copy found
		}
		scan = append(scan, d)
	}
	h.copyScans.scans.Add(key, scan)
	return scan, nil
}

// sealedPlain is the plaintext digest of the manifest whose copy shroud
// sealed for repo is the upstream manifest d, "" if d is none.
func (h *Handler) sealedPlain(ctx context.Context, be *backend, repo string, d digest.Digest) (digest.Digest, error) {
	key := be.name + "\x00" + repo + "\x00" + d.String()
	if p, ok := h.copyScans.sealedOf.Get(key); ok {
		return p, nil
	}
	um, err := be.cl.GetManifest(ctx, repo, d.String())
	if err != nil {
		return "", nil // gone since its tag was read: none
	}
	var plain digest.Digest
	if _, seal, _, ok := h.sealOf(ctx, be, repo, um); ok && um.Digest == d {
		plain = digest.FromBytes(seal.Manifest)
	}
	h.copyScans.sealedOf.Add(key, plain)
	return plain, nil
}

package proxy

import (
	"context"
	"net/http"
	"regexp"

	"github.com/shroud-oci/shroud/proxy/upstream"
)

// Digest tags. Clients name things after a manifest's digest in tags of
// their own: the OCI 1.1 referrers tag schema ("sha256-<hex>", an index
// of the manifest's referrers, on registries without the referrers API)
// and cosign's ("sha256-<hex>.sig", ".att", ".sbom"). Stored under those
// names, they would tell the registry the plaintext digest of every
// signed image. Through shroud such a tag is stored under a pointer-form
// tag instead, a keyed hash of the backend, the repository and the
// client's tag name (so the registry learns no digest), and read back
// under the client's name. Like pointers, these tags are hidden from tag
// lists through shroud (their names cannot be turned back into the
// client's).

// digestTag matches the tags clients derive from a digest: an algorithm,
// a dash and 64 hex digits (a sha512 digest's truncated, as the OCI
// schema truncates it; in either case), then anything.
var digestTag = regexp.MustCompile(`^(?i)(sha256|sha384|sha512)-[0-9a-f]{64}`)

// isDigestTag says whether a client's tag names a digest.
func isDigestTag(tag string) bool { return digestTag.MatchString(tag) }

// digestTagNames are the upstream tags of a client's digest tag: its name
// under the identity (the one written), then under previous identities
// (still read, and deleted).
func (h *Handler) digestTagNames(be *backend, repo, tag string) []string {
	return h.pointerNames("tag", be.name, repo, tag)
}

// upstreamRef is the reference a client's ref is stored under upstream:
// a digest or an ordinary tag as it is, a digest tag by its keyed name.
func (h *Handler) upstreamRef(be *backend, repo, ref string) string {
	if _, byDigest := isDigest(ref); byDigest || !isDigestTag(ref) {
		return ref
	}
	return h.digestTagNames(be, repo, ref)[0]
}

// getTagged reads the manifest a client's tag names upstream.
func (h *Handler) getTagged(ctx context.Context, be *backend, repo, tag string) (upstream.Manifest, error) {
	if !isDigestTag(tag) {
		return be.cl.GetManifest(ctx, repo, tag)
	}
	return h.getPointer(ctx, be, repo, h.digestTagNames(be, repo, tag))
}

// deleteTag deletes a client's tag upstream: a digest tag under each of
// its keyed names. It is unknown (the upstream's 404) only if none was
// there.
func (h *Handler) deleteTag(ctx context.Context, be *backend, repo, tag string) error {
	if !isDigestTag(tag) {
		return be.cl.DeleteManifest(ctx, repo, tag)
	}
	var unknown error
	deleted := false
	for _, name := range h.digestTagNames(be, repo, tag) {
		switch err := be.cl.DeleteManifest(ctx, repo, name); {
		case err == nil:
			deleted = true
		case upstream.IsStatus(err, http.StatusNotFound):
			unknown = err
		default:
			return err
		}
	}
	if !deleted {
		return unknown
	}
	return nil
}

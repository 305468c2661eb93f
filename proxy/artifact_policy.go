package proxy

import (
	"bytes"
	"io"
	"net/http"
	"strings"

	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/proxy/upstream"
)

// checkArtifactDenied refuses a manifest PUT to a passthrough repository
// that a deny rule narrowed to its artifact type covers (the encrypt path
// checks it in pushManifest): the raw passthrough never reads a manifest,
// so the body is read here, bounded, and handed on as it came.
func (h *Handler) checkArtifactDenied(r *http.Request, repo string) *apiError {
	if r.Method != http.MethodPut || !strings.Contains(r.URL.Path, "/manifests/") || !h.policy.DeniesArtifacts(repo) {
		return nil
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, upstream.MaxManifestSize+1))
	if err != nil {
		return apiErr(http.StatusBadRequest, codeManifestInvalid, "read manifest: %v", err)
	}
	if len(body) > upstream.MaxManifestSize {
		return apiErr(http.StatusRequestEntityTooLarge, codeManifestInvalid, "manifest is larger than %d bytes", upstream.MaxManifestSize)
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	at := referrerDescriptor(body, r.Header.Get("Content-Type")).ArtifactType
	if ar := h.policy.MatchArtifact(repo, at); ar != nil && ar.Action == crypto.Deny {
		return apiErr(http.StatusForbidden, codeDenied, "%s denies manifests of artifact type %q in repository %s", ar, at, repo)
	}
	return nil
}

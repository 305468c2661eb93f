package proxy

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/gorilla/mux"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/proxy/upstream"
)

// referrers serves GET /v2/<name>/referrers/<digest> in plaintext terms:
// the subject the client names is looked up upstream by its encrypted
// digest, and every referrer in the answer is described as the client
// pushed it (its digest, size, media type, artifact type, annotations).
// An upstream without the referrers API answers as it does.
func (h *Handler) referrers(w http.ResponseWriter, r *http.Request) error {
	v := mux.Vars(r)
	repo := v["name"]
	subject, err := digest.Parse(v["digest"])
	if err != nil {
		return apiErr(http.StatusBadRequest, codeDigestInvalid, "invalid digest %q", v["digest"])
	}
	ctx, be := r.Context(), h.backend(r)
	upSubject := subject
	if mm, ok := be.manifestMapping(ctx, repo, subject); ok {
		upSubject = mm.UpstreamDigest
	}
	hdr := http.Header{"Accept": {ocispec.MediaTypeImageIndex}}
	resp, err := be.cl.Do(ctx, http.MethodGet, "/v2/"+repo+"/referrers/"+upSubject.String(), r.URL.Query(), hdr)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return passResponse(w, r, resp, be.cl.Base())
	}
	var idx ocispec.Index
	if err := json.NewDecoder(io.LimitReader(resp.Body, upstream.MaxManifestSize)).Decode(&idx); err != nil {
		return fmt.Errorf("upstream referrers answer: %w", err)
	}
	if len(idx.Manifests) > maxReferrers {
		return apiErr(http.StatusBadGateway, codeUnavailable, "the upstream lists %d referrers of %s, more than the %d shroud restores", len(idx.Manifests), subject, maxReferrers)
	}
	budget := crypto.NewUnwrapBudget(maxUnwrapsPerRequest) // shared by the referrers
	for i := range idx.Manifests {
		d := &idx.Manifests[i]
		um, err := be.cl.GetManifest(ctx, repo, d.Digest.String())
		if err != nil {
			return fmt.Errorf("referrer %s: %w", d.Digest, err)
		}
		// One level deep: a referrer that is an index is described by
		// its own seal, its children are not fetched.
		s, err := h.restore(ctx, be, repo, um, 1, budget)
		if err != nil {
			return fmt.Errorf("referrer %s: %w", d.Digest, err)
		}
		if s.digest == um.Digest {
			continue // not one shroud rewrote
		}
		var orig struct {
			ArtifactType string              `json:"artifactType"`
			Config       *ocispec.Descriptor `json:"config"`
			Annotations  map[string]string   `json:"annotations"`
		}
		if err := json.Unmarshal(s.body, &orig); err != nil {
			return fmt.Errorf("referrer %s: %w", d.Digest, err)
		}
		d.Digest, d.Size, d.MediaType, d.Annotations = s.digest, int64(len(s.body)), s.contentType, orig.Annotations
		d.ArtifactType = orig.ArtifactType
		if d.ArtifactType == "" && orig.Config != nil {
			d.ArtifactType = orig.Config.MediaType
		}
	}
	if idx.MediaType == "" {
		idx.MediaType = ocispec.MediaTypeImageIndex
	}
	if idx.Manifests == nil {
		idx.Manifests = []ocispec.Descriptor{}
	}
	body, err := json.Marshal(idx)
	if err != nil {
		return err
	}
	if f := resp.Header.Get("OCI-Filters-Applied"); f != "" {
		w.Header().Set("OCI-Filters-Applied", f)
	}
	w.Header().Set("Content-Type", ocispec.MediaTypeImageIndex)
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(http.StatusOK)
	w.Write(body)
	return nil
}

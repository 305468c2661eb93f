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
// A referrer is listed only if the manifest restored (for one shroud
// sealed: the client's original) names the subject asked for, by its
// plaintext digest or the upstream digest it maps to: the upstream's list
// is not trusted to be the subject's. An upstream without the referrers
// API answers as it does.
func (h *Handler) referrers(w http.ResponseWriter, r *http.Request) error {
	v := mux.Vars(r)
	repo := v["name"]
	subject, err := digest.Parse(v["digest"])
	if err != nil {
		return apiErr(http.StatusBadRequest, codeDigestInvalid, "invalid digest %q", v["digest"])
	}
	ctx, be := r.Context(), h.backend(r)
	budget := crypto.NewUnwrapBudget(maxUnwrapsPerRequest) // shared by the subject and the referrers
	upSubject := subject
	// The cache's mapping, else the subject's pointer (after a restart,
	// on another replica).
	if mm, ok, err := h.liveManifestFor(ctx, be, repo, subject, budget); err != nil {
		return err
	} else if ok {
		upSubject = mm.UpstreamDigest
	}
	hdr := http.Header{"Accept": {ocispec.MediaTypeImageIndex}}
	resp, err := be.cl.Do(ctx, http.MethodGet, "/v2/"+repo+"/referrers/"+upSubject.String(), r.URL.Query(), hdr)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return h.passResponse(w, r, resp, be.cl.Base())
	}
	var idx ocispec.Index
	if err := json.NewDecoder(io.LimitReader(resp.Body, upstream.MaxManifestSize)).Decode(&idx); err != nil {
		return fmt.Errorf("upstream referrers answer: %w", err)
	}
	if len(idx.Manifests) > maxReferrers {
		return apiErr(http.StatusBadGateway, codeUnavailable, "the upstream lists %d referrers of %s, more than the %d shroud restores", len(idx.Manifests), subject, maxReferrers)
	}
	listed := idx.Manifests[:0]
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
		var orig struct {
			ArtifactType string              `json:"artifactType"`
			Config       *ocispec.Descriptor `json:"config"`
			Annotations  map[string]string   `json:"annotations"`
			Subject      *ocispec.Descriptor `json:"subject"`
		}
		if err := json.Unmarshal(s.body, &orig); err != nil {
			orig.Subject = nil // names no subject
		}
		if orig.Subject == nil || (orig.Subject.Digest != subject && orig.Subject.Digest != upSubject) {
			var named digest.Digest
			if orig.Subject != nil {
				named = orig.Subject.Digest
			}
			logger(ctx).Info("dropped a referrer the upstream listed for a subject it does not name", "repository", repo,
				"subject", subject, "referrer_upstream_digest", um.Digest, "its_subject", named)
			continue
		}
		if s.digest != um.Digest { // one shroud rewrote
			d.Digest, d.Size, d.MediaType, d.Annotations = s.digest, int64(len(s.body)), s.contentType, orig.Annotations
			d.ArtifactType = orig.ArtifactType
			if d.ArtifactType == "" && orig.Config != nil {
				d.ArtifactType = orig.Config.MediaType
			}
		}
		listed = append(listed, *d)
	}
	idx.Manifests = listed
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

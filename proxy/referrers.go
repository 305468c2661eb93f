package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/gorilla/mux"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/proxy/upstream"
)

// referrers serves GET /v2/<name>/referrers/<digest> in plaintext terms,
// on every upstream. On one with the referrers API, the subject the
// client names is asked about by its encrypted digests (the copy its
// pointer names, and the earlier copies that one replaced:
// Seal.Previous), and every referrer in the answers is described as the
// client pushed it (its digest, size, media type, artifact type,
// annotations). On one without (a 404), the list is the one shroud keeps
// itself (referrers_kept.go). Either way a referrer is listed only if the
// manifest restored (for one shroud sealed: the client's original) names
// the subject asked for, by its plaintext digest or an upstream digest it
// maps to: no list is trusted to be the subject's. The artifactType
// filter is shroud's, applied to what the client sees.
func (h *Handler) referrers(w http.ResponseWriter, r *http.Request) error {
	v := mux.Vars(r)
	repo := v["name"]
	subject, err := digest.Parse(v["digest"])
	if err != nil {
		return apiErr(http.StatusBadRequest, codeDigestInvalid, "invalid digest %q", v["digest"])
	}
	ctx, be := r.Context(), h.backend(r)
	budget := crypto.NewUnwrapBudget(maxUnwrapsPerRequest) // shared by the subject and the referrers
	copies, err := h.copiesOf(ctx, be, repo, subject, budget)
	if err != nil {
		return err
	}
	var listed []ocispec.Descriptor
	api := true
	restored := 0                      // referrers fetched across the copies, bounded by maxReferrers
	for i := 0; i < len(copies); i++ { // copies grows at the first answer
		up := copies[i]
		resp, err := be.cl.Do(ctx, http.MethodGet, "/v2/"+repo+"/referrers/"+up.String(), nil, http.Header{"Accept": {ocispec.MediaTypeImageIndex}})
		if err != nil {
			return err
		}
		if resp.StatusCode == http.StatusNotFound && i == 0 {
			resp.Body.Close()
			api = false // no referrers API: shroud keeps the list
			break
		}
		if resp.StatusCode != http.StatusOK {
			defer resp.Body.Close()
			if i > 0 && resp.StatusCode == http.StatusNotFound {
				continue
			}
			return h.passResponse(w, r, resp, be.cl.Base())
		}
		if i == 0 {
			// The upstream has the API: the copies pushed before
			// pushes reused them are asked about too.
			if copies, err = h.taggedCopiesOf(ctx, be, repo, subject, copies); err != nil {
				resp.Body.Close()
				return err
			}
		}
		ds, err := h.upstreamReferrers(ctx, be, repo, subject, copies, resp, budget, &restored)
		resp.Body.Close()
		if err != nil {
			return err
		}
		for _, d := range ds {
			if !slices.ContainsFunc(listed, func(l ocispec.Descriptor) bool { return l.Digest == d.Digest }) {
				listed = append(listed, d)
			}
		}
	}
	if !api {
		if listed, err = h.keptReferrers(ctx, be, repo, subject); err != nil {
			return err
		}
	}
	if at := artifactTypeFilter(r.URL.RawQuery); at != "" {
		listed = slices.DeleteFunc(listed, func(d ocispec.Descriptor) bool { return d.ArtifactType != at })
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	if listed == nil {
		listed = []ocispec.Descriptor{}
	}
	body, err := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: listed})
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", ocispec.MediaTypeImageIndex)
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(http.StatusOK)
	w.Write(body)
	return nil
}

// copiesOf lists the upstream digests a subject's referrers may be
// attached to: the copy its pointer (or the cache) names, then the
// copies that one replaced, as its seal records them; the plaintext
// digest itself for a manifest shroud stored no copy of.
func (h *Handler) copiesOf(ctx context.Context, be *backend, repo string, subject digest.Digest, budget *crypto.UnwrapBudget) ([]digest.Digest, error) {
	mm, ok, err := h.liveManifestFor(ctx, be, repo, subject, budget)
	if err != nil {
		return nil, err
	}
	if !ok {
		return []digest.Digest{subject}, nil
	}
	copies := []digest.Digest{mm.UpstreamDigest}
	um, err := be.cl.GetManifest(ctx, repo, mm.UpstreamDigest.String())
	if err != nil {
		return nil, fmt.Errorf("subject %s: %w", subject, err)
	}
	if _, seal, _, ok := h.sealOf(ctx, be, repo, um); ok && digest.FromBytes(seal.Manifest) == subject {
		for _, p := range seal.Previous[:min(len(seal.Previous), crypto.MaxPreviousCopies)] {
			if !slices.Contains(copies, p) {
				copies = append(copies, p)
			}
		}
	}
	return copies, nil
}

// upstreamReferrers reads an upstream referrers answer about one of the
// subject's copies and returns the referrers that name the subject (or
// one of its copies), described as their clients pushed them.
func (h *Handler) upstreamReferrers(ctx context.Context, be *backend, repo string, subject digest.Digest, copies []digest.Digest, resp *http.Response, budget *crypto.UnwrapBudget, restored *int) ([]ocispec.Descriptor, error) {
	var idx ocispec.Index
	if err := json.NewDecoder(io.LimitReader(resp.Body, upstream.MaxManifestSize)).Decode(&idx); err != nil {
		return nil, fmt.Errorf("upstream referrers answer: %w", err)
	}
	// One bound for all the copies asked about: a client that made many
	// copies (another content type each time) multiplies nothing.
	if *restored += len(idx.Manifests); *restored > maxReferrers {
		return nil, apiErr(http.StatusBadGateway, codeUnavailable, "the upstream lists %d referrers of %s and its copies, more than the %d shroud restores", *restored, subject, maxReferrers)
	}
	var listed []ocispec.Descriptor
	for i := range idx.Manifests {
		d := idx.Manifests[i]
		um, err := be.cl.GetManifest(ctx, repo, d.Digest.String())
		if upstream.IsStatus(err, http.StatusNotFound) {
			continue // deleted since the upstream listed it
		}
		if err != nil {
			return nil, fmt.Errorf("referrer %s: %w", d.Digest, err)
		}
		// One level deep: a referrer that is an index is described by
		// its own seal, its children are not fetched.
		s, err := h.restore(ctx, be, repo, um, 1, budget)
		if err != nil {
			return nil, fmt.Errorf("referrer %s: %w", d.Digest, err)
		}
		rd, named := describeReferrer(s)
		if named != subject && !slices.Contains(copies, named) {
			logger(ctx).Info("dropped a referrer the upstream listed for a subject it does not name", "repository", repo,
				"subject", subject, "referrer_upstream_digest", um.Digest, "its_subject", named)
			continue
		}
		if s.digest == um.Digest { // not one shroud rewrote: as the upstream describes it
			rd.Annotations, rd.ArtifactType = d.Annotations, d.ArtifactType
		}
		listed = append(listed, rd)
	}
	return listed, nil
}

// describeReferrer is the descriptor of a manifest as a referrers list
// gives it (its artifactType, else its config's media type; its
// annotations), and the subject it names ("" for none).
func describeReferrer(s served) (ocispec.Descriptor, digest.Digest) {
	var m struct {
		MediaType    string              `json:"mediaType"`
		ArtifactType string              `json:"artifactType"`
		Config       *ocispec.Descriptor `json:"config"`
		Annotations  map[string]string   `json:"annotations"`
		Subject      *ocispec.Descriptor `json:"subject"`
	}
	if err := json.Unmarshal(s.body, &m); err != nil {
		return ocispec.Descriptor{}, ""
	}
	d := ocispec.Descriptor{MediaType: s.contentType, Digest: s.digest, Size: int64(len(s.body)), ArtifactType: m.ArtifactType, Annotations: m.Annotations}
	if d.MediaType == "" {
		d.MediaType = m.MediaType
	}
	if d.ArtifactType == "" && m.Config != nil {
		d.ArtifactType = m.Config.MediaType
	}
	var named digest.Digest
	if m.Subject != nil {
		named = m.Subject.Digest
	}
	return d, named
}

// artifactTypeFilter is the artifactType a referrers request filters by.
// The query is read with path unescaping: media types hold "+"
// ("application/spdx+json"), which clients do not always escape, and
// which form decoding would turn into a space.
func artifactTypeFilter(rawQuery string) string {
	for _, kv := range strings.Split(rawQuery, "&") {
		if v, ok := strings.CutPrefix(kv, "artifactType="); ok {
			if u, err := url.PathUnescape(v); err == nil {
				return u
			}
			return v
		}
	}
	return ""
}

package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"

	"github.com/gorilla/mux"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/shroud-oci/shroud/cache"
	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/proxy/upstream"
)

// putManifest serves a manifest PUT: the manifest is rewritten to its
// encrypted form, the client's bytes sealed into it, and the result stored
// upstream; the client is answered with the digest of what it sent.
func (h *Handler) putManifest(w http.ResponseWriter, r *http.Request) error {
	v := mux.Vars(r)
	repo, ref := v["name"], v["reference"]
	ctx, be := r.Context(), h.backend(r)
	body, err := io.ReadAll(io.LimitReader(r.Body, upstream.MaxManifestSize+1))
	if err != nil {
		return fmt.Errorf("read manifest: %w", err)
	}
	if len(body) > upstream.MaxManifestSize {
		return apiErr(http.StatusRequestEntityTooLarge, codeManifestInvalid, "manifest is larger than %d bytes", upstream.MaxManifestSize)
	}
	plainDigest := digest.FromBytes(body)
	refDigest, byDigest := isDigest(ref)
	if byDigest {
		if !refDigest.Algorithm().Available() || refDigest.Validate() != nil {
			return apiErr(http.StatusBadRequest, codeDigestInvalid, "digest algorithm %s is not supported", refDigest.Algorithm())
		}
		if plainDigest = refDigest.Algorithm().FromBytes(body); plainDigest != refDigest {
			return apiErr(http.StatusBadRequest, codeDigestInvalid, "the manifest has digest %s, not %s", plainDigest, refDigest)
		}
	}
	contentType := r.Header.Get("Content-Type")
	m, err := parseManifest(body, contentType)
	if err != nil {
		return err
	}
	if contentType == "" {
		contentType = m.mediaType
	}
	var plainSubject digest.Digest
	if m.subject != nil {
		plainSubject = m.subject.Digest
	}
	rule := h.policy.Match(repo) // an encrypt rule: ServeHTTP handled the others
	if err := h.encryptManifest(ctx, be, repo, m, rule); err != nil {
		return err
	}
	sealed, err := h.keys.Identity().Seal(contentType, body)
	if err != nil {
		return err
	}
	m.annotations = maps.Clone(m.annotations)
	if m.annotations == nil {
		m.annotations = map[string]string{}
	}
	m.annotations[crypto.AnnotationOriginal] = sealed
	out, err := m.marshal()
	if err != nil {
		return err
	}
	upRef := ref
	if byDigest {
		upRef = digest.FromBytes(out).String()
	}
	if len(out) > upstream.MaxManifestSize {
		return apiErr(http.StatusBadRequest, codeManifestInvalid, "the encrypted manifest would have %d bytes, more than the %d registries accept", len(out), upstream.MaxManifestSize)
	}
	upDigest, subjectProcessed, err := be.cl.PutManifest(ctx, repo, upRef, m.mediaType, out)
	if err != nil {
		return err
	}
	be.deleted.Remove(repoKey(repo, plainDigest))
	if subjectProcessed && plainSubject != "" {
		w.Header().Set("OCI-Subject", plainSubject.String())
	}
	be.putManifestMapping(ctx, cache.Manifest{
		Repository: repo, PlainDigest: plainDigest, ContentType: contentType, Size: int64(len(body)),
		UpstreamDigest: upDigest, UpstreamMediaType: m.mediaType, UpstreamSize: int64(len(out)),
	})
	encrypted := 0
	for _, l := range m.layers {
		if crypto.IsEncryptedMediaType(l.MediaType) {
			encrypted++
		}
	}
	h.metrics.manifests.Add(ctx, 1, metric.WithAttributes(attribute.String("shroud.rule", rule.String())))
	// The edge's record of what left: which image, under which rule, how
	// many of its layers encrypted.
	logger(ctx).Info("manifest stored", "repository", repo, "reference", ref, "plain_digest", plainDigest,
		"upstream_digest", upDigest, "rule", rule.String(), "layers", len(m.layers), "encrypted_layers", encrypted)
	w.Header().Set("Location", "/v2/"+repo+"/manifests/"+plainDigest.String())
	w.Header().Set("Docker-Content-Digest", plainDigest.String())
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
	return nil
}

// encryptManifest rewrites m in place to what the upstream stores, as the
// rule says: which layers, for which recipients.
func (h *Handler) encryptManifest(ctx context.Context, be *backend, repo string, m *manifest, rule *crypto.Rule) error {
	if m.isIndex() {
		for i := range m.manifests {
			if err := h.mapChild(ctx, be, repo, &m.manifests[i]); err != nil {
				return err
			}
		}
		if m.mediaType == mediaTypeDockerList {
			m.mediaType = mediaTypeOCIIndex
		}
	} else {
		if err := h.storeAsPushed(ctx, be, repo, *m.config, "config"); err != nil {
			return err
		}
		platformOK, err := h.encryptsPlatform(ctx, be, repo, *m.config, rule)
		if err != nil {
			return err
		}
		for i := range m.layers {
			if !platformOK || !rule.EncryptsLayer(i, len(m.layers)) {
				if err := h.storeAsPushed(ctx, be, repo, m.layers[i], "layer left in plaintext by "+rule.String()); err != nil {
					return err
				}
				continue
			}
			if err := h.encryptLayer(ctx, be, repo, &m.layers[i], rule); err != nil {
				return err
			}
		}
		if m.mediaType == mediaTypeDockerManifest {
			m.mediaType = mediaTypeOCIManifest
		}
	}
	if m.subject != nil {
		if mm, ok := be.manifestMapping(ctx, repo, m.subject.Digest); ok {
			m.subject.Digest, m.subject.Size, m.subject.MediaType = mm.UpstreamDigest, mm.UpstreamSize, mm.UpstreamMediaType
		}
	}
	return nil
}

// encryptsPlatform says whether the rule encrypts the image whose config
// is cfg, by the platform the config names.
func (h *Handler) encryptsPlatform(ctx context.Context, be *backend, repo string, cfg ocispec.Descriptor, rule *crypto.Rule) (bool, error) {
	if len(rule.Platforms) == 0 {
		return true, nil
	}
	resp, err := be.cl.GetBlob(ctx, repo, cfg.Digest, "")
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	var p struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
		Variant      string `json:"variant"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(&p); err != nil {
		return false, apiErr(http.StatusBadRequest, codeManifestInvalid, "config %s names no platform: %v", cfg.Digest, err)
	}
	return rule.EncryptsPlatform(p.OS, p.Architecture, p.Variant), nil
}

// mapChild points an index entry at the encrypted form of the manifest the
// client pushed, or keeps it if the upstream holds it as it is.
func (h *Handler) mapChild(ctx context.Context, be *backend, repo string, d *ocispec.Descriptor) error {
	if mm, ok := be.manifestMapping(ctx, repo, d.Digest); ok {
		d.Digest, d.Size, d.MediaType = mm.UpstreamDigest, mm.UpstreamSize, mm.UpstreamMediaType
		return nil
	}
	if _, _, _, err := be.cl.HeadManifest(ctx, repo, d.Digest.String()); err != nil {
		if upstream.IsStatus(err, http.StatusNotFound) {
			return apiErr(http.StatusBadRequest, codeManifestBlobUnknown, "manifest %s named by the index is unknown to repository %s", d.Digest, repo)
		}
		return err
	}
	return nil
}

// storeAsPushed makes sure the upstream holds blob d as the client pushed
// it. shroud encrypts every blob at upload, since it cannot tell a layer
// from a config then; a config (which every ocicrypt consumer needs in
// plaintext) or a layer that arrived already encrypted is decrypted from
// shroud's ciphertext and stored as it came, streaming.
func (h *Handler) storeAsPushed(ctx context.Context, be *backend, repo string, d ocispec.Descriptor, what string) error {
	if _, ok, err := be.cl.HeadBlob(ctx, repo, d.Digest); err != nil {
		return err
	} else if ok {
		return nil
	}
	b, ok := be.blob(ctx, d.Digest)
	if !ok {
		return apiErr(http.StatusBadRequest, codeManifestBlobUnknown, "%s %s is unknown to repository %s", what, d.Digest, repo)
	}
	r, err := h.openBlob(ctx, be, repo, b)
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, d.Digest, err)
	}
	defer r.Close()
	loc, err := be.cl.StartUpload(ctx, repo)
	if err != nil {
		return err
	}
	if loc, err = be.cl.PatchUpload(ctx, loc, r, 0, b.Size); err == nil {
		err = be.cl.CommitUpload(ctx, loc, d.Digest)
	}
	if err != nil {
		h.cancelUpstream(ctx, be, loc)
		return fmt.Errorf("%s %s: %w", what, d.Digest, err)
	}
	return nil
}

// openBlob opens the plaintext of a blob shroud encrypted, verified (HMAC
// and plaintext digest) as it is read to the end.
func (h *Handler) openBlob(ctx context.Context, be *backend, repo string, b cache.Blob) (io.ReadCloser, error) {
	opts, err := h.keys.Unwrap(b.Annotations)
	if err != nil {
		return nil, err
	}
	pub, err := crypto.ParsePublicOptions(b.Annotations)
	if err != nil {
		return nil, err
	}
	if !h.ensureCipher(ctx, be, repo, b) {
		return nil, apiErr(http.StatusBadRequest, codeManifestBlobUnknown, "blob %s is gone from the upstream", b.CipherDigest)
	}
	resp, err := be.cl.GetBlob(ctx, repo, b.CipherDigest, "")
	if err != nil {
		return nil, err
	}
	r, err := crypto.DecryptReader(io.LimitReader(resp.Body, b.Size), opts.Key, pub.HMAC, b.PlainDigest)
	if err != nil {
		resp.Body.Close()
		return nil, err
	}
	return &blobReader{Reader: r, Closer: resp.Body}, nil
}

// blobReader is a decrypting reader with the upstream body to close; it
// keeps the reader's WriteTo, so io.Copy runs it on two cores.
type blobReader struct {
	io.Reader
	io.Closer
}

func (b *blobReader) WriteTo(w io.Writer) (int64, error) {
	return b.Reader.(io.WriterTo).WriteTo(w)
}

// encryptLayer rewrites one layer descriptor to its encrypted form, with
// the layer key wrapped for every recipient.
func (h *Handler) encryptLayer(ctx context.Context, be *backend, repo string, d *ocispec.Descriptor, rule *crypto.Rule) error {
	if crypto.IsEncryptedMediaType(d.MediaType) {
		// Encrypted before it reached shroud: stored as it came, and if
		// shroud can open it, the rule's recipients are added to it. A
		// media type alone does not make a layer encrypted: without a
		// wrapped key it would be plaintext leaving under that name.
		if !crypto.HasWrappedKeys(d.Annotations) {
			return apiErr(http.StatusBadRequest, codeManifestInvalid, "layer %s has media type %s but no wrapped key (%s* annotation): it is not encrypted", d.Digest, d.MediaType, crypto.AnnotationKeys)
		}
		if err := h.storeAsPushed(ctx, be, repo, *d, "encrypted layer"); err != nil {
			return err
		}
		ann, err := h.keys.Rewrap(d.Annotations, rule.Recipients, nil)
		switch {
		case errors.Is(err, crypto.ErrNoKey):
			logger(ctx).Info("kept an encrypted layer shroud cannot open as it is", "layer", d.Digest, "err", err)
			return nil
		case err != nil:
			return fmt.Errorf("layer %s: %w", d.Digest, err)
		}
		d.Annotations = ann
		return nil
	}
	b, ok := be.blob(ctx, d.Digest)
	switch {
	case !ok && crypto.IsNonDistributable(d.MediaType):
		return nil // never pushed: clients fetch it from its URLs
	case !ok:
		var err error
		if b, err = h.encryptFromUpstream(ctx, be, repo, d.Digest); err != nil {
			return err
		}
	case !h.ensureCipher(ctx, be, repo, b):
		return apiErr(http.StatusBadRequest, codeManifestBlobUnknown, "layer %s: its ciphertext %s is not in the upstream", d.Digest, b.CipherDigest)
	}
	if b.Size != d.Size {
		return apiErr(http.StatusBadRequest, codeManifestInvalid, "layer %s has size %d in the manifest but %d bytes were pushed", d.Digest, d.Size, b.Size)
	}
	opts, err := h.keys.Unwrap(b.Annotations)
	if err != nil {
		return fmt.Errorf("layer %s: %w", d.Digest, err)
	}
	pub, err := crypto.ParsePublicOptions(b.Annotations)
	if err != nil {
		return err
	}
	ann, err := h.keys.Wrap(opts, pub, rule.Recipients)
	if err != nil {
		return err
	}
	d.Annotations = maps.Clone(d.Annotations)
	if d.Annotations == nil {
		d.Annotations = map[string]string{}
	}
	maps.Copy(d.Annotations, ann)
	d.MediaType = crypto.EncryptedMediaType(d.MediaType)
	d.Digest = b.CipherDigest
	return nil
}

// encryptFromUpstream encrypts a layer the upstream holds in plaintext
// (pushed before shroud stood in front of it, or mounted as plaintext) so
// that the manifest never names plaintext.
func (h *Handler) encryptFromUpstream(ctx context.Context, be *backend, repo string, plainDigest digest.Digest) (cache.Blob, error) {
	resp, err := be.cl.GetBlob(ctx, repo, plainDigest, "")
	if upstream.IsStatus(err, http.StatusNotFound) {
		return cache.Blob{}, apiErr(http.StatusBadRequest, codeManifestBlobUnknown, "layer %s is unknown to repository %s", plainDigest, repo)
	}
	if err != nil {
		return cache.Blob{}, err
	}
	defer resp.Body.Close()
	u, err := h.openUpload(ctx, be, repo)
	if err != nil {
		return cache.Blob{}, err
	}
	if err := h.appendStream(ctx, be, u, resp.Body, resp.ContentLength); err != nil {
		return cache.Blob{}, err
	}
	b, err := h.commit(ctx, be, u, plainDigest)
	if err != nil {
		return cache.Blob{}, fmt.Errorf("encrypt upstream blob %s: %w", plainDigest, err)
	}
	logger(ctx).Info("encrypted a plaintext layer found upstream", "repository", repo, "plain_digest", plainDigest, "cipher_digest", b.CipherDigest)
	return b, nil
}

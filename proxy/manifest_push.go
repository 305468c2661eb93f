package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"reflect"
	"slices"
	"strings"

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
// upstream under its pointer tag (pointer.go) and the client's tag, if it
// pushed one; the client is answered with the digest of what it sent.
func (h *Handler) putManifest(w http.ResponseWriter, r *http.Request) error {
	v := mux.Vars(r)
	repo, ref := v["name"], v["reference"]
	ctx, be := r.Context(), h.backend(r)
	if _, byDigest := isDigest(ref); !byDigest && isPointerTag(ref) {
		return errPointerTag(r.Method, ref)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, upstream.MaxManifestSize+1))
	if err != nil {
		return fmt.Errorf("read manifest: %w", err)
	}
	if len(body) > upstream.MaxManifestSize {
		return apiErr(http.StatusRequestEntityTooLarge, codeManifestInvalid, "manifest is larger than %d bytes", upstream.MaxManifestSize)
	}
	p, err := h.pushManifest(ctx, be, repo, ref, body, r.Header.Get("Content-Type"), true)
	if err != nil {
		return err
	}
	if p.subjectProcessed {
		w.Header().Set("OCI-Subject", p.subject.String())
	}
	w.Header().Set("Location", "/v2/"+repo+"/manifests/"+p.plainDigest.String())
	w.Header().Set("Docker-Content-Digest", p.plainDigest.String())
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
	return nil
}

// pushed is what a manifest push stored.
type pushed struct {
	plainDigest, upstreamDigest digest.Digest
	// subject is the plaintext digest of the manifest's subject, if it
	// names one; subjectProcessed says its referrers list has it now
	// (the upstream's referrers API, or shroud's own: referrers_kept.go).
	subject          digest.Digest
	subjectProcessed bool
	// reused: the copy stored for an earlier push of the same manifest.
	reused bool
	// referrer describes the manifest as its subject's referrers list it.
	referrer ocispec.Descriptor
}

// pushManifest stores the manifest body a client pushed to repo under
// ref (a tag, or its digest): its encrypted form, or the copy stored for
// an earlier push of it that is still what the policy makes of it
// (reusable). authorize asks the upstream whether the client may push
// first; shroud's own pushes (a referrers index it keeps) follow one
// that was.
func (h *Handler) pushManifest(ctx context.Context, be *backend, repo, ref string, body []byte, contentType string, authorize bool) (pushed, error) {
	plainDigest := digest.FromBytes(body)
	refDigest, byDigest := isDigest(ref)
	if byDigest {
		if !refDigest.Algorithm().Available() || refDigest.Validate() != nil {
			return pushed{}, apiErr(http.StatusBadRequest, codeDigestInvalid, "digest algorithm %s is not supported", refDigest.Algorithm())
		}
		if plainDigest = refDigest.Algorithm().FromBytes(body); plainDigest != refDigest {
			return pushed{}, apiErr(http.StatusBadRequest, codeDigestInvalid, "the manifest has digest %s, not %s", plainDigest, refDigest)
		}
	}
	m, err := parseManifest(body, contentType)
	if err != nil {
		return pushed{}, err
	}
	if contentType == "" {
		contentType = m.mediaType
	}
	p := pushed{plainDigest: plainDigest}
	desc := referrerDescriptor(body, contentType)
	if m.subject != nil {
		p.subject, p.referrer = m.subject.Digest, desc
	}
	rule := h.policy.Match(repo) // an encrypt rule: ServeHTTP handled the others
	// Nothing is written, and nothing costly done, before the manifest is
	// validated and the client shown to be allowed to push.
	if err := validatePush(m); err != nil {
		return pushed{}, err
	}
	// A rule narrowed to the manifest's artifact type (signatures kept
	// readable upstream, say) decides its layers.
	selection, plainBy := rule.Selection(), ""
	if ar := h.policy.MatchArtifact(repo, desc.ArtifactType); ar != nil && ar != rule {
		switch ar.Action {
		case crypto.Deny:
			return pushed{}, apiErr(http.StatusForbidden, codeDenied, "%s denies manifests of artifact type %q in repository %s", ar, desc.ArtifactType, repo)
		case crypto.Passthrough:
			plainBy = ar.String()
			selection += "; layers in plaintext by " + plainBy
		}
	}
	if authorize {
		if err := h.authorizePush(ctx, be, repo); err != nil {
			return pushed{}, err
		}
	}
	// The keys the layer keys are wrapped for now (keycheck.go).
	rs, err := h.wrapRecipients(ctx, repo, rule)
	if err != nil {
		return pushed{}, err
	}
	upRef := h.upstreamRef(be, repo, ref)
	var prev crypto.Seal
	if !rule.EncryptOnly {
		um, stored, p0, ok, err := h.reusable(ctx, be, repo, ref, plainDigest, contentType, m, selection, rs)
		if err != nil {
			return pushed{}, err
		}
		if ok {
			p.reused = true
			return h.finishPush(ctx, be, repo, ref, upRef, p, rule, stored, contentType, len(body), um.ContentType, um.Body)
		}
		prev = p0
	}
	if isDigestTag(ref) && !slices.Contains(prev.Tags, ref) {
		prev.Tags = append(prev.Tags, ref)
		prev.Tags = prev.Tags[max(0, len(prev.Tags)-crypto.MaxSealedTags):] // the newest
	}
	seal := crypto.Seal{Upstream: be.name, Repository: repo, ContentType: contentType, Manifest: body,
		Wrapped: rs.WrappedIDs(h.keys.Identity()), Selection: selection, Previous: prev.Previous, Tags: prev.Tags}
	if err := h.encryptManifest(ctx, be, repo, m, rule, plainBy, rs, &seal); err != nil {
		return pushed{}, err
	}
	m.annotations = maps.Clone(m.annotations)
	if rule.EncryptOnly {
		// No original is sealed: shroud could open it. The client's
		// own annotations are what the upstream keeps.
		delete(m.annotations, crypto.AnnotationOriginal)
	} else {
		sealed, err := h.keys.Identity().Seal(seal)
		if err != nil {
			return pushed{}, err
		}
		if m.annotations == nil {
			m.annotations = map[string]string{}
		}
		m.annotations[crypto.AnnotationOriginal] = sealed
	}
	out, err := m.marshal()
	if err != nil {
		return pushed{}, err
	}
	if len(out) > upstream.MaxManifestSize {
		return pushed{}, apiErr(http.StatusBadRequest, codeManifestInvalid, "the encrypted manifest would have %d bytes, more than the %d registries accept", len(out), upstream.MaxManifestSize)
	}
	return h.finishPush(ctx, be, repo, ref, upRef, p, rule, m, contentType, len(body), m.mediaType, out)
}

// finishPush stores out (the encrypted manifest stored, of mediaType:
// what encryptManifest made, or the copy reused) upstream for a push of
// ref, records its mapping, and has the subject's referrers list it.
func (h *Handler) finishPush(ctx context.Context, be *backend, repo, ref, upRef string, p pushed, rule *crypto.Rule, stored *manifest,
	contentType string, size int, mediaType string, out []byte) (pushed, error) {
	upDigest, subjectProcessed, err := h.storeManifest(ctx, be, repo, upRef, p.plainDigest, mediaType, out)
	if err != nil {
		return pushed{}, err
	}
	p.upstreamDigest = upDigest
	be.setDeleted(ctx, repo, p.plainDigest, false)
	be.putManifestMapping(ctx, cache.Manifest{
		Repository: repo, PlainDigest: p.plainDigest, ContentType: contentType, Size: int64(size),
		UpstreamDigest: upDigest, UpstreamMediaType: mediaType, UpstreamSize: int64(len(out)),
	})
	if p.subject != "" {
		p.subjectProcessed = subjectProcessed || h.keepReferrer(ctx, be, repo, p.subject, p.referrer)
	}
	encrypted := 0
	for _, l := range stored.layers {
		if crypto.IsEncryptedMediaType(l.MediaType) {
			encrypted++
		}
	}
	h.metrics.manifests.Add(ctx, 1, metric.WithAttributes(attribute.String("shroud.rule", rule.String())))
	// The edge's record of what left: which image, under which rule, how
	// many of its layers encrypted.
	logger(ctx).Info("manifest stored", "repository", repo, "reference", ref, "plain_digest", p.plainDigest,
		"upstream_digest", upDigest, "rule", rule.String(), "layers", len(stored.layers), "encrypted_layers", encrypted, "reused", p.reused)
	return p, nil
}

// storeManifest PUTs an encrypted manifest upstream: by the pointer tag of
// the digest its client pushed, so that a pull by that digest finds it
// after a restart and on any replica, then by the client's tag, if it
// pushed one. The pointer goes first: a manifest is findable by its digest
// before its tag names it. No PUT by digest: a tag stores the manifest as
// much as a digest does, and makes it findable by its own.
func (h *Handler) storeManifest(ctx context.Context, be *backend, repo, upRef string, plainDigest digest.Digest, mediaType string, out []byte) (digest.Digest, bool, error) {
	upDigest, subjectProcessed, err := be.cl.PutManifest(ctx, repo, h.pointerTag(be, repo, plainDigest), mediaType, out)
	if err != nil {
		return "", false, err
	}
	if _, byDigest := isDigest(upRef); byDigest {
		return upDigest, subjectProcessed, nil
	}
	tagged, processed, err := be.cl.PutManifest(ctx, repo, upRef, mediaType, out)
	if err != nil {
		return "", false, err
	}
	if tagged != upDigest {
		return "", false, fmt.Errorf("upstream stored manifest %s under tag %s, %s under its pointer", tagged, upRef, upDigest)
	}
	return upDigest, subjectProcessed || processed, nil
}

// validatePush checks what can be checked of a pushed manifest without
// any I/O: bounded descriptors, and layers that claim to be encrypted
// carrying wrapped keys that parse (a media type and annotation names
// alone do not make a layer encrypted: it would be plaintext leaving under
// that name).
func validatePush(m *manifest) error {
	if n := len(m.descriptors()); n > maxDescriptors {
		return apiErr(http.StatusBadRequest, codeManifestInvalid, "the manifest has %d descriptors, more than %d", n, maxDescriptors)
	}
	for _, l := range m.layers {
		if !crypto.IsEncryptedMediaType(l.MediaType) {
			continue
		}
		if err := crypto.ValidateEncrypted(l.Annotations); err != nil {
			return &apiError{status: http.StatusBadRequest, code: codeManifestInvalid,
				message: fmt.Sprintf("layer %s has media type %s but is not an encrypted layer: %v", l.Digest, l.MediaType, err), cause: err}
		}
	}
	return nil
}

// authorizePush asks the upstream, with the client's own credentials,
// whether the client may push to repo: it opens an upload session (which
// needs push access) and cancels it. The upstream's refusal (a 401 with its
// challenge, a 403) goes back to the client as it is.
func (h *Handler) authorizePush(ctx context.Context, be *backend, repo string) error {
	loc, err := be.cl.StartUpload(ctx, repo)
	if err != nil {
		return err
	}
	h.cancelUpstream(ctx, be, loc)
	return nil
}

// encryptManifest rewrites m in place to what the upstream stores, as the
// rule says (which layers; none when plainBy names the rule that keeps
// the manifest's artifact type in plaintext), wrapping layer keys for rs
// (the rule's recipients that may be wrapped for now), and records in
// seal the pairings it vouches for. Descriptors that repeat are worked on
// once.
func (h *Handler) encryptManifest(ctx context.Context, be *backend, repo string, m *manifest, rule *crypto.Rule, plainBy string, rs *crypto.Recipients, seal *crypto.Seal) error {
	// The manifests the cache does not know (children, subject) are found
	// through their pointers; restoring them shares one budget.
	budget := crypto.NewUnwrapBudget(maxUnwrapsPerRequest)
	if m.isIndex() {
		mapped := map[digest.Digest]ocispec.Descriptor{}
		for i := range m.manifests {
			c := &m.manifests[i]
			if e, ok := mapped[c.Digest]; ok {
				c.Digest, c.Size, c.MediaType, c.Data = e.Digest, e.Size, e.MediaType, e.Data
				continue
			}
			plain := c.Digest
			if err := h.mapChild(ctx, be, repo, c, budget); err != nil {
				return err
			}
			if c.Digest != plain {
				c.Data = nil // the client's child manifest, in plaintext
				seal.Children = append(seal.Children, crypto.SealedChild{PlainDigest: plain, UpstreamDigest: c.Digest})
			}
			mapped[plain] = *c
		}
		if m.mediaType == mediaTypeDockerList {
			m.mediaType = mediaTypeOCIIndex
		}
	} else {
		platformOK, err := h.prepareConfig(ctx, be, repo, *m.config, rule)
		if err != nil {
			return err
		}
		// An identical descriptor repeated (and decided alike) gets the
		// first one's result: a manifest naming one layer 3,000 times
		// costs one layer's work.
		type done struct {
			orig, out ocispec.Descriptor
			encrypt   bool
		}
		seen := map[digest.Digest][]done{}
		for i := range m.layers {
			l := &m.layers[i]
			encrypt := platformOK && plainBy == "" && rule.EncryptsLayer(i, len(m.layers))
			prev := seen[l.Digest]
			if j := slices.IndexFunc(prev, func(x done) bool { return x.encrypt == encrypt && reflect.DeepEqual(x.orig, *l) }); j >= 0 {
				*l = prev[j].out
				continue
			}
			orig := *l
			if !encrypt {
				what := "layer left in plaintext by " + rule.String()
				if plainBy != "" {
					what = whatPlainArtifact + plainBy
				}
				if err := h.storeAsPushed(ctx, be, repo, *l, what); err != nil {
					return err
				}
			} else if err := h.encryptLayer(ctx, be, repo, l, rs, seal); err != nil {
				return err
			}
			seen[orig.Digest] = append(prev, done{orig: orig, out: *l, encrypt: encrypt})
		}
		if m.mediaType == mediaTypeDockerManifest {
			m.mediaType = mediaTypeOCIManifest
		}
	}
	if m.subject != nil {
		mm, ok, err := h.liveManifestFor(ctx, be, repo, m.subject.Digest, budget)
		if err != nil {
			return fmt.Errorf("subject %s: %w", m.subject.Digest, err)
		}
		if ok {
			m.subject.Digest, m.subject.Size, m.subject.MediaType = mm.UpstreamDigest, mm.UpstreamSize, mm.UpstreamMediaType
			m.subject.Data = nil
		}
	}
	return nil
}

// mapChild points an index entry at the encrypted form of the manifest the
// client pushed (found in the cache, or through its pointer), or keeps it
// if the upstream holds it as it is.
func (h *Handler) mapChild(ctx context.Context, be *backend, repo string, d *ocispec.Descriptor, budget *crypto.UnwrapBudget) error {
	mm, ok, err := h.liveManifestFor(ctx, be, repo, d.Digest, budget)
	if err != nil {
		return fmt.Errorf("index child %s: %w", d.Digest, err)
	}
	if ok {
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

// whatEncrypted names a layer that came encrypted, for storeAsPushed;
// whatPlainArtifact starts the name of a layer of an artifact a rule
// keeps in plaintext by its type.
const (
	whatEncrypted     = "encrypted layer"
	whatPlainArtifact = "artifact layer left in plaintext by "
)

// storeAsPushed makes sure the upstream holds blob d as the client pushed
// it. shroud encrypts every blob at upload, since it cannot tell a layer
// from a config then; a config (which every ocicrypt consumer needs in
// plaintext) or a layer that arrived already encrypted is decrypted from
// shroud's ciphertext and stored as it came, streaming. Only a mapping
// shroud vouches for is decrypted so.
func (h *Handler) storeAsPushed(ctx context.Context, be *backend, repo string, d ocispec.Descriptor, what string) error {
	if _, ok, err := be.cl.HeadBlob(ctx, repo, d.Digest); err != nil {
		return err
	} else if ok {
		if b, ok := be.blob(ctx, repo, d.Digest); ok {
			h.settled(ctx, be, b) // an encrypt-only key kept for it is not needed any more
		}
		return nil
	}
	b, ok := h.blobMapping(ctx, be, repo, d.Digest)
	if !ok || !b.Bound {
		return apiErr(http.StatusBadRequest, codeManifestBlobUnknown, "%s %s is unknown to repository %s", what, d.Digest, repo)
	}
	if b.Layer && (what == whatEncrypted || strings.HasPrefix(what, whatPlainArtifact)) {
		// A blob a manifest names as a layer, claimed "already encrypted"
		// here, or named by an artifact whose type a rule keeps in
		// plaintext (a signature shares no blob with an image): storing
		// it as it came would put that layer upstream in plaintext.
		return apiErr(http.StatusBadRequest, codeManifestInvalid, "%s %s is a layer of another manifest of %s, stored encrypted: it is not stored again as it came", what, d.Digest, repo)
	}
	r, err := h.openBlob(ctx, be, repo, b)
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, d.Digest, err)
	}
	defer r.Close()
	if err := h.uploadPlain(ctx, be, repo, d.Digest, r, b.Size, what); err != nil {
		return err
	}
	h.settled(ctx, be, b)
	return nil
}

// uploadPlain stores size bytes of r upstream as blob d, as they are.
func (h *Handler) uploadPlain(ctx context.Context, be *backend, repo string, d digest.Digest, r io.Reader, size int64, what string) error {
	loc, err := be.cl.StartUpload(ctx, repo)
	if err != nil {
		return err
	}
	if loc, err = be.cl.PatchUpload(ctx, loc, r, 0, size); err == nil {
		err = be.cl.CommitUpload(ctx, loc, d)
	}
	if err != nil {
		h.cancelUpstream(ctx, be, loc)
		return fmt.Errorf("%s %s: %w", what, d, err)
	}
	return nil
}

// openBlob opens the plaintext of a blob shroud encrypted, verified (HMAC
// and plaintext digest) as it is read to the end.
func (h *Handler) openBlob(ctx context.Context, be *backend, repo string, b cache.Blob) (io.ReadCloser, error) {
	opts, err := h.blobKey(ctx, be, b)
	if err != nil {
		return nil, err
	}
	pub, err := crypto.ParsePublicOptions(b.Annotations)
	if err != nil {
		return nil, err
	}
	if err := h.haveCipher(ctx, be, repo, b); err != nil {
		return nil, err
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
// the layer key wrapped for every key of rs, and adds its pairing to seal.
// The client's own enc.* annotations and any inline data are dropped: the
// data field would carry the layer's plaintext next to its ciphertext.
func (h *Handler) encryptLayer(ctx context.Context, be *backend, repo string, d *ocispec.Descriptor, rs *crypto.Recipients, seal *crypto.Seal) error {
	if crypto.IsEncryptedMediaType(d.MediaType) {
		// Encrypted before it reached shroud (validatePush checked its
		// wrapped keys parse): stored as it came, and if the keys the
		// rule opens foreign layers with open it, the rule's recipients
		// are added to it. Never with every key: the annotations are the
		// client's, and could be another repository's layer's, copied.
		if err := h.storeAsPushed(ctx, be, repo, *d, whatEncrypted); err != nil {
			return err
		}
		if !rs.HasIdentity() {
			// Encrypt-only: shroud opens nothing, the client's
			// recipients stay; shroud did not encrypt it, so it is
			// bound to nothing (no owner approval reaches it).
			if _, ok := d.Annotations[crypto.AnnotationBinding]; ok {
				d.Annotations = maps.Clone(d.Annotations)
				delete(d.Annotations, crypto.AnnotationBinding)
			}
			return nil
		}
		ann, err := h.keys.Rewrap(d.Annotations, rs, h.unwrapGate(ctx, repo, h.unsealedKeys(repo)).allow)
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
	b, ok := h.blobMapping(ctx, be, repo, d.Digest)
	switch {
	case ok && b.Bound:
		if err := h.haveCipher(ctx, be, repo, b); err != nil {
			if upstream.IsStatus(err, http.StatusNotFound) {
				return apiErr(http.StatusBadRequest, codeManifestBlobUnknown, "layer %s: its ciphertext %s is not in the upstream", d.Digest, b.CipherDigest)
			}
			return err
		}
	case crypto.IsNonDistributable(d.MediaType):
		return nil // never pushed: clients fetch it from its URLs
	default:
		var err error
		if b, ok = h.mountOrigin(ctx, be, repo, d.Digest); !ok {
			if b, err = h.encryptFromUpstream(ctx, be, repo, d.Digest); err != nil {
				return err
			}
		}
	}
	if b.Size != d.Size {
		return apiErr(http.StatusBadRequest, codeManifestInvalid, "layer %s has size %d in the manifest but %d bytes were pushed", d.Digest, d.Size, b.Size)
	}
	if !rs.HasIdentity() {
		return h.encryptOnlyLayer(ctx, be, repo, d, b, rs)
	}
	opts, _, err := h.keys.UnwrapWith(b.Annotations, nil)
	if err != nil {
		return fmt.Errorf("layer %s: %w", d.Digest, err)
	}
	pub, err := crypto.ParsePublicOptions(b.Annotations)
	if err != nil {
		return err
	}
	_, endWrap := h.keySpan(ctx, "wrap layer key", repo)
	ann, err := h.keys.Wrap(opts, pub, rs)
	endWrap(err, attribute.Int("shroud.recipients", len(rs.Keys())), attribute.StringSlice("shroud.schemes", schemesOf(ann)))
	if err != nil {
		return err
	}
	d.Annotations = crypto.WithoutEncAnnotations(d.Annotations)
	if d.Annotations == nil {
		d.Annotations = map[string]string{}
	}
	maps.Copy(d.Annotations, ann)
	d.MediaType = crypto.EncryptedMediaType(d.MediaType)
	d.Digest = b.CipherDigest
	d.Data = nil
	if !b.Layer {
		b.Layer = true
		be.putBlob(ctx, b)
	}
	seal.Layers = append(seal.Layers, crypto.SealedLayer{PlainDigest: b.PlainDigest, CipherDigest: b.CipherDigest, Size: b.Size, HMAC: pub.HMAC})
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

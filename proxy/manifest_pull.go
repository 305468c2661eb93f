package proxy

import (
	"context"
	"crypto/hmac"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"

	"github.com/gorilla/mux"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shroud-oci/shroud/cache"
	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/proxy/upstream"
)

// served is a manifest as shroud serves it; sealed says it is the
// original of a seal this shroud vouches for in the repository (openSealed).
type served struct {
	body        []byte
	contentType string
	digest      digest.Digest
	sealed      bool
}

// is says whether the served bytes have digest d (in d's algorithm).
func (s served) is(d digest.Digest) bool {
	return d.Algorithm().Available() && d.Algorithm().FromBytes(s.body) == d
}

// as returns s named by d, which it has been checked to match.
func (s served) as(d digest.Digest) served {
	s.digest = d
	return s
}

// getManifest serves GET and HEAD of a manifest by tag or digest.
func (h *Handler) getManifest(w http.ResponseWriter, r *http.Request) error {
	v := mux.Vars(r)
	repo, ref := v["name"], v["reference"]
	ctx, be := r.Context(), h.backend(r)
	if _, byDigest := isDigest(ref); !byDigest && isPointerTag(ref) {
		return errPointerTag(r.Method, ref)
	}
	if r.Header.Get(HeaderView) == "upstream" {
		return h.getUpstreamManifest(w, r, be, repo, ref)
	}
	if r.Method == http.MethodHead {
		if mm, ok := h.headFromCache(ctx, be, repo, ref); ok {
			writeManifestHeaders(w, mm.ContentType, mm.PlainDigest, mm.Size)
			w.WriteHeader(http.StatusOK)
			return nil
		}
	}
	s, err := h.resolveManifest(ctx, be, repo, ref)
	if err != nil {
		return err
	}
	writeManifest(w, r, s.contentType, s.digest, s.body)
	return nil
}

// writeManifest answers a manifest GET or HEAD.
func writeManifest(w http.ResponseWriter, r *http.Request, contentType string, d digest.Digest, body []byte) {
	writeManifestHeaders(w, contentType, d, int64(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(body)
	}
}

// HeaderView, set to "upstream" on a manifest GET, asks for the manifest
// as the upstream stores it (encrypted), addressed by the reference the
// client uses: what `shroud inspect` reads through shroud.
const HeaderView = "X-Shroud-View"

func (h *Handler) getUpstreamManifest(w http.ResponseWriter, r *http.Request, be *backend, repo, ref string) error {
	if d, ok := isDigest(ref); ok {
		mm, ok, err := h.manifestFor(r.Context(), be, repo, d, crypto.NewUnwrapBudget(maxUnwrapsPerRequest))
		if err != nil {
			return err
		}
		if ok {
			ref = mm.UpstreamDigest.String()
		}
	}
	um, err := be.cl.GetManifest(r.Context(), repo, h.upstreamRef(be, repo, ref))
	if err != nil {
		return err
	}
	writeManifest(w, r, um.ContentType, um.Digest, um.Body)
	return nil
}

func writeManifestHeaders(w http.ResponseWriter, contentType string, d digest.Digest, size int64) {
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Docker-Content-Digest", d.String())
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	w.Header().Set("Etag", `"`+d.String()+`"`)
}

// headFromCache answers a HEAD from the mappings when the upstream's HEAD
// names a manifest shroud has served before.
func (h *Handler) headFromCache(ctx context.Context, be *backend, repo, ref string) (cache.Manifest, bool) {
	if d, ok := isDigest(ref); ok {
		mm, ok := be.liveManifestMapping(ctx, repo, d)
		if !ok {
			return cache.Manifest{}, false
		}
		upDigest, _, _, err := be.cl.HeadManifest(ctx, repo, mm.UpstreamDigest.String())
		if upstream.IsStatus(err, http.StatusNotFound) {
			be.cache.Stale(ctx, repo, d) // deleted or replaced, on another replica
		}
		return mm, err == nil && upDigest == mm.UpstreamDigest
	}
	if isDigestTag(ref) {
		return cache.Manifest{}, false // read by its keyed names: resolveManifest
	}
	upDigest, _, _, err := be.cl.HeadManifest(ctx, repo, ref)
	if err != nil || upDigest == "" {
		return cache.Manifest{}, false
	}
	mm, ok, err := be.cache.ManifestByUpstream(ctx, repo, upDigest)
	return mm, ok && err == nil
}

// resolveManifest finds the manifest a client means by ref and returns it
// as the client pushed it (or decrypted, for images encrypted elsewhere).
// By digest: the cache's mapping, else the manifest's pointer (pointer.go),
// else the upstream's manifest of that digest as it is. The restorations
// it takes (an index's children) share one request's unwrap budget.
func (h *Handler) resolveManifest(ctx context.Context, be *backend, repo, ref string) (served, error) {
	budget := crypto.NewUnwrapBudget(maxUnwrapsPerRequest)
	d, byDigest := isDigest(ref)
	if !byDigest {
		um, err := h.getTagged(ctx, be, repo, ref)
		if err != nil {
			return served{}, err
		}
		return h.restore(ctx, be, repo, um, 0, budget)
	}
	if mm, ok := be.liveManifestMapping(ctx, repo, d); ok {
		s, err := h.restoreByUpstream(ctx, be, repo, mm.UpstreamDigest, budget)
		switch {
		case err == nil && s.is(d):
			return s.as(d), nil
		case upstream.IsStatus(err, http.StatusNotFound):
			// Deleted or replaced, on another replica: the mapping goes
			// from this process, the pointer says what is there now.
			be.cache.Stale(ctx, repo, d)
		case err != nil:
			return served{}, err
		}
	}
	// Some registries keep a deleted manifest reachable through its
	// tags: a pointer must not bring back what a client deleted here.
	if !be.deleted(ctx, repo, d) {
		if s, _, ok, err := h.pointed(ctx, be, repo, d, budget); err != nil || ok {
			return s, err
		}
	}
	um, err := be.cl.GetManifest(ctx, repo, ref)
	if err == nil {
		// Asked for by its upstream digest: the bytes of that digest.
		return served{body: um.Body, contentType: um.ContentType, digest: um.Digest}, nil
	}
	if !upstream.IsStatus(err, http.StatusNotFound) {
		return served{}, err
	}
	return served{}, apiErr(http.StatusNotFound, codeManifestUnknown, "manifest %s is unknown to repository %s", d, repo)
}

func (h *Handler) restoreByUpstream(ctx context.Context, be *backend, repo string, upDigest digest.Digest, budget *crypto.UnwrapBudget) (served, error) {
	um, err := be.cl.GetManifest(ctx, repo, upDigest.String())
	if err != nil {
		return served{}, err
	}
	return h.restore(ctx, be, repo, um, 0, budget)
}

// restore turns an upstream manifest into what the client should see: the
// sealed original bytes for manifests shroud wrote for this repository; a
// decrypted manifest for images encrypted elsewhere, opened only with the
// keys the repository's rule allows; anything else as it is. Results are
// remembered by upstream digest (restored.go), so a manifest named many
// times (an index repeating a child, referrers) costs its work once; so
// are the failures the manifest's own content causes (no key opens it,
// it takes more unwraps than one manifest may), for restoredFailureTTL.
// The unwraps draw on budget, the request's, each manifest's within it
// bounded by maxUnwrapsPerManifest.
func (h *Handler) restore(ctx context.Context, be *backend, repo string, um upstream.Manifest, depth int, budget *crypto.UnwrapBudget) (served, error) {
	key := restoredKey(be, repo, um.Digest, depth > 0)
	if err, ok := h.restored.failure(key); ok {
		return served{}, err
	}
	if e, ok := h.restored.get(key); ok {
		for _, b := range e.blobs {
			be.putRestoredBlob(ctx, b)
		}
		for _, m := range e.manifests {
			be.putRestoredManifest(ctx, m)
		}
		return e.served, nil
	}
	rec := &restoration{}
	s, err := h.restoreOnce(ctx, be, repo, um, depth, budget, rec)
	if err != nil {
		if ownFailure(err, budget) {
			h.restored.fail(key, err)
		}
		return served{}, err
	}
	for _, b := range rec.blobs {
		be.putRestoredBlob(ctx, b)
	}
	for _, m := range rec.manifests {
		be.putRestoredManifest(ctx, m)
	}
	rec.served = s
	h.restored.add(key, rec)
	return s, nil
}

func (h *Handler) restoreOnce(ctx context.Context, be *backend, repo string, um upstream.Manifest, depth int, budget *crypto.UnwrapBudget, rec *restoration) (served, error) {
	asIs := served{body: um.Body, contentType: um.ContentType, digest: um.Digest}
	m, err := parseManifest(um.Body, um.ContentType)
	if err != nil {
		return asIs, nil // not a manifest shroud rewrites (schema 1, say)
	}
	var notSealed error
	if sealed := m.annotations[crypto.AnnotationOriginal]; sealed != "" {
		s, err := h.openSealed(ctx, be, repo, um, m, sealed, budget, rec)
		if !errors.Is(err, errNotSealedHere) {
			return s, err
		}
		// Not a seal this shroud wrote for this repository and upstream
		// (or one the rule accepts): nothing in it is trusted. The layers
		// may still open with a key the rule allows, and the manifest is
		// then served decrypted, as one encrypted by any other tool.
		logger(ctx).Info("manifest not sealed for this repository: treated as encrypted elsewhere", "repository", repo, "upstream_digest", um.Digest, "err", err)
		notSealed = err
		m.annotations = crypto.WithoutEncAnnotations(m.annotations)
		delete(m.annotations, crypto.AnnotationOriginal)
	}
	var changed bool
	if m.isIndex() {
		if depth > 0 {
			return asIs, nil
		}
		if err := checkFanOut(m.manifests); err != nil {
			return served{}, err
		}
		children := map[digest.Digest]served{}
		for i := range m.manifests {
			c := &m.manifests[i]
			cs, ok := children[c.Digest]
			if !ok {
				cm, err := be.cl.GetManifest(ctx, repo, c.Digest.String())
				if err != nil {
					return served{}, fmt.Errorf("index child %s: %w", c.Digest, err)
				}
				if cs, err = h.restore(ctx, be, repo, cm, depth+1, budget); err != nil {
					return served{}, err
				}
				children[c.Digest] = cs
			}
			if !cs.is(c.Digest) {
				c.Digest, c.Size, c.MediaType = c.Digest.Algorithm().FromBytes(cs.body), int64(len(cs.body)), cs.contentType
				c.Data = nil
				changed = true
			}
		}
	} else {
		gate := h.unwrapGate(ctx, repo, h.unsealedKeys(repo))
		mb := budget.Sub(maxUnwrapsPerManifest)
		for i := range m.layers {
			l := &m.layers[i]
			if !crypto.IsEncryptedMediaType(l.MediaType) {
				continue
			}
			opts, _, err := h.keys.UnwrapWithin(l.Annotations, gate.allow, mb)
			if errors.Is(err, crypto.ErrUnwrapBudget) {
				return served{}, unwrapsSpent(ctx, err, mb, repo, um.Digest)
			}
			if err != nil {
				err = gate.explain(err)
				if notSealed != nil {
					err = fmt.Errorf("%w; %w", notSealed, err)
				}
				return served{}, fmt.Errorf("layer %s of %s: %w", l.Digest, repo, err)
			}
			if _, err := crypto.ParsePublicOptions(l.Annotations); err != nil {
				return served{}, fmt.Errorf("layer %s: %w", l.Digest, err)
			}
			if opts.PlainDigest == "" {
				return served{}, fmt.Errorf("layer %s: its private options carry no plaintext digest", l.Digest)
			}
			// Not bound: serves pulls of this repository only, each
			// verified to the plaintext digest at its end.
			rec.blobs = append(rec.blobs, cache.Blob{PlainDigest: opts.PlainDigest, CipherDigest: l.Digest, Size: l.Size,
				Annotations: crypto.EncAnnotations(l.Annotations), Repository: repo, Layer: true})
			l.MediaType = crypto.PlainMediaType(l.MediaType)
			l.Digest = opts.PlainDigest
			l.Annotations = crypto.WithoutEncAnnotations(l.Annotations)
			changed = true
		}
	}
	if !changed {
		return asIs, nil
	}
	body, err := m.marshal()
	if err != nil {
		return served{}, err
	}
	s := served{body: body, contentType: m.mediaType, digest: digest.FromBytes(body)}
	rec.manifests = append(rec.manifests, cache.Manifest{Repository: repo, PlainDigest: s.digest, ContentType: s.contentType, Size: int64(len(body)),
		UpstreamDigest: um.Digest, UpstreamMediaType: um.ContentType, UpstreamSize: int64(len(um.Body))})
	return s, nil
}

// unwrapsSpent is the error of a restoration its unwrap budget could not
// pay for: the manifest's own (mb), or the request's it draws on. Either
// is MANIFEST_INVALID, as an index over maxIndexChildren is: the manifest
// asks for more work than shroud does for one, which no credentials
// change (DENIED would send the client after its credentials) and a
// retry does not (a 5xx would invite one).
func unwrapsSpent(ctx context.Context, err error, mb *crypto.UnwrapBudget, repo string, upDigest digest.Digest) error {
	var spent *crypto.UnwrapBudgetError
	if !errors.As(err, &spent) {
		return err
	}
	per := "request"
	if spent.Budget == mb {
		per = "manifest"
	}
	logger(ctx).Warn("refused to restore a manifest: unwrap budget spent", "repository", repo, "upstream_digest", upDigest, "per", per, "budget", spent.Budget.Limit())
	if spent.Budget == mb {
		return &apiError{status: http.StatusBadRequest, code: codeManifestInvalid, cause: err,
			message: fmt.Sprintf("manifest %s of %s needs more than the %d key unwrap attempts shroud spends on one manifest", upDigest, repo, mb.Limit())}
	}
	return &apiError{status: http.StatusBadRequest, code: codeManifestInvalid, cause: err,
		message: fmt.Sprintf("restoring manifest %s of %s goes over the %d key unwrap attempts shroud spends on one request (an index's children, referrers)", upDigest, repo, spent.Budget.Limit())}
}

// errNotSealedHere is a manifest whose seal this shroud cannot vouch for
// in this repository: not its identity's, not for this upstream and
// repository (nor one the rule accepts), or not matching the manifest.
var errNotSealedHere = errors.New("not sealed for this repository")

// unsealedKeys says which of shroud's keys may open, for a request to
// repo, layers no seal vouches for: the decryption keys the repository's
// rule allows, and the identity only where the rule accepts foreign
// images (anyone can encrypt to shroud's public key, and a copy of
// shroud's ciphertext without its seal must not open elsewhere).
func (h *Handler) unsealedKeys(repo string) func(string) bool {
	rule := h.policy.Match(repo)
	return func(key string) bool {
		if rule == nil || rule.Action != crypto.Encrypt {
			return false
		}
		if crypto.IsIdentityKey(key) {
			return rule.AcceptForeign
		}
		return rule.OpensWith(key)
	}
}

// openSealed returns the original bytes sealed in a manifest shroud wrote,
// and records the mappings the seal vouches for: each layer's plaintext
// and ciphertext (every pairing checked against the manifest's wrapped
// key), each index child's plain and encrypted digest.
func (h *Handler) openSealed(ctx context.Context, be *backend, repo string, um upstream.Manifest, enc *manifest, sealed string, budget *crypto.UnwrapBudget, rec *restoration) (served, error) {
	notHere := func(format string, args ...any) (served, error) {
		return served{}, fmt.Errorf("%w: manifest %s: "+format, append([]any{errNotSealedHere, um.Digest}, args...)...)
	}
	seal, _, err := h.openSeal(ctx, repo, sealed)
	if errors.Is(err, crypto.ErrForeignSeal) {
		return notHere("%v", err)
	}
	if err != nil {
		return served{}, err
	}
	if seal.Upstream != be.name {
		return notHere("sealed for another upstream (%q)", seal.Upstream)
	}
	if !h.policy.AcceptsSealedFor(repo, seal.Repository) {
		logger(ctx).Warn("refused a manifest sealed for another repository", "repository", repo, "sealed_for", seal.Repository, "upstream_digest", um.Digest)
		return notHere("sealed for another repository, which no accept-from of this repository's rule names")
	}
	orig, err := parseManifest(seal.Manifest, seal.ContentType)
	if err != nil {
		return served{}, errors.Join(errors.New("sealed original manifest does not parse"), err)
	}
	// The seal is shroud's: its layer count is one a client pushed. The
	// wrapped keys beside it are the upstream's, and may be padded.
	mb := budget.Sub(max(maxUnwrapsPerManifest, maxUnwrapsPerSealedLayer*len(seal.Layers)))
	gate := h.unwrapGate(ctx, repo, nil) // any of shroud's keys that passes its checks
	var blobs []cache.Blob
	for _, sl := range seal.Layers {
		// Found by its ciphertext digest, never by position; the other
		// layers of the upstream manifest are not served (the original
		// is) and get no mapping.
		i := slices.IndexFunc(enc.layers, func(e ocispec.Descriptor) bool { return e.Digest == sl.CipherDigest })
		if i < 0 {
			return notHere("the sealed layer %s is not in the manifest", sl.CipherDigest)
		}
		e := enc.layers[i]
		pub, err := crypto.ParsePublicOptions(e.Annotations)
		if err != nil || !hmac.Equal(pub.HMAC, sl.HMAC) || e.Size != sl.Size {
			return notHere("layer %s does not match its sealed HMAC and size", e.Digest)
		}
		opts, _, err := h.keys.UnwrapWithin(e.Annotations, gate.allow, mb)
		if errors.Is(err, crypto.ErrUnwrapBudget) {
			return served{}, unwrapsSpent(ctx, err, mb, repo, um.Digest)
		}
		if err != nil {
			return served{}, fmt.Errorf("layer %s of %s: %w", e.Digest, repo, gate.explain(err))
		}
		if opts.PlainDigest != sl.PlainDigest {
			return notHere("layer %s unwraps to plaintext %s, the seal pairs it with %s", e.Digest, opts.PlainDigest, sl.PlainDigest)
		}
		blobs = append(blobs, cache.Blob{PlainDigest: sl.PlainDigest, CipherDigest: sl.CipherDigest, Size: sl.Size,
			Annotations: crypto.EncAnnotations(e.Annotations), Repository: repo, Bound: true, Layer: true})
	}
	rec.blobs = append(rec.blobs, blobs...)
	for _, c := range seal.Children {
		for _, e := range enc.manifests {
			if e.Digest != c.UpstreamDigest {
				continue
			}
			for _, o := range orig.manifests {
				if o.Digest == c.PlainDigest {
					rec.manifests = append(rec.manifests, cache.Manifest{Repository: repo, PlainDigest: o.Digest, ContentType: o.MediaType, Size: o.Size,
						UpstreamDigest: e.Digest, UpstreamMediaType: e.MediaType, UpstreamSize: e.Size})
					break
				}
			}
			break
		}
	}
	s := served{body: seal.Manifest, contentType: seal.ContentType, digest: digest.FromBytes(seal.Manifest), sealed: true}
	rec.manifests = append(rec.manifests, cache.Manifest{Repository: repo, PlainDigest: s.digest, ContentType: seal.ContentType, Size: int64(len(seal.Manifest)),
		UpstreamDigest: um.Digest, UpstreamMediaType: um.ContentType, UpstreamSize: int64(len(um.Body))})
	return s, nil
}

// deleteManifest deletes, for a digest, every upstream manifest shroud
// knows to store it: the one the cache maps it to and the one its pointer
// names (each push of a manifest stores one of its own), then the pointer
// itself, and forgets the mapping. distribution drops the tags of a
// manifest deleted by digest, the pointer with them; a registry that
// keeps them would go on serving it through the pointer. A tag is passed
// through: the manifest it named stays findable by its digest.
func (h *Handler) deleteManifest(w http.ResponseWriter, r *http.Request) error {
	v := mux.Vars(r)
	repo, ref := v["name"], v["reference"]
	ctx, be := r.Context(), h.backend(r)
	d, byDigest := isDigest(ref)
	if !byDigest {
		if isPointerTag(ref) {
			return errPointerTag(r.Method, ref)
		}
		if err := h.deleteTag(ctx, be, repo, ref); err != nil {
			return err
		}
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(http.StatusAccepted)
		return nil
	}
	var targets []digest.Digest
	if mm, ok := be.manifestMapping(ctx, repo, d); ok {
		targets = append(targets, mm.UpstreamDigest)
	}
	_, um, pointed, err := h.pointed(ctx, be, repo, d, crypto.NewUnwrapBudget(maxUnwrapsPerRequest))
	if err != nil {
		return err
	}
	if pointed && !slices.Contains(targets, um.Digest) {
		targets = append(targets, um.Digest)
	}
	if len(targets) == 0 {
		targets = append(targets, d) // a manifest the upstream holds as it is, or none
	}
	var deleted bool
	var unknown error
	for _, t := range targets {
		switch err := be.cl.DeleteManifest(ctx, repo, t.String()); {
		case err == nil:
			deleted = true
		case upstream.IsStatus(err, http.StatusNotFound):
			unknown = err // deleted already (a stale mapping), or never stored
		default:
			return err
		}
	}
	if !deleted {
		return unknown
	}
	if pointed {
		for _, tag := range h.pointerNames(be.name, repo, d.String()) {
			if err := be.cl.DeleteManifest(ctx, repo, tag); err != nil && !upstream.IsStatus(err, http.StatusNotFound) {
				logger(ctx).Info("the upstream kept the pointer tag of a deleted manifest", "repository", repo, "plain_digest", d, "err", err)
			}
		}
	}
	// A registry may keep a deleted manifest reachable through its tags:
	// this process does not find it again through its pointer.
	be.setDeleted(ctx, repo, d, true)
	if err := be.cache.DeleteManifest(ctx, repo, d); err != nil {
		logger(ctx).Warn("cache delete failed", "err", err)
	}
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
	return nil
}

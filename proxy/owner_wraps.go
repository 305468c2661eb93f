package proxy

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/shroud-oci/shroud/cache"
	"github.com/shroud-oci/shroud/crypto"
)

// Owner approval under an encrypt-only rule. shroud cannot add a
// recipient to the images of an encrypt-only repository: it holds no key
// that unwraps their layer keys. An owner, a recipient of the rule, does:
// on the owner's machine the layer keys are unwrapped and wrapped for the
// new key, and only those new wrapped keys come back to shroud, signed
// (access.OwnerApproval). shroud then adds them to the layers'
// annotations (ocicrypt reads a comma-separated list of wrapped keys per
// scheme) and stores the manifests again under their tags: the layer
// blobs are not touched, the server never sees a layer key.

// EncryptedLayer is an encrypted layer of a repository's stored images:
// what an owner unwraps its key from.
type EncryptedLayer struct {
	Repository   string            `json:"repository"`
	CipherDigest digest.Digest     `json:"cipher_digest"`
	Annotations  map[string]string `json:"annotations"` // the enc.* ones
}

// maxOwnerLayers bounds the layers one owner approval lists and takes.
const maxOwnerLayers = 10_000

// EncryptedLayers lists the encrypted layers of the manifests repo's tags
// name upstream (each once), with shroud's own upstream credentials.
func (h *Handler) EncryptedLayers(ctx context.Context, repo string) ([]EncryptedLayer, error) {
	be := *h.def
	be.auth = authHash("job\x00")
	_, order, err := h.taggedManifests(ctx, &be, repo)
	if err != nil {
		return nil, err
	}
	seen := map[digest.Digest]bool{}
	var out []EncryptedLayer
	for _, d := range order {
		um, err := be.cl.GetManifest(ctx, repo, d.String())
		if err != nil {
			return nil, fmt.Errorf("list %s: manifest %s: %w", repo, d, err)
		}
		m, err := parseManifest(um.Body, um.ContentType)
		if err != nil {
			continue // not a manifest shroud reads: nothing to wrap
		}
		for _, l := range m.layers {
			// Only layers shroud encrypted for an encrypt-only rule carry
			// a binding; whether it holds for this repository is
			// checked with the plaintext digest the owner finds.
			if !crypto.IsEncryptedMediaType(l.MediaType) || seen[l.Digest] || l.Annotations[crypto.AnnotationBinding] == "" {
				continue
			}
			seen[l.Digest] = true
			if len(out) == maxOwnerLayers {
				return nil, fmt.Errorf("list %s: more than %d encrypted layers", repo, maxOwnerLayers)
			}
			out = append(out, EncryptedLayer{Repository: repo, CipherDigest: l.Digest, Annotations: crypto.EncAnnotations(l.Annotations)})
		}
	}
	return out, nil
}

// LayerWraps are the wrapped keys an owner made for one layer.
type LayerWraps struct {
	CipherDigest digest.Digest
	// PlainDigest, when given, is the layer's plaintext digest (the
	// owner read it from the layer key's private options): the mapping of
	// that digest, if it names CipherDigest, gets the wrapped keys too,
	// so that a push naming the layer again wraps it for keyID as well.
	PlainDigest digest.Digest
	Annotations map[string]string
}

// AddWrappedKeys adds, to every encrypted layer of the manifests repo's
// tags name whose ciphertext digest wraps holds, the wrapped keys wraps
// gives for it (annotation name -> one base64 wrapped key), and stores
// each manifest it changed under its tags again; indexes and referrers
// are rewritten after what they name. A wrapped key a layer holds already
// is not added again, so a run can be repeated. The old manifests are
// left: they hold fewer wrapped keys, nothing to take back.
func (h *Handler) AddWrappedKeys(ctx context.Context, repo string, keyID string, layers []LayerWraps) (JobReport, error) {
	wraps := map[digest.Digest]LayerWraps{}
	for _, l := range layers {
		if l.PlainDigest == "" {
			return JobReport{}, fmt.Errorf("add keys to %s: layer %s: no plaintext digest to check its binding with", repo, l.CipherDigest)
		}
		wraps[l.CipherDigest] = l
	}
	rule := h.policy.Match(repo)
	if rule == nil || rule.Action != crypto.Encrypt {
		return JobReport{}, fmt.Errorf("add keys to %s: no encrypt rule matches the repository", repo)
	}
	if err := h.heldKey(repo, keyID); err != nil {
		return JobReport{}, fmt.Errorf("add keys to %s: %w", repo, err)
	}
	for d, lw := range wraps {
		for name, v := range lw.Annotations {
			if !strings.HasPrefix(name, crypto.AnnotationKeys) || v == "" || strings.Contains(v, ",") {
				return JobReport{}, fmt.Errorf("add keys to %s: layer %s: %q is not one wrapped key of an ocicrypt scheme", repo, d, name)
			}
		}
	}
	be := *h.def
	be.auth = authHash("job\x00")
	byDigest, order, err := h.taggedManifests(ctx, &be, repo)
	if err != nil {
		return JobReport{}, err
	}
	type stored struct {
		m    *manifest
		tags []string
	}
	all := map[digest.Digest]stored{}
	for _, d := range order {
		um, err := be.cl.GetManifest(ctx, repo, d.String())
		if err != nil {
			return JobReport{}, fmt.Errorf("add keys to %s: manifest %s: %w", repo, d, err)
		}
		m, err := parseManifest(um.Body, um.ContentType)
		if err != nil {
			continue
		}
		all[d] = stored{m: m, tags: byDigest[d]}
	}
	// What names nothing the job rewrites first: images, then what has
	// a subject, then indexes.
	rank := func(d digest.Digest) int {
		m := all[d].m
		r := 0
		if m.subject != nil {
			r++
		}
		if m.isIndex() {
			r += 2
		}
		return r
	}
	work := slices.Clone(order)
	work = slices.DeleteFunc(work, func(d digest.Digest) bool { _, ok := all[d]; return !ok })
	slices.SortStableFunc(work, func(a, b digest.Digest) int { return rank(a) - rank(b) })
	rep := JobReport{Manifests: len(work)}
	for _, l := range layers {
		if l.PlainDigest == "" {
			continue
		}
		b, ok := be.blob(ctx, repo, l.PlainDigest)
		if !ok || b.CipherDigest != l.CipherDigest || b.WrappedFor == nil || slices.Contains(b.WrappedFor, keyID) {
			continue
		}
		b.Annotations = maps.Clone(b.Annotations)
		for name, v := range l.Annotations {
			if cur := b.Annotations[name]; cur != "" {
				v = cur + "," + v
			}
			b.Annotations[name] = v
		}
		b.WrappedFor = append(slices.Clone(b.WrappedFor), keyID)
		slices.Sort(b.WrappedFor)
		be.putBlob(ctx, b)
	}
	moved := map[digest.Digest]jobResult{}
	for _, d := range work {
		s := all[d]
		m := s.m
		changed := false
		for i := range m.layers {
			l := &m.layers[i]
			lw, ok := wraps[l.Digest]
			if !ok || !crypto.IsEncryptedMediaType(l.MediaType) {
				continue
			}
			if !h.boundLayer(&be, repo, *l, lw.PlainDigest) {
				// Not a layer shroud encrypted here from that plaintext:
				// another repository's copied in, wrapped keys swapped
				// by the upstream, or one a client pushed encrypted.
				rep.Foreign++
				continue
			}
			add := lw.Annotations
			if have := h.keys.Describe(l.Annotations); !slices.ContainsFunc(h.keys.Describe(add), func(d string) bool { return !slices.Contains(have, d) }) {
				continue // wrapped for that key already (a submission again): ocicrypt's wraps differ each time
			}
			l.Annotations = maps.Clone(l.Annotations)
			for name, v := range add {
				cur := l.Annotations[name]
				if slices.Contains(strings.Split(cur, ","), v) {
					continue
				}
				if cur != "" {
					v = cur + "," + v
				}
				l.Annotations[name] = v
				changed = true
			}
		}
		for i := range m.manifests {
			if r, ok := moved[m.manifests[i].Digest]; ok {
				m.manifests[i].Digest, m.manifests[i].Size = r.digest, r.size
				changed = true
			}
		}
		if m.subject != nil {
			if r, ok := moved[m.subject.Digest]; ok {
				m.subject.Digest, m.subject.Size = r.digest, r.size
				changed = true
			}
		}
		if !changed {
			continue
		}
		out, err := m.marshal()
		if err != nil {
			return rep, err
		}
		tags := slices.Clone(s.tags)
		slices.SortStableFunc(tags, func(a, b string) int { return boolInt(!isPointerTag(a)) - boolInt(!isPointerTag(b)) })
		var nd digest.Digest
		for _, tag := range tags {
			got, _, err := be.cl.PutManifest(ctx, repo, tag, m.mediaType, out)
			if err != nil {
				return rep, fmt.Errorf("add keys to %s: manifest %s: store under tag %s: %w", repo, d, tag, err)
			}
			nd = got
		}
		moved[d] = jobResult{digest: nd, mediaType: m.mediaType, size: int64(len(out))}
		rep.Rewritten++
		if mm, ok, err := be.cache.ManifestByUpstream(ctx, repo, d); err == nil && ok {
			mm.UpstreamDigest, mm.UpstreamSize = nd, int64(len(out))
			be.putManifestMapping(ctx, cache.Manifest(mm))
		}
	}
	return rep, nil
}

// OwnerKeyAllowed checks an owner's key for repo as a wrap for it would
// be checked (its validity, the trust documents' allow and deny lists):
// a key shroud would no longer wrap for approves nothing either.
func (h *Handler) OwnerKeyAllowed(ctx context.Context, repo, keyID string) error {
	rule := h.policy.Match(repo)
	if rule == nil || rule.Recipients == nil {
		return fmt.Errorf("repository %s: no encrypt rule", repo)
	}
	for _, k := range rule.Recipients.Keys() {
		if k.ID == keyID {
			return h.gate.checkKey(ctx, OpWrap, repo, k.ID, k.NotBefore, k.NotAfter, h.gate.now())
		}
	}
	return fmt.Errorf("the key %s is not a recipient of %s", keyID, rule)
}

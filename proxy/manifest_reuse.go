package proxy

import (
	"context"
	"slices"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/proxy/upstream"
)

// One encrypted manifest per plaintext manifest and repository (DESIGN
// §5). A manifest pushed again (another tag, a copy, a retry) reuses the
// copy its pointer names when that copy is what encrypting it now would
// make of it, but for the randomness of key wrapping: only the tag
// moves, its upstream digest stays, and the referrers attached to it stay
// attached. Anything the policy or the keys decide differently now makes
// a new copy, so that a revocation or an expiry always wins over reuse:
// another set of keys to wrap for (WrappedIDs: a key revoked, expired,
// added), another choice of layers, a child or subject whose copy is
// another one now, another content type, a seal by a previous identity.

// reusable returns the copy stored for plainDigest in repo (as the
// upstream holds it, and parsed) if a push of
// m (the client's manifest, not yet rewritten) under ref may reuse it;
// else ok is false and prev holds what the new copy's seal carries on:
// the copies it replaces (the one the pointer names, and those it
// replaced) and the digest tags the old one was pushed under.
func (h *Handler) reusable(ctx context.Context, be *backend, repo, ref string, plainDigest digest.Digest, contentType string, m *manifest, selection string, rs *crypto.Recipients) (um upstream.Manifest, stored *manifest, prev crypto.Seal, ok bool, err error) {
	if be.deleted(ctx, repo, plainDigest) {
		return upstream.Manifest{}, nil, crypto.Seal{}, false, nil
	}
	budget := crypto.NewUnwrapBudget(maxUnwrapsPerRequest)
	_, um, ok, err = h.pointed(ctx, be, repo, plainDigest, budget)
	if err != nil || !ok {
		return upstream.Manifest{}, nil, crypto.Seal{}, false, err
	}
	enc, seal, by, sealed := h.sealOf(ctx, be, repo, um)
	if !sealed {
		return upstream.Manifest{}, nil, crypto.Seal{}, false, nil // pointed vouched for it; a race with a job
	}
	previous := slices.Compact(append([]digest.Digest{um.Digest}, seal.Previous...))
	prev = crypto.Seal{Previous: previous[:min(len(previous), crypto.MaxPreviousCopies)], Tags: seal.Tags}
	why := ""
	switch {
	case by != h.keys.Identity():
		why = "sealed by a previous identity"
	case seal.ContentType != contentType:
		why = "pushed with another content type"
	case len(seal.Wrapped) == 0 || !slices.Equal(seal.Wrapped, rs.WrappedIDs(h.keys.Identity())):
		why = "its layer keys are wrapped for other keys than the policy's now"
	case seal.Selection != selection:
		why = "the rule encrypts other layers now"
	case isDigestTag(ref) && !slices.Contains(seal.Tags, ref):
		why = "pushed under a digest tag its seal does not name (an identity rotation renames those it names)"
	}
	if why == "" {
		why, err = h.namesOthers(ctx, be, repo, m, enc, budget)
		if err != nil {
			return upstream.Manifest{}, nil, crypto.Seal{}, false, err
		}
	}
	if why != "" {
		logger(ctx).Info("manifest pushed again: encrypted anew, not reused", "repository", repo, "plain_digest", plainDigest,
			"stored_upstream_digest", um.Digest, "why", why)
		return upstream.Manifest{}, nil, prev, false, nil
	}
	return um, enc, crypto.Seal{}, true, nil
}

// namesOthers says why the stored copy enc names other manifests than a
// push of m would now (an index child, the subject: each the copy its
// pointer names now, or the upstream's manifest as it is), "" if none.
func (h *Handler) namesOthers(ctx context.Context, be *backend, repo string, m, enc *manifest, budget *crypto.UnwrapBudget) (string, error) {
	now := func(d ocispec.Descriptor) (digest.Digest, error) {
		mm, ok, err := h.liveManifestFor(ctx, be, repo, d.Digest, budget)
		if err != nil || !ok {
			return d.Digest, err
		}
		return mm.UpstreamDigest, nil
	}
	if len(m.manifests) != len(enc.manifests) {
		return "its children are others", nil
	}
	for i := range m.manifests {
		d, err := now(m.manifests[i])
		if err != nil {
			return "", err
		}
		if d != enc.manifests[i].Digest {
			return "an index child is stored as another copy now", nil
		}
	}
	if (m.subject == nil) != (enc.subject == nil) {
		return "its subject is another", nil
	}
	if m.subject != nil {
		d, err := now(*m.subject)
		if err != nil {
			return "", err
		}
		if d != enc.subject.Digest {
			return "its subject is stored as another copy now", nil
		}
	}
	return "", nil
}

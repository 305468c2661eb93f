package proxy

import (
	"context"
	"crypto/hmac"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/opencontainers/go-digest"

	"github.com/shroud-oci/shroud/cache"
	"github.com/shroud-oci/shroud/crypto"
)

// Encrypt-only rules (crypto.Rule.EncryptOnly): shroud keeps no key that
// opens what it stored for them. A blob is encrypted as it streams, as
// under any encrypt rule, but its layer key is wrapped at the upload's
// commit for the rule's recipients alone; shroud's identity is not one.
// The key itself is kept sealed with an expiry (crypto.PendingKeys,
// upload-ttl) until a manifest names the blob, since a config must still
// reach the upstream in plaintext, and is dropped then. The manifest
// carries no sealed original, and pulls through shroud get what the
// upstream holds: the encrypted manifest, with its own digest, and the
// ciphertext (or a 403, RefusePulls). Only the rule's recipients open
// the images, straight from the upstream or through shroud's ciphertext.

// encryptOnlyPull is a pull request path of an encrypt-only rule's
// repository: manifests, blobs (not upload sessions) and referrers.
var encryptOnlyPull = regexp.MustCompile(`^/v2/` + namePattern + `/(?:manifests/|referrers/|blobs/(?:[a-z0-9]+[+._-])*[a-z0-9]+:)`)

// serveEncryptOnlyPull answers the pulls of an encrypt-only rule's
// repository: the upstream's own answer, or the rule's refusal. It says
// whether r was one.
func (h *Handler) serveEncryptOnlyPull(w http.ResponseWriter, r *http.Request, be *backend, repo string, rule *crypto.Rule) bool {
	if !rule.EncryptOnly || (r.Method != http.MethodGet && r.Method != http.MethodHead) || !encryptOnlyPull.MatchString(r.URL.Path) {
		return false
	}
	if r.Method == http.MethodHead && strings.Contains(r.URL.Path, "/blobs/") {
		// A pusher's question (is the blob there already?), answered
		// from the mapping as under any encrypt rule: no key is opened.
		return false
	}
	if rule.RefusePulls {
		writeAPIError(w, r, apiErr(http.StatusForbidden, codeDenied,
			"repository %s is encrypt-only (%s): shroud holds no key for it and refuses pulls; pull from the upstream with a recipient's key", repo, rule))
		return true
	}
	h.limits.serve(w, r, be.passthrough)
	return true
}

// keyIDs are the ids of the keys rs wraps for, sorted.
func keyIDs(rs *crypto.Recipients) []string {
	ids := make([]string, 0, len(rs.Keys()))
	for _, k := range rs.Keys() {
		ids = append(ids, k.ID)
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

// wrapEncryptOnly wraps a committed blob's layer key for the recipients
// of an encrypt-only rule, and seals it as pending until a manifest names
// the blob.
func (h *Handler) wrapEncryptOnly(ctx context.Context, be *backend, b *cache.Blob, rule *crypto.Rule, opts crypto.PrivateOptions, pub crypto.PublicOptions) error {
	rs, err := h.wrapRecipients(ctx, b.Repository, rule)
	if err != nil {
		return err
	}
	if b.Annotations, err = h.keys.Wrap(opts, pub, rs); err != nil {
		return err
	}
	b.WrappedFor = keyIDs(rs)
	epoch, secret, err := h.epochs.current(ctx)
	if err != nil {
		return err
	}
	b.Pending, err = h.pending.Seal(opts, b.Repository, be.principal, b.CipherDigest, h.uploads.now().Add(h.uploads.ttl), epoch, secret)
	return err
}

// blobKey opens a mapping's layer key: its pending key (an encrypt-only
// blob no manifest named yet; only for the client that uploaded it), or
// its wrapped keys with shroud's keys.
func (h *Handler) blobKey(ctx context.Context, be *backend, b cache.Blob) (crypto.PrivateOptions, error) {
	if b.Pending != nil {
		opts, err := h.openPending(ctx, be, b)
		if err != nil {
			return opts, apiErr(http.StatusBadRequest, codeManifestBlobUnknown,
				"blob %s of encrypt-only repository %s: its key is kept for the client that uploaded it, until upload-ttl: push it again (%v)", b.PlainDigest, b.Repository, err)
		}
		return opts, nil
	}
	opts, _, err := h.keys.UnwrapWith(b.Annotations, nil)
	return opts, err
}

// errPushAgain refuses a manifest naming an encrypt-only blob shroud can
// no longer wrap as the rule now says, and forgets the mapping so that
// the client's next push of the blob uploads it again.
func (h *Handler) errPushAgain(ctx context.Context, be *backend, repo string, b cache.Blob, why string) error {
	be.setDeleted(ctx, repo, b.PlainDigest, true)
	return apiErr(http.StatusBadRequest, codeManifestBlobUnknown,
		"blob %s of encrypt-only repository %s: %s; shroud holds no key to wrap it again: push the image again (the blob is uploaded anew)", b.PlainDigest, repo, why)
}

// encryptOnlyLayer rewrites layer descriptor d of an encrypt-only rule's
// manifest to its encrypted form: the layer key is wrapped for rs from
// the pending key, or the wrapped keys the upload made are taken as they
// are when they wrap for exactly rs's keys. The pending key is dropped.
func (h *Handler) encryptOnlyLayer(ctx context.Context, be *backend, repo string, d *ocispec.Descriptor, b cache.Blob, rs *crypto.Recipients) error {
	pub, err := crypto.ParsePublicOptions(b.Annotations)
	if err != nil {
		return err
	}
	ann := b.Annotations
	want := keyIDs(rs)
	if b.Pending != nil {
		opts, err := h.openPending(ctx, be, b)
		switch {
		case errors.Is(err, crypto.ErrPendingExpired), errors.Is(err, crypto.ErrBoxOpen):
			// Past upload-ttl, or another client's upload: the wraps the
			// upload made serve if the rule's recipients are the same.
			if !slices.Equal(b.WrappedFor, want) {
				return h.errPushAgain(ctx, be, repo, b, "it was uploaded more than upload-ttl ago, for other recipients than the rule's now")
			}
		case err != nil:
			return fmt.Errorf("layer %s: %w", d.Digest, err)
		default:
			if ann, err = h.keys.Wrap(opts, pub, rs); err != nil {
				return err
			}
		}
	} else if !slices.Equal(b.WrappedFor, want) {
		return h.errPushAgain(ctx, be, repo, b, fmt.Sprintf("its layer key is wrapped for other recipients (%s) than the rule's now (%s)", strings.Join(b.WrappedFor, ", "), strings.Join(want, ", ")))
	}
	d.Annotations = crypto.WithoutEncAnnotations(d.Annotations)
	if d.Annotations == nil {
		d.Annotations = map[string]string{}
	}
	maps.Copy(d.Annotations, crypto.EncAnnotations(ann))
	d.Annotations[crypto.AnnotationBinding] = h.layerBinding(be, repo, b.CipherDigest, b.PlainDigest)
	d.MediaType = crypto.EncryptedMediaType(d.MediaType)
	d.Digest = b.CipherDigest
	d.Data = nil
	if !b.Layer || b.Pending != nil {
		b.Layer, b.Pending = true, nil
		b.Annotations, b.WrappedFor = maps.Clone(ann), want
		be.putBlob(ctx, b)
	}
	return nil
}

// settled drops a mapping's pending key once its blob is stored as what
// the manifest names (a config, in plaintext).
func (h *Handler) settled(ctx context.Context, be *backend, b cache.Blob) {
	if b.Pending != nil {
		b.Pending = nil
		be.putBlob(ctx, b)
	}
}

// layerBinding is the binding of an encrypt-only layer shroud encrypted
// for repo (crypto.AnnotationBinding, on the layer's descriptor): a keyed
// hash of the upstream, the repository and the layer's two digests. An
// owner approval adds wrapped keys only to layers whose binding holds for
// the plaintext digest the owner's unwrapping found: a layer shroud did not
// encrypt here, another repository's, or one whose wrapped keys the
// upstream swapped for another layer's, gets none. It reveals nothing and
// is deterministic, so a pushed-again image stores the same manifest.
func (h *Handler) layerBinding(be *backend, repo string, cipherDigest, plainDigest digest.Digest) string {
	return h.binding.Sum("shroud encrypt-only layer binding v1", be.name, repo, cipherDigest.String(), plainDigest.String())
}

// boundLayer says whether shroud encrypted the layer d of repo from the
// plaintext plainDigest.
func (h *Handler) boundLayer(be *backend, repo string, d ocispec.Descriptor, plainDigest digest.Digest) bool {
	got := d.Annotations[crypto.AnnotationBinding]
	return got != "" && plainDigest != "" && hmac.Equal([]byte(got), []byte(h.layerBinding(be, repo, d.Digest, plainDigest)))
}

// openPending opens b's pending key for the client of be, with its
// epoch's secret.
func (h *Handler) openPending(ctx context.Context, be *backend, b cache.Blob) (crypto.PrivateOptions, error) {
	epoch, err := crypto.PendingEpoch(b.Pending)
	if err != nil {
		return crypto.PrivateOptions{}, err
	}
	secret, err := h.epochs.secret(ctx, epoch)
	if err != nil {
		return crypto.PrivateOptions{}, err
	}
	return h.pending.Open(b.Pending, b.Repository, be.principal, b.PlainDigest, b.CipherDigest, h.uploads.now(), secret)
}

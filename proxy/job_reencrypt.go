package proxy

import (
	"context"
	"crypto/hmac"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/mux"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shroud-oci/shroud/cache"
	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/proxy/upstream"
)

// The re-encrypt job: a key that could open layer keys is compromised,
// so the layer keys it could open are too, and wrapping them again (the
// rewrap job) takes nothing back from whoever holds the key. Every sealed
// layer of the repositories named gets a new layer key and new
// ciphertext: the old ciphertext is streamed from the upstream, decrypted
// and verified (the HMAC, and the plaintext digest) and encrypted under a
// fresh key into a new upstream blob, never buffered whole. Manifests are
// then rewritten as the rewrap job rewrites them, and at the end the old
// ciphertext is deleted upstream and a revocation marker left in its
// place, so that a request for the old encrypted digest through shroud
// answers 410 Gone naming the revocation rather than 404. Through shroud,
// the digests clients see do not change.

// Revocation says why the re-encrypt job replaces ciphertext: what a
// request for the old encrypted digests is told.
type Revocation struct {
	KeyID  string    `json:"key_id"`
	Reason string    `json:"reason"` // keyCompromise, as the deny list says
	At     time.Time `json:"revoked_at"`
	// Digest is the old encrypted digest a marker stands for.
	Digest digest.Digest `json:"digest,omitempty"`
}

// Reencryption is one run of the re-encrypt job across repositories: a
// layer re-encrypted in one repository is mounted into the next one that
// holds the same ciphertext instead of being re-encrypted again, as the
// uploads that stored it shared it.
type Reencryption struct {
	Revocation Revocation
	mu         sync.Mutex
	done       map[digest.Digest]cache.Blob // old ciphertext -> its new form
}

// NewReencryption starts a run of the re-encrypt job for a revocation.
func NewReencryption(r Revocation) *Reencryption {
	return &Reencryption{Revocation: r, done: map[digest.Digest]cache.Blob{}}
}

// reencryptsAway refuses a re-encrypt job whose new layer keys would be
// wrapped for the key it re-encrypts away from: one still among the
// recipients the job wraps for (the rule's, past the key checks: a key
// the deny list names is not), or shroud's identity, which only an
// identity rotation replaces. The operator takes the key off the rule or
// revokes it first; a job that went on would hand the new ciphertext's
// keys to whoever holds the compromised one.
func (h *Handler) reencryptsAway(repo string, rule *crypto.Rule, rs *crypto.Recipients, keyID string) error {
	// A key id spelt otherwise than shroud spells it (no "sha256:", upper
	// case hex) would match no recipient below and let the job wrap the
	// new layer keys for the very key.
	if err := crypto.ValidKeyID(keyID); err != nil {
		return fmt.Errorf("re-encrypt %s: %w", repo, err)
	}
	if keyID == h.gate.identityID {
		return fmt.Errorf("re-encrypt %s: %s is shroud's identity: every layer key is wrapped for it, and a re-encryption would wrap the new ones for it again; rotate the identity", repo, keyID)
	}
	for _, k := range rs.Keys() {
		if k.ID == keyID {
			return fmt.Errorf("re-encrypt %s: %s is still a recipient of %s (%s): the new layer keys would be wrapped for the compromised key; take it off the rule, or revoke it in the trust documents, and run the job again", repo, keyID, rule, k.Spec)
		}
	}
	return nil
}

func (r *Reencryption) get(old digest.Digest) (cache.Blob, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	b, ok := r.done[old]
	return b, ok
}

func (r *Reencryption) put(old digest.Digest, b cache.Blob) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.done[old] = b
}

// reencryptLayer gives the sealed layer e (whose key opts opened) a new
// key and ciphertext in the job's repository, and points e and its
// pairing in the seal at them.
func (j *rewrapJob) reencryptLayer(ctx context.Context, e *ocispec.Descriptor, sl *crypto.SealedLayer, opts crypto.PrivateOptions, pub crypto.PublicOptions) error {
	re := j.o.Reencrypt
	old := e.Digest
	nb, ok := re.get(old)
	switch {
	case ok && nb.Repository == j.repo:
	case ok && j.h.mountCipher(ctx, j.be, j.repo, nb, nb.Repository):
		nb.Repository = j.repo
		j.be.putBlob(ctx, nb)
		j.h.recordBlobPointer(ctx, j.be, nb)
	default:
		var err error
		if nb, err = j.h.reencryptBlob(ctx, j.be, j.repo, old, sl, opts.Key, pub.HMAC); err != nil {
			return err
		}
		re.put(old, nb)
	}
	nopts, _, err := j.h.keys.UnwrapWith(nb.Annotations, crypto.IsIdentityKey)
	if err != nil {
		return fmt.Errorf("layer %s re-encrypted as %s: %w", old, nb.CipherDigest, err)
	}
	npub, err := crypto.ParsePublicOptions(nb.Annotations)
	if err != nil {
		return err
	}
	ann, err := j.h.keys.Wrap(nopts, npub, j.rs)
	if err != nil {
		return fmt.Errorf("layer %s: %w", nb.CipherDigest, err)
	}
	e.Annotations = crypto.WithoutEncAnnotations(e.Annotations)
	if e.Annotations == nil {
		e.Annotations = map[string]string{}
	}
	maps.Copy(e.Annotations, ann)
	e.Digest = nb.CipherDigest
	*sl = crypto.SealedLayer{PlainDigest: sl.PlainDigest, CipherDigest: nb.CipherDigest, Size: nb.Size, HMAC: npub.HMAC}
	if !contains(j.oldBlobs, old) {
		j.oldBlobs = append(j.oldBlobs, old)
		if j.o.Checkpoint != nil {
			// A run killed before the end leaves it to the next to
			// delete.
			if err := j.o.Checkpoint.Begin(oldBlobsOf(j.repo), old); err != nil {
				return fmt.Errorf("re-encrypt %s: checkpoint: %w", j.repo, err)
			}
		}
	}
	return nil
}

// oldBlobsOf names, in a checkpoint, the old ciphertext of repo a
// re-encrypt run replaced and has yet to delete.
func oldBlobsOf(repo string) string { return "blobs of " + repo }

func contains[T comparable](s []T, v T) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// reencryptBlob streams the ciphertext old of repo from the upstream,
// decrypts and verifies it, and encrypts it under a new key into a new
// upload of repo. A ciphertext that does not verify (the upstream's, or a
// layer key the annotations lied about) fails the job: nothing of it is
// stored.
func (h *Handler) reencryptBlob(ctx context.Context, be *backend, repo string, old digest.Digest, sl *crypto.SealedLayer, key crypto.LayerKey, mac []byte) (cache.Blob, error) {
	resp, err := be.cl.GetBlob(ctx, repo, old, "")
	if err != nil {
		return cache.Blob{}, fmt.Errorf("layer %s: %w", old, err)
	}
	defer resp.Body.Close()
	plain, err := crypto.DecryptReader(io.LimitReader(resp.Body, sl.Size), key, mac, sl.PlainDigest)
	if err != nil {
		return cache.Blob{}, err
	}
	u, err := h.openUpload(ctx, be, repo)
	if err != nil {
		return cache.Blob{}, err
	}
	if err := h.appendStream(ctx, be, u, plain, -1); err != nil {
		h.abandon(ctx, be, u)
		return cache.Blob{}, fmt.Errorf("layer %s: %w", old, err)
	}
	b, err := h.commit(ctx, be, u, sl.PlainDigest)
	if err != nil {
		return cache.Blob{}, fmt.Errorf("layer %s: %w", old, err)
	}
	if b.Size != sl.Size {
		return cache.Blob{}, fmt.Errorf("layer %s re-encrypted to %d bytes, the seal says %d", old, b.Size, sl.Size)
	}
	logger(ctx).Info("re-encrypted a layer", "repository", repo, "plain_digest", sl.PlainDigest, "old_cipher_digest", old, "cipher_digest", b.CipherDigest)
	return b, nil
}

// revokedType is the artifact type of a revocation marker: a small
// manifest upstream, under a keyed-hash tag of the digest it stands for,
// sealed by shroud's identity (the upstream cannot make one say something
// else, nor move one to another digest).
const revokedType = "application/vnd.dev.shroud.revoked.v1"

func (h *Handler) revokedTag(be *backend, repo string, d digest.Digest) string {
	return h.pointerNames("revoked", be.name, repo, d.String())[0]
}

// markRevoked leaves a revocation marker for the digest d of repo.
func (h *Handler) markRevoked(ctx context.Context, be *backend, repo string, d digest.Digest, r Revocation) error {
	r.Digest = d
	body, err := json.Marshal(r)
	if err != nil {
		return err
	}
	sealed, err := h.keys.Identity().Seal(crypto.Seal{Upstream: be.name, Repository: repo, ContentType: revokedType, Manifest: body})
	if err != nil {
		return err
	}
	if err := h.ensureEmptyJSON(ctx, be, repo); err != nil {
		return err
	}
	empty := ocispec.Descriptor{MediaType: ocispec.MediaTypeEmptyJSON, Digest: emptyJSONDigest, Size: 2}
	m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, ArtifactType: revokedType,
		Config: empty, Layers: []ocispec.Descriptor{empty}, Annotations: map[string]string{crypto.AnnotationOriginal: sealed}}
	out, err := json.Marshal(m)
	if err != nil {
		return err
	}
	_, _, err = be.cl.PutManifest(ctx, repo, h.revokedTag(be, repo, d), ocispec.MediaTypeImageManifest, out)
	return err
}

// revoked returns the revocation a marker upstream records for the digest
// d of repo, if there is one that shroud sealed for exactly that.
func (h *Handler) revoked(ctx context.Context, be *backend, repo string, d digest.Digest) (Revocation, bool) {
	um, err := h.getPointer(ctx, be, repo, h.pointerNames("revoked", be.name, repo, d.String()))
	if err != nil {
		return Revocation{}, false
	}
	_, seal, _, ok := h.sealOf(ctx, be, repo, um)
	if !ok || seal.ContentType != revokedType {
		return Revocation{}, false
	}
	var r Revocation
	if json.Unmarshal(seal.Manifest, &r) != nil || r.Digest != d {
		return Revocation{}, false
	}
	return r, true
}

// errGone answers a request for a digest the re-encrypt job replaced.
func errGone(d digest.Digest, r Revocation, code string) error {
	return apiErr(http.StatusGone, code, "%s is gone: re-encrypted after key %s was revoked (%s, %s); pull the image through shroud by the digests its client pushed", d, r.KeyID, r.Reason, r.At.UTC().Format(time.RFC3339))
}

// orGone answers a 404 of fn for a digest the re-encrypt job replaced
// with 410 Gone, naming the revocation: the digest named by the route
// variable v. The marker is read with the client's credentials, so the
// upstream authorizes the answer as it did the 404. A blob's HEAD is left
// its 404: pushes HEAD every blob before they upload it, and would pay a
// marker lookup for each new one.
func (h *Handler) orGone(v, code string, fn func(http.ResponseWriter, *http.Request) error) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		err := fn(w, r)
		if v == "digest" && r.Method == http.MethodHead {
			return err
		}
		var ae *apiError
		if err == nil || !(upstream.IsStatus(err, http.StatusNotFound) || errors.As(err, &ae) && ae.status == http.StatusNotFound) {
			return err
		}
		d, ok := isDigest(mux.Vars(r)[v])
		if !ok {
			return err
		}
		if rv, ok := h.revoked(r.Context(), h.backend(r), mux.Vars(r)["name"], d); ok {
			return errGone(d, rv, code)
		}
		return err
	}
}

// retireOld deletes the old ciphertext the job replaced, each after its
// revocation marker is up; a registry that refuses is reported.
func (j *rewrapJob) retireOld(ctx context.Context) error {
	if j.o.Reencrypt == nil {
		return nil
	}
	olds := j.oldBlobs
	if j.o.Checkpoint != nil {
		for _, old := range j.o.Checkpoint.Pending(oldBlobsOf(j.repo)) {
			if !contains(olds, old) {
				olds = append(olds, old)
			}
		}
	}
	for _, old := range olds {
		if err := j.h.markRevoked(ctx, j.be, j.repo, old, j.o.Reencrypt.Revocation); err != nil {
			return fmt.Errorf("re-encrypt %s: revocation marker for %s: %w", j.repo, old, err)
		}
		if err := j.be.cl.DeleteBlob(ctx, j.repo, old); err != nil && !upstream.IsStatus(err, http.StatusNotFound) {
			j.report.KeptOld = append(j.report.KeptOld, j.repo+"@"+old.String())
			logger(ctx).Warn("re-encrypt: the upstream kept the old ciphertext, which the revoked key opens", "repository", j.repo, "cipher_digest", old, "err", err)
			if !deleteRefused(err) {
				continue // left pending: the next run tries again
			}
		}
		if j.o.Checkpoint != nil {
			if err := j.o.Checkpoint.Forget(oldBlobsOf(j.repo), old); err != nil {
				return fmt.Errorf("re-encrypt %s: checkpoint: %w", j.repo, err)
			}
		}
	}
	return nil
}

// checkSealedLayer checks an upstream layer against its sealed pairing
// and opens its key with shroud's identity alone.
func (h *Handler) checkSealedLayer(e ocispec.Descriptor, sl crypto.SealedLayer) (crypto.PrivateOptions, crypto.PublicOptions, error) {
	pub, err := crypto.ParsePublicOptions(e.Annotations)
	if err != nil || !hmac.Equal(pub.HMAC, sl.HMAC) || e.Size != sl.Size {
		return crypto.PrivateOptions{}, crypto.PublicOptions{}, fmt.Errorf("layer %s does not match its sealed HMAC and size", e.Digest)
	}
	opts, _, err := h.keys.UnwrapWith(e.Annotations, crypto.IsIdentityKey)
	if err != nil {
		return crypto.PrivateOptions{}, crypto.PublicOptions{}, fmt.Errorf("layer %s: %w", e.Digest, err)
	}
	if opts.PlainDigest != sl.PlainDigest {
		return crypto.PrivateOptions{}, crypto.PublicOptions{}, fmt.Errorf("layer %s unwraps to plaintext %s, the seal pairs it with %s", e.Digest, opts.PlainDigest, sl.PlainDigest)
	}
	return opts, pub, nil
}

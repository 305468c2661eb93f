package proxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/proxy/upstream"
)

// Referrers kept by shroud, for upstreams without the referrers API
// (distribution 2.8 and v3.1 answer 404). shroud keeps the OCI 1.1
// referrers tag schema itself: the subject's referrers index, in
// plaintext terms, pushed through shroud like any index (encrypted,
// sealed) under the schema's tag "sha256-<hex>", a digest tag, so that
// the registry stores it under a keyed name (digest_tags.go) and learns
// no digest. A client that keeps the schema itself reads and writes the
// same index under the same name. A push of a manifest with a subject
// adds it to the index and is answered OCI-Subject, as an upstream with
// the API would answer it, so clients do not fall back.

// referrersTag is the tag schema's name of subject's index: the
// algorithm, a dash, the first 64 hex digits of the digest.
func referrersTag(subject digest.Digest) (string, bool) {
	if subject.Validate() != nil {
		return "", false
	}
	enc := subject.Encoded()
	tag := subject.Algorithm().String() + "-" + enc[:min(len(enc), 64)]
	return tag, isDigestTag(tag)
}

// referrerLocks serialize, within one process, the updates of one
// subject's index (a read, then a write): striped, so bounded.
type referrerLocks [64]sync.Mutex

func (l *referrerLocks) lock(be *backend, repo string, subject digest.Digest) func() {
	f := fnv.New32a()
	f.Write([]byte(be.name + "\x00" + repo + "\x00" + subject.String()))
	mu := &l[f.Sum32()%uint32(len(l))]
	mu.Lock()
	return mu.Unlock
}

// How long an update of a referrers index waits for the replicas' lock,
// and how long a lock is held at most (a replica that dies holding it).
const (
	referrersLockWait = 5 * time.Second
	referrersLockTTL  = 30 * time.Second
	referrersLockPoll = 25 * time.Millisecond
)

// lockReferrers serializes the updates of subject's index: within the
// process, and across the replicas through the shared ledger (a swap on
// a keyed name, so the shared tier learns no digest). A ledger that
// fails, or a lock not had within referrersLockWait, leaves the process's
// lock alone: a concurrent update on another replica may then be lost,
// and is logged; its client's next push of the referrer adds it again.
func (h *Handler) lockReferrers(ctx context.Context, be *backend, repo string, subject digest.Digest) func() {
	unlock := h.referrerLocks.lock(be, repo, subject)
	if h.ledger == nil {
		return unlock
	}
	name := "referrers-lock:" + h.pointers.Sum("referrers-lock", be.name, repo, subject.String())
	var b [16]byte
	rand.Read(b[:])
	token := hex.EncodeToString(b[:])
	deadline := time.Now().Add(referrersLockWait)
	for {
		ok, err := h.ledger.Swap(ctx, name, "", token, referrersLockTTL)
		if err == nil && ok {
			return func() {
				if _, err := h.ledger.Swap(context.WithoutCancel(ctx), name, token, "", 0); err != nil {
					logger(ctx).Warn("referrers index lock not released: it expires", "repository", repo, "err", err)
				}
				unlock()
			}
		}
		if err != nil || time.Now().After(deadline) {
			logger(ctx).Warn("referrers index updated without the replicas' lock", "repository", repo, "subject", subject, "err", err)
			return unlock
		}
		select {
		case <-ctx.Done():
			return unlock
		case <-time.After(referrersLockPoll):
		}
	}
}

// keepReferrer adds the referrer d (as its client pushed it) to the index
// shroud keeps for subject in repo, and says whether the index lists it
// now. A failure is logged, not returned: the referrer is stored, and a
// client not answered OCI-Subject keeps the schema itself, under the
// same name.
func (h *Handler) keepReferrer(ctx context.Context, be *backend, repo string, subject digest.Digest, d ocispec.Descriptor) bool {
	tag, ok := referrersTag(subject)
	if !ok {
		return false
	}
	defer h.lockReferrers(ctx, be, repo, subject)()
	idx, err := h.referrersIndex(ctx, be, repo, tag)
	if err == nil && slices.ContainsFunc(idx.Manifests, func(e ocispec.Descriptor) bool { return e.Digest == d.Digest }) {
		return true
	}
	if err == nil && len(idx.Manifests) >= maxReferrers {
		// Full: what is gone (deleted through shroud, or behind it)
		// leaves the index, checked only now, so that a push costs no
		// check per entry. A listing leaves gone entries out.
		idx.Manifests = slices.DeleteFunc(idx.Manifests, func(e ocispec.Descriptor) bool { return h.gone(ctx, be, repo, e.Digest) })
		if len(idx.Manifests) >= maxReferrers {
			err = fmt.Errorf("the index lists %d referrers, as many as shroud keeps", len(idx.Manifests))
		}
	}
	if err == nil {
		idx.Manifests = append(idx.Manifests, d)
		err = h.pushReferrersIndex(ctx, be, repo, tag, idx)
		var ae *apiError
		if errors.As(err, &ae) && ae.code == codeManifestBlobUnknown {
			// An entry is gone: pruned, and written again once.
			idx.Manifests = slices.DeleteFunc(idx.Manifests, func(e ocispec.Descriptor) bool { return e.Digest != d.Digest && h.gone(ctx, be, repo, e.Digest) })
			err = h.pushReferrersIndex(ctx, be, repo, tag, idx)
		}
	}
	if err != nil {
		logger(ctx).Warn("the referrers index shroud keeps was not updated: the client keeps it", "repository", repo,
			"subject", subject, "referrer", d.Digest, "err", err)
		return false
	}
	return true
}

// pushReferrersIndex stores idx under the schema's tag, through the
// push path (encrypted, sealed, the tag keyed).
func (h *Handler) pushReferrersIndex(ctx context.Context, be *backend, repo, tag string, idx ocispec.Index) error {
	body, err := json.Marshal(idx)
	if err != nil {
		return err
	}
	_, err = h.pushManifest(ctx, be, repo, tag, body, ocispec.MediaTypeImageIndex, false)
	return err
}

// gone says whether the manifest a client pushed as d is known to be in
// repo no more: no copy of it, nor the upstream's manifest d.
func (h *Handler) gone(ctx context.Context, be *backend, repo string, d digest.Digest) bool {
	if _, ok, err := h.liveManifestFor(ctx, be, repo, d, crypto.NewUnwrapBudget(maxUnwrapsPerRequest)); err != nil || ok {
		return false
	}
	_, _, _, err := be.cl.HeadManifest(ctx, repo, d.String())
	return upstream.IsStatus(err, http.StatusNotFound)
}

// referrersIndex reads the index under the schema's tag, as its client
// (shroud or another) pushed it: empty if there is none.
func (h *Handler) referrersIndex(ctx context.Context, be *backend, repo, tag string) (ocispec.Index, error) {
	empty := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{}}
	um, err := h.getTagged(ctx, be, repo, tag)
	if upstream.IsStatus(err, http.StatusNotFound) {
		return empty, nil
	}
	if err != nil {
		return ocispec.Index{}, err
	}
	s, err := h.restore(ctx, be, repo, um, 1, crypto.NewUnwrapBudget(maxUnwrapsPerRequest))
	if err != nil {
		return ocispec.Index{}, err
	}
	var idx ocispec.Index
	if err := json.Unmarshal(s.body, &idx); err != nil || (idx.MediaType != "" && idx.MediaType != ocispec.MediaTypeImageIndex) {
		return ocispec.Index{}, errors.Join(fmt.Errorf("tag %s holds no image index", tag), err)
	}
	if idx.Manifests == nil {
		idx.Manifests = []ocispec.Descriptor{}
	}
	return idx, nil
}

// keptReferrers lists the referrers of subject in the index shroud keeps,
// each checked as the upstream's are: restored, and naming the subject.
// One gone is left out.
func (h *Handler) keptReferrers(ctx context.Context, be *backend, repo string, subject digest.Digest) ([]ocispec.Descriptor, error) {
	tag, ok := referrersTag(subject)
	if !ok {
		return nil, nil
	}
	idx, err := h.referrersIndex(ctx, be, repo, tag)
	if err != nil {
		return nil, fmt.Errorf("referrers of %s: %w", subject, err)
	}
	if len(idx.Manifests) > maxReferrers {
		return nil, apiErr(http.StatusBadGateway, codeUnavailable, "the referrers index of %s lists %d referrers, more than the %d shroud restores", subject, len(idx.Manifests), maxReferrers)
	}
	var listed []ocispec.Descriptor
	for _, e := range idx.Manifests {
		if slices.ContainsFunc(listed, func(l ocispec.Descriptor) bool { return l.Digest == e.Digest }) {
			continue
		}
		s, err := h.resolveManifest(ctx, be, repo, e.Digest.String())
		var ae *apiError
		if (errors.As(err, &ae) && ae.code == codeManifestUnknown) || upstream.IsStatus(err, http.StatusNotFound) {
			continue // deleted
		}
		if err != nil {
			return nil, fmt.Errorf("referrer %s: %w", e.Digest, err)
		}
		rd, named := describeReferrer(s)
		if named != subject {
			logger(ctx).Info("dropped a referrer the index lists for a subject it does not name", "repository", repo,
				"subject", subject, "referrer", e.Digest, "its_subject", named)
			continue
		}
		listed = append(listed, rd)
	}
	return listed, nil
}

// referrerDescriptor describes a manifest a client pushed (body, of
// contentType) as a referrers index lists it.
func referrerDescriptor(body []byte, contentType string) ocispec.Descriptor {
	d, _ := describeReferrer(served{body: body, contentType: contentType, digest: digest.FromBytes(body)})
	return d
}

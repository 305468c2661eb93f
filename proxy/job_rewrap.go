package proxy

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shroud-oci/shroud/audit"
	"github.com/shroud-oci/shroud/cache"
	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/proxy/upstream"
)

// The rewrap job. A recipient taken off a rule (superseded, retired, or
// no longer on the allow list) can still unwrap every layer key of every
// manifest pushed while it was on: the wrapped keys sit in the layers'
// annotations upstream. ocicrypt and imgcrypt only ever add recipients;
// the job takes them away. For each manifest shroud stored in a
// repository it unwraps each sealed layer's key with shroud's identity,
// wraps it for the recipients the repository's rule names now (nothing
// else: the layer's old wrapped keys all go), and stores the new
// encrypted manifest under every tag the old one had (its pointer tag
// among them), then deletes the old one. Layer blobs are not touched;
// an index is rewritten after its children, a referrer after its
// subject, so that every digest it names is the new one. Through shroud
// nothing changes: the sealed originals are the same, and so are the
// digests clients see.
//
// What the job cannot reach: an encrypted copy no tag names (a manifest
// pushed again stores a new copy and moves the pointer; the old one is
// findable upstream by digest only). Deleting old copies as the job goes,
// and the registry's garbage collection, take those away; the report
// counts what the upstream refused to delete.

// JobCheckpoint records a job's progress, so that a job killed halfway
// resumes where it stopped: manifests it wrote are not rewritten again,
// indexes and referrers written after the kill name the children and
// subjects written before it, and the old manifests it replaced are
// deleted by the next run if the killed one did not get to it.
type JobCheckpoint interface {
	// Begin notes that the job is about to replace old in repo.
	Begin(repo string, old digest.Digest) error
	// Record notes that old was replaced by new in repo.
	Record(repo string, old, new digest.Digest) error
	// Forget notes that old, replaced, is gone from the upstream.
	Forget(repo string, old digest.Digest) error
	// Written says whether the job wrote upstreamDigest in repo.
	Written(repo string, upstreamDigest digest.Digest) bool
	// Replaced returns what the job replaced old with in repo.
	Replaced(repo string, old digest.Digest) (digest.Digest, bool)
	// Pending lists the old manifests of repo the job began to replace
	// and did not Forget.
	Pending(repo string) []digest.Digest
}

// JobProgress is one step of a job, for its progress report.
type JobProgress struct {
	Repository string
	Done       int // manifests of the repository handled so far
	Total      int
	Old, New   digest.Digest // New is "" for a manifest left as it was
	Tags       int           // tags moved to New
	Note       string        // why a manifest was left as it was, or what failed
}

// JobReport sums a job up.
type JobReport struct {
	Manifests int // distinct upstream manifests the repositories' tags named
	Rewritten int
	Pointers  int // blob pointers rewritten for the identity alone
	Resealed  int // sealed by a previous identity, re-sealed for the identity (identity rotation)
	Resumed   int // written by an earlier run of the job (its checkpoint)
	Foreign   int // not stored by this shroud for the repository: left alone
	// Moved lists the tags clients moved while the job ran: left where
	// they moved them.
	Moved []string
	// KeptOld lists old manifests the upstream refused to delete: until
	// it does, they still hold the wrapped keys the job took away.
	KeptOld []string
}

// RewrapOptions configure a rewrap job.
type RewrapOptions struct {
	Checkpoint JobCheckpoint                                 // nil: none, every manifest is rewritten
	Progress   func(JobProgress)                             // nil: none
	Pace       time.Duration                                 // at least this long between two manifests' writes
	Sleep      func(time.Duration)                           // time.Sleep unless set (tests)
	Now        func() time.Time                              // time.Now unless set
	Recipients func(repo string) (*crypto.Recipients, error) // nil: the rule's that pass the key checks
	// Reencrypt makes the job a re-encrypt job: every sealed layer gets a
	// new layer key and new ciphertext (job_reencrypt.go). One
	// Reencryption serves every repository of a run.
	Reencrypt *Reencryption
}

// JobID names a run of the rewrap job (re a re-encryption, or nil) over
// repos: its kind, the revocation it re-encrypts for, and per repository
// the ids of the keys it wraps for now. A checkpoint belongs to one job
// (jobs.OpenCheckpoint): a run with another id does not take what this
// one wrote for done, since it wrapped for other keys.
func (h *Handler) JobID(ctx context.Context, repos []string, re *Reencryption) (string, error) {
	kind := "rewrap"
	if re != nil {
		kind = "reencrypt " + re.Revocation.KeyID
	}
	sum := sha256.New()
	fmt.Fprintf(sum, "%s\x00%s\x00", kind, h.gate.identityID)
	for _, repo := range slices.Sorted(slices.Values(repos)) {
		rule := h.policy.Match(repo)
		if rule == nil || rule.Action != crypto.Encrypt {
			return "", fmt.Errorf("rewrap %s: no encrypt rule matches the repository", repo)
		}
		if rule.EncryptOnly {
			return "", errEncryptOnlyJob(repo, rule)
		}
		rs, err := h.wrapRecipients(ctx, repo, rule)
		if err != nil {
			return "", fmt.Errorf("rewrap %s: %w", repo, err)
		}
		ids := make([]string, 0, len(rs.Keys()))
		for _, k := range rs.Keys() {
			ids = append(ids, k.ID)
		}
		slices.Sort(ids)
		fmt.Fprintf(sum, "%s\x00%s\x00", repo, strings.Join(ids, ","))
	}
	return fmt.Sprintf("%s %x", kind, sum.Sum(nil)[:12]), nil
}

// Rewrap runs the rewrap job over one repository of the default upstream,
// with shroud's own upstream credentials.
func (h *Handler) Rewrap(ctx context.Context, repo string, o RewrapOptions) (rep JobReport, err error) {
	kind := "rewrap job"
	if o.Reencrypt != nil {
		kind = "re-encrypt job"
	}
	ctx, end := h.jobSpan(ctx, kind, repo)
	defer func() { end(rep, err) }()
	be := *h.def
	be.auth = authHash("job\x00")
	rule := h.policy.Match(repo)
	if rule == nil || rule.Action != crypto.Encrypt {
		return JobReport{}, fmt.Errorf("rewrap %s: no encrypt rule matches the repository", repo)
	}
	if rule.EncryptOnly {
		return JobReport{}, errEncryptOnlyJob(repo, rule)
	}
	// The recipients a push would wrap for now: the rule's that pass the
	// key checks (expiry, the trust documents); none at all refuses the
	// job as it refuses a push.
	recipients, err := h.wrapRecipients(ctx, repo, rule)
	if o.Recipients != nil && err == nil {
		recipients, err = o.Recipients(repo)
	}
	if err != nil {
		return JobReport{}, fmt.Errorf("rewrap %s: %w", repo, err)
	}
	if o.Reencrypt != nil {
		if err := h.reencryptsAway(repo, rule, recipients, o.Reencrypt.Revocation.KeyID); err != nil {
			return JobReport{}, err
		}
	}
	if o.Sleep == nil {
		o.Sleep = time.Sleep
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	byDigest, order, err := h.taggedManifests(ctx, &be, repo)
	if err != nil {
		return JobReport{}, err
	}
	j := &rewrapJob{h: h, be: &be, repo: repo, rs: recipients, o: o, tags: byDigest, done: map[digest.Digest]jobResult{}, report: JobReport{Manifests: len(order)}}
	for _, d := range order {
		if err := j.visit(ctx, d, 0); err != nil {
			return j.report, err
		}
	}
	if err := j.secondPass(ctx); err != nil {
		return j.report, err
	}
	// The old manifests go last, once nothing this job writes names
	// them: until then a pull of an index whose children are being
	// rewritten finds every child. A killed run's are among them (the
	// checkpoint's pending ones no tag names any more).
	olds := j.replaced
	if o.Checkpoint != nil {
		for _, old := range o.Checkpoint.Pending(repo) {
			if _, tagged := byDigest[old]; !tagged && !slices.Contains(olds, old) {
				olds = append(olds, old)
			}
		}
	}
	for _, old := range olds {
		if o.Reencrypt != nil {
			// The old manifest names the old ciphertext: gone with it.
			if err := h.markRevoked(ctx, &be, repo, old, o.Reencrypt.Revocation); err != nil {
				return j.report, fmt.Errorf("re-encrypt %s: revocation marker for %s: %w", repo, old, err)
			}
		}
		if err := j.deleteOld(ctx, old); err != nil {
			return j.report, err
		}
	}
	return j.report, j.retireOld(ctx)
}

// taggedManifests lists the manifests repo's tags name upstream (pointer
// tags among them): each digest's tags, and the digests in the order
// first seen.
func (h *Handler) taggedManifests(ctx context.Context, be *backend, repo string) (map[digest.Digest][]string, []digest.Digest, error) {
	tags, err := h.upstreamTags(ctx, be, repo)
	if err != nil {
		return nil, nil, fmt.Errorf("rewrap %s: %w", repo, err)
	}
	byDigest := map[digest.Digest][]string{}
	var order []digest.Digest
	for _, tag := range tags {
		d, _, _, err := be.cl.HeadManifest(ctx, repo, tag)
		if upstream.IsStatus(err, http.StatusNotFound) {
			continue // deleted while the job listed it
		}
		if err != nil {
			return nil, nil, fmt.Errorf("rewrap %s: tag %s: %w", repo, tag, err)
		}
		if d == "" {
			return nil, nil, fmt.Errorf("rewrap %s: the upstream names no digest for tag %s", repo, tag)
		}
		if _, ok := byDigest[d]; !ok {
			order = append(order, d)
		}
		byDigest[d] = append(byDigest[d], tag)
	}
	return byDigest, order, nil
}

// secondPass rewrites the manifests pushed while the job ran that name a
// copy it replaced (an index's child, a referrer's subject: a replica
// whose cache still mapped the client's digest to the old copy wrote
// them so), before the old copies are deleted: they then name the new
// copies. One more listing of the tags finds them.
func (j *rewrapJob) secondPass(ctx context.Context) error {
	if len(j.replaced) == 0 {
		return nil
	}
	written := map[digest.Digest]bool{}
	for _, r := range j.done {
		written[r.digest] = true
	}
	byDigest, order, err := j.h.taggedManifests(ctx, j.be, j.repo)
	if err != nil {
		return err
	}
	j.tags = byDigest
	for _, d := range order {
		if _, seen := j.done[d]; seen || written[d] {
			continue
		}
		um, err := j.be.cl.GetManifest(ctx, j.repo, d.String())
		if upstream.IsStatus(err, http.StatusNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("rewrap %s: manifest %s: %w", j.repo, d, err)
		}
		enc, err := parseManifest(um.Body, um.ContentType)
		if err != nil {
			continue
		}
		names := enc.subject != nil && slices.Contains(j.replaced, enc.subject.Digest)
		for _, c := range enc.manifests {
			names = names || slices.Contains(j.replaced, c.Digest)
		}
		if !names {
			continue // pushed during the job, for the recipients of now: as it is
		}
		j.report.Manifests++
		if err := j.visit(ctx, d, 0); err != nil {
			return err
		}
	}
	return nil
}

// deleteOld deletes a manifest the job replaced, and tells the
// checkpoint; a registry that refuses is reported, not an error.
func (j *rewrapJob) deleteOld(ctx context.Context, old digest.Digest) error {
	if err := j.be.cl.DeleteManifest(ctx, j.repo, old.String()); err != nil && !upstream.IsStatus(err, http.StatusNotFound) {
		j.report.KeptOld = append(j.report.KeptOld, j.repo+"@"+old.String())
		logger(ctx).Warn("rewrap: the upstream kept the old manifest, which still holds the wrapped keys taken away", "repository", j.repo, "upstream_digest", old, "err", err)
		if !deleteRefused(err) {
			return nil // left pending: the next run tries again
		}
		// A registry that does not delete (405, 403, 400 UNSUPPORTED)
		// will not on the next run either: the report names it for the
		// operator, and the checkpoint lets it go.
	}
	if j.o.Checkpoint != nil {
		if err := j.o.Checkpoint.Forget(j.repo, old); err != nil {
			return fmt.Errorf("rewrap %s: checkpoint: %w", j.repo, err)
		}
	}
	return nil
}

// deleteRefused says whether err is a registry's refusal to delete
// rather than a failure to reach it.
func deleteRefused(err error) bool {
	return upstream.IsStatus(err, http.StatusMethodNotAllowed) || upstream.IsStatus(err, http.StatusForbidden) ||
		upstream.IsStatus(err, http.StatusBadRequest) || upstream.IsStatus(err, http.StatusUnauthorized)
}

type jobResult struct {
	digest    digest.Digest // the manifest's digest after the job
	mediaType string
	size      int64
}

type rewrapJob struct {
	h    *Handler
	be   *backend
	repo string
	rs   *crypto.Recipients
	o    RewrapOptions
	tags map[digest.Digest][]string
	done map[digest.Digest]jobResult
	// replaced are the old manifests this run replaced, deleted at its
	// end; oldBlobs the old ciphertext a re-encrypt run replaced, deleted
	// after them.
	replaced []digest.Digest
	oldBlobs []digest.Digest
	last     time.Time
	report   JobReport
}

// maxJobDepth bounds the nesting of indexes and referrers the job
// follows (a hostile upstream's loop of subjects is not followed forever).
const maxJobDepth = 8

// visit rewraps the manifest d after the manifests it names (children,
// subject) that the repository's tags also name.
func (j *rewrapJob) visit(ctx context.Context, d digest.Digest, depth int) error {
	if _, ok := j.done[d]; ok {
		return nil
	}
	if depth > maxJobDepth {
		return fmt.Errorf("rewrap %s: manifest %s: indexes and subjects nest deeper than %d", j.repo, d, maxJobDepth)
	}
	um, err := j.be.cl.GetManifest(ctx, j.repo, d.String())
	if err != nil {
		return fmt.Errorf("rewrap %s: manifest %s: %w", j.repo, d, err)
	}
	keep := func(note string) error {
		j.done[d] = jobResult{digest: d, mediaType: um.ContentType, size: int64(len(um.Body))}
		j.progress(d, "", 0, note)
		return nil
	}
	if j.o.Checkpoint != nil && j.o.Checkpoint.Written(j.repo, d) {
		j.report.Resumed++
		return keep("written by an earlier run")
	}
	enc, err := parseManifest(um.Body, um.ContentType)
	if err != nil {
		j.report.Foreign++
		return keep("not a manifest shroud reads: " + err.Error())
	}
	sealed := enc.annotations[crypto.AnnotationOriginal]
	if sealed == "" {
		j.report.Foreign++
		return keep("not sealed by shroud")
	}
	seal, sealer, err := j.h.keys.OpenSeal(sealed)
	if err != nil || seal.Upstream != j.be.name || seal.Repository != j.repo {
		j.report.Foreign++
		return keep("not sealed by this shroud for this repository")
	}
	// Sealed by a previous identity (identity rotation): re-sealed for
	// the identity, whatever it is, and its pointer tags renamed, if the
	// previous identity passes the key checks. One that does not (revoked:
	// its key leaked) stops the job: what it sealed cannot be told from
	// what a thief sealed with it, and re-sealing would vouch for both.
	rotated := sealer != j.h.keys.Identity()
	if rotated {
		if err := j.h.previousRefused(ctx, j.repo, sealer); err != nil {
			return fmt.Errorf("rewrap %s: manifest %s: %w; re-sealing it would vouch for whatever was sealed with that key: rotate the identity before revoking it, and re-push from a trusted source what the job cannot vouch for", j.repo, d, err)
		}
	}
	pointer := false
	switch artifactType(enc) {
	case blobPointerType:
		if j.o.Reencrypt != nil && !rotated {
			// A re-encrypted layer gets a new pointer of its own, under
			// the same tag.
			return keep("a blob pointer")
		}
		// Wrapped for the identity alone, and rewritten so: one written
		// from a restored mapping by an earlier version carried every
		// recipient of the manifest it was restored from.
		pointer = true
	case revokedType:
		if !rotated {
			return keep("a revocation marker")
		}
	}
	// What it names first.
	var deps []digest.Digest
	for _, c := range enc.manifests {
		deps = append(deps, c.Digest)
	}
	if enc.subject != nil {
		deps = append(deps, enc.subject.Digest)
	}
	for _, dep := range deps {
		if _, tagged := j.tags[dep]; tagged && dep != d {
			if err := j.visit(ctx, dep, depth+1); err != nil {
				return err
			}
		}
	}
	if err := j.rewrapLayers(ctx, enc, &seal, pointer); err != nil {
		return fmt.Errorf("rewrap %s: manifest %s: %w", j.repo, d, err)
	}
	for i := range enc.manifests {
		c := &enc.manifests[i]
		r, err := j.now(ctx, c.Digest)
		if err != nil {
			return err
		}
		if r.digest != c.Digest {
			for k := range seal.Children {
				if seal.Children[k].UpstreamDigest == c.Digest {
					seal.Children[k].UpstreamDigest = r.digest
				}
			}
			c.Digest, c.Size = r.digest, r.size
		}
	}
	if enc.subject != nil {
		r, err := j.now(ctx, enc.subject.Digest)
		if err != nil {
			return err
		}
		if r.digest != enc.subject.Digest {
			enc.subject.Digest, enc.subject.Size = r.digest, r.size
		}
	}
	if !pointer {
		// What a push of it now would wrap for: the copy is reused
		// (manifest_reuse.go) only while it is. And the copy it
		// replaces: referrers attached to that one (pushed while the
		// job runs, through a replica that still maps the old copy)
		// are listed with this one's.
		seal.Wrapped = j.rs.WrappedIDs(j.h.keys.Identity())
		seal.Previous = slices.Compact(append([]digest.Digest{d}, seal.Previous...))
		seal.Previous = seal.Previous[:min(len(seal.Previous), crypto.MaxPreviousCopies)]
	}
	resealed, err := j.h.keys.Identity().Seal(seal)
	if err != nil {
		return err
	}
	enc.annotations = maps.Clone(enc.annotations)
	enc.annotations[crypto.AnnotationOriginal] = resealed
	out, err := enc.marshal()
	if err != nil {
		return err
	}
	j.pace()
	if j.o.Checkpoint != nil {
		if err := j.o.Checkpoint.Begin(j.repo, d); err != nil {
			return fmt.Errorf("rewrap %s: checkpoint: %w", j.repo, err)
		}
	}
	tags := j.tags[d]
	if rotated {
		if tags, err = j.renamePointers(tags, enc, seal); err != nil {
			return fmt.Errorf("rewrap %s: manifest %s: %w", j.repo, d, err)
		}
	}
	slices.SortStableFunc(tags, func(a, b string) int { // the pointer first
		return boolInt(!isPointerTag(a)) - boolInt(!isPointerTag(b))
	})
	// A tag a client moved since the job listed it (a push during the
	// job) is the client's: the job does not move it back.
	if tags, err = j.stillNaming(ctx, tags, d, digest.FromBytes(seal.Manifest)); err != nil {
		return err
	}
	if len(tags) == 0 {
		return keep("every tag moved to another manifest while the job ran")
	}
	var nd digest.Digest
	for _, tag := range tags {
		got, _, err := j.be.cl.PutManifest(ctx, j.repo, tag, enc.mediaType, out)
		if err != nil {
			return fmt.Errorf("rewrap %s: manifest %s: store under tag %s: %w", j.repo, d, tag, err)
		}
		if nd != "" && got != nd {
			return fmt.Errorf("rewrap %s: the upstream stored %s under tag %s, %s under another", j.repo, got, tag, nd)
		}
		nd = got
	}
	j.done[d] = jobResult{digest: nd, mediaType: enc.mediaType, size: int64(len(out))}
	if pointer {
		j.report.Pointers++
	} else {
		j.report.Rewritten++
	}
	if rotated {
		j.report.Resealed++
	}
	plain := digest.FromBytes(seal.Manifest)
	if !pointer { // a pointer is no manifest a client asks for
		j.be.putManifestMapping(ctx, cache.Manifest{Repository: j.repo, PlainDigest: plain, ContentType: seal.ContentType, Size: int64(len(seal.Manifest)),
			UpstreamDigest: nd, UpstreamMediaType: enc.mediaType, UpstreamSize: int64(len(out))})
	}
	if j.o.Checkpoint != nil {
		if err := j.o.Checkpoint.Record(j.repo, d, nd); err != nil {
			return fmt.Errorf("rewrap %s: checkpoint: %w", j.repo, err)
		}
	}
	j.replaced = append(j.replaced, d)
	j.progress(d, nd, len(tags), "")
	return nil
}

// stillNaming is tags without those that no longer name d upstream, nor
// another copy shroud sealed of the same manifest (plain: the digest its
// client pushed; a killed run of the job, or the same manifest pushed
// again, moved the tag there). A tag renamed for the identity is the
// job's to write. A push that lands between this check and the job's
// write is moved back: the window is one request.
func (j *rewrapJob) stillNaming(ctx context.Context, tags []string, d, plain digest.Digest) ([]string, error) {
	kept := tags[:0:0]
	for _, tag := range tags {
		if isPointerTag(tag) && !slices.Contains(j.tags[d], tag) {
			kept = append(kept, tag) // renamed: nothing there to move back
			continue
		}
		got, _, _, err := j.be.cl.HeadManifest(ctx, j.repo, tag)
		switch {
		case err == nil && (got == d || j.sameManifest(ctx, got, plain)):
			kept = append(kept, tag)
		case err == nil || upstream.IsStatus(err, http.StatusNotFound):
			j.report.Moved = append(j.report.Moved, j.repo+":"+tag)
			logger(ctx).Warn("rewrap: a tag moved while the job ran: left to the client's push", "repository", j.repo, "tag", tag, "was", d, "now", got)
		default:
			return nil, fmt.Errorf("rewrap %s: tag %s: %w", j.repo, tag, err)
		}
	}
	return kept, nil
}

// sameManifest says whether the upstream manifest d is a copy shroud
// sealed for the repository of the manifest whose client digest is plain.
func (j *rewrapJob) sameManifest(ctx context.Context, d, plain digest.Digest) bool {
	um, err := j.be.cl.GetManifest(ctx, j.repo, d.String())
	if err != nil {
		return false
	}
	_, seal, _, ok := j.h.sealOf(ctx, j.be, j.repo, um)
	return ok && digest.FromBytes(seal.Manifest) == plain
}

// renamePointers is tags with each pointer tag (named under a previous
// identity) renamed as the identity names the pointer of what enc is: a
// manifest's pointer by the digest its client pushed, a blob pointer by
// the blob's plaintext digest, a revocation marker by the digest it
// stands for.
func (j *rewrapJob) renamePointers(tags []string, enc *manifest, seal crypto.Seal) ([]string, error) {
	var names []string // the pointer's names: the identity's, then the previous ones'
	switch artifactType(enc) {
	case blobPointerType:
		if len(seal.Layers) != 1 {
			return nil, fmt.Errorf("a blob pointer sealing %d layers", len(seal.Layers))
		}
		names = j.h.blobPointerNames(j.be, j.repo, seal.Layers[0].PlainDigest)
	case revokedType:
		var r Revocation
		if err := json.Unmarshal(seal.Manifest, &r); err != nil || r.Digest.Validate() != nil {
			return nil, errors.New("a revocation marker naming no digest")
		}
		names = j.h.pointerNames("revoked", j.be.name, j.repo, r.Digest.String())
	default:
		names = j.h.pointerNames(j.be.name, j.repo, digest.FromBytes(seal.Manifest).String())
	}
	out := make([]string, 0, len(tags))
	for _, tag := range tags {
		// Another pointer-form tag is a client's digest tag by its keyed
		// name (digest_tags.go), renamed from the seal's record of it;
		// one the seal does not name stays as it is.
		switch {
		case !isPointerTag(tag):
		case slices.Contains(names, tag):
			tag = names[0]
		default:
			for _, ct := range seal.Tags {
				if ns := j.h.digestTagNames(j.be, j.repo, ct); slices.Contains(ns, tag) {
					tag = ns[0]
					break
				}
			}
		}
		if !slices.Contains(out, tag) {
			out = append(out, tag)
		}
	}
	return out, nil
}

// now says what a manifest the one being rewritten names (a child, a
// subject) is after the job: rewritten by this run, or by an earlier one
// (the checkpoint; its size asked of the upstream), else itself.
func (j *rewrapJob) now(ctx context.Context, d digest.Digest) (jobResult, error) {
	if r, ok := j.done[d]; ok {
		return r, nil
	}
	if j.o.Checkpoint != nil {
		if nd, ok := j.o.Checkpoint.Replaced(j.repo, d); ok {
			got, mt, size, err := j.be.cl.HeadManifest(ctx, j.repo, nd.String())
			if err != nil || got != nd {
				return jobResult{}, fmt.Errorf("rewrap %s: %s, which an earlier run wrote for %s: %w", j.repo, nd, d, errors.Join(err, errors.New("not in the upstream")))
			}
			r := jobResult{digest: nd, mediaType: mt, size: size}
			j.done[d] = r
			return r, nil
		}
	}
	return jobResult{digest: d}, nil
}

// rewrapLayers wraps each sealed layer's key for the job's recipients
// alone (re-encrypting the layer first, in a re-encrypt job). The key is
// opened with shroud's identity only, and must be the one the seal pairs
// the layer with. A blob pointer's (identityOnly) is wrapped for the
// identity alone.
func (j *rewrapJob) rewrapLayers(ctx context.Context, enc *manifest, seal *crypto.Seal, identityOnly bool) error {
	sealed := map[digest.Digest]int{} // the seal's pairing of each ciphertext, by its digest before the job
	for k, sl := range seal.Layers {
		sealed[sl.CipherDigest] = k
	}
	for i := range enc.layers {
		e := &enc.layers[i]
		k, ok := sealed[e.Digest]
		if !ok {
			continue // a layer shroud did not encrypt: left as it is
		}
		sl := &seal.Layers[k]
		if j.o.Reencrypt != nil && sl.CipherDigest != e.Digest {
			// The same layer again in this manifest, re-encrypted
			// above: it takes the same new form.
			*e = enc.layers[slicesIndex(enc.layers[:i], sl.CipherDigest)]
			continue
		}
		opts, pub, err := j.h.checkSealedLayer(*e, *sl)
		if err != nil {
			return err
		}
		if j.o.Reencrypt != nil {
			if err := j.reencryptLayer(ctx, e, sl, opts, pub); err != nil {
				return err
			}
			continue
		}
		var ann map[string]string
		if identityOnly {
			ann, err = j.h.keys.WrapForIdentity(opts, pub)
		} else {
			ann, err = j.h.keys.Wrap(opts, pub, j.rs)
		}
		if err != nil {
			return fmt.Errorf("layer %s: %w", e.Digest, err)
		}
		e.Annotations = crypto.WithoutEncAnnotations(e.Annotations)
		if e.Annotations == nil {
			e.Annotations = map[string]string{}
		}
		maps.Copy(e.Annotations, ann)
	}
	return nil
}

// slicesIndex is the index of the first layer of ls with digest d.
func slicesIndex(ls []ocispec.Descriptor, d digest.Digest) int {
	return slices.IndexFunc(ls, func(l ocispec.Descriptor) bool { return l.Digest == d })
}

func (j *rewrapJob) pace() {
	if j.o.Pace <= 0 {
		return
	}
	if wait := j.o.Pace - j.o.Now().Sub(j.last); !j.last.IsZero() && wait > 0 {
		j.o.Sleep(wait)
	}
	j.last = j.o.Now()
}

func (j *rewrapJob) progress(old, new digest.Digest, tags int, note string) {
	job, outcome := "rewrap", "rewritten"
	if j.o.Reencrypt != nil {
		job = "reencrypt"
	}
	if new == "" {
		outcome = "left as it was"
	}
	if err := j.h.gate.audit.Log(audit.Event{Kind: audit.JobStep, Job: job, Repository: j.repo, Step: "manifest", Digest: old.String(),
		NewDigest: new.String(), Outcome: outcome, Detail: note}); err != nil {
		logger(context.Background()).Warn("audit log", "err", err)
	}
	if j.o.Progress != nil {
		j.o.Progress(JobProgress{Repository: j.repo, Done: len(j.done), Total: j.report.Manifests, Old: old, New: new, Tags: tags, Note: note})
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// artifactType is a manifest's artifactType field, "" if it has none.
func artifactType(m *manifest) string {
	var t string
	if raw, ok := m.raw["artifactType"]; ok {
		_ = json.Unmarshal(raw, &t)
	}
	return t
}

// upstreamTags lists every tag of a repository upstream, pointer tags
// among them, following the upstream's pages.
func (h *Handler) upstreamTags(ctx context.Context, be *backend, repo string) ([]string, error) {
	var all []string
	q := url.Values{"n": {"1000"}}
	for page := 0; ; page++ {
		if page > 100_000 {
			return nil, errors.New("the upstream's tag list does not end")
		}
		resp, err := be.cl.Do(ctx, http.MethodGet, "/v2/"+repo+"/tags/list", q, nil)
		if err != nil {
			return nil, err
		}
		var body struct {
			Tags []string `json:"tags"`
		}
		if resp.StatusCode == http.StatusNotFound {
			resp.Body.Close()
			return nil, nil // no such repository: nothing to do
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return nil, &upstream.StatusError{Method: http.MethodGet, Path: "/v2/" + repo + "/tags/list", StatusCode: resp.StatusCode}
		}
		err = json.NewDecoder(io.LimitReader(resp.Body, maxTagsPage)).Decode(&body)
		link := resp.Header.Get("Link")
		resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("the upstream's tag list does not parse: %w", err)
		}
		all = append(all, body.Tags...)
		if link == "" || len(body.Tags) == 0 {
			return all, nil
		}
		q = url.Values{"n": {"1000"}, "last": {body.Tags[len(body.Tags)-1]}}
	}
}

// errEncryptOnlyJob refuses a job over an encrypt-only rule's repository:
// shroud holds no key to unwrap its layer keys with.
func errEncryptOnlyJob(repo string, rule *crypto.Rule) error {
	return fmt.Errorf("rewrap %s: %s is encrypt-only: shroud holds no key to rewrap with; a recipient's owner adds keys (shroud access approve --key)", repo, rule)
}

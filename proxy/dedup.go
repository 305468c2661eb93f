package proxy

import (
	"context"
	"strconv"

	"github.com/opencontainers/go-digest"

	"github.com/shroud-oci/shroud/cache"
	"github.com/shroud-oci/shroud/crypto"
)

// Dedup without a fingerprinting oracle. A HEAD answered from another
// repository's layer, or a mount of its ciphertext, tells the client (and
// the registry, which sees one ciphertext in two repositories) that
// someone pushed that plaintext there. The rule of the repository a
// request is for bounds where such answers may come from (its
// dedup-scope): its own repository, the repositories of the same rule
// (the default), or those of every encrypt rule whose scope is global
// too. A rule that keeps its layers to itself is never read from another
// rule's repositories, so one rule's global scope cannot undo another's
// confinement. Outside the scope a client learns nothing and uploads its
// own copy under a key of its own. Under shroud's own authentication the
// client must also hold the pull grant of the source: the upstream, asked
// with shroud's credentials, checks nothing for it.
//
// An encrypt-only rule's repositories share no layer with any other
// repository, whatever their dedup-scope says: shroud cannot open the
// layer to see that the pusher knows more than its digest, and an owner's
// approval for one repository wraps the key of every layer it names. A
// layer of another repository reached by digest alone would be a layer
// of that repository approved along (TestAttackDedupMountLaunders...).

// dedupScope names the scope a repository's bound layers are origins in,
// for the cache: the keys under which the shared tier lists a digest's
// origins then link only repositories that may share layers (through
// dedupAllows), so Redis learns no equality of layers across scopes. A
// global rule's repositories share one scope, a rule's (the default)
// one of the rule's own, a repository-scoped rule's repository one of
// its own, and a repository no encrypt rule matches none ("").
func (h *Handler) dedupScope(repo string) string {
	r := h.policy.Match(repo)
	if r == nil || r.Action != crypto.Encrypt {
		return ""
	}
	if r.EncryptOnly {
		return "repository\x00" + repo
	}
	switch r.DedupScope {
	case crypto.DedupGlobal:
		return "global"
	case crypto.DedupRule, "":
		return "rule\x00" + strconv.Itoa(r.Index) + "\x00" + r.Pattern
	default:
		return "repository\x00" + repo
	}
}

// dedupAllows says whether a request for repo may reuse a layer of
// repository source.
func (h *Handler) dedupAllows(ctx context.Context, repo, source string) bool {
	if source == repo {
		return true
	}
	r, src := h.policy.Match(repo), h.policy.Match(source)
	if r == nil || src == nil || r.Action != crypto.Encrypt || src.Action != crypto.Encrypt {
		return false
	}
	if r.EncryptOnly || src.EncryptOnly {
		return false
	}
	switch r.DedupScope {
	case crypto.DedupGlobal:
		if src.Index != r.Index && src.DedupScope != crypto.DedupGlobal {
			return false
		}
	case crypto.DedupRule, "":
		if src.Index != r.Index {
			return false
		}
	default: // crypto.DedupRepository, or anything unknown
		return false
	}
	return h.mayPull(ctx, source)
}

// mountOrigin mounts into repo the ciphertext of a bound mapping of
// plainDigest in another repository of repo's dedup scope, and records
// the mapping for repo, for a client that may write repo.
func (h *Handler) mountOrigin(ctx context.Context, be *backend, repo string, plainDigest digest.Digest) (cache.Blob, bool) {
	if !h.mayPush(ctx, repo) {
		// A mount writes into repo, and its mapping serves every reader
		// of repo: a HEAD of a client that may only read repo mounts
		// nothing (under shroud's own auth the upstream, asked with
		// shroud's credentials, would not stop it).
		return cache.Blob{}, false
	}
	src, ok := be.origin(ctx, repo, plainDigest, func(src string) bool { return src != repo && h.dedupAllows(ctx, repo, src) })
	if !ok {
		return cache.Blob{}, false
	}
	o, err := h.forIdentity(src)
	if err != nil {
		logger(ctx).Warn("a mount origin shroud's identity does not open: not mounted", "repository", repo, "from", src.Repository, "plain_digest", plainDigest, "err", err)
		return cache.Blob{}, false
	}
	if !h.mountCipher(ctx, be, repo, o, o.Repository) {
		return cache.Blob{}, false
	}
	o.Repository = repo
	be.putBlob(ctx, o)
	if o.WrappedFor == nil {
		h.recordBlobPointer(ctx, be, o)
	}
	return o, true
}

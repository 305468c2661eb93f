package cache

import (
	"context"

	"github.com/opencontainers/go-digest"
)

// Blob maps a plaintext blob to its ciphertext upstream.
type Blob struct {
	PlainDigest  digest.Digest
	CipherDigest digest.Digest
	Size         int64
	// Annotations are the ocicrypt annotations of the layer: the wrapped
	// private options (for shroud's identity at least) and the pubopts.
	Annotations map[string]string
	// Repository is the repository the mapping is for: a mapping answers
	// for that repository only (a hostile upstream that poisons one
	// repository's mappings reaches no other).
	Repository string
	// Bound says that shroud vouches for the pairing of PlainDigest,
	// CipherDigest and the HMAC in Annotations: shroud encrypted the blob
	// itself, or a seal signed with its identity names the pairing. Only
	// bound mappings answer a HEAD, source a cross-repository mount or are
	// sealed into a manifest; an unbound one (a layer another tool
	// encrypted) serves pulls only, verified to its plaintext digest.
	Bound bool
	// Layer says a manifest names the blob as a layer: such a blob is
	// never stored in plaintext as a manifest's config.
	Layer bool
	// Scope names the dedup scope whose origins a bound mapping joins:
	// Origin finds it only when asked for that scope, so that the shared
	// tier's keys link no two repositories that may not share layers.
	Scope string
	// Pending (a blob pushed under an encrypt-only rule) is its layer
	// key, sealed with an expiry (crypto.PendingKeys), until a manifest
	// names the blob: the Annotations then hold the key wrapped for the
	// rule's recipients alone, which shroud cannot open.
	Pending []byte
	// WrappedFor (encrypt-only) are the ids of the keys the Annotations
	// wrap the layer key for.
	WrappedFor []string
}

// Manifest maps a manifest as the client sees it to the one upstream.
type Manifest struct {
	Repository  string
	PlainDigest digest.Digest
	ContentType string // the media type the client pushed
	Size        int64  // the size the client pushed

	UpstreamDigest    digest.Digest
	UpstreamMediaType string
	UpstreamSize      int64
}

// Store is what the proxy needs from a cache tier. A miss is (zero, false,
// nil); an error is a failing tier, which callers treat as a miss.
type Store interface {
	// Blob looks a blob up by repository and plaintext digest.
	Blob(ctx context.Context, repo string, plainDigest digest.Digest) (Blob, bool, error)
	// PutBlob records b for b.Repository; a bound b also becomes the
	// Origin of its plaintext digest in b.Scope.
	PutBlob(ctx context.Context, b Blob) error
	// Origin returns a bound mapping of a plaintext digest recorded in
	// scope, in a repository accept takes (nil: any): where a
	// cross-repository mount of its ciphertext can come from.
	Origin(ctx context.Context, scope string, plainDigest digest.Digest, accept func(repo string) bool) (Blob, bool, error)

	// Manifest looks a manifest up by the digest the client sees.
	Manifest(ctx context.Context, repo string, plainDigest digest.Digest) (Manifest, bool, error)
	// ManifestByUpstream looks a manifest up by its upstream digest.
	ManifestByUpstream(ctx context.Context, repo string, upstreamDigest digest.Digest) (Manifest, bool, error)
	PutManifest(ctx context.Context, m Manifest) error
	DeleteManifest(ctx context.Context, repo string, plainDigest digest.Digest) error

	// SetDeleted records (deleted) or clears (!deleted) that a client
	// deleted the blob or manifest plainDigest from repo through shroud:
	// a deleted one is not brought back by a mount, a pointer or
	// another repository's mapping, on any replica that shares the tier,
	// until a push of it clears the mark.
	SetDeleted(ctx context.Context, repo string, plainDigest digest.Digest, deleted bool) error
	// Deleted says whether SetDeleted marked plainDigest deleted in repo.
	Deleted(ctx context.Context, repo string, plainDigest digest.Digest) (bool, error)
	// Stale says that the upstream no longer holds what this process's
	// entries for repo and plainDigest (its blob and manifest mappings)
	// name: the in-process copies go, so that the next lookup reads the
	// tier behind (another replica may have replaced them) or misses. A
	// tier with no process-local copies does nothing.
	Stale(ctx context.Context, repo string, plainDigest digest.Digest)
}

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
	// Repository is one upstream repository known to hold CipherDigest,
	// the source of a cross-repository mount.
	Repository string
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
	Blob(ctx context.Context, plainDigest digest.Digest) (Blob, bool, error)
	PutBlob(ctx context.Context, b Blob) error

	// Manifest looks a manifest up by the digest the client sees.
	Manifest(ctx context.Context, repo string, plainDigest digest.Digest) (Manifest, bool, error)
	// ManifestByUpstream looks a manifest up by its upstream digest.
	ManifestByUpstream(ctx context.Context, repo string, upstreamDigest digest.Digest) (Manifest, bool, error)
	PutManifest(ctx context.Context, m Manifest) error
	DeleteManifest(ctx context.Context, repo string, plainDigest digest.Digest) error
}

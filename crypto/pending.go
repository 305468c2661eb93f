package crypto

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"
)

// PendingKeys seal the layer key of a blob pushed under an encrypt-only
// rule for the time between its upload and the manifest that names it.
// At upload shroud cannot tell a layer from a config; a config must reach
// the upstream in plaintext, so shroud must still open its own ciphertext
// when the manifest arrives. Under an encrypt-only rule nothing else of
// shroud's opens it (the layer key is wrapped for the rule's recipients
// alone), so the key is kept sealed here, bound to the repository and the
// blob's digests and to an expiry, and dropped once the manifest is
// stored. What a stolen data dir (with the cache) opens is therefore at
// most the blobs uploaded within the expiry whose manifest never came.
type PendingKeys struct{ box *Box }

// NewPendingKeys are the pending keys sealed with key (DeriveKey of
// PurposePendingKey).
func NewPendingKeys(key []byte) (*PendingKeys, error) {
	b, err := NewBox(key)
	if err != nil {
		return nil, fmt.Errorf("pending keys: %w", err)
	}
	return &PendingKeys{box: b}, nil
}

// AnnotationBinding is the layer annotation of an encrypt-only layer
// shroud encrypted: a keyed hash (PurposeBinding) of the upstream, the
// repository and the layer's plaintext and ciphertext digests, which no
// one without shroud's identity can make for another repository or
// layer.
const AnnotationBinding = "dev.shroud.encrypt-only.binding"

// ErrPendingExpired is returned for a pending key past its expiry.
var ErrPendingExpired = errors.New("the layer key was kept only until its expiry, which has passed")

func pendingAD(repo, owner string, plainDigest, cipherDigest digest.Digest) []byte {
	return []byte("shroud pending layer key\x00" + repo + "\x00" + owner + "\x00" + plainDigest.String() + "\x00" + cipherDigest.String())
}

// Seal seals opts for the blob cipherDigest of repo, uploaded by owner
// (who the client is: only a manifest of the same client opens it), until
// expires.
func (p *PendingKeys) Seal(opts PrivateOptions, repo, owner string, cipherDigest digest.Digest, expires time.Time) ([]byte, error) {
	data, err := opts.Marshal()
	if err != nil {
		return nil, fmt.Errorf("seal pending key: %w", err)
	}
	plain := binary.BigEndian.AppendUint64(nil, uint64(expires.Unix()))
	plain = append(plain, data...)
	return p.box.Seal(plain, pendingAD(repo, owner, opts.PlainDigest, cipherDigest))
}

// Open opens what Seal sealed for the same repository, owner and digests,
// at now before its expiry.
func (p *PendingKeys) Open(sealed []byte, repo, owner string, plainDigest, cipherDigest digest.Digest, now time.Time) (PrivateOptions, error) {
	plain, err := p.box.Open(sealed, pendingAD(repo, owner, plainDigest, cipherDigest))
	if err != nil {
		return PrivateOptions{}, fmt.Errorf("pending key of %s: %w", plainDigest, err)
	}
	if len(plain) < 8 {
		return PrivateOptions{}, fmt.Errorf("pending key of %s: %w", plainDigest, ErrBoxOpen)
	}
	if exp := time.Unix(int64(binary.BigEndian.Uint64(plain[:8])), 0); !now.Before(exp) {
		return PrivateOptions{}, fmt.Errorf("pending key of %s (expired %s): %w", plainDigest, exp.UTC().Format(time.RFC3339), ErrPendingExpired)
	}
	opts, err := ParsePrivateOptions(plain[8:])
	if err != nil {
		return PrivateOptions{}, fmt.Errorf("pending key of %s: %w", plainDigest, err)
	}
	if opts.PlainDigest != plainDigest {
		return PrivateOptions{}, fmt.Errorf("pending key of %s: %w", plainDigest, ErrBoxOpen)
	}
	return opts, nil
}

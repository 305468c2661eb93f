package crypto

import (
	"crypto/hkdf"
	"crypto/sha256"
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
// alone), so the key is kept sealed, bound to the repository, the client
// that uploaded it and the blob's digests, and dropped once the manifest
// is stored.
//
// The sealing key of each time window (an epoch) is derived from the
// identity's pending key and a random secret of that epoch, which the
// caller keeps only for two windows (proxy: in the ledger, with a TTL) and
// then throws away. Once it is gone, nothing opens what was sealed in it,
// the identity and a copy of the cache included: the expiry is enforced by
// erasure, not by a clock a thief controls.
type PendingKeys struct{ key []byte }

// NewPendingKeys are the pending keys sealed under key (DeriveKey of
// PurposePendingKey) and each epoch's secret.
func NewPendingKeys(key []byte) (*PendingKeys, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("pending keys: key is %d bytes, want 32", len(key))
	}
	return &PendingKeys{key: append([]byte(nil), key...)}, nil
}

// ErrPendingExpired is returned for a pending key past its expiry, or
// whose epoch's secret is gone.
var ErrPendingExpired = errors.New("the layer key was kept only until its expiry, which has passed")

func pendingAD(repo, owner string, plainDigest, cipherDigest digest.Digest) []byte {
	return []byte("shroud pending layer key\x00" + repo + "\x00" + owner + "\x00" + plainDigest.String() + "\x00" + cipherDigest.String())
}

// box is the sealing box of the epoch whose secret is secret.
func (p *PendingKeys) box(epoch int64, secret []byte) (*Box, error) {
	if len(secret) < 32 {
		return nil, errors.New("pending keys: an epoch secret has fewer than 32 bytes")
	}
	k, err := hkdf.Key(sha256.New, secret, p.key, fmt.Sprintf("shroud/v1/pending-epoch/%d", epoch), 32)
	if err != nil {
		return nil, fmt.Errorf("pending keys: %w", err)
	}
	return NewBox(k)
}

// Seal seals opts for the blob cipherDigest of repo, uploaded by owner
// (who the client is: only a manifest of the same client opens it), until
// expires, under the secret of epoch.
func (p *PendingKeys) Seal(opts PrivateOptions, repo, owner string, cipherDigest digest.Digest, expires time.Time, epoch int64, secret []byte) ([]byte, error) {
	data, err := opts.Marshal()
	if err != nil {
		return nil, fmt.Errorf("seal pending key: %w", err)
	}
	b, err := p.box(epoch, secret)
	if err != nil {
		return nil, err
	}
	plain := binary.BigEndian.AppendUint64(nil, uint64(expires.Unix()))
	plain = append(plain, data...)
	sealed, err := b.Seal(plain, pendingAD(repo, owner, opts.PlainDigest, cipherDigest))
	if err != nil {
		return nil, err
	}
	return append(binary.BigEndian.AppendUint64(nil, uint64(epoch)), sealed...), nil
}

// PendingEpoch is the epoch a pending key was sealed in: whose secret
// Open needs.
func PendingEpoch(sealed []byte) (int64, error) {
	if len(sealed) < 8 {
		return 0, ErrBoxOpen
	}
	return int64(binary.BigEndian.Uint64(sealed[:8])), nil
}

// Open opens what Seal sealed for the same repository, owner and digests,
// at now before its expiry, with its epoch's secret (nil: gone, so
// expired).
func (p *PendingKeys) Open(sealed []byte, repo, owner string, plainDigest, cipherDigest digest.Digest, now time.Time, secret []byte) (PrivateOptions, error) {
	epoch, err := PendingEpoch(sealed)
	if err != nil {
		return PrivateOptions{}, fmt.Errorf("pending key of %s: %w", plainDigest, err)
	}
	if secret == nil {
		return PrivateOptions{}, fmt.Errorf("pending key of %s (its epoch's secret is gone): %w", plainDigest, ErrPendingExpired)
	}
	b, err := p.box(epoch, secret)
	if err != nil {
		return PrivateOptions{}, err
	}
	plain, err := b.Open(sealed[8:], pendingAD(repo, owner, plainDigest, cipherDigest))
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

// AnnotationBinding is the layer annotation of an encrypt-only layer
// shroud encrypted: a keyed hash (PurposeBinding) of the upstream, the
// repository and the layer's plaintext and ciphertext digests, which no
// one without shroud's identity can make for another repository or
// layer.
const AnnotationBinding = "dev.shroud.encrypt-only.binding"

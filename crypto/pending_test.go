package crypto

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// A pending key opens for its repository, owner and digests, with its
// epoch's secret, before its expiry; after it, without the secret, for
// another repository, owner or blob, or damaged, it does not.
func TestPendingKeys(t *testing.T) {
	p, err := NewPendingKeys(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	key, err := NewLayerKey()
	if err != nil {
		t.Fatal(err)
	}
	plain, cipher := digest.FromString("plain"), digest.FromString("cipher")
	secret, other := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	opts := PrivateOptions{Key: key, PlainDigest: plain}
	now := time.Unix(1_800_000_000, 0)
	sealed, err := p.Seal(opts, "team/app", "alice", cipher, now.Add(time.Hour), 7, secret)
	if err != nil {
		t.Fatal(err)
	}
	got, err := p.Open(sealed, "team/app", "alice", plain, cipher, now, secret)
	if err != nil || !bytes.Equal(got.Key.Key, key.Key) || got.PlainDigest != plain {
		t.Fatalf("open: %v %v", got, err)
	}
	if _, err := p.Open(sealed, "team/app", "alice", plain, cipher, now.Add(time.Hour), secret); !errors.Is(err, ErrPendingExpired) {
		t.Fatalf("open at its expiry: %v, want ErrPendingExpired", err)
	}
	// Once its epoch's secret is thrown away, nothing opens it: not the
	// pending key (the identity's) with a clock set back.
	if _, err := p.Open(sealed, "team/app", "alice", plain, cipher, now, nil); !errors.Is(err, ErrPendingExpired) {
		t.Fatalf("open without its epoch's secret: %v, want ErrPendingExpired", err)
	}
	for name, try := range map[string]func() error{
		"another epoch's secret": func() error { _, err := p.Open(sealed, "team/app", "alice", plain, cipher, now, other); return err },
		"another repository":     func() error { _, err := p.Open(sealed, "team/other", "alice", plain, cipher, now, secret); return err },
		"another owner":          func() error { _, err := p.Open(sealed, "team/app", "mallory", plain, cipher, now, secret); return err },
		"another blob": func() error {
			_, err := p.Open(sealed, "team/app", "alice", plain, digest.FromString("x"), now, secret)
			return err
		},
		"another plaintext": func() error {
			_, err := p.Open(sealed, "team/app", "alice", digest.FromString("x"), cipher, now, secret)
			return err
		},
		"damaged": func() error {
			d := bytes.Clone(sealed)
			d[len(d)-1] ^= 1
			_, err := p.Open(d, "team/app", "alice", plain, cipher, now, secret)
			return err
		},
	} {
		if err := try(); !errors.Is(err, ErrBoxOpen) {
			t.Errorf("%s: %v, want ErrBoxOpen", name, err)
		}
	}
}

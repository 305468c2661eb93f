package crypto

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"
)

func TestDeriveKeyPerPurposeAndIdentity(t *testing.T) {
	dir := t.TempDir()
	id, _, err := LoadOrCreateIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	again, err := LoadIdentity(filepath.Join(dir, IdentityFile))
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := LoadOrCreateIdentity(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	a, _ := id.DeriveKey(PurposeUploadState)
	b, _ := again.DeriveKey(PurposeUploadState)
	c, _ := id.DeriveKey(PurposeManifestPointer)
	d, _ := other.DeriveKey(PurposeUploadState)
	if len(a) != 32 || !bytes.Equal(a, b) {
		t.Fatalf("a replica loading the same identity derives another key")
	}
	if bytes.Equal(a, c) || bytes.Equal(a, d) {
		t.Fatalf("two purposes or two identities share a key")
	}
	if _, err := id.DeriveKey(""); err == nil {
		t.Fatalf("a key with no purpose was derived")
	}
}

func TestKeyedHashLengthPrefixed(t *testing.T) {
	k, err := NewKeyedHash(bytes.Repeat([]byte{1}, 32))
	if err != nil {
		t.Fatal(err)
	}
	if k.Sum("ab", "c") == k.Sum("a", "bc") || k.Sum("a") != k.Sum("a") || len(k.Sum("a")) != 64 {
		t.Fatalf("keyed hash is ambiguous or unstable")
	}
	if _, err := NewKeyedHash([]byte("short")); err == nil {
		t.Fatalf("a short key was taken")
	}
}

func TestBoxRefusesForgedAndMisboundValues(t *testing.T) {
	b, err := NewBox(bytes.Repeat([]byte{2}, 32))
	if err != nil {
		t.Fatal(err)
	}
	s, err := b.Seal([]byte("state"), []byte("session-1"))
	if err != nil {
		t.Fatal(err)
	}
	if p, err := b.Open(s, []byte("session-1")); err != nil || string(p) != "state" {
		t.Fatalf("open: %q %v", p, err)
	}
	if _, err := b.Open(s, []byte("session-2")); !errors.Is(err, ErrBoxOpen) {
		t.Fatalf("a value sealed for another session opened: %v", err)
	}
	flipped := bytes.Clone(s)
	flipped[len(flipped)-1] ^= 1
	if _, err := b.Open(flipped, []byte("session-1")); !errors.Is(err, ErrBoxOpen) {
		t.Fatalf("a changed value opened: %v", err)
	}
	if _, err := b.Open(s[:5], nil); !errors.Is(err, ErrBoxOpen) {
		t.Fatalf("a truncated value opened: %v", err)
	}
	o, _ := NewBox(bytes.Repeat([]byte{3}, 32))
	if _, err := o.Open(s, []byte("session-1")); !errors.Is(err, ErrBoxOpen) {
		t.Fatalf("another key opened the value: %v", err)
	}
}

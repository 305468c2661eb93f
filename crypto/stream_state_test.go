package crypto

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"io"
	mrand "math/rand/v2"
	"testing"

	"github.com/opencontainers/go-digest"
)

// A stream saved and resumed at arbitrary points (each chunk on another
// replica) seals exactly what one uninterrupted stream seals, and its
// ciphertext decrypts with ocicrypt's checks.
func TestResumedEncrypterMatchesOneStream(t *testing.T) {
	plain := make([]byte, 300_001)
	rand.Read(plain)
	key, err := NewLayerKey()
	if err != nil {
		t.Fatal(err)
	}
	one, _ := NewEncrypter(key)
	whole := bytes.Clone(plain)
	one.XOR(whole)
	want := one.Seal()

	rng := mrand.New(mrand.NewPCG(1, 2))
	for round := 0; round < 20; round++ {
		var cipherText bytes.Buffer
		e, _ := NewEncrypter(key)
		rest := plain
		for len(rest) > 0 {
			n := min(len(rest), rng.IntN(40_000))
			chunk := bytes.Clone(rest[:n])
			e.XOR(chunk)
			cipherText.Write(chunk)
			rest = rest[n:]
			st, err := e.MarshalState()
			if err != nil {
				t.Fatal(err)
			}
			if e, err = ResumeEncrypter(key, st); err != nil {
				t.Fatal(err)
			}
		}
		got := e.Seal()
		if got.PlainDigest != want.PlainDigest || got.CipherDigest != want.CipherDigest || got.Size != want.Size || !hmac.Equal(got.HMAC, want.HMAC) {
			t.Fatalf("round %d: resumed stream sealed %+v, one stream %+v", round, got, want)
		}
		if !bytes.Equal(cipherText.Bytes(), whole) {
			t.Fatalf("round %d: resumed ciphertext differs", round)
		}
		m := hmac.New(sha256.New, key.Key)
		m.Write(whole)
		if !hmac.Equal(m.Sum(nil), got.HMAC) {
			t.Fatalf("round %d: HMAC is not HMAC-SHA256 of the ciphertext", round)
		}
		r, err := DecryptReader(bytes.NewReader(cipherText.Bytes()), key, got.HMAC, digest.FromBytes(plain))
		if err != nil {
			t.Fatal(err)
		}
		back, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(back, plain) {
			t.Fatalf("round %d: decrypt: %v", round, err)
		}
	}
}

func TestResumeEncrypterRefusesDamagedState(t *testing.T) {
	key, _ := NewLayerKey()
	e, _ := NewEncrypter(key)
	e.XOR(make([]byte, 100))
	st, _ := e.MarshalState()
	for name, s := range map[string][]byte{
		"empty":     nil,
		"version":   append([]byte{9}, st[1:]...),
		"truncated": st[:len(st)-3],
		"trailing":  append(bytes.Clone(st), 0),
	} {
		if _, err := ResumeEncrypter(key, s); err == nil {
			t.Errorf("%s state resumed", name)
		}
	}
}

// FuzzResumeEncrypter: no state, however damaged, panics a resume, and one
// that resumes continues a stream of the size it says.
func FuzzResumeEncrypter(f *testing.F) {
	key, _ := NewLayerKey()
	e, _ := NewEncrypter(key)
	e.XOR(make([]byte, 1000))
	st, _ := e.MarshalState()
	f.Add(st)
	f.Add([]byte{1})
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 5, 0, 200})
	f.Fuzz(func(t *testing.T, state []byte) {
		r, err := ResumeEncrypter(key, state)
		if err != nil {
			return
		}
		before := r.Size()
		r.XOR(make([]byte, 10))
		if r.Size() != before+10 {
			t.Fatalf("size %d after 10 bytes from %d", r.Size(), before)
		}
	})
}

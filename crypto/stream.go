package crypto

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	_ "crypto/sha512" // registers sha512 for go-digest: clients may push sha512 blobs
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/opencontainers/go-digest"
)

// KeySize and NonceSize are those of ocicrypt's AES_256_CTR_HMAC_SHA256.
const (
	KeySize   = 32
	NonceSize = aes.BlockSize
)

// ErrIntegrity is returned when a decrypted stream's HMAC or plaintext digest
// does not match what its encrypted descriptor promised.
var ErrIntegrity = errors.New("layer integrity check failed")

// LayerKey is the symmetric key and CTR nonce of one encrypted layer.
type LayerKey struct {
	Key   []byte
	Nonce []byte
}

// NewLayerKey returns a fresh random key and nonce.
func NewLayerKey() (LayerKey, error) {
	k := LayerKey{Key: make([]byte, KeySize), Nonce: make([]byte, NonceSize)}
	if _, err := io.ReadFull(rand.Reader, k.Key); err != nil {
		return LayerKey{}, fmt.Errorf("generate layer key: %w", err)
	}
	if _, err := io.ReadFull(rand.Reader, k.Nonce); err != nil {
		return LayerKey{}, fmt.Errorf("generate layer nonce: %w", err)
	}
	return k, nil
}

func (k LayerKey) validate() error {
	if len(k.Key) != KeySize {
		return fmt.Errorf("layer key is %d bytes, want %d", len(k.Key), KeySize)
	}
	if len(k.Nonce) != NonceSize {
		return fmt.Errorf("layer nonce is %d bytes, want %d", len(k.Nonce), NonceSize)
	}
	return nil
}

// ctrAt returns an AES-CTR stream positioned at byte offset of the layer.
func (k LayerKey) ctrAt(offset int64) (cipher.Stream, error) {
	if err := k.validate(); err != nil {
		return nil, err
	}
	if offset < 0 {
		return nil, fmt.Errorf("negative stream offset %d", offset)
	}
	block, err := aes.NewCipher(k.Key)
	if err != nil {
		return nil, fmt.Errorf("aes: %w", err)
	}
	iv := make([]byte, NonceSize)
	copy(iv, k.Nonce)
	addCounter(iv, uint64(offset/aes.BlockSize))
	s := cipher.NewCTR(block, iv)
	if skip := int(offset % aes.BlockSize); skip > 0 {
		var tmp [aes.BlockSize]byte
		s.XORKeyStream(tmp[:skip], tmp[:skip])
	}
	return s, nil
}

// addCounter adds n to the 128-bit big-endian counter in iv, as Go's CTR
// mode increments it.
func addCounter(iv []byte, n uint64) {
	lo := binary.BigEndian.Uint64(iv[8:])
	hi := binary.BigEndian.Uint64(iv[:8])
	sum := lo + n
	if sum < lo {
		hi++
	}
	binary.BigEndian.PutUint64(iv[8:], sum)
	binary.BigEndian.PutUint64(iv[:8], hi)
}

// Sealed is what an Encrypter knows once the whole plaintext went through it.
type Sealed struct {
	PlainDigest  digest.Digest
	CipherDigest digest.Digest
	Size         int64
	HMAC         []byte
}

// Encrypter encrypts a layer in place as it streams, hashing the plaintext
// (its digest), the ciphertext (its digest) and the ciphertext HMAC in the
// same pass. It may be fed across many calls (one per upload chunk).
type Encrypter struct {
	key    LayerKey
	stream cipher.Stream
	plain  hash.Hash
	cipher hash.Hash
	mac    hash.Hash
	// macInner is the HMAC's inner hash, whose state (with the two
	// digests' and the size) is all a later replica needs to resume the
	// stream (stream_state.go).
	macInner hash.Hash
	size     int64
}

// NewEncrypter starts a layer stream at offset 0.
func NewEncrypter(key LayerKey) (*Encrypter, error) {
	s, err := key.ctrAt(0)
	if err != nil {
		return nil, err
	}
	mac, inner, err := newResumableMAC(key.Key)
	if err != nil {
		return nil, err
	}
	return &Encrypter{
		key:      key,
		stream:   s,
		plain:    sha256.New(),
		cipher:   sha256.New(),
		mac:      mac,
		macInner: inner,
	}, nil
}

// Key returns the layer key.
func (e *Encrypter) Key() LayerKey { return e.key }

// Size is the number of bytes encrypted so far.
func (e *Encrypter) Size() int64 { return e.size }

// XOR encrypts p in place.
func (e *Encrypter) XOR(p []byte) {
	e.plain.Write(p)
	e.stream.XORKeyStream(p, p)
	e.cipher.Write(p)
	e.mac.Write(p)
	e.size += int64(len(p))
}

// Seal returns the digests, size and HMAC of everything encrypted so far.
func (e *Encrypter) Seal() Sealed {
	return Sealed{
		PlainDigest:  digest.NewDigestFromBytes(digest.SHA256, e.plain.Sum(nil)),
		CipherDigest: digest.NewDigestFromBytes(digest.SHA256, e.cipher.Sum(nil)),
		Size:         e.size,
		HMAC:         e.mac.Sum(nil),
	}
}

// Reader returns a reader of the ciphertext of r. Each byte read from r is
// encrypted exactly once, so the Encrypter's state always matches what the
// returned reader has handed out.
func (e *Encrypter) Reader(r io.Reader) io.Reader { return &encReader{e: e, r: r} }

type encReader struct {
	e *Encrypter
	r io.Reader
}

func (er *encReader) Read(p []byte) (int, error) {
	n, err := er.r.Read(p)
	if n > 0 {
		er.e.XOR(p[:n])
	}
	return n, err
}

// holdBack is how many decrypted bytes a verifying reader keeps until the
// stream is verified: the reader's consumer never sees a complete blob that
// failed its check.
const holdBack = 4096

// DecryptReader returns a reader of the plaintext of the ciphertext stream r.
// At the end of r it checks the HMAC and the plaintext digest; on a mismatch
// it returns an error wrapping ErrIntegrity, and the last bytes of the blob
// are never handed out, so a consumer that relays the stream cannot mistake
// it for complete.
func DecryptReader(r io.Reader, key LayerKey, wantHMAC []byte, wantPlain digest.Digest) (io.Reader, error) {
	s, err := key.ctrAt(0)
	if err != nil {
		return nil, err
	}
	if len(wantHMAC) == 0 {
		return nil, fmt.Errorf("%w: no HMAC to check the layer against", ErrIntegrity)
	}
	// No plaintext digest to check (the caller's binding vouches for the
	// HMAC and the plaintext it pairs with): none is computed.
	var plain hash.Hash = noHash{}
	if wantPlain != "" {
		if err := wantPlain.Validate(); err != nil {
			return nil, fmt.Errorf("plaintext digest: %w", err)
		}
		plain = wantPlain.Algorithm().Hash()
	}
	return &decReader{
		r: r, stream: s,
		mac: hmac.New(sha256.New, key.Key), wantHMAC: wantHMAC,
		plain: plain, wantPlain: wantPlain,
	}, nil
}

type decReader struct {
	r         io.Reader
	stream    cipher.Stream
	mac       hash.Hash
	wantHMAC  []byte
	plain     hash.Hash
	wantPlain digest.Digest

	tail     []byte // decrypted bytes held back until verification
	ready    []byte // released bytes not yet read (small reads only)
	buf      []byte // for reads smaller than the tail
	verified bool
	err      error
}

func (d *decReader) Read(p []byte) (int, error) {
	for {
		switch {
		case len(d.ready) > 0:
			n := copy(p, d.ready)
			d.ready = d.ready[n:]
			return n, nil
		case d.verified:
			n := copy(p, d.tail)
			d.tail = d.tail[n:]
			if len(d.tail) == 0 {
				return n, io.EOF
			}
			return n, nil
		case d.err != nil:
			return 0, d.err
		case len(p) <= holdBack:
			if d.buf == nil {
				d.buf = make([]byte, 4*holdBack)
			}
			n := d.step(d.buf)
			d.ready = d.buf[:n]
		default:
			if n := d.step(p); n > 0 {
				return n, nil
			}
		}
	}
}

// step reads more ciphertext into p (len(p) > holdBack) behind the held-back
// tail, decrypts it, and returns how many bytes at the start of p are
// released; at the end of the stream it verifies and sets verified or err.
func (d *decReader) step(p []byte) int {
	if d.tail == nil {
		d.tail = make([]byte, 0, holdBack)
	}
	t := copy(p, d.tail)
	n, err := d.r.Read(p[t:])
	if n > 0 {
		c := p[t : t+n]
		d.mac.Write(c)
		d.stream.XORKeyStream(c, c)
		d.plain.Write(c)
	}
	total := t + n
	keep := min(total, holdBack)
	d.tail = append(d.tail[:0], p[total-keep:total]...)
	switch {
	case errors.Is(err, io.EOF):
		if d.err = d.verify(); d.err != nil {
			return 0
		}
		d.verified = true
	case err != nil:
		d.err = err
		return 0
	}
	return total - keep
}

func (d *decReader) verify() error {
	if got := d.mac.Sum(nil); !hmac.Equal(got, d.wantHMAC) {
		return fmt.Errorf("%w: HMAC mismatch, the ciphertext was modified or the key is wrong", ErrIntegrity)
	}
	if d.wantPlain != "" {
		if got := digest.NewDigestFromBytes(d.wantPlain.Algorithm(), d.plain.Sum(nil)); got != d.wantPlain {
			return fmt.Errorf("%w: plaintext digest is %s, want %s", ErrIntegrity, got, d.wantPlain)
		}
	}
	return nil
}

// RangeReader decrypts ciphertext that starts at offset of the layer. It
// verifies nothing (a range cannot be checked against a whole-blob HMAC); the
// client's digest check over the reassembled blob covers it.
func RangeReader(r io.Reader, key LayerKey, offset int64) (io.Reader, error) {
	s, err := key.ctrAt(offset)
	if err != nil {
		return nil, err
	}
	return cipher.StreamReader{S: s, R: r}, nil
}

// noHash is a hash.Hash that computes nothing, for a decryption that
// checks the HMAC alone.
type noHash struct{}

func (noHash) Write(p []byte) (int, error) { return len(p), nil }
func (noHash) Sum(b []byte) []byte         { return b }
func (noHash) Reset()                      {}
func (noHash) Size() int                   { return 0 }
func (noHash) BlockSize() int              { return 1 }

package crypto

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
)

// stateVersion is the first byte of a marshalled Encrypter state.
const stateVersion = 1

// newResumableMAC returns HMAC-SHA256 under key (crypto/hmac, unchanged)
// and its inner hash, the one the message is written to: its state is
// what a resumed stream restores. HMAC keeps its outer hash untouched
// until Sum, so the inner state, the key and the standard HMAC are all
// the stream needs (FIPS 198-1 §6 allows storing these intermediate
// values; they are secret like the key and travel only sealed).
func newResumableMAC(key []byte) (mac, inner hash.Hash, err error) {
	var made []hash.Hash
	mac = hmac.New(func() hash.Hash {
		h := sha256.New()
		made = append(made, h)
		return h
	}, key)
	// The inner hash is the one HMAC wrote the padded key to; the outer
	// one is still empty (a 32-byte key is not hashed first).
	empty, err := marshalHash(sha256.New())
	if err != nil {
		return nil, nil, err
	}
	for _, h := range made {
		st, err := marshalHash(h)
		if err != nil {
			return nil, nil, err
		}
		if !bytes.Equal(st, empty) {
			if inner != nil {
				return nil, nil, errors.New("hmac: more than one hash holds the padded key")
			}
			inner = h
		}
	}
	if inner == nil {
		return nil, nil, errors.New("hmac: no hash holds the padded key")
	}
	return mac, inner, nil
}

func marshalHash(h hash.Hash) ([]byte, error) {
	m, ok := h.(encoding.BinaryMarshaler)
	if !ok {
		return nil, fmt.Errorf("%T cannot save its state", h)
	}
	return m.MarshalBinary()
}

func unmarshalHash(h hash.Hash, b []byte) error {
	u, ok := h.(encoding.BinaryUnmarshaler)
	if !ok {
		return fmt.Errorf("%T cannot restore a state", h)
	}
	return u.UnmarshalBinary(b)
}

// MarshalState returns what ResumeEncrypter needs, with the key, to
// continue the stream where it stands: the size and the states of the
// plaintext digest, the ciphertext digest and the HMAC. It is as secret as
// the key (the HMAC state is keyed): seal it before it leaves shroud.
func (e *Encrypter) MarshalState() ([]byte, error) {
	out := []byte{stateVersion}
	out = binary.BigEndian.AppendUint64(out, uint64(e.size))
	for _, h := range []hash.Hash{e.plain, e.cipher, e.macInner} {
		st, err := marshalHash(h)
		if err != nil {
			return nil, fmt.Errorf("save layer stream: %w", err)
		}
		out = binary.BigEndian.AppendUint16(out, uint16(len(st)))
		out = append(out, st...)
	}
	return out, nil
}

// ResumeEncrypter continues, under key, a stream whose state
// MarshalState returned: what it encrypts next, and the digests and HMAC
// it seals, are those of one uninterrupted stream.
func ResumeEncrypter(key LayerKey, state []byte) (*Encrypter, error) {
	bad := func(why string) (*Encrypter, error) {
		return nil, fmt.Errorf("resume layer stream: %s", why)
	}
	if len(state) < 9 || state[0] != stateVersion {
		return bad("unknown state format")
	}
	size := int64(binary.BigEndian.Uint64(state[1:9]))
	if size < 0 {
		return bad("negative size")
	}
	e, err := NewEncrypter(key)
	if err != nil {
		return nil, err
	}
	rest := state[9:]
	for _, h := range []hash.Hash{e.plain, e.cipher, e.macInner} {
		if len(rest) < 2 {
			return bad("truncated")
		}
		n := int(binary.BigEndian.Uint16(rest))
		if len(rest) < 2+n {
			return bad("truncated")
		}
		if err := unmarshalHash(h, rest[2:2+n]); err != nil {
			return nil, fmt.Errorf("resume layer stream: %w", err)
		}
		rest = rest[2+n:]
	}
	if len(rest) != 0 {
		return bad("trailing bytes")
	}
	if e.stream, err = key.ctrAt(size); err != nil {
		return nil, err
	}
	e.size = size
	return e, nil
}

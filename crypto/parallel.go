package crypto

import (
	"errors"
	"hash"
	"io"
	"sync"
)

// chunkSize is how much a WriteTo processes at a time; chunks are hashed
// on worker goroutines while the caller runs AES over them, so a stream
// uses a second core where there is one.
const chunkSize = 1 << 20

// chunkPool holds the buffers of a WriteTo: no allocation per buffer in
// steady state.
var chunkPool = sync.Pool{New: func() any { b := make([]byte, 4*chunkSize); return &b }}

// hashWorker writes each chunk it is handed into a hash, on a goroutine of
// its own, and says when it is done with it.
type hashWorker struct {
	in   chan []byte
	done chan struct{}
}

func startHashWorker(h hash.Hash) *hashWorker {
	w := &hashWorker{in: make(chan []byte, 2), done: make(chan struct{}, 2)}
	go func() {
		for b := range w.in {
			h.Write(b)
			w.done <- struct{}{}
		}
		close(w.done)
	}()
	return w
}

func (w *hashWorker) hash(b []byte) { w.in <- b }
func (w *hashWorker) wait()         { <-w.done }
func (w *hashWorker) stop()         { close(w.in); <-w.done }

// WriteTo encrypts the rest of the source into w, in chunks: while the
// caller runs AES and the HMAC, one worker hashes the plaintext and
// another the ciphertext, and with two sets of buffers the workers go on
// with one chunk while the caller reads and encrypts the next. io.Copy
// uses it, so the push path runs on two cores. If w fails, the Encrypter
// has taken in bytes w did not: the upload is then abandoned whole.
func (er *encReader) WriteTo(w io.Writer) (int64, error) {
	bp := chunkPool.Get().(*[]byte)
	defer chunkPool.Put(bp)
	buf := *bp
	e := er.e
	plain, ciph := startHashWorker(e.plain), startHashWorker(e.cipher)
	// pending counts the chunks each worker was given and has not
	// finished; a set of buffers is reused only once both are done with
	// the chunk that used it, two chunks ago.
	pending := 0
	finish := func(keep int) {
		for ; pending > keep; pending-- {
			plain.wait()
			ciph.wait()
		}
	}
	defer func() { finish(0); plain.stop(); ciph.stop() }()
	var total int64
	for i := 0; ; i++ {
		set := buf[(i%2)*2*chunkSize:]
		src, dst := set[:chunkSize], set[chunkSize:2*chunkSize]
		finish(1)
		n, rerr := io.ReadFull(er.r, src)
		if n > 0 {
			plain.hash(src[:n])
			e.stream.XORKeyStream(dst[:n], src[:n])
			ciph.hash(dst[:n])
			pending++
			e.mac.Write(dst[:n])
			e.size += int64(n)
			m, werr := w.Write(dst[:n])
			total += int64(m)
			if werr != nil {
				return total, werr
			}
		}
		switch {
		case rerr == nil:
		case errors.Is(rerr, io.EOF), errors.Is(rerr, io.ErrUnexpectedEOF):
			return total, nil
		default:
			return total, rerr
		}
	}
}

// WriteTo decrypts the rest of the stream into w, in chunks: a worker
// runs the HMAC over the ciphertext while the caller decrypts and hashes
// the plaintext. The last bytes are written only once the stream is
// verified, as Read holds them back.
func (d *decReader) WriteTo(w io.Writer) (int64, error) {
	if d.tail != nil || d.verified || d.err != nil {
		return io.Copy(w, struct{ io.Reader }{d}) // Read was used: go on with it
	}
	bp := chunkPool.Get().(*[]byte)
	defer chunkPool.Put(bp)
	src, dst := (*bp)[:chunkSize], (*bp)[chunkSize:2*chunkSize]
	mac := startHashWorker(d.mac)
	defer mac.stop()
	var total int64
	held := make([]byte, 0, holdBack)
	write := func(b []byte) error {
		m, err := w.Write(b)
		total += int64(m)
		return err
	}
	for {
		n, rerr := io.ReadFull(d.r, src)
		if n > 0 {
			mac.hash(src[:n])
			d.stream.XORKeyStream(dst[:n], src[:n])
			d.plain.Write(dst[:n])
			mac.wait()
			// Release what was held and all but the newest holdBack bytes.
			keep := min(n, holdBack)
			if len(held)+n-keep > 0 {
				if err := write(held); err != nil {
					return total, err
				}
				held = held[:0]
				if err := write(dst[:n-keep]); err != nil {
					return total, err
				}
			}
			held = append(held, dst[n-keep:n]...)
			if len(held) > holdBack { // only when n < holdBack: keep the newest
				if err := write(held[:len(held)-holdBack]); err != nil {
					return total, err
				}
				held = append(held[:0], held[len(held)-holdBack:]...)
			}
		}
		switch {
		case rerr == nil:
			continue
		case errors.Is(rerr, io.EOF), errors.Is(rerr, io.ErrUnexpectedEOF):
			if d.err = d.verify(); d.err != nil {
				return total, d.err
			}
			d.verified, d.tail = true, nil
			return total, write(held)
		default:
			d.err = rerr
			return total, rerr
		}
	}
}

package crypto

import (
	"errors"
	"hash"
	"io"
	"sync"
)

// chunkSize is how much an encrypting WriteTo processes at a time; chunks
// are hashed on worker goroutines while the caller runs AES over them, so
// a stream uses a second core where there is one.
const chunkSize = 1 << 20

// chunkPool holds the buffers of an encrypting WriteTo: no allocation per
// buffer in steady state.
var chunkPool = sync.Pool{New: func() any { b := make([]byte, 5*chunkSize); return &b }}

// decChunkSize is how much a decrypting WriteTo processes at a time. A
// pull holds one such buffer for as long as its client is slow to take it,
// so it is the smallest that costs no throughput: measured (x-limit, same
// run), 512 KiB and 1 MiB chunks stream alike, 256 KiB ones 10 % slower
// (the hash worker's hand-off per chunk).
const decChunkSize = 512 << 10

// decPool holds single chunk buffers of decrypting WriteTos, each taken
// for one chunk and given back as soon as it is done with, so that a pull
// stalled on its client holds one chunk, not every buffer it used.
var decPool = sync.Pool{New: func() any { b := make([]byte, decChunkSize); return &b }}

// chunk is what a read-ahead hands over: up to chunkSize bytes of the
// source, or the error that ended it.
type chunk struct {
	b   []byte
	err error
}

// readAhead reads the source on a goroutine of its own into the free
// buffers, so that reading the network overlaps the crypto. Each chunk's
// buffer goes back to free when its consumer is done with it. Closing
// stop ends the goroutine early.
func readAhead(r io.Reader, free chan []byte, stop <-chan struct{}) <-chan chunk {
	out := make(chan chunk, cap(free))
	go func() {
		defer close(out)
		for {
			var b []byte
			select {
			case b = <-free:
			case <-stop:
				return
			}
			n, err := io.ReadFull(r, b)
			if errors.Is(err, io.ErrUnexpectedEOF) {
				err = io.EOF
			}
			select {
			case out <- chunk{b[:n], err}:
			case <-stop:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return out
}

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

// WriteTo encrypts the rest of the source into w, in chunks: a
// read-ahead goroutine reads the next chunks while the caller runs AES and
// the HMAC over this one, one worker hashes its plaintext and another its
// ciphertext. io.Copy uses it, so the push path runs on two cores. If w
// fails, the Encrypter has taken in bytes w did not: the upload is then
// abandoned whole.
func (er *encReader) WriteTo(w io.Writer) (int64, error) {
	bp := chunkPool.Get().(*[]byte)
	defer chunkPool.Put(bp)
	buf := *bp
	// Three source buffers (one being read, one being hashed, one
	// waiting) and two destination buffers, alternating.
	free := make(chan []byte, 3)
	for i := 0; i < 3; i++ {
		free <- buf[i*chunkSize : (i+1)*chunkSize]
	}
	dsts := [2][]byte{buf[3*chunkSize : 4*chunkSize], buf[4*chunkSize : 5*chunkSize]}
	stop := make(chan struct{})
	chunks := readAhead(er.r, free, stop)
	e := er.e
	plain, ciph := startHashWorker(e.plain), startHashWorker(e.cipher)
	// inflight are the source buffers the workers have not finished, in
	// order (a ring of 2: a destination buffer is reused only once its
	// chunk, two ago, is done).
	var inflight [2][]byte
	head, count := 0, 0
	finish := func(keep int) {
		for ; count > keep; count-- {
			plain.wait()
			ciph.wait()
			free <- inflight[head][:chunkSize]
			head = (head + 1) % 2
		}
	}
	defer func() {
		close(stop)
		finish(0)
		plain.stop()
		ciph.stop()
		for range chunks { // let the read-ahead goroutine end
		}
	}()
	var total int64
	for i := 0; ; i++ {
		finish(1)
		c := <-chunks
		if n := len(c.b); n > 0 {
			dst := dsts[i%2][:n]
			plain.hash(c.b)
			e.stream.XORKeyStream(dst, c.b)
			ciph.hash(dst)
			inflight[(head+count)%2] = c.b
			count++
			e.mac.Write(dst)
			e.size += int64(n)
			m, werr := w.Write(dst)
			total += int64(m)
			if werr != nil {
				return total, werr
			}
		} else if c.err == nil {
			free <- c.b[:chunkSize]
		}
		switch {
		case c.err == nil:
		case errors.Is(c.err, io.EOF):
			return total, nil
		default:
			return total, c.err
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
	// No read-ahead here: measured end to end (BENCHMARKS.md), a third
	// goroutine on the pull path costs more, on two cores shared with the
	// client, than overlapping the upstream read buys.
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
		srcp := decPool.Get().(*[]byte)
		src := *srcp
		n, rerr := io.ReadFull(d.r, src)
		if errors.Is(rerr, io.ErrUnexpectedEOF) {
			rerr = io.EOF
		}
		if n > 0 {
			dstp := decPool.Get().(*[]byte)
			dst := *dstp
			mac.hash(src[:n])
			d.stream.XORKeyStream(dst[:n], src[:n])
			d.plain.Write(dst[:n])
			mac.wait()
			// The ciphertext is done with: it is not held while the
			// writes below wait on a slow client.
			decPool.Put(srcp)
			err := release(write, &held, dst[:n])
			decPool.Put(dstp)
			if err != nil {
				return total, err
			}
		} else {
			decPool.Put(srcp)
		}
		switch {
		case rerr == nil:
			continue
		case errors.Is(rerr, io.EOF):
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

// release writes all of held and plain but their newest holdBack bytes,
// which it keeps in held: whatever the chunks' sizes, the last holdBack
// bytes of the stream are written only once it is verified.
func release(write func([]byte) error, held *[]byte, plain []byte) error {
	h := *held
	out := len(h) + len(plain) - holdBack // bytes that may go out now
	switch {
	case out <= 0:
		*held = append(h, plain...)
		return nil
	case out < len(h):
		if err := write(h[:out]); err != nil {
			return err
		}
		*held = append(append(h[:0], h[out:]...), plain...)
		return nil
	}
	if len(h) > 0 {
		if err := write(h); err != nil {
			return err
		}
	}
	if err := write(plain[:out-len(h)]); err != nil {
		return err
	}
	*held = append(h[:0], plain[out-len(h):]...)
	return nil
}

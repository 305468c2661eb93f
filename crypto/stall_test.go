package crypto

import (
	"bytes"
	"errors"
	"io"
	"runtime"
	"sync"
	"testing"
)

// stuckWriter blocks every write until released, then fails it: a client
// that stops reading.
type stuckWriter struct {
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

var errReleased = errors.New("released")

func (s *stuckWriter) Write(p []byte) (int, error) {
	s.once.Do(func() { close(s.entered) })
	<-s.release
	return 0, errReleased
}

func heapInuse() uint64 {
	runtime.GC()
	runtime.GC() // sync.Pool keeps idle buffers for one more cycle
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// Stalled client: decrypting pulls whose writer blocks (a client that
// stopped reading) each hold one chunk while they wait, not the 5 MiB of
// buffers of the encrypting path; once the writes fail every buffer is
// given back.
func TestStalledWriterPinsOneChunk(t *testing.T) {
	const streams = 16
	key, _ := NewLayerKey()
	enc, _ := NewEncrypter(key)
	ct, err := io.ReadAll(enc.Reader(bytes.NewReader(make([]byte, 8<<20))))
	if err != nil {
		t.Fatal(err)
	}
	s := enc.Seal()

	before := heapInuse()
	release := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, streams)
	for i := 0; i < streams; i++ {
		dr, err := DecryptReader(bytes.NewReader(ct), key, s.HMAC, s.PlainDigest)
		if err != nil {
			t.Fatal(err)
		}
		w := &stuckWriter{entered: make(chan struct{}), release: release}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := io.Copy(w, dr)
			errs <- err
		}()
		<-w.entered
	}
	held := heapInuse()
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, errReleased) {
			t.Fatalf("a released stream ended with %v, want its writer's error", err)
		}
	}
	after := heapInuse()

	per := (float64(held) - float64(before)) / streams
	t.Logf("heap in use %d KiB before, %d KiB with %d stalled streams (%.0f KiB each), %d KiB after", before>>10, held>>10, streams, per/1024, after>>10)
	if limit := float64(decChunkSize + 64<<10); per > limit {
		t.Errorf("each stalled decrypting stream holds %.0f KiB, want at most %.0f KiB (one chunk and change)", per/1024, limit/1024)
	}
	if leftover := (float64(after) - float64(before)) / streams; leftover > 32<<10 {
		t.Errorf("after the streams ended each still holds %.0f KiB", leftover/1024)
	}
}

// Tampered last chunk: the upstream modifies the last byte of a blob
// whose last chunk is short. The decrypting WriteTo, at every edge of its
// chunks, gives the same bytes as Read for the genuine stream and, for the
// tampered one, writes none of the last holdBack bytes (before, a last
// chunk of one byte let all but that byte out).
func TestTamperedLastChunkKeepsWholeTailBack(t *testing.T) {
	for _, n := range []int{decChunkSize - 1, decChunkSize, decChunkSize + 1, decChunkSize + holdBack, 2*decChunkSize - holdBack + 1, chunkSize + 1, chunkSize + holdBack - 1, 5*decChunkSize + 77} {
		plain := randomBytes(t, n)
		key, _ := NewLayerKey()
		enc, _ := NewEncrypter(key)
		ct := bytes.Clone(plain)
		enc.XOR(ct)
		s := enc.Seal()
		dr, _ := DecryptReader(bytes.NewReader(ct), key, s.HMAC, s.PlainDigest)
		var out bytes.Buffer
		if _, err := io.Copy(&out, dr); err != nil || !bytes.Equal(out.Bytes(), plain) {
			t.Fatalf("n=%d: WriteTo decryption: %v", n, err)
		}
		ct[n-1] ^= 1
		dr, _ = DecryptReader(bytes.NewReader(ct), key, s.HMAC, s.PlainDigest)
		out.Reset()
		if _, err := io.Copy(&out, dr); !errors.Is(err, ErrIntegrity) || out.Len() > n-holdBack {
			t.Fatalf("n=%d: tampered WriteTo: err %v after %d of %d bytes", n, err, out.Len(), n)
		}
	}
}

package crypto

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"io"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// The stream benchmarks measure the raw primitives in the same run and
// report each stream's throughput as a ratio to the single-goroutine
// pipeline limit (plaintext SHA-256 + AES-256-CTR + ciphertext SHA-256 +
// HMAC-SHA256, one after the other over the same buffer): "x-limit".

const benchBuf = 1 << 20   // bytes per read, as a client's PATCH arrives
const benchBlob = 64 << 20 // bytes per stream

func benchKey(b *testing.B) LayerKey {
	k, err := NewLayerKey()
	if err != nil {
		b.Fatal(err)
	}
	return k
}

// pipelineLimit measures the sequential pipeline in bytes per second, as
// the best of three passes over 256 MiB (testing.Benchmark cannot run
// inside a benchmark: it would wait for the benchmark lock).
func pipelineLimit(b *testing.B) float64 {
	b.StopTimer()
	defer b.StartTimer()
	buf := bytes.Repeat([]byte{7}, benchBuf)
	k := benchKey(b)
	blk, _ := aes.NewCipher(k.Key)
	best := 0.0
	for round := 0; round < 3; round++ {
		s := cipher.NewCTR(blk, k.Nonce)
		p, c, m := sha256.New(), sha256.New(), hmac.New(sha256.New, k.Key)
		start := time.Now()
		for i := 0; i < 256; i++ {
			p.Write(buf)
			s.XORKeyStream(buf, buf)
			c.Write(buf)
			m.Write(buf)
		}
		best = max(best, 256*benchBuf/time.Since(start).Seconds())
	}
	return best
}

func reportRatio(b *testing.B, limit float64) {
	got := float64(b.N) * benchBlob / b.Elapsed().Seconds()
	b.ReportMetric(got/limit, "x-limit")
	b.ReportMetric(limit/1e9, "limit-GB/s")
}

func BenchmarkPrimitives(b *testing.B) {
	buf := bytes.Repeat([]byte{7}, benchBuf)
	k := benchKey(b)
	blk, _ := aes.NewCipher(k.Key)
	b.Run("aes-256-ctr", func(b *testing.B) {
		b.SetBytes(benchBuf)
		s := cipher.NewCTR(blk, k.Nonce)
		for i := 0; i < b.N; i++ {
			s.XORKeyStream(buf, buf)
		}
	})
	b.Run("sha256", func(b *testing.B) {
		b.SetBytes(benchBuf)
		h := sha256.New()
		for i := 0; i < b.N; i++ {
			h.Write(buf)
		}
	})
	b.Run("hmac-sha256", func(b *testing.B) {
		b.SetBytes(benchBuf)
		h := hmac.New(sha256.New, k.Key)
		for i := 0; i < b.N; i++ {
			h.Write(buf)
		}
	})
	b.Run("pipeline", func(b *testing.B) {
		b.SetBytes(benchBuf)
		s := cipher.NewCTR(blk, k.Nonce)
		p, c, m := sha256.New(), sha256.New(), hmac.New(sha256.New, k.Key)
		for i := 0; i < b.N; i++ {
			p.Write(buf)
			s.XORKeyStream(buf, buf)
			c.Write(buf)
			m.Write(buf)
		}
	})
}

// zeroReader hands out a buffer's worth of bytes per read, up to n.
type zeroReader struct{ n int64 }

func (z *zeroReader) Read(p []byte) (int, error) {
	if z.n <= 0 {
		return 0, io.EOF
	}
	n := min(int64(len(p)), z.n)
	z.n -= n
	return int(n), nil
}

// BenchmarkEncryptStream is the push path: Encrypter.Reader over a
// client body, copied out as the HTTP transport copies a request body
// (io.Copy, which uses its WriteTo); "read" is the same through Read.
func BenchmarkEncryptStream(b *testing.B) {
	for _, mode := range []string{"copy", "read"} {
		b.Run(mode, func(b *testing.B) {
			limit := pipelineLimit(b)
			k := benchKey(b)
			buf := make([]byte, benchBuf)
			b.SetBytes(benchBlob)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				e, _ := NewEncrypter(k)
				r := e.Reader(&zeroReader{n: benchBlob})
				if mode == "copy" {
					io.Copy(io.Discard, r)
				} else {
					for {
						if _, err := r.Read(buf); err != nil {
							break
						}
					}
				}
				e.Seal()
			}
			reportRatio(b, limit)
		})
	}
}

// BenchmarkDecryptStream is the pull path: DecryptReader over ciphertext,
// verifying HMAC and plaintext digest, copied out as the handler does.
func BenchmarkDecryptStream(b *testing.B) {
	b.Run("hmac+digest", func(b *testing.B) { benchDecrypt(b, true) })
	// A blob whose pairing a seal vouches for: the HMAC alone.
	b.Run("hmac-only", func(b *testing.B) { benchDecrypt(b, false) })
}

func benchDecrypt(b *testing.B, checkDigest bool) {
	limit := pipelineLimit(b)
	k := benchKey(b)
	e, _ := NewEncrypter(k)
	ct, _ := io.ReadAll(e.Reader(&zeroReader{n: benchBlob}))
	s := e.Seal()
	b.SetBytes(benchBlob)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		want := s.PlainDigest
		if !checkDigest {
			want = ""
		}
		r, err := DecryptReader(bytes.NewReader(ct), k, s.HMAC, want)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, r); err != nil {
			b.Fatal(err)
		}
	}
	reportRatio(b, limit)
}

var _ = digest.SHA256

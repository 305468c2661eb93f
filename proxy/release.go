package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"

	"github.com/shroud-oci/shroud/cache"
	"github.com/shroud-oci/shroud/crypto"
)

// Verify before release (a rule's verify-before-release): no plaintext
// byte of a blob leaves before the whole blob's HMAC (and, where no seal
// vouches for the pairing, its plaintext digest) verified. The ciphertext
// is fetched whole first — through the shared fetch, like any pull —
// held in memory up to heldInMemory bytes and otherwise in an unlinked
// file of the spool directory (ciphertext only: the spool holds nothing
// the registry does not), verified, and only then decrypted to the
// client, a Range included: a range is served from the verified whole.
// A blob that fails gets a clean error before any byte; the second pass
// checks the HMAC again, so a change to the spool in between aborts.

// heldInMemory bounds the ciphertext held in memory per stream.
const heldInMemory = 1 << 20

// heldBlob is a blob's whole ciphertext, held.
type heldBlob struct {
	r    io.ReaderAt
	f    *os.File // nil when held in memory
	size int64
}

// holdCiphertext reads size bytes of src into memory or the spool.
func holdCiphertext(src io.Reader, size int64, spoolDir string) (*heldBlob, error) {
	if size <= heldInMemory {
		buf := make([]byte, size)
		if _, err := io.ReadFull(src, buf); err != nil {
			return nil, fmt.Errorf("reading the ciphertext: %w", err)
		}
		return &heldBlob{r: bytes.NewReader(buf), size: size}, nil
	}
	f, err := os.CreateTemp(spoolDir, "verify-*")
	if err != nil {
		return nil, fmt.Errorf("spooling the ciphertext: %w", err)
	}
	os.Remove(f.Name()) // unlinked: gone with the last descriptor
	hb := &heldBlob{r: f, f: f, size: size}
	n, err := io.Copy(f, io.LimitReader(src, size))
	if err == nil && n != size {
		err = fmt.Errorf("the upstream sent %d of %d bytes", n, size)
	}
	if err != nil {
		hb.Close()
		return nil, fmt.Errorf("spooling the ciphertext: %w", err)
	}
	return hb, nil
}

func (hb *heldBlob) reader() io.Reader { return io.NewSectionReader(hb.r, 0, hb.size) }

// InMemory says whether the blob is held in memory.
func (hb *heldBlob) inMemory() bool { return hb.f == nil }

func (hb *heldBlob) Close() error {
	if hb.f != nil {
		return hb.f.Close()
	}
	return nil
}

// verify decrypts the held blob to nowhere, checking it.
func (hb *heldBlob) verify(key crypto.LayerKey, hmac []byte, b cache.Blob) error {
	plain, err := decryptBlob(hb.reader(), key, hmac, b)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, plain)
	return err
}

// serveVerified serves a blob under verify-before-release: rng is the
// client's range when partial, else the whole blob is answered (with
// status, 200 or a 206 covering the whole).
func (h *Handler) serveVerified(ctx context.Context, w http.ResponseWriter, fetchWhole func(context.Context) (io.ReadCloser, error),
	key crypto.LayerKey, hmac []byte, b cache.Blob, rng byteRange, partial bool, status int) error {
	src, err := fetchWhole(ctx)
	if err != nil {
		return err
	}
	hb, err := holdCiphertext(src, b.Size, h.fetches.dir)
	src.Close()
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		return &apiError{status: http.StatusBadGateway, code: codeUnavailable,
			message: fmt.Sprintf("blob %s could not be read whole from the upstream; nothing of it was released", b.PlainDigest), cause: err}
	}
	defer hb.Close()
	if err := hb.verify(key, hmac, b); err != nil {
		if errors.Is(err, crypto.ErrIntegrity) {
			h.metrics.integrityFailures.Add(ctx, 1)
			return &apiError{status: http.StatusBadGateway, code: codeUnknown,
				message: fmt.Sprintf("blob %s failed its integrity check upstream; nothing of it was released", b.PlainDigest), cause: err}
		}
		return err
	}
	if partial {
		n := rng.end - rng.start + 1
		plain, err := crypto.RangeReader(io.NewSectionReader(hb.r, rng.start, n), key, rng.start)
		if err != nil {
			return err
		}
		writeRangeHeaders(w, b, rng)
		h.stream(ctx, w, plain, b)
		return nil
	}
	plain, err := decryptBlob(hb.reader(), key, hmac, b)
	if err != nil {
		return err
	}
	writeBlobHeaders(w, b.PlainDigest, b.Size)
	if status == http.StatusPartialContent {
		w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-%d/%d", b.Size-1, b.Size))
	}
	w.WriteHeader(status)
	h.stream(ctx, w, plain, b)
	return nil
}

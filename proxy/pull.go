package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/gorilla/mux"
	"github.com/opencontainers/go-digest"
	"go.opentelemetry.io/otel/attribute"

	"github.com/shroud-oci/shroud/cache"
	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/proxy/upstream"
)

// getBlob serves GET and HEAD of a blob: a blob the repository has a
// mapping for is decrypted as it streams; any other passes through. The
// upstream authorizes every answer with the client's credentials before
// shroud tells anything from its mappings (existence, size, a range).
func (h *Handler) getBlob(w http.ResponseWriter, r *http.Request) error {
	v := mux.Vars(r)
	repo := v["name"]
	plainDigest, err := digest.Parse(v["digest"])
	if err != nil {
		return apiErr(http.StatusBadRequest, codeDigestInvalid, "invalid digest %q", v["digest"])
	}
	ctx, be := r.Context(), h.backend(r)
	if r.Method == http.MethodHead {
		return h.headBlob(w, r, be, repo, plainDigest)
	}
	err = h.getMappedBlob(w, r, be, repo, plainDigest)
	if errors.Is(err, errStaleMapping) {
		// Deleted, or uploaded again under a new key, through another
		// replica: this process's mapping goes, and the shared tier or
		// the blob's pointer is asked once more. Nothing was written.
		be.cache.Stale(ctx, repo, plainDigest)
		err = h.getMappedBlob(w, r, be, repo, plainDigest)
	}
	if errors.Is(err, errStaleMapping) {
		return apiErr(http.StatusNotFound, codeBlobUnknown, "blob %s is unknown to repository %s", plainDigest, repo)
	}
	return err
}

// errStaleMapping is a mapping whose ciphertext the upstream does not
// hold (any more): getMappedBlob wrote nothing.
var errStaleMapping = errors.New("the upstream does not hold the mapped ciphertext")

// getMappedBlob serves a GET of a blob as its mapping says, else passes
// it through.
func (h *Handler) getMappedBlob(w http.ResponseWriter, r *http.Request, be *backend, repo string, plainDigest digest.Digest) error {
	ctx := r.Context()
	b, ok := h.blobMapping(ctx, be, repo, plainDigest)
	if !ok {
		return h.passBlob(w, r, be, repo, plainDigest)
	}
	rule := h.policy.Match(repo)
	allow := h.unsealedKeys(repo)
	if b.Bound {
		allow = nil // shroud vouches for the pairing: any of its keys
	}
	rng, partial, rangeErr := parseRange(r.Header.Get("Range"), b.Size)
	askedRange := partial
	whole := false // a range covering the whole blob
	if rangeErr == nil && partial && (rule.VerifyRanges || (rng.start == 0 && rng.end == b.Size-1)) {
		// A range covering the whole blob is a GET and verified like one
		// (answered 206); a rule may want every range answered with the
		// whole blob, verified (200).
		whole, partial = !rule.VerifyRanges, false
	}
	if rangeErr != nil || partial {
		// Authorized first: a 416 tells the blob's size.
		if err := h.haveCipher(ctx, be, repo, b); err != nil {
			return err
		}
	}
	if rangeErr != nil {
		w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", b.Size))
		w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
		return nil
	}
	gate := h.unwrapGate(ctx, repo, allow) // keycheck.go
	_, endUnwrap := h.keySpan(ctx, "unwrap layer key", repo)
	opts, by, err := h.keys.UnwrapWith(b.Annotations, gate.allow)
	endUnwrap(err, attribute.String("shroud.key", by))
	if err != nil {
		return fmt.Errorf("blob %s: %w", plainDigest, gate.explain(err))
	}
	pub, err := crypto.ParsePublicOptions(b.Annotations)
	if err != nil {
		return err
	}
	upRange := ""
	if partial && !rule.VerifyBeforeRelease {
		upRange = fmt.Sprintf("bytes=%d-%d", rng.start, rng.end)
	}
	get := func(ctx context.Context) (*http.Response, error) {
		resp, err := be.cl.GetBlob(ctx, repo, b.CipherDigest, upRange)
		if upstream.IsStatus(err, http.StatusNotFound) {
			return nil, fmt.Errorf("blob %s of repository %s: %w", plainDigest, repo, errStaleMapping)
		}
		return resp, err
	}
	fetchWhole := func(ctx context.Context) (io.ReadCloser, error) {
		return h.fetches.open(ctx, fetchKey(be, repo, b.CipherDigest.String()), b.Size, func(ctx context.Context) (io.ReadCloser, error) {
			h.metrics.upstreamFetches.Add(ctx, 1)
			resp, err := get(ctx)
			if err != nil {
				return nil, err
			}
			if resp.ContentLength >= 0 && resp.ContentLength != b.Size {
				resp.Body.Close()
				return nil, fmt.Errorf("upstream blob %s has %d bytes, the mapping says %d", b.CipherDigest, resp.ContentLength, b.Size)
			}
			return resp.Body, nil
		}, func(ctx context.Context, n int64) (io.ReadCloser, error) {
			// What a pull under way had read when another joined it.
			h.metrics.upstreamFetches.Add(ctx, 1)
			resp, err := be.cl.GetBlob(ctx, repo, b.CipherDigest, fmt.Sprintf("bytes=0-%d", n-1))
			if upstream.IsStatus(err, http.StatusNotFound) {
				return nil, fmt.Errorf("blob %s of repository %s: %w", plainDigest, repo, errStaleMapping)
			}
			if err != nil {
				return nil, err
			}
			return prefixBody(resp, n, b.Size)
		})
	}
	if rule.VerifyBeforeRelease {
		// Nothing leaves before the whole blob verified (release.go).
		h.metrics.blobPulls.Add(ctx, 1)
		status := http.StatusOK
		if whole {
			status = http.StatusPartialContent
		}
		return h.serveVerified(ctx, w, fetchWhole, opts.Key, pub.HMAC, b, rng, askedRange && !whole, status)
	}
	if partial {
		resp, err := get(ctx)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		return h.serveRange(ctx, w, resp, opts.Key, b, rng)
	}
	h.metrics.blobPulls.Add(ctx, 1)
	cipherText, err := fetchWhole(ctx)
	if err != nil {
		return err
	}
	defer cipherText.Close()
	plain, err := decryptBlob(io.LimitReader(cipherText, b.Size), opts.Key, pub.HMAC, b)
	if err != nil {
		return err
	}
	writeBlobHeaders(w, plainDigest, b.Size)
	if whole {
		w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-%d/%d", b.Size-1, b.Size))
		w.WriteHeader(http.StatusPartialContent)
	} else {
		w.WriteHeader(http.StatusOK)
	}
	h.stream(ctx, w, plain, b)
	return nil
}

// decryptBlob opens a whole blob's plaintext, verified at its end: by the
// HMAC alone where shroud vouches for the pairing of HMAC and plaintext
// digest (a ciphertext that passes the HMAC under the layer key is the
// plaintext the pairing names), by the HMAC and the plaintext digest
// otherwise.
func decryptBlob(r io.Reader, key crypto.LayerKey, hmac []byte, b cache.Blob) (io.Reader, error) {
	if b.Bound {
		return crypto.DecryptReader(r, key, hmac, "")
	}
	return crypto.DecryptReader(r, key, hmac, b.PlainDigest)
}

// headBlob answers a HEAD: from a mapping of the repository shroud vouches
// for, once the upstream shows the client may see its ciphertext; else by
// mounting the ciphertext of a vouched-for mapping of another repository
// (the upstream checks the client may read that one and write this one);
// else as the upstream answers for the digest itself.
func (h *Handler) headBlob(w http.ResponseWriter, r *http.Request, be *backend, repo string, plainDigest digest.Digest) error {
	ctx := r.Context()
	for try := 0; try < 2; try++ {
		b, ok := h.blobMapping(ctx, be, repo, plainDigest)
		if !ok || !b.Bound {
			break
		}
		err := h.haveCipher(ctx, be, repo, b)
		if err == nil {
			writeBlobHeaders(w, plainDigest, b.Size)
			w.WriteHeader(http.StatusOK)
			return nil
		}
		if !upstream.IsStatus(err, http.StatusNotFound) {
			return err
		}
		// Deleted, or uploaded again under a new key, through another
		// replica: this process's mapping goes, and the shared tier or
		// the blob's pointer is asked once more.
		be.cache.Stale(ctx, repo, plainDigest)
	}
	if !be.deleted(ctx, repo, plainDigest) {
		if b, ok := h.mountOrigin(ctx, be, repo, plainDigest); ok {
			writeBlobHeaders(w, plainDigest, b.Size)
			w.WriteHeader(http.StatusOK)
			return nil
		}
	}
	return h.passBlob(w, r, be, repo, plainDigest)
}

// haveCipher checks that repo holds b's ciphertext upstream, asking with
// the client's credentials: the upstream's refusal (401, 403) or its 404
// comes back as the error.
func (h *Handler) haveCipher(ctx context.Context, be *backend, repo string, b cache.Blob) error {
	_, ok, err := be.cl.HeadBlob(ctx, repo, b.CipherDigest)
	if err != nil {
		return err
	}
	if !ok {
		return &upstream.StatusError{Method: http.MethodHead, Path: "/v2/" + repo + "/blobs/" + b.CipherDigest.String(), StatusCode: http.StatusNotFound}
	}
	return nil
}

// stream copies a decrypting reader to the client. Once headers are out
// an error can only be told by aborting the connection, so that the client
// never takes a blob that failed its integrity check for complete.
func (h *Handler) stream(ctx context.Context, w io.Writer, plain io.Reader, b cache.Blob) {
	_, end := h.blobSpan(ctx, "decrypt blob")
	n, err := io.Copy(w, plain)
	end(n, err)
	h.metrics.blobBytes.Add(ctx, n, decryptDirection)
	if err != nil {
		if errors.Is(err, crypto.ErrIntegrity) {
			h.metrics.integrityFailures.Add(ctx, 1)
		}
		if ctx.Err() == nil || errors.Is(err, crypto.ErrIntegrity) {
			logger(ctx).Error("blob stream aborted", "plain_digest", b.PlainDigest, "cipher_digest", b.CipherDigest, "err", err)
		}
		panic(http.ErrAbortHandler)
	}
}

// byteRange is an inclusive range of a blob's bytes.
type byteRange struct{ start, end int64 }

// errUnsatisfiable is a Range no byte of the blob satisfies.
var errUnsatisfiable = errors.New("range not satisfiable")

// parseRange reads a single-range "bytes=a-b", "bytes=a-" or "bytes=-n"
// header against a blob of size bytes, as Go's http.ServeContent (and so
// distribution) does: a malformed or unsatisfiable range is an error (416).
// No header, another unit or several ranges is no range: the whole blob.
func parseRange(h string, size int64) (r byteRange, partial bool, err error) {
	spec, ok := strings.CutPrefix(strings.TrimSpace(h), "bytes=")
	if !ok || strings.Contains(spec, ",") {
		return byteRange{}, false, nil
	}
	a, b, ok := strings.Cut(strings.TrimSpace(spec), "-")
	if !ok {
		return byteRange{}, false, errUnsatisfiable
	}
	if a == "" { // suffix: the last n bytes
		n, err := strconv.ParseInt(b, 10, 64)
		if err != nil || n <= 0 || size == 0 {
			return byteRange{}, false, errUnsatisfiable
		}
		return byteRange{start: max(size-n, 0), end: size - 1}, true, nil
	}
	start, err := strconv.ParseInt(a, 10, 64)
	if err != nil || start < 0 || start >= size {
		return byteRange{}, false, errUnsatisfiable
	}
	end := size - 1
	if b != "" {
		if end, err = strconv.ParseInt(b, 10, 64); err != nil || end < start {
			return byteRange{}, false, errUnsatisfiable
		}
		end = min(end, size-1)
	}
	return byteRange{start: start, end: end}, true, nil
}

// serveRange decrypts a range of a blob. The upstream may answer 206 for
// the same range (ciphertext offsets are plaintext offsets) or 200 with the
// whole blob, which is then skipped to the range.
func (h *Handler) serveRange(ctx context.Context, w http.ResponseWriter, resp *http.Response, key crypto.LayerKey, b cache.Blob, rng byteRange) error {
	body := io.Reader(resp.Body)
	if resp.StatusCode == http.StatusPartialContent {
		if start, ok := rangeStart(resp.Header.Get("Content-Range")); !ok || start != rng.start {
			return fmt.Errorf("upstream answered range %d- with Content-Range %q", rng.start, resp.Header.Get("Content-Range"))
		}
	} else if _, err := io.CopyN(io.Discard, body, rng.start); err != nil {
		return fmt.Errorf("skip to range start: %w", err)
	}
	n := rng.end - rng.start + 1
	plain, err := crypto.RangeReader(io.LimitReader(body, n), key, rng.start)
	if err != nil {
		return err
	}
	writeRangeHeaders(w, b, rng)
	copied, err := io.Copy(w, plain)
	h.metrics.blobBytes.Add(ctx, copied, decryptDirection)
	if err != nil || copied != n {
		logger(ctx).Error("range stream aborted", "plain_digest", b.PlainDigest, "copied", copied, "want", n, "err", err)
		panic(http.ErrAbortHandler)
	}
	return nil
}

// writeRangeHeaders writes a 206's headers for rng of blob b.
func writeRangeHeaders(w http.ResponseWriter, b cache.Blob, rng byteRange) {
	w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", rng.start, rng.end, b.Size))
	w.Header().Set("Content-Length", strconv.FormatInt(rng.end-rng.start+1, 10))
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Docker-Content-Digest", b.PlainDigest.String())
	w.Header().Set("Accept-Ranges", "bytes")
	w.WriteHeader(http.StatusPartialContent)
}

// rangeStart reads the first byte offset of "bytes a-b/n".
func rangeStart(cr string) (int64, bool) {
	s, ok := strings.CutPrefix(cr, "bytes ")
	if !ok {
		return 0, false
	}
	a, _, ok := strings.Cut(s, "-")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(a, 10, 64)
	return n, err == nil && n >= 0
}

func writeBlobHeaders(w http.ResponseWriter, plainDigest digest.Digest, size int64) {
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Docker-Content-Digest", plainDigest.String())
	w.Header().Set("Accept-Ranges", "bytes")
}

// passBlob relays a blob shroud has no mapping for (a plaintext config, a
// passthrough blob, or ciphertext asked for by its own digest).
func (h *Handler) passBlob(w http.ResponseWriter, r *http.Request, be *backend, repo string, d digest.Digest) error {
	ctx := r.Context()
	if r.Method == http.MethodHead {
		size, ok, err := be.cl.HeadBlob(ctx, repo, d)
		if err != nil {
			return err
		}
		if !ok {
			return apiErr(http.StatusNotFound, codeBlobUnknown, "blob %s is unknown to repository %s", d, repo)
		}
		writeBlobHeaders(w, d, size)
		w.WriteHeader(http.StatusOK)
		return nil
	}
	resp, err := be.cl.GetBlob(ctx, repo, d, r.Header.Get("Range"))
	if upstream.IsStatus(err, http.StatusNotFound) {
		return apiErr(http.StatusNotFound, codeBlobUnknown, "blob %s is unknown to repository %s", d, repo)
	}
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	for _, k := range []string{"Content-Length", "Content-Range", "Accept-Ranges"} {
		if v := resp.Header.Get(k); v != "" {
			w.Header().Set(k, v)
		}
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Docker-Content-Digest", d.String())
	w.WriteHeader(resp.StatusCode)
	if _, err := io.Copy(w, resp.Body); err != nil {
		panic(http.ErrAbortHandler)
	}
	return nil
}

// deleteBlob deletes a blob from a repository upstream: its ciphertext
// and, where the upstream also holds the plaintext (a config), that too.
// The repository then no longer gets the blob mounted by a HEAD; an upload
// or an explicit mount brings it back.
func (h *Handler) deleteBlob(w http.ResponseWriter, r *http.Request) error {
	v := mux.Vars(r)
	repo := v["name"]
	d, err := digest.Parse(v["digest"])
	if err != nil {
		return apiErr(http.StatusBadRequest, codeDigestInvalid, "invalid digest %q", v["digest"])
	}
	ctx, be := r.Context(), h.backend(r)
	targets := []digest.Digest{d}
	if b, ok := h.blobMapping(ctx, be, repo, d); ok {
		targets = []digest.Digest{b.CipherDigest, d}
	}
	var deleted bool
	for _, target := range targets {
		// Only what exists is deleted: some registries answer a delete
		// of a missing blob with a 500.
		if _, ok, err := be.cl.HeadBlob(ctx, repo, target); err != nil {
			return err
		} else if !ok {
			continue
		}
		if err := be.cl.DeleteBlob(ctx, repo, target); err != nil && !upstream.IsStatus(err, http.StatusNotFound) {
			return err
		}
		deleted = true
	}
	if !deleted {
		return apiErr(http.StatusNotFound, codeBlobUnknown, "blob %s is unknown to repository %s", d, repo)
	}
	be.setDeleted(ctx, repo, d, true)
	h.deleteBlobPointer(ctx, be, repo, d)
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
	return nil
}

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

	"github.com/shroud-oci/shroud/cache"
	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/proxy/upstream"
)

// getBlob serves GET and HEAD of a blob: a blob shroud knows the
// ciphertext of is decrypted as it streams; any other passes through.
func (h *Handler) getBlob(w http.ResponseWriter, r *http.Request) error {
	v := mux.Vars(r)
	repo := v["name"]
	plainDigest, err := digest.Parse(v["digest"])
	if err != nil {
		return apiErr(http.StatusBadRequest, codeDigestInvalid, "invalid digest %q", v["digest"])
	}
	ctx, cl := r.Context(), h.client(r)
	b, ok := h.blob(ctx, plainDigest)
	if !ok {
		return h.passBlob(w, r, cl, repo, plainDigest)
	}
	if r.Method == http.MethodHead {
		if !h.ensureCipher(ctx, cl, repo, b) {
			return apiErr(http.StatusNotFound, codeBlobUnknown, "blob %s is unknown to repository %s", plainDigest, repo)
		}
		writeBlobHeaders(w, plainDigest, b.Size)
		w.WriteHeader(http.StatusOK)
		return nil
	}
	opts, err := h.keys.Unwrap(b.Annotations)
	if err != nil {
		return fmt.Errorf("blob %s: %w", plainDigest, err)
	}
	pub, err := crypto.ParsePublicOptions(b.Annotations)
	if err != nil {
		return err
	}
	resp, err := cl.GetBlob(ctx, repo, b.CipherDigest, r.Header.Get("Range"))
	if upstream.IsStatus(err, http.StatusNotFound) && h.ensureCipher(ctx, cl, repo, b) {
		resp, err = cl.GetBlob(ctx, repo, b.CipherDigest, r.Header.Get("Range"))
	}
	if upstream.IsStatus(err, http.StatusNotFound) {
		return apiErr(http.StatusNotFound, codeBlobUnknown, "blob %s is unknown to repository %s", plainDigest, repo)
	}
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusPartialContent {
		return h.serveRange(w, r, resp, opts.Key, plainDigest)
	}
	if resp.ContentLength >= 0 && resp.ContentLength != b.Size {
		return fmt.Errorf("upstream blob %s has %d bytes, the mapping says %d", b.CipherDigest, resp.ContentLength, b.Size)
	}
	plain, err := crypto.DecryptReader(resp.Body, opts.Key, pub.HMAC, plainDigest)
	if err != nil {
		return err
	}
	writeBlobHeaders(w, plainDigest, b.Size)
	w.WriteHeader(http.StatusOK)
	h.stream(ctx, w, plain, b)
	return nil
}

// stream copies a decrypting reader to the client. Once headers are out
// an error can only be told by aborting the connection, so that the client
// never takes a blob that failed its integrity check for complete.
func (h *Handler) stream(ctx context.Context, w io.Writer, plain io.Reader, b cache.Blob) {
	if _, err := io.Copy(w, plain); err != nil {
		if ctx.Err() == nil || errors.Is(err, crypto.ErrIntegrity) {
			logger(ctx).Error("blob stream aborted", "plain_digest", b.PlainDigest, "cipher_digest", b.CipherDigest, "err", err)
		}
		panic(http.ErrAbortHandler)
	}
}

// serveRange decrypts the 206 answer to a Range request.
func (h *Handler) serveRange(w http.ResponseWriter, r *http.Request, resp *http.Response, key crypto.LayerKey, plainDigest digest.Digest) error {
	cr := resp.Header.Get("Content-Range")
	start, ok := rangeStart(cr)
	if !ok {
		return fmt.Errorf("upstream answered 206 with Content-Range %q", cr)
	}
	plain, err := crypto.RangeReader(resp.Body, key, start)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Range", cr)
	w.Header().Set("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Docker-Content-Digest", plainDigest.String())
	w.Header().Set("Accept-Ranges", "bytes")
	w.WriteHeader(http.StatusPartialContent)
	if _, err := io.Copy(w, plain); err != nil {
		panic(http.ErrAbortHandler)
	}
	return nil
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

// ensureCipher says whether repo holds b's ciphertext upstream, mounting
// it from the repository it was seen in if need be.
func (h *Handler) ensureCipher(ctx context.Context, cl *upstream.Client, repo string, b cache.Blob) bool {
	_, ok, err := cl.HeadBlob(ctx, repo, b.CipherDigest)
	if err == nil && ok {
		return true
	}
	if b.Repository == "" || b.Repository == repo {
		return false
	}
	return h.mountCipher(ctx, cl, repo, b, b.Repository)
}

// passBlob relays a blob shroud has no mapping for (a plaintext config, a
// passthrough blob, or ciphertext asked for by its own digest).
func (h *Handler) passBlob(w http.ResponseWriter, r *http.Request, cl *upstream.Client, repo string, d digest.Digest) error {
	ctx := r.Context()
	if r.Method == http.MethodHead {
		size, ok, err := cl.HeadBlob(ctx, repo, d)
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
	resp, err := cl.GetBlob(ctx, repo, d, r.Header.Get("Range"))
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

// deleteBlob deletes a blob's ciphertext (or the blob itself when shroud
// has no mapping for it) and forgets the mapping.
func (h *Handler) deleteBlob(w http.ResponseWriter, r *http.Request) error {
	v := mux.Vars(r)
	repo := v["name"]
	d, err := digest.Parse(v["digest"])
	if err != nil {
		return apiErr(http.StatusBadRequest, codeDigestInvalid, "invalid digest %q", v["digest"])
	}
	ctx, cl := r.Context(), h.client(r)
	target := d
	b, ok := h.blob(ctx, d)
	if ok {
		target = b.CipherDigest
	}
	if err := cl.DeleteBlob(ctx, repo, target); err != nil {
		if upstream.IsStatus(err, http.StatusNotFound) {
			return apiErr(http.StatusNotFound, codeBlobUnknown, "blob %s is unknown to repository %s", d, repo)
		}
		return err
	}
	if ok && b.Repository == repo {
		if err := h.cache.DeleteBlob(ctx, d); err != nil {
			logger(ctx).Warn("cache delete failed", "err", err)
		}
	}
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
	return nil
}

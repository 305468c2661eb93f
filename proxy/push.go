package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/opencontainers/go-digest"
	"go.opentelemetry.io/otel/attribute"

	"github.com/shroud-oci/shroud/cache"
	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/proxy/upstream"
)

// cleanupTimeout bounds the upstream calls that tidy up after a failed
// upload, which run even when the client has gone.
const cleanupTimeout = 30 * time.Second

// startUpload serves POST /v2/<name>/blobs/uploads/: a new session, a
// monolithic upload (?digest=), or a cross-repository mount (?mount=&from=).
func (h *Handler) startUpload(w http.ResponseWriter, r *http.Request) error {
	repo := mux.Vars(r)["name"]
	q := r.URL.Query()
	be := h.backend(r)
	if m := q.Get("mount"); m != "" {
		if ok, err := h.mount(w, r, be, repo, m, q.Get("from")); ok || err != nil {
			return err
		}
	}
	u, err := h.openUpload(r.Context(), be, repo)
	if err != nil {
		return err
	}
	if d := q.Get("digest"); d != "" {
		return h.complete(w, r, be, u, d)
	}
	if err := h.uploads.open(r.Context(), u); err != nil {
		h.cancelUpstream(r.Context(), be, u.location)
		return err
	}
	writeUploadState(w, u, http.StatusAccepted)
	return nil
}

// openUpload opens an upstream session and the local one in front of it.
func (h *Handler) openUpload(ctx context.Context, be *backend, repo string) (*upload, error) {
	loc, err := be.cl.StartUpload(ctx, repo)
	if err != nil {
		return nil, err
	}
	return h.newUpload(ctx, be, repo, loc)
}

func (h *Handler) newUpload(ctx context.Context, be *backend, repo, loc string) (*upload, error) {
	key, err := crypto.NewLayerKey()
	if err == nil {
		var enc *crypto.Encrypter
		if enc, err = crypto.NewEncrypter(key); err == nil {
			return &upload{id: newID(16), repo: repo, ns: be.name, owner: be.principal, accepted: be.auth, location: loc, enc: enc}, nil
		}
	}
	h.cancelUpstream(ctx, be, loc)
	return nil, err
}

// mount serves ?mount=P&from=R as a mount of P's ciphertext, from R's
// mapping of P when shroud vouches for it, else from any repository's of
// the dedup scope; an R outside the scope is not mounted from (dedup.go).
// It reports false (and writes nothing) when no mount happened and the
// caller should open a new session, as the spec lets a registry answer.
func (h *Handler) mount(w http.ResponseWriter, r *http.Request, be *backend, repo, mountParam, from string) (bool, error) {
	plainDigest, err := parseDigest(mountParam)
	if err != nil {
		return false, err
	}
	ctx := r.Context()
	if from != repo && !h.dedupAllows(ctx, repo, from) {
		// Outside the dedup scope: a fresh upload, as if nothing were
		// there (the spec lets a registry answer a mount so).
		return false, nil
	}
	mounted := false
	if b, ok := h.blobMapping(ctx, be, from, plainDigest); ok && b.Bound && from != repo {
		// The mapping repo gets, made before anything is mounted: a
		// source whose key shroud cannot carry over is no mount, a
		// fresh upload (an encrypt-only repository mounts nothing from
		// another, and into none: dedupAllows).
		o, err := h.forIdentity(b)
		if err == nil && h.mountCipher(ctx, be, repo, o, from) {
			o.Repository = repo
			be.putBlob(ctx, o)
			if o.WrappedFor == nil {
				h.recordBlobPointer(ctx, be, o)
			}
			mounted = true
		}
	}
	if !mounted {
		if _, ok := h.mountOrigin(ctx, be, repo, plainDigest); !ok {
			return false, nil
		}
	}
	be.setDeleted(ctx, repo, plainDigest, false)
	writeBlobCreated(w, repo, plainDigest)
	return true, nil
}

// mountCipher asks the upstream to mount b's ciphertext from src into repo.
func (h *Handler) mountCipher(ctx context.Context, be *backend, repo string, b cache.Blob, src string) bool {
	mounted, loc, err := be.cl.Mount(ctx, repo, b.CipherDigest, src)
	if err != nil {
		logger(ctx).Debug("upstream mount failed", "from", src, "cipher_digest", b.CipherDigest, "err", err)
		return false
	}
	if !mounted {
		h.cancelUpstream(ctx, be, loc)
	}
	return mounted
}

// patchUpload serves PATCH: a streamed chunk (no Content-Range) or a
// chunk at the offset its Content-Range names.
func (h *Handler) patchUpload(w http.ResponseWriter, r *http.Request) error {
	u, err := h.lockChunk(r)
	if err != nil {
		return err
	}
	defer h.unlockUpload(r.Context(), u)
	be := h.backendNamed(u.ns, r)
	if err := h.appendBody(r.Context(), be, u, r); err != nil {
		return err
	}
	if err := h.uploads.advance(r.Context(), u); err != nil {
		h.abandon(r.Context(), be, u)
		return err
	}
	writeUploadState(w, u, http.StatusAccepted)
	return nil
}

// finishUpload serves PUT ?digest=, with or without a last chunk.
func (h *Handler) finishUpload(w http.ResponseWriter, r *http.Request) error {
	u, err := h.lockChunk(r)
	if err != nil {
		return err
	}
	defer h.unlockUpload(r.Context(), u)
	return h.complete(w, r, h.backendNamed(u.ns, r), u, r.URL.Query().Get("digest"))
}

// complete appends the request body, checks the client's digest and
// commits the ciphertext upstream.
func (h *Handler) complete(w http.ResponseWriter, r *http.Request, be *backend, u *upload, digestParam string) error {
	ctx := r.Context()
	want, err := parseDigest(digestParam)
	if err != nil {
		h.abandon(ctx, be, u)
		return err
	}
	if err := h.appendBody(ctx, be, u, r); err != nil {
		return err
	}
	b, err := h.commit(ctx, be, u, want)
	if err != nil {
		return err
	}
	writeBlobCreated(w, u.repo, b.PlainDigest)
	return nil
}

// appendBody encrypts the request body, if any, into the upload.
func (h *Handler) appendBody(ctx context.Context, be *backend, u *upload, r *http.Request) error {
	if r.ContentLength == 0 || r.Body == nil || r.Body == http.NoBody {
		return nil
	}
	return h.appendStream(ctx, be, u, r.Body, r.ContentLength)
}

// appendStream encrypts body (length bytes, -1 for unknown) into the
// upload's upstream session. On failure the upload is abandoned.
func (h *Handler) appendStream(ctx context.Context, be *backend, u *upload, body io.Reader, length int64) error {
	before := u.offset()
	g := &gate{r: u.enc.Reader(body)}
	sctx, end := h.blobSpan(ctx, "encrypt blob")
	loc, err := be.cl.PatchUpload(sctx, u.location, g, before, length)
	end(u.offset()-before, err)
	g.close()
	if err == nil && length > 0 && u.offset()-before != length {
		err = apiErr(http.StatusBadRequest, codeSizeInvalid, "the chunk had %d bytes, not the %d its Content-Length said", u.offset()-before, length)
	}
	if err != nil && stalledBody(body) {
		// Told as such, not as the upstream failure or the cancelled
		// request it surfaces as: the client may still be listening.
		err = &apiError{status: http.StatusRequestTimeout, code: codeBlobUploadInvalid, message: "the upload body made no progress for too long; start a new upload", cause: errStalled}
	}
	if err != nil {
		h.abandon(ctx, be, u)
		return err
	}
	u.location = loc
	return nil
}

// commit checks that the plaintext has the digest the client named,
// commits the ciphertext upstream and records the mapping, with the layer
// key wrapped for shroud's identity. On failure the upload is abandoned.
//
// The stream hashes plaintext with sha256 only, what nearly every client
// sends; a blob pushed under another algorithm is verified after the
// commit by decrypting it back from the upstream, and its ciphertext
// deleted again if it does not match.
func (h *Handler) commit(ctx context.Context, be *backend, u *upload, want digest.Digest) (cache.Blob, error) {
	s := u.enc.Seal()
	mismatch := func(got digest.Digest) error {
		return apiErr(http.StatusBadRequest, codeDigestInvalid, "the uploaded content has digest %s, not %s; nothing was stored", got, want)
	}
	if want.Algorithm() == digest.SHA256 && s.PlainDigest != want {
		h.abandon(ctx, be, u)
		return cache.Blob{}, mismatch(s.PlainDigest)
	}
	opts, pub := crypto.PrivateOptions{Key: u.enc.Key(), PlainDigest: want}, crypto.PublicOptions{HMAC: s.HMAC}
	b := cache.Blob{PlainDigest: want, CipherDigest: s.CipherDigest, Size: s.Size, Repository: u.repo, Bound: true}
	rule := h.policy.Match(u.repo)
	var err error
	_, endWrap := h.keySpan(ctx, "wrap layer key", u.repo)
	if rule != nil && rule.EncryptOnly {
		err = h.wrapEncryptOnly(ctx, be, &b, rule, opts, pub)
		endWrap(err, attribute.Bool("shroud.encrypt_only", true), attribute.Int("shroud.recipients", len(b.WrappedFor)))
	} else {
		b.Annotations, err = h.keys.WrapForIdentity(opts, pub)
		endWrap(err, attribute.String("shroud.key", "identity"))
	}
	if err != nil {
		h.abandon(ctx, be, u)
		return cache.Blob{}, err
	}
	if err := be.cl.CommitUpload(ctx, u.location, s.CipherDigest); err != nil {
		h.abandon(ctx, be, u)
		return cache.Blob{}, err
	}
	h.uploads.end(ctx, u, "done")
	if want.Algorithm() != digest.SHA256 {
		if err := h.verifyBlob(ctx, be, u.repo, b); err != nil {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
			defer cancel()
			if derr := be.cl.DeleteBlob(cctx, u.repo, s.CipherDigest); derr != nil {
				logger(ctx).Warn("delete unverified ciphertext", "cipher_digest", s.CipherDigest, "err", derr)
			}
			if errors.Is(err, crypto.ErrIntegrity) {
				return cache.Blob{}, mismatch("other content")
			}
			return cache.Blob{}, err
		}
	}
	be.setDeleted(ctx, u.repo, want, false)
	be.putBlob(ctx, b)
	if b.Pending == nil {
		// Not for an encrypt-only blob: its pointer would wrap its key
		// for the identity.
		h.recordBlobPointer(ctx, be, b)
	}
	h.metrics.blobBytes.Add(ctx, s.Size, encryptDirection)
	logger(ctx).Debug("blob stored", "repository", u.repo, "plain_digest", want, "cipher_digest", s.CipherDigest, "size", s.Size)
	return b, nil
}

// verifyBlob reads a blob back from the upstream through its
// verification.
func (h *Handler) verifyBlob(ctx context.Context, be *backend, repo string, b cache.Blob) error {
	r, err := h.openBlob(ctx, be, repo, b)
	if err != nil {
		return err
	}
	defer r.Close()
	_, err = io.Copy(io.Discard, r)
	return err
}

// abandon records a session failed and cancels it upstream.
func (h *Handler) abandon(ctx context.Context, be *backend, u *upload) {
	h.uploads.end(ctx, u, "failed")
	h.cancelUpstream(ctx, be, u.location)
}

func (h *Handler) cancelUpstream(ctx context.Context, be *backend, loc string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	if err := be.cl.CancelUpload(ctx, loc); err != nil {
		logger(ctx).Warn("cancel upstream upload", "err", err)
	}
}

// uploadStatus serves GET on an upload: its offset. It does not wait
// for, nor stop, a PATCH streaming into the session.
func (h *Handler) uploadStatus(w http.ResponseWriter, r *http.Request) error {
	u, be, err := h.openState(r)
	if err != nil {
		return err
	}
	if err := h.uploads.current(r.Context(), u, h.upstreamOffset(be, u)); err != nil {
		return err
	}
	if err := h.reauthorize(r.Context(), be, u); err != nil {
		return err
	}
	if err := h.uploads.seal(u); err != nil {
		return err
	}
	writeUploadState(w, u, http.StatusNoContent)
	return nil
}

// cancelUpload serves DELETE on an upload. The upstream session is
// cancelled first, with the client's credentials, so the upstream decides
// whether this client may: holding the session's URL is not enough.
func (h *Handler) cancelUpload(w http.ResponseWriter, r *http.Request) error {
	u, be, err := h.openState(r)
	if err != nil {
		return err
	}
	if err := h.uploads.current(r.Context(), u, h.upstreamOffset(be, u)); err != nil && statusOf(err) != http.StatusRequestedRangeNotSatisfiable {
		return err
	}
	// An upstream that cannot cancel (some cannot) expires the session on
	// its own; a refusal leaves the session as it was.
	if err := be.cl.CancelUpload(r.Context(), u.location); upstream.IsStatus(err, http.StatusUnauthorized) || upstream.IsStatus(err, http.StatusForbidden) {
		return err
	} else if err != nil {
		logger(r.Context()).Warn("cancel upstream upload", "err", err)
	}
	if err := h.uploads.cancel(r.Context(), u); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// openState opens the upload state the request carries (its _state)
// for the client the request speaks for, and the backend it is on.
func (h *Handler) openState(r *http.Request) (*upload, *backend, error) {
	v := mux.Vars(r)
	u, err := h.uploads.unseal(v["uuid"], v["name"], r.URL.Query().Get("_state"), h.backendNamed("", r).principal)
	if err != nil {
		return nil, nil, err
	}
	return u, h.backendNamed(u.ns, r), nil
}

// upstreamOffset asks the upstream how many bytes u's session holds:
// what a session no ledger knows is checked against.
func (h *Handler) upstreamOffset(be *backend, u *upload) func(ctx context.Context) (int64, error) {
	return func(ctx context.Context) (int64, error) {
		off, err := be.cl.UploadStatus(ctx, u.location)
		if err == nil {
			u.accepted = be.auth
		}
		return off, err
	}
}

// reauthorize checks upstream, with a status request that changes
// nothing, credentials of the session's principal that the upstream has
// not accepted for it yet (a refreshed token, or a forged one naming the
// same subject): a refusal is the client's error.
func (h *Handler) reauthorize(ctx context.Context, be *backend, u *upload) error {
	if u.accepted == be.auth {
		return nil
	}
	if _, err := be.cl.UploadStatus(ctx, u.location); err != nil {
		return err
	}
	u.accepted = be.auth
	return nil
}

// lockUpload opens the request's session state and takes the session
// for this request (sessions.claim): the session is the principal's that
// opened it, and its credentials are checked upstream when they are new
// to it (reauthorize).
func (h *Handler) lockUpload(r *http.Request) (*upload, error) {
	u, be, err := h.openState(r)
	if err != nil {
		return nil, err
	}
	if err := h.reauthorize(r.Context(), be, u); err != nil {
		return nil, err
	}
	body := r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody
	if err := h.uploads.claim(r.Context(), u, body, h.upstreamOffset(be, u)); err != nil {
		return nil, err
	}
	return u, nil
}

// unlockUpload ends a request's hold on its session if nothing else did
// (advance, end): the state it came with stays current.
func (h *Handler) unlockUpload(ctx context.Context, u *upload) {
	if u.claimed != "" {
		if err := h.uploads.keep(ctx, u); err != nil {
			logger(ctx).Warn("release upload", "err", err)
		}
	}
}

// lockChunk locks the request's session and checks that the chunk the
// request carries continues it.
func (h *Handler) lockChunk(r *http.Request) (*upload, error) {
	u, err := h.lockUpload(r)
	if err != nil {
		return nil, err
	}
	if err := checkContentRange(r, u); err != nil {
		h.unlockUpload(r.Context(), u)
		return nil, err
	}
	return u, nil
}

// checkContentRange answers 416 when a chunk does not start where the
// session ends.
func checkContentRange(r *http.Request, u *upload) error {
	cr := r.Header.Get("Content-Range")
	if cr == "" {
		return nil
	}
	start, end, ok := parseContentRange(cr)
	if ok && start == u.offset() && (r.ContentLength < 0 || end-start+1 == r.ContentLength) {
		return nil
	}
	e := apiErr(http.StatusRequestedRangeNotSatisfiable, codeBlobUploadInvalid,
		"chunk %q does not continue the upload, which holds %d bytes", cr, u.offset())
	e.header = http.Header{}
	e.header.Set("Location", uploadLocation(u))
	e.header.Set("Range", rangeHeader(u.offset()))
	e.header.Set("Docker-Upload-Uuid", u.id)
	return e
}

// parseContentRange reads "<start>-<end>" (also "bytes <start>-<end>/<n>").
func parseContentRange(s string) (start, end int64, ok bool) {
	s = strings.TrimPrefix(strings.TrimSpace(s), "bytes ")
	s, _, _ = strings.Cut(s, "/")
	a, b, found := strings.Cut(s, "-")
	if !found {
		return 0, 0, false
	}
	start, err1 := strconv.ParseInt(a, 10, 64)
	end, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || start < 0 || end < start {
		return 0, 0, false
	}
	return start, end, true
}

func parseDigest(s string) (digest.Digest, error) {
	d, err := digest.Parse(s)
	if err != nil {
		return "", apiErr(http.StatusBadRequest, codeDigestInvalid, "invalid digest %q", s)
	}
	if d.Algorithm() != digest.SHA256 && d.Algorithm() != digest.SHA512 {
		return "", apiErr(http.StatusBadRequest, codeDigestInvalid, "digest algorithm %s is not supported (sha256 and sha512 are)", d.Algorithm())
	}
	return d, nil
}

// uploadLocation is where the client continues an upload: the session id
// and, sealed, the whole state of the session.
func uploadLocation(u *upload) string {
	return "/v2/" + u.repo + "/blobs/uploads/" + u.id + "?_state=" + u.token
}

// rangeHeader is the Range of an upload holding n bytes ("0-0" when empty,
// as distribution answers).
func rangeHeader(n int64) string {
	return fmt.Sprintf("0-%d", max(n-1, 0))
}

func writeUploadState(w http.ResponseWriter, u *upload, status int) {
	w.Header().Set("Location", uploadLocation(u))
	w.Header().Set("Range", rangeHeader(u.offset()))
	w.Header().Set("Docker-Upload-Uuid", u.id)
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(status)
}

func writeBlobCreated(w http.ResponseWriter, repo string, plainDigest digest.Digest) {
	w.Header().Set("Location", "/v2/"+repo+"/blobs/"+plainDigest.String())
	w.Header().Set("Docker-Content-Digest", plainDigest.String())
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
}

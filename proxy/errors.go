package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/proxy/upstream"
)

// Error codes of the distribution spec, each with the status it is sent with.
const (
	codeBlobUnknown         = "BLOB_UNKNOWN"
	codeBlobUploadInvalid   = "BLOB_UPLOAD_INVALID"
	codeBlobUploadUnknown   = "BLOB_UPLOAD_UNKNOWN"
	codeDigestInvalid       = "DIGEST_INVALID"
	codeManifestBlobUnknown = "MANIFEST_BLOB_UNKNOWN"
	codeManifestInvalid     = "MANIFEST_INVALID"
	codeManifestUnknown     = "MANIFEST_UNKNOWN"
	codeNameInvalid         = "NAME_INVALID"
	codeSizeInvalid         = "SIZE_INVALID"
	codeDenied              = "DENIED"
	codeTooManyRequests     = "TOOMANYREQUESTS"
	codeUnsupported         = "UNSUPPORTED"
	codeUnavailable         = "UNAVAILABLE"
	codeUnknown             = "UNKNOWN"
	codeUnauthorized        = "UNAUTHORIZED"
)

// apiError is an error answered to the client as OCI error JSON.
type apiError struct {
	status  int
	code    string
	message string
	header  http.Header // extra response headers (Range, Location on 416)
	cause   error
}

func (e *apiError) Error() string {
	if e.cause != nil {
		return fmt.Sprintf("%s: %s: %v", e.code, e.message, e.cause)
	}
	return e.code + ": " + e.message
}

func (e *apiError) Unwrap() error { return e.cause }

func apiErr(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

// handlerFunc is a handler that returns its error for errorHandler to write.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// errorHandler adapts a handlerFunc: it writes the error, once, as the
// client should see it, and logs it once.
func (h *Handler) errorHandler(f handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := f(w, r); err != nil {
			h.writeError(w, r, err)
		}
	})
}

func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	log := logger(r.Context())
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		log.Debug("client went away", "err", err)
		return
	}
	var se *upstream.StatusError
	if errors.As(err, &se) && se.StatusCode == http.StatusUnauthorized && h.ownAuth() {
		// The upstream refuses shroud's own credentials: its challenge
		// is not for the client, who would answer it with what it sent
		// shroud.
		writeAPIError(w, r, &apiError{status: http.StatusBadGateway, code: codeUnavailable, message: "the upstream registry refused shroud's credentials", cause: err})
		return
	}
	if errors.As(err, &se) {
		// The upstream's answer goes back unchanged: 401 challenges,
		// 403s and its own error codes.
		log.Info("upstream refused", "status", se.StatusCode, "err", err)
		for _, k := range []string{"Content-Type", "Www-Authenticate", "Docker-Distribution-Api-Version", "Retry-After"} {
			if v := se.Header.Values(k); len(v) > 0 && (k != "Www-Authenticate" || !h.ownAuth()) {
				w.Header()[k] = v
			}
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(se.Body)))
		w.WriteHeader(se.StatusCode)
		if r.Method != http.MethodHead {
			w.Write(se.Body)
		}
		return
	}
	writeAPIError(w, r, classify(err))
}

// writeAPIError logs an error once and writes it as OCI error JSON.
func writeAPIError(w http.ResponseWriter, r *http.Request, ae *apiError) {
	level := slog.LevelInfo
	if ae.status >= 500 {
		level = slog.LevelError
	}
	logger(r.Context()).Log(r.Context(), level, "request failed", "status", ae.status, "code", ae.code, "err", ae)
	for k, v := range ae.header {
		w.Header()[k] = v
	}
	body, _ := json.Marshal(map[string]any{"errors": []map[string]any{{"code": ae.code, "message": ae.message}}})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(ae.status)
	if r.Method != http.MethodHead {
		w.Write(body)
	}
}

// classify maps any error to what the client is told.
func classify(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	var te *upstream.TransportError
	if errors.As(err, &te) {
		if te.Timeout() {
			return &apiError{status: http.StatusGatewayTimeout, code: codeUnavailable, message: "the upstream registry did not answer in time", cause: err}
		}
		return &apiError{status: http.StatusBadGateway, code: codeUnavailable, message: "the upstream registry cannot be reached", cause: err}
	}
	if errors.Is(err, crypto.ErrNoKey) {
		return &apiError{status: http.StatusForbidden, code: codeDenied, message: err.Error(), cause: err}
	}
	return &apiError{status: http.StatusInternalServerError, code: codeUnknown, message: "internal error", cause: err}
}

// statusOf is the HTTP status an error is answered with, 0 for one that
// is not an API error.
func statusOf(err error) int {
	var e *apiError
	if errors.As(err, &e) {
		return e.status
	}
	return 0
}

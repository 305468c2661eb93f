// Package upstream is shroud's client for the registry behind it: one
// function per HTTP step of the distribution API (uploads, blobs, manifests),
// Location and Link handling, and the client's own Authorization carried
// through. It knows nothing of encryption.
//
// Errors: an upstream answer with an unexpected status is a *StatusError
// carrying status, headers and (bounded) body, so that the proxy can hand
// 401 challenges and OCI error codes back unchanged; a failure to reach the
// upstream at all is a *TransportError.
package upstream

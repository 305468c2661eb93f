// Package upstream is shroud's client for the registry behind it: one
// function per HTTP step of the distribution API (uploads, blobs, manifests),
// Location and Link handling, and the client's own Authorization carried
// through. It knows nothing of encryption.
//
// Errors: an upstream answer with an unexpected status is a *StatusError
// carrying status, headers and (bounded) body, so that the proxy can hand
// 401 challenges and OCI error codes back unchanged; a failure to reach the
// upstream at all is a *TransportError.
//
// The upstream is hostile. Only blob downloads follow redirects, for a few
// hops, to the upstream's own origin or to hosts with public addresses
// only, without the client's credentials; GuardedDialContext holds that
// at connection time. Any other redirect is a *TransportError wrapping
// ErrRedirectRefused, never an answer. Upload locations must stay on the
// upstream's origin (ErrForeignLocation). Error text never holds a URL's
// query (where distribution keeps an upload's sealed state) or userinfo.
package upstream

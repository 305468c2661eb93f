// Package auth is who a client is and what a policy rule grants it, for
// shroud deployments that decide themselves who gets plaintext (an
// organization's edge, a cluster) rather than letting the upstream decide
// with the client's own credentials.
//
// An Authenticator reads the request's credentials: Basic credentials
// checked against an htpasswd file (bcrypt only), a bearer JWT verified
// against a JWKS (file or HTTPS URL; issuer, audience and expiry
// required), or a TLS client certificate the server verified. A Principal
// is the result; an Access holds each policy rule's pull and push grants
// and says whether a principal may do an action under a rule.
//
// The package knows nothing of the distribution API or of crypto: the
// proxy asks it, and it never logs or returns a credential.
package auth

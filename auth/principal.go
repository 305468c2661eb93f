package auth

import "strings"

// Method is how a principal authenticated.
type Method string

// The methods.
const (
	Anonymous   Method = ""
	Basic       Method = "basic"
	Token       Method = "jwt"
	Certificate Method = "certificate"
)

// Principal is who a request's credentials say the client is.
type Principal struct {
	Method Method
	// Name is the htpasswd user, the token's username claim or the
	// certificate's subject (RFC 2253 form, as crypto/x509 prints it).
	Name string
	// Issuer is the token's issuer; empty for other methods.
	Issuer string
	// Groups are the token's group claim.
	Groups []string
}

// IsAnonymous says whether the request carried no credentials.
func (p Principal) IsAnonymous() bool { return p.Method == Anonymous }

// ID names the principal uniquely (method, issuer, name), for binding
// state such as an upload session to it.
func (p Principal) ID() string {
	return strings.Join([]string{string(p.Method), p.Issuer, p.Name}, "\x00")
}

// String names the principal in messages and logs: no credential.
func (p Principal) String() string {
	switch p.Method {
	case Anonymous:
		return "anonymous"
	case Certificate:
		return "certificate " + p.Name
	default:
		return "user " + p.Name
	}
}

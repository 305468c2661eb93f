package auth

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
)

// Config says which credentials an Authenticator accepts. At least one
// method is required.
type Config struct {
	// Htpasswd checks Basic credentials; nil refuses them.
	Htpasswd *Htpasswd
	// JWT verifies bearer tokens; nil refuses them.
	JWT *JWTVerifier
	// Certificates accepts the TLS client certificate the server
	// verified (the server's ClientCAs decide which).
	Certificates bool
	// Challenge is the scheme of the 401 challenge: "basic" or "bearer";
	// empty means basic when Htpasswd is set, else bearer.
	Challenge string
	// Realm and Service go into a bearer challenge: where clients get a
	// token (an identity provider's token endpoint) and for what; Realm
	// empty means the JWT issuer, Service empty means the audience.
	Realm, Service string
	// Logger receives reload failures of the htpasswd file or key set.
	Logger *slog.Logger
}

// Authenticator tells who a request's credentials name.
type Authenticator struct {
	cfg Config
	log *slog.Logger
}

// ErrUnauthenticated wraps every refusal of credentials: the request
// carried some, and they do not check.
var ErrUnauthenticated = errors.New("authentication failed")

// New returns an Authenticator.
func New(cfg Config) (*Authenticator, error) {
	if cfg.Htpasswd == nil && cfg.JWT == nil && !cfg.Certificates {
		return nil, errors.New("auth: no method (htpasswd, jwt or client certificates)")
	}
	switch cfg.Challenge {
	case "":
		switch {
		case cfg.Htpasswd != nil:
			cfg.Challenge = "basic"
		case cfg.JWT != nil:
			cfg.Challenge = "bearer"
		default:
			cfg.Challenge = "none" // client certificates only: nothing to ask for
		}
	case "basic":
		if cfg.Htpasswd == nil {
			return nil, errors.New("auth: a basic challenge needs htpasswd")
		}
	case "bearer":
		if cfg.JWT == nil {
			return nil, errors.New("auth: a bearer challenge needs jwt")
		}
	default:
		return nil, fmt.Errorf("auth: challenge %q: want basic or bearer", cfg.Challenge)
	}
	if cfg.JWT != nil {
		if cfg.Realm == "" {
			cfg.Realm = cfg.JWT.cfg.Issuer
		}
		if cfg.Service == "" {
			cfg.Service = cfg.JWT.cfg.Audience
		}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Authenticator{cfg: cfg, log: log}, nil
}

// Authenticate reads r's credentials: its Authorization header (Basic or
// Bearer) if any, else a verified client certificate, else none (the
// anonymous principal). Credentials that do not check are an error
// wrapping ErrUnauthenticated, whose text names the cause but never the
// credential.
func (a *Authenticator) Authenticate(ctx context.Context, r *http.Request) (Principal, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, cred, spaced := strings.Cut(h, " ")
		cred = strings.TrimSpace(cred)
		switch strings.ToLower(scheme) {
		case "basic":
			p, err := a.basic(cred)
			if err != nil || !p.IsAnonymous() {
				return p, err
			}
			// Empty credentials are none: the certificate may say who.
		case "bearer":
			return a.bearer(ctx, cred)
		default:
			// A header without a scheme starts with the credential
			// itself: the scheme is named only when it looks like one.
			if spaced && isSchemeName(scheme) {
				return Principal{}, fmt.Errorf("%w: the %q scheme is not accepted", ErrUnauthenticated, scheme)
			}
			return Principal{}, fmt.Errorf("%w: the authorization scheme is not accepted (want Basic or Bearer)", ErrUnauthenticated)
		}
	}
	if a.cfg.Certificates && r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
		return Principal{Method: Certificate, Name: r.TLS.VerifiedChains[0][0].Subject.String()}, nil
	}
	return Principal{}, nil
}

func (a *Authenticator) basic(cred string) (Principal, error) {
	if a.cfg.Htpasswd == nil {
		return Principal{}, fmt.Errorf("%w: Basic credentials are not accepted here", ErrUnauthenticated)
	}
	b, err := base64.StdEncoding.DecodeString(cred)
	if err != nil {
		return Principal{}, fmt.Errorf("%w: the Basic credentials do not decode", ErrUnauthenticated)
	}
	user, password, ok := strings.Cut(string(b), ":")
	if ok && user == "" && password == "" {
		// What containers/image (skopeo, podman, CRI-O) sends when it
		// holds no credentials, once challenged: no one, not a failure.
		return Principal{}, nil
	}
	if !ok || user == "" {
		return Principal{}, fmt.Errorf("%w: the Basic credentials name no user", ErrUnauthenticated)
	}
	good, reloadErr := a.cfg.Htpasswd.Verify(user, password)
	if reloadErr != nil {
		a.log.Error("htpasswd changed and does not load; the users loaded before stay in force", "err", reloadErr)
	}
	if !good {
		return Principal{}, fmt.Errorf("%w: %w", ErrUnauthenticated, ErrBadPassword)
	}
	return Principal{Method: Basic, Name: user}, nil
}

func (a *Authenticator) bearer(ctx context.Context, token string) (Principal, error) {
	if a.cfg.JWT == nil {
		return Principal{}, fmt.Errorf("%w: bearer tokens are not accepted here", ErrUnauthenticated)
	}
	c, refreshErr, err := a.cfg.JWT.Verify(ctx, token)
	if refreshErr != nil {
		a.log.Error("the key set could not be loaded again; the one loaded before stays in force", "err", refreshErr)
	}
	if err != nil {
		return Principal{}, fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	return Principal{Method: Token, Name: c.Username, Issuer: c.Issuer, Groups: c.Groups}, nil
}

// Challenge is the WWW-Authenticate value of a 401 for scope (e.g.
// "repository:team-a/app:pull"; empty for the ping); empty when only
// client certificates authenticate.
func (a *Authenticator) Challenge(scope string) string {
	if a.cfg.Challenge == "bearer" {
		c := fmt.Sprintf("Bearer realm=%q,service=%q", a.cfg.Realm, a.cfg.Service)
		if scope != "" {
			c += fmt.Sprintf(",scope=%q", scope)
		}
		return c
	}
	if a.cfg.Challenge == "none" {
		return ""
	}
	return `Basic realm="shroud"`
}

// isSchemeName says whether s looks like an authentication scheme (a
// short word: Digest, Negotiate, AWS4-HMAC-SHA256), not a credential.
func isSchemeName(s string) bool {
	if s == "" || len(s) > 16 {
		return false
	}
	for _, c := range s {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

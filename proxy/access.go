package proxy

import (
	"context"
	"errors"
	"net/http"

	"github.com/shroud-oci/shroud/auth"
	"github.com/shroud-oci/shroud/crypto"
)

// Who gets plaintext. Without Options.Auth the upstream decides, asked
// with the client's own credentials on every request that tells anything
// (backend.go, pull.go). With it shroud decides: it authenticates the
// client itself, checks the policy rule's pull or push grant before the
// request goes any further — before any cache lookup, so that a refused
// client learns neither existence nor size — and talks to the upstream
// with its own credentials only: the client's never leave shroud, and the
// upstream's challenges never reach the client.

type principalKey struct{}

// principal is who the request's credentials name (shroud's own auth).
func principal(ctx context.Context) auth.Principal {
	p, _ := ctx.Value(principalKey{}).(auth.Principal)
	return p
}

// ownAuth says whether shroud authenticates clients itself.
func (h *Handler) ownAuth() bool { return h.authn != nil }

// authenticate reads the request's credentials; credentials that do not
// check are a 401 with the challenge.
func (h *Handler) authenticate(r *http.Request) (*http.Request, *apiError) {
	p, err := h.authn.Authenticate(r.Context(), r)
	if err != nil {
		h.metrics.denied.Add(r.Context(), 1)
		return r, h.unauthorized(r, scopeOf(r, ""), err)
	}
	ctx := context.WithValue(r.Context(), principalKey{}, p)
	ctx = context.WithValue(ctx, loggerKey{}, logger(ctx).With("principal", p.String()))
	return r.WithContext(ctx), nil
}

// authorize checks that the request's principal holds the grant its
// method needs under rule: reads need pull, everything else push. An
// anonymous client is asked for credentials (401), a known one refused
// (403), and the answer is the same whether the repository or the blob
// exists or not.
func (h *Handler) authorize(r *http.Request, rule *crypto.Rule, repo string) *apiError {
	act := actionOf(r.Method)
	p := principal(r.Context())
	if h.access.Allows(rule.Index, p, act) {
		return nil
	}
	h.metrics.denied.Add(r.Context(), 1)
	if p.IsAnonymous() {
		return h.unauthorized(r, scopeOf(r, repo), errors.New("credentials required"))
	}
	return apiErr(http.StatusForbidden, codeDenied, "%s may not %s %s (%s)", p, act, repo, rule)
}

// mayPull says whether the request's principal may read repo: always
// under the upstream's authorization (the upstream checks), by the grants
// under shroud's own.
func (h *Handler) mayPull(ctx context.Context, repo string) bool {
	if !h.ownAuth() {
		return true
	}
	rule := h.policy.Match(repo)
	return rule != nil && rule.Action != crypto.Deny && h.access.Allows(rule.Index, principal(ctx), auth.Pull)
}

// mayPush says whether the request's principal may write repo: always
// under the upstream's authorization (the upstream checks the write with
// the client's credentials), by the grants under shroud's own.
func (h *Handler) mayPush(ctx context.Context, repo string) bool {
	if !h.ownAuth() {
		return true
	}
	rule := h.policy.Match(repo)
	return rule != nil && rule.Action != crypto.Deny && h.access.Allows(rule.Index, principal(ctx), auth.Push)
}

func (h *Handler) unauthorized(r *http.Request, scope string, cause error) *apiError {
	ae := &apiError{status: http.StatusUnauthorized, code: codeUnauthorized, message: "authentication required", cause: cause}
	if errors.Is(cause, auth.ErrUnauthenticated) {
		ae.message = cause.Error()
	}
	if c := h.authn.Challenge(scope); c != "" {
		ae.header = http.Header{"Www-Authenticate": {c}}
	}
	return ae
}

func actionOf(method string) auth.Action {
	if method == http.MethodGet || method == http.MethodHead {
		return auth.Pull
	}
	return auth.Push
}

// scopeOf is the token scope a request needs, for a bearer challenge.
func scopeOf(r *http.Request, repo string) string {
	if repo == "" {
		if m := repoPath.FindStringSubmatch(r.URL.Path); m != nil {
			repo = m[1]
		}
	}
	if repo == "" {
		return ""
	}
	if actionOf(r.Method) == auth.Push {
		return "repository:" + repo + ":pull,push"
	}
	return "repository:" + repo + ":pull"
}

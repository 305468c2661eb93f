package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/shroud-oci/shroud/auth"
	"github.com/shroud-oci/shroud/config"
)

// authentication builds shroud's own authentication and the policy rules'
// grants (rules[i] is policy rule i, the --recipient rule last), or nil,
// nil when the upstream decides.
func authentication(ctx context.Context, cfg config.Config, rules []config.Rule, log *slog.Logger) (*auth.Authenticator, *auth.Access, error) {
	a := cfg.Auth
	if !a.Enabled() {
		return nil, nil, nil
	}
	ac := auth.Config{Certificates: a.ClientCA != "", Challenge: a.Challenge, Logger: log}
	var err error
	if a.Htpasswd != "" {
		if ac.Htpasswd, err = auth.LoadHtpasswd(a.Htpasswd); err != nil {
			return nil, nil, fmt.Errorf("auth: %w", err)
		}
	}
	if j := a.JWT; j != nil {
		ac.JWT, err = auth.NewJWTVerifier(ctx, auth.JWTConfig{Issuer: j.Issuer, Audience: j.Audience, JWKS: j.JWKS, Refresh: j.Refresh,
			UsernameClaim: j.UsernameClaim, GroupsClaim: j.GroupsClaim})
		if err != nil {
			return nil, nil, fmt.Errorf("auth: %w", err)
		}
		ac.Realm, ac.Service = j.Realm, j.Service
	}
	authn, err := auth.New(ac)
	if err != nil {
		return nil, nil, err
	}
	grants := make([]auth.RuleGrants, len(rules))
	for i, r := range rules {
		grants[i] = auth.RuleGrants{Pull: r.Pull, Push: r.Push}
	}
	access, err := auth.NewAccess(grants)
	if err != nil {
		return nil, nil, err
	}
	log.Info("shroud authenticates clients itself; the upstream is asked with shroud's own credentials",
		"htpasswd", a.Htpasswd != "", "jwt", a.JWT != nil, "client_certificates", a.ClientCA != "")
	return authn, access, nil
}

// clientCAs reads the CAs whose client certificates authenticate.
func clientCAs(file string) (*x509.CertPool, error) {
	if file == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("auth.client-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("auth.client-ca " + file + ": no PEM certificate in it")
	}
	return pool, nil
}

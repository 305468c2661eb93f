package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/shroud-oci/shroud/access"
	"github.com/shroud-oci/shroud/admin"
	"github.com/shroud-oci/shroud/audit"
	"github.com/shroud-oci/shroud/auth"
	"github.com/shroud-oci/shroud/cache"
	"github.com/shroud-oci/shroud/config"
	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/proxy"
)

// serverParts are what the server runs with that the admin API's jobs
// share: the keys, the policy, the key checks, the audit log, the meter
// and the shared tier (nil: none).
type serverParts struct {
	upURL    string
	keys     *crypto.Keyring
	policy   *crypto.Policy
	keyCheck proxy.KeyChecker
	audit    *audit.Logger
	meter    metric.Meter
	tier     *sharedTier
	tls      *tls.Config
	// requests are the access requests (nil: not served); their grants
	// add recipients to the jobs' rules as to the server's.
	requests *access.Store
	// accessAPI is the requesters' API (nil: not served): with
	// admin.access-auto-approve, the admin server approves its requests
	// the allow list names.
	accessAPI *access.Handler
	// authn is shroud's own authentication (nil: none): owners decide
	// access requests with it (admin.owners).
	authn *auth.Authenticator
	// tp traces the jobs as the server's requests (nil: off).
	tp trace.TracerProvider
	// cache is the serving default upstream's mapping store: the jobs
	// share it, so that what they change (an owner approval's wrapped
	// keys) the server's next push sees, with or without a shared tier.
	cache cache.Store
}

// adminAPI opens the admin API's listener (cfg.Admin) and starts its jobs'
// runner, which resumes a job a stopped server left; stop stops the job
// running (it resumes at the next start) and waits for it.
//
// The jobs run on a proxy.Handler of their own over the default upstream,
// with the server's keys, policy, key checks, audit log and meter: it
// asks the upstream with shroud's own credentials (--upstream-auth-file)
// for every request, writes included, since a job has no client, as
// `shroud rotate` does. With a shared tier it reads and writes the
// mappings the replicas share.
func adminAPI(ctx context.Context, cfg config.Config, p serverParts, log *slog.Logger) (l listener, stop func(), err error) {
	token, err := admin.LoadToken(cfg.Admin.TokenFile)
	if err != nil {
		return listener{}, nil, err
	}
	def, _, err := backends(cfg, p.upURL, true, p.tp, log)
	if err != nil {
		return listener{}, nil, err
	}
	if p.cache != nil {
		def.Cache = p.cache
	} else if p.tier != nil {
		if _, _, err := p.tier.store("", &def, log); err != nil {
			return listener{}, nil, err
		}
	}
	owners, err := ownerAuth(cfg, p.authn, log)
	if err != nil {
		return listener{}, nil, err
	}
	h, err := proxy.New(proxy.Options{Upstream: def.Upstream, Cache: def.Cache, Keyring: p.keys, Policy: p.policy, Logger: log,
		Audit: p.audit, KeyCheck: p.keyCheck, Meter: p.meter, Grants: grantsOf(p.requests), TracerProvider: p.tp})
	if err != nil {
		return listener{}, nil, err
	}
	srv, err := admin.New(admin.Options{Handler: h, Previous: p.keys.Previous(), Dir: filepath.Join(cfg.DataDir, "jobs"), Token: token,
		Logger: log, Audit: p.audit, Meter: p.meter, Access: p.requests, AllowList: allowList(cfg, p), Owners: owners})
	if err != nil {
		return listener{}, nil, err
	}
	if p.accessAPI != nil && cfg.Admin.AccessAutoApprove {
		// Set before any listener serves (serveAll starts them).
		p.accessAPI.AutoApprove = srv.AutoApprove
		log.Info("access requests the trust documents' allow list names are approved at submission")
	}
	ln, err := net.Listen("tcp", cfg.Admin.Listen)
	if err != nil {
		return listener{}, nil, fmt.Errorf("admin.listen: %w", err)
	}
	if ip, ok := ln.Addr().(*net.TCPAddr); p.tls == nil && (!ok || !ip.IP.IsLoopback()) {
		log.Warn("the admin API is served over plain HTTP beyond loopback: its bearer token crosses the network in the clear; serve it with tls-cert, or listen on 127.0.0.1",
			"listen", ln.Addr().String())
	}
	jobsCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Run(jobsCtx)
	}()
	log.Info("serving the admin API", "listen", ln.Addr().String(), "path", "/admin/v1/jobs", "tls", p.tls != nil)
	hs := &http.Server{Handler: srv, TLSConfig: p.tls, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	return listener{srv: hs, ln: ln}, func() { cancel(); <-done }, nil
}

// grantsOf is s as the proxy's Grants: nil (no interface holding a nil
// pointer) when s is.
func grantsOf(s *access.Store) proxy.Grants {
	if s == nil {
		return nil
	}
	return s
}

// allowList is the key check that approves access requests by itself
// (admin.access-auto-approve): the trust documents' (nil otherwise).
func allowList(cfg config.Config, p serverParts) proxy.KeyChecker {
	if !cfg.Admin.AccessAutoApprove {
		return nil
	}
	return p.keyCheck
}

// ownerAuth checks owners' own credentials for the access requests'
// admin paths (admin.owners): nil when no owner grant is configured.
func ownerAuth(cfg config.Config, authn *auth.Authenticator, log *slog.Logger) (func(context.Context, *http.Request) (string, bool), error) {
	if len(cfg.Admin.Owners) == 0 {
		return nil, nil
	}
	if authn == nil {
		return nil, errors.New("admin.owners: shroud's own authentication (auth) is not configured")
	}
	var grants []auth.Grant
	for _, o := range cfg.Admin.Owners {
		g, err := auth.ParseGrant(o)
		if err != nil {
			return nil, fmt.Errorf("admin.owners: %w", err)
		}
		if g.Matches(auth.Principal{}) {
			return nil, fmt.Errorf("admin.owners: %q names anonymous clients: owners must authenticate", o)
		}
		grants = append(grants, g)
	}
	return func(ctx context.Context, r *http.Request) (string, bool) {
		p, err := authn.Authenticate(ctx, r)
		if err != nil || p.IsAnonymous() {
			return "", false
		}
		for _, g := range grants {
			if g.Matches(p) {
				return p.Name, true
			}
		}
		log.Warn("admin: credentials that no admin.owners grant names", "principal", p.Name)
		return "", false
	}, nil
}

package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	accessreq "github.com/shroud-oci/shroud/access"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	keyproviderconfig "github.com/containers/ocicrypt/config/keyprovider-config"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/shroud-oci/shroud/audit"
	"github.com/shroud-oci/shroud/cache"
	"github.com/shroud-oci/shroud/config"
	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/embedded"
	"github.com/shroud-oci/shroud/proxy"
	"github.com/shroud-oci/shroud/proxy/upstream"
	"github.com/shroud-oci/shroud/trust"
)

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// parseServe reads the flags over the config file (flags win).
func parseServe(args []string, stderr io.Writer) (config.Config, error) {
	fs := flag.NewFlagSet("shroud serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	d := config.Default()
	var (
		cfgPath                   = fs.String("config", "", "YAML config file; its keys are these flags' names")
		listen                    = fs.String("listen", d.Listen, "address to serve the registry API on")
		up                        = fs.String("upstream", "", "upstream registry URL (http:// or https://); empty runs an embedded registry")
		dataDir                   = fs.String("data-dir", d.DataDir, "directory for the identity key pair and the embedded registry")
		identity                  = fs.String("identity", "", "shroud's private key file, or pkcs11:<ocicrypt PKCS#11 key file> for a key pair in a token (default <data-dir>/identity.pem, generated on first start)")
		encryptOnly               = fs.Bool("encrypt-only", false, "every encrypt rule is encrypt-only: layer keys are wrapped for the rules' recipients alone, never shroud's identity, and pulls get the ciphertext (config encrypt-only)")
		logLevel                  = fs.String("log-level", d.LogLevel, "debug, info, warn or error")
		logFormat                 = fs.String("log-format", "text", "text (key=value) or json (one object a line)")
		traceOn                   = fs.Bool("trace", false, "export OpenTelemetry traces over OTLP/HTTP to where OTEL_EXPORTER_OTLP_ENDPOINT says (config tracing.enabled)")
		traceRatio                = fs.Float64("trace-sample-ratio", 0, "share of new traces sampled, 0 to 1 (0: OTEL_TRACES_SAMPLER, else all; config tracing.sample-ratio)")
		cacheEntries              = fs.Int("cache-entries", d.CacheEntries, "entries in each mapping cache table")
		uploadTTL                 = fs.Duration("upload-ttl", d.UploadTTL, "how long an idle upload session is kept")
		stallTimeout              = fs.Duration("stall-timeout", d.StallTimeout, "cut a response or request body that makes no progress for this long (0: never); no bound on a stream's length")
		idleTimeout               = fs.Duration("idle-timeout", d.IdleTimeout, "close a client connection idle for this long (0: never)")
		drainTimeout              = fs.Duration("drain-timeout", d.DrainTimeout, "after SIGTERM, how long requests in flight get to finish")
		drainDelay                = fs.Duration("drain-delay", d.DrainDelay, "after SIGTERM, how long new requests are still taken (while /readyz is 503)")
		sharedAddr                = fs.String("shared-redis", "", "Redis/Valkey address (host:port) of the shared tier replicas share state in")
		maxStreams                = fs.Int("max-streams", d.MaxStreams, "blob streams (pulls, upload bodies) served at once; beyond it 429 TOOMANYREQUESTS (0: no bound)")
		tlsCert                   = fs.String("tls-cert", "", "PEM certificate (chain) to serve HTTPS with; needs --tls-key")
		tlsKey                    = fs.String("tls-key", "", "PEM private key of --tls-cert")
		upstreamCA                = fs.String("upstream-ca", "", "PEM file of CA certificates trusted for https:// upstreams, besides the system's")
		metricsListen             = fs.String("metrics-listen", "", "address to serve Prometheus metrics on, at /metrics (empty: none)")
		auditLog                  = fs.String("audit-log", "", "audit log of key decisions, JSON lines: FILE (appended) or - for stdout (empty: none)")
		trustSrc                  = fs.String("trust-source", "", "signed allow and deny lists of keys (TUF): a directory, an https:// URL or oci:REPOSITORY[:TAG] in the upstream (config trust.source)")
		trustRoot                 = fs.String("trust-root", "", "the initial trusted root.json of --trust-source (config trust.root)")
		trustRefresh              = fs.Duration("trust-refresh", 0, "how often the trust documents are fetched (default 5m; config trust.refresh)")
		authHtpasswd              = fs.String("auth-htpasswd", "", "htpasswd file (bcrypt): shroud authenticates clients itself (config auth.htpasswd)")
		authClientCA              = fs.String("auth-client-ca", "", "PEM CAs whose client certificates authenticate (mTLS; config auth.client-ca)")
		upstreamAuth              = fs.String("upstream-auth-file", "", "Docker config.json whose auths shroud reads upstreams with for clients that send no credentials")
		adminListen               = fs.String("admin-listen", "", "address to serve the admin API (the key-rotation jobs) on, apart from the registry API (empty: none; config admin.listen)")
		accessRequests            = fs.Bool("access-requests", false, "serve the access-request API under /shroud/v1/access (owners decide through the admin API; config admin.access-requests)")
		accessAutoApprove         = fs.Bool("access-auto-approve", false, "approve at once an access request whose key the trust documents' signed allow list names for every repository it asks for (config admin.access-auto-approve)")
		adminTokenFile            = fs.String("admin-token-file", "", "file holding the admin API's bearer token, not readable by every user (config admin.token-file)")
		recipients, decryptionKey listFlag
		mirrors, previousIdentity listFlag
	)
	fs.Var(&mirrors, "mirror", "repeatable: ORIGIN=URL, the upstream for the origin registry containerd names with ?ns=ORIGIN (config key upstreams)")
	fs.Var(&recipients, "recipient", "recipient of every layer, repeatable: jwe:<public key file>")
	fs.Var(&decryptionKey, "decryption-key", "extra private key file[:password] to unwrap layers with, repeatable")
	fs.Var(&previousIdentity, "previous-identity", "repeatable: an identity's private key file the --identity replaces, kept until `shroud rotate identity` has moved every image to the new one (config previous-identities)")
	if err := fs.Parse(args); err != nil {
		return config.Config{}, err
	}
	if fs.NArg() > 0 {
		return config.Config{}, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	c := d
	if *cfgPath != "" {
		var err error
		if c, err = config.Load(*cfgPath); err != nil {
			return config.Config{}, err
		}
	}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "listen":
			c.Listen = *listen
		case "upstream":
			c.Upstream = *up
		case "data-dir":
			c.DataDir = *dataDir
		case "identity":
			c.Identity = *identity
		case "encrypt-only":
			c.EncryptOnly = *encryptOnly
		case "log-level":
			c.LogLevel = *logLevel
		case "log-format":
			c.LogFormat = *logFormat
		case "trace":
			c.Tracing.Enabled = *traceOn
		case "trace-sample-ratio":
			c.Tracing.SampleRatio = *traceRatio
		case "cache-entries":
			c.CacheEntries = *cacheEntries
		case "upload-ttl":
			c.UploadTTL = *uploadTTL
		case "stall-timeout":
			c.StallTimeout = *stallTimeout
		case "idle-timeout":
			c.IdleTimeout = *idleTimeout
		case "drain-timeout":
			c.DrainTimeout = *drainTimeout
		case "drain-delay":
			c.DrainDelay = *drainDelay
		case "shared-redis":
			c.Shared.Addrs = []string{*sharedAddr}
		case "max-streams":
			c.MaxStreams = *maxStreams
		case "tls-cert":
			c.TLSCert = *tlsCert
		case "tls-key":
			c.TLSKey = *tlsKey
		case "upstream-ca":
			c.UpstreamCA = *upstreamCA
		case "metrics-listen":
			c.MetricsListen = *metricsListen
		case "audit-log":
			c.AuditLog = *auditLog
		case "trust-source":
			c.Trust.Source = *trustSrc
		case "trust-root":
			c.Trust.Root = *trustRoot
		case "trust-refresh":
			c.Trust.Refresh = *trustRefresh
		case "upstream-auth-file":
			c.UpstreamAuthFile = *upstreamAuth
		case "auth-htpasswd":
			c.Auth.Htpasswd = *authHtpasswd
		case "auth-client-ca":
			c.Auth.ClientCA = *authClientCA
		case "recipient":
			c.Recipients = recipients
		case "decryption-key":
			c.DecryptionKeys = decryptionKey
		case "previous-identity":
			c.PreviousIdentities = previousIdentity
		case "admin-listen":
			c.Admin.Listen = *adminListen
		case "admin-token-file":
			c.Admin.TokenFile = *adminTokenFile
		case "access-requests":
			c.Admin.AccessRequests = *accessRequests
		case "access-auto-approve":
			c.Admin.AccessAutoApprove = *accessAutoApprove
		}
	})
	for _, m := range mirrors {
		origin, u, ok := strings.Cut(m, "=")
		if !ok {
			return config.Config{}, fmt.Errorf("--mirror %q: want ORIGIN=URL", m)
		}
		if c.Upstreams == nil {
			c.Upstreams = map[string]string{}
		}
		c.Upstreams[origin] = u
	}
	return c, c.Validate()
}

func serve(ctx context.Context, args []string, stderr io.Writer) int {
	cfg, err := parseServe(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "shroud serve: %v\n", err)
		return 2
	}
	log, _ := cfg.Logger(stderr) // checked by Validate
	if err := runServer(ctx, cfg, log); err != nil {
		log.Error("shroud stopped", "err", err)
		return 1
	}
	return 0
}

// keyring loads the identity (loadIdentity: from a PKCS#11 token, a key
// file, or the data dir, created there on first start) and the decryption
// keys. Any key that does not parse is an error.
func keyring(ctx context.Context, cfg config.Config, log *slog.Logger) (*crypto.Keyring, error) {
	id, err := loadIdentity(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	var keys []crypto.DecryptionKey
	for _, spec := range cfg.DecryptionKeys {
		k, err := crypto.ParseDecryptionKey(spec)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	providers, err := keyProviders(cfg)
	if err != nil {
		return nil, err
	}
	for name, p := range providers {
		if p.Grpc != "" && p.GrpcTLS == nil {
			// The provider is sent layer keys to wrap and returns them
			// unwrapped: over plain gRPC anyone on the path reads them.
			log.Warn("key provider speaks gRPC without TLS: layer keys cross the network in the clear; configure grpc-tls",
				"provider", name, "address", p.Grpc)
		}
	}
	var previous []*crypto.Identity
	for _, path := range cfg.PreviousIdentities {
		p, err := loadPreviousIdentity(path)
		if err != nil {
			return nil, err
		}
		previous = append(previous, p)
		log.Info("a previous identity opens what it sealed and wrapped until `shroud rotate identity` moves it to the identity", "previous", p.Fingerprint(), "identity", id.Fingerprint())
	}
	return crypto.NewKeyring(id, keys,
		crypto.WithPKCS11(cfg.PKCS11.AllowedModulePaths, cfg.PKCS11.ModuleDirectories),
		crypto.WithKeyProviders(providers), crypto.WithPreviousIdentities(previous...))
}

// keyProviders merges the providers of $OCICRYPT_KEYPROVIDER_CONFIG (read
// as ocicrypt reads it) with those of shroud's config, which win.
func keyProviders(cfg config.Config) (map[string]keyproviderconfig.KeyProviderAttrs, error) {
	out := map[string]keyproviderconfig.KeyProviderAttrs{}
	oc, err := keyproviderconfig.GetConfiguration()
	if err != nil {
		return nil, err
	}
	if oc != nil {
		maps.Copy(out, oc.KeyProviderConfig)
	}
	for name, p := range cfg.KeyProviders {
		a := keyproviderconfig.KeyProviderAttrs{Grpc: p.Grpc}
		if p.Cmd != nil {
			a.Command = &keyproviderconfig.Command{Path: p.Cmd.Path, Args: p.Cmd.Args}
		}
		if t := p.GrpcTLS; t != nil {
			a.GrpcTLS = &keyproviderconfig.GrpcTLS{RootCAFile: t.RootCAFile, CertFile: t.CertFile, KeyFile: t.KeyFile, ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify}
		}
		out[name] = a
	}
	return out, nil
}

// policyRules are the configured rules and, for the recipient flags (or
// when there is no policy), the last rule: encrypt "**".
func policyRules(cfg config.Config) []config.Rule {
	rules := cfg.Policy
	if len(rules) == 0 || len(cfg.Recipients) > 0 {
		rules = append(rules, config.Rule{Repositories: "**", Action: "encrypt", Recipients: cfg.Recipients})
	}
	return rules
}

// policy compiles the policy rules and, for the recipient flags (or when
// there is no policy), the last rule: encrypt "**".
func policy(cfg config.Config, keys *crypto.Keyring) (*crypto.Policy, error) {
	rules := policyRules(cfg)
	var compiled []crypto.Rule
	for i, r := range rules {
		c := crypto.Rule{Pattern: r.Repositories, Action: crypto.Action(r.Action), Layers: r.Layers, Platforms: r.Platforms,
			AcceptFrom: r.AcceptFrom, AcceptForeign: r.AcceptForeign, DecryptionKeys: r.DecryptionKeys, VerifyRanges: r.VerifyRanges,
			VerifyBeforeRelease: r.VerifyBeforeRelease, DedupScope: crypto.DedupScope(r.DedupScope), ArtifactTypes: r.ArtifactTypes}
		if c.Action == crypto.Encrypt {
			c.EncryptOnly, c.RefusePulls = r.EncryptOnly || cfg.EncryptOnly, r.EncryptOnlyPulls == "refuse"
			var rs []crypto.Recipient
			for _, spec := range r.Recipients {
				rec, err := crypto.ParseRecipient(spec)
				if err != nil {
					return nil, fmt.Errorf("policy rule %d (%s): %w", i, r.Repositories, err)
				}
				rs = append(rs, rec)
			}
			set, err := keys.Recipients(rs)
			if err == nil && c.EncryptOnly {
				if err = opensItself(keys, rs); err == nil {
					set, err = set.WithoutIdentity()
				}
			}
			if err != nil {
				return nil, fmt.Errorf("policy rule %d (%s): %w", i, r.Repositories, err)
			}
			c.Recipients = set
		}
		compiled = append(compiled, c)
	}
	return crypto.NewPolicy(compiled)
}

func runServer(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	keys, err := keyring(ctx, cfg, log)
	if err != nil {
		return err
	}
	pol, err := policy(cfg, keys)
	if err != nil {
		return err
	}
	upURL, stop, err := upstreamURL(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer stop()
	authn, access, err := authentication(ctx, cfg, policyRules(cfg), log)
	if err != nil {
		return err
	}
	cas, err := clientCAs(cfg.Auth.ClientCA)
	if err != nil {
		return err
	}
	tlsCfg, err := serverTLS(cfg.TLSCert, cfg.TLSKey, cas, log)
	if err != nil {
		return err
	}
	tp, stopTracing, err := tracing(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := stopTracing(sctx); err != nil {
			log.Warn("tracing: the last spans were not exported", "err", err)
		}
	}()
	def, mirrors, err := backends(cfg, upURL, cfg.Auth.Enabled(), tp, log)
	if err != nil {
		return err
	}
	spool := filepath.Join(cfg.DataDir, "spool")
	if err := os.MkdirAll(spool, 0o700); err != nil {
		return err
	}
	var meter metric.Meter
	var metricsHandler http.Handler
	if cfg.MetricsListen != "" {
		if meter, metricsHandler, err = prometheusMetrics(); err != nil {
			return err
		}
	}
	var auditLog *audit.Logger
	if cfg.AuditLog != "" {
		var closer io.Closer
		if auditLog, closer, err = audit.Open(cfg.AuditLog); err != nil {
			return err
		}
		defer closer.Close()
		log.Info("writing the audit log", "to", cfg.AuditLog)
	}
	var ledger cache.Ledger
	var sharedHealth func(context.Context) error
	var tier *sharedTier
	var floor trust.SharedFloor // the trust documents' rollback floor, in the shared tier
	if cfg.Shared.Enabled() {
		if tier, err = newSharedTier(cfg.Shared, keys.Identity(), log); err != nil {
			return err
		}
		defer tier.Close()
		sh, t, err := tier.store("", &def, log)
		if err != nil {
			return err
		}
		// A probe asks the server now: Tiered's own health only knows
		// the last call, which may be minutes old.
		ledger, sharedHealth = sh.Ledger(), func(ctx context.Context) error {
			if err := t.Health(ctx); err != nil {
				return err
			}
			return sh.Ping(ctx)
		}
		for origin, m := range mirrors {
			if _, _, err := tier.store(origin, &m, log); err != nil {
				return err
			}
			mirrors[origin] = m
		}
		log.Info("shared tier", "addrs", cfg.Shared.Addrs)
		floor = sh
	}
	var keyCheck proxy.KeyChecker // nil unless trust documents are configured
	if tc, err := trustChecker(ctx, cfg, def.Upstream, pol, keys, floor, auditLog, log); err != nil {
		return err
	} else if tc != nil {
		keyCheck = tc
		log.Info("checking keys against the trust documents", "source", cfg.Trust.Source)
		if meter != nil {
			if _, err := tc.RegisterMetrics(meter); err != nil {
				return err
			}
		}
	}
	var requests *accessreq.Store // nil unless access requests are served
	var grants proxy.Grants
	if cfg.Admin.AccessRequests {
		if requests, err = accessreq.Open(accessreq.Options{Dir: filepath.Join(cfg.DataDir, "access"), Keyring: keys, Policy: pol}); err != nil {
			return err
		}
		grants = requests
	}
	h, err := proxy.New(proxy.Options{Upstream: def.Upstream, Cache: def.Cache, Mirrors: mirrors, Keyring: keys, Policy: pol, Logger: log, UploadTTL: cfg.UploadTTL, SpoolDir: spool, Meter: meter,
		StallTimeout: offWhenZero(cfg.StallTimeout), MaxStreams: offWhenZero(cfg.MaxStreams), Auth: authn, Access: access,
		Ledger: ledger, SharedHealth: sharedHealth, Audit: auditLog, KeyCheck: keyCheck, Grants: grants, TracerProvider: tp})
	if err != nil {
		return err
	}
	if tier != nil {
		tier.failed = h.SharedFailed
	}
	// No ReadTimeout or WriteTimeout: they bound a whole request, and a
	// multi-GiB blob takes as long as it takes. The handler cuts a stream
	// that stops moving (--stall-timeout) instead.
	var apiHandler http.Handler = h
	var accessAPI *accessreq.Handler
	if requests != nil {
		accessAPI = &accessreq.Handler{Store: requests, Logger: log, Audit: auditLog, ReadTimeout: cfg.StallTimeout}
		apiHandler = withAccessAPI(h, accessAPI)
		log.Info("serving access requests", "path", accessreq.PathPrefix)
	}
	api := listener{srv: &http.Server{Handler: apiHandler, TLSConfig: tlsCfg, ReadHeaderTimeout: 30 * time.Second, IdleTimeout: cfg.IdleTimeout, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}}
	if api.ln, err = net.Listen("tcp", cfg.Listen); err != nil {
		return err
	}
	servers := []listener{api}
	if metricsHandler != nil {
		m := listener{srv: metricsServer(metricsHandler)}
		if m.ln, err = net.Listen("tcp", cfg.MetricsListen); err != nil {
			api.ln.Close()
			return err
		}
		servers = append(servers, m)
		log.Info("serving metrics", "listen", m.ln.Addr().String(), "path", "/metrics")
	}
	if cfg.Admin.Listen != "" {
		a, stopJobs, err := adminAPI(ctx, cfg, serverParts{upURL: upURL, keys: keys, policy: pol, keyCheck: keyCheck, audit: auditLog, meter: meter, tier: tier, tls: tlsCfg, requests: requests, accessAPI: accessAPI, authn: authn, cache: def.Cache, tp: tp}, log)
		if err != nil {
			for _, l := range servers {
				l.ln.Close()
			}
			return err
		}
		defer stopJobs()
		servers = append(servers, a)
	}
	log.Info("shroud is serving", "listen", api.ln.Addr().String(), "tls", tlsCfg != nil, "upstream", upURL, "mirrors", len(mirrors), "policy_rules", len(pol.Rules()))
	return serveAll(ctx, log, servers, h, cfg.DrainDelay, cfg.DrainTimeout)
}

// offWhenZero turns a limit's "0: off" in the config into the "negative:
// off" of proxy.Options, whose zero is the default.
func offWhenZero[T int | time.Duration](v T) T {
	if v == 0 {
		return -1
	}
	return v
}

// listener is a server and the listener it serves on.
type listener struct {
	srv *http.Server
	ln  net.Listener
}

// serveAll serves every listener until one fails or ctx is done (SIGTERM),
// then drains: /readyz answers 503 at once (drainer.Drain), new requests
// are still taken for delay (the load balancer's time to notice), then
// the listeners close and requests in flight get timeout to finish.
// Those still running then are cut: their clients see the connection
// close, never a response passed off as complete, and retry elsewhere.
func serveAll(ctx context.Context, log *slog.Logger, ls []listener, drainer interface{ Drain() }, delay, timeout time.Duration) error {
	errc := make(chan error, len(ls))
	for _, l := range ls {
		go func() {
			if l.srv.TLSConfig != nil {
				errc <- l.srv.ServeTLS(l.ln, "", "")
				return
			}
			errc <- l.srv.Serve(l.ln)
		}()
	}
	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
		log.Info("draining: /readyz answers 503; requests in flight finish", "delay", delay, "timeout", timeout)
		drainer.Drain()
		if delay > 0 {
			select {
			case <-time.After(delay):
			case err = <-errc:
			}
		}
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	for _, l := range ls {
		if serr := l.srv.Shutdown(sctx); errors.Is(serr, context.DeadlineExceeded) {
			log.Warn("drain timeout: cutting the requests still in flight", "timeout", timeout)
			l.srv.Close()
		} else {
			err = errors.Join(err, serr)
		}
	}
	log.Info("stopped")
	return err
}

// backends are the default upstream (at upURL) and the mirrors' ones,
// each with a cache of its own, over one transport that trusts
// --upstream-ca and reads with --upstream-auth-file's credentials; own
// says that every request, writes included, uses them (shroud's own
// authentication, or a job, which has no client).
func backends(cfg config.Config, upURL string, own bool, tp trace.TracerProvider, log *slog.Logger) (proxy.Backend, map[string]proxy.Backend, error) {
	roots, err := upstreamRoots(cfg.UpstreamCA)
	if err != nil {
		return proxy.Backend{}, nil, err
	}
	var auths upstream.AuthFile
	if cfg.UpstreamAuthFile != "" {
		if auths, err = upstream.LoadAuthFile(cfg.UpstreamAuthFile); err != nil {
			return proxy.Backend{}, nil, err
		}
	}
	tr := tracedTransport(upstreamTransport(roots), tp)
	def, err := backendFor(upURL, tr, auths, own, cfg.CacheEntries, log)
	if err != nil {
		return proxy.Backend{}, nil, err
	}
	mirrors := map[string]proxy.Backend{}
	for origin, u := range cfg.Upstreams {
		if mirrors[origin], err = backendFor(u, tr, auths, own, cfg.CacheEntries, log); err != nil {
			return proxy.Backend{}, nil, err
		}
	}
	return def, mirrors, nil
}

// backendFor is an upstream client with a cache of its own, reading
// with shroud's credentials for it when auths has some; under shroud's own
// authentication (own), every request uses them.
func backendFor(url string, tr http.RoundTripper, auths upstream.AuthFile, own bool, entries int, log *slog.Logger) (proxy.Backend, error) {
	if a, ok := auths.For(url); ok {
		var err error
		if own {
			tr, err = upstream.WithOwnCredentials(tr, url, a)
			log.Info("every request to this upstream uses shroud's credentials", "upstream", url)
		} else {
			tr, err = upstream.WithCredentials(tr, url, a)
			log.Info("reads of clients without credentials use shroud's for this upstream", "upstream", url)
		}
		if err != nil {
			return proxy.Backend{}, err
		}
	} else if own {
		log.Info("shroud asks this upstream anonymously: --upstream-auth-file has no entry for it", "upstream", url)
	}
	up, err := upstream.New(url, &http.Client{Transport: tr})
	if err != nil {
		return proxy.Backend{}, err
	}
	store, err := cache.NewLRU(entries)
	if err != nil {
		return proxy.Backend{}, err
	}
	return proxy.Backend{Upstream: up, Cache: store}, nil
}

// upstreamTransport is the HTTP transport to the upstream: bounded dial
// and header waits, no bound on a stream's length, and the dial guard
// against redirects to internal addresses (upstream.GuardedDialContext).
func upstreamTransport(roots *x509.CertPool) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	t.MaxIdleConnsPerHost = 32
	t.ResponseHeaderTimeout = 5 * time.Minute
	// The connections of a blob redirect the upstream sends elsewhere go
	// only to the public addresses the guard resolved itself.
	t.DialContext = upstream.GuardedDialContext(&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second})
	return t
}

// upstreamURL is the configured upstream, or an embedded registry started
// in the data dir when none is (stop stops it).
func upstreamURL(ctx context.Context, cfg config.Config, log *slog.Logger) (url string, stop func(), err error) {
	if cfg.Upstream != "" {
		return cfg.Upstream, func() {}, nil
	}
	reg, err := embedded.Start(ctx, filepath.Join(cfg.DataDir, "registry"))
	if err != nil {
		return "", nil, err
	}
	log.Info("no upstream configured: running an embedded registry", "url", reg.URL, "storage", reg.Dir)
	return reg.URL, func() { reg.Close(context.WithoutCancel(ctx)) }, nil
}

// withAccessAPI serves the access-request API's paths (access.PathPrefix)
// with a, everything else with h. The paths are matched as sent, not
// cleaned: the distribution API's are h's to judge.
func withAccessAPI(h, a http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.Path; p == accessreq.PathPrefix || strings.HasPrefix(p, accessreq.PathPrefix+"/") {
			a.ServeHTTP(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// opensItself refuses, for an encrypt-only rule, a recipient shroud could
// open what it wraps for: a key provider (shroud asks it to unwrap), or
// a key among its own decryption keys or identities.
func opensItself(keys *crypto.Keyring, rs []crypto.Recipient) error {
	for _, r := range rs {
		name, ok := keys.Holds(r)
		switch {
		case !ok:
		case strings.HasPrefix(r.Spec, "provider:"):
			return fmt.Errorf("recipient %q: a key provider unwraps for shroud, and an encrypt-only rule holds no key shroud can open with", r.Spec)
		default:
			return fmt.Errorf("recipient %q: shroud holds its private key (%s), and an encrypt-only rule holds no key shroud can open with", r.Spec, name)
		}
	}
	return nil
}

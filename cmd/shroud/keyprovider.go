package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"

	"github.com/shroud-oci/shroud/audit"
	"github.com/shroud-oci/shroud/config"
	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/keyprovider"
)

// keyproviderFlags are what shroud keyprovider is run with.
type keyproviderFlags struct {
	listen, dataDir, identity, configPath          string
	tlsCert, tlsKey, clientCA, name, level, format string
	auditLog                                       string
	// insecureNoClientAuth lets a key provider listening beyond
	// loopback serve callers without client certificates.
	insecureNoClientAuth bool
	maxPerClient         int
}

func parseKeyprovider(args []string, stderr io.Writer) (keyproviderFlags, error) {
	fs := flag.NewFlagSet("shroud keyprovider", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f keyproviderFlags
	fs.StringVar(&f.listen, "listen", "127.0.0.1:50051", "address to serve the ocicrypt key-provider gRPC protocol on")
	fs.StringVar(&f.dataDir, "data-dir", config.Default().DataDir, "directory of the identity (and of the trust documents' state)")
	fs.StringVar(&f.identity, "identity", "", "shroud's private key file, or pkcs11:<ocicrypt PKCS#11 key file> for a key pair in a token (default <data-dir>/identity.pem, generated on first start)")
	fs.StringVar(&f.configPath, "config", "", "shroud's YAML config: its policy's deny rules, trust and audit-log settings apply")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "PEM certificate (chain) to serve gRPC over TLS with; needs --tls-key")
	fs.StringVar(&f.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&f.clientCA, "client-ca", "", "PEM CA certificates: every caller must present a client certificate they signed (needs --tls-cert)")
	fs.StringVar(&f.name, "name", keyprovider.DefaultName, "the provider name recipients use (provider:NAME[:REPOSITORY])")
	fs.StringVar(&f.level, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.format, "log-format", "text", "text (key=value) or json (one object a line)")
	fs.StringVar(&f.auditLog, "audit-log", "", "file to append audit events (every unwrap, refused wraps) to (config audit-log)")
	fs.BoolVar(&f.insecureNoClientAuth, "insecure-no-client-auth", false,
		"serve callers without client certificates on an address beyond loopback: anyone who reaches it can unwrap (refused without this flag or --client-ca)")
	fs.IntVar(&f.maxPerClient, "max-requests-per-client", keyprovider.DefaultMaxPerClient,
		"requests one client (client certificate, or IP address without one) may have in flight; one more waits a second, then is refused")
	if err := fs.Parse(args); err != nil {
		return f, err
	}
	if fs.NArg() > 0 {
		return f, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if (f.tlsCert == "") != (f.tlsKey == "") {
		return f, errors.New("--tls-cert and --tls-key go together")
	}
	if f.clientCA != "" && f.tlsCert == "" {
		return f, errors.New("--client-ca needs --tls-cert and --tls-key")
	}
	if f.maxPerClient < 1 {
		return f, fmt.Errorf("--max-requests-per-client %d: want at least 1", f.maxPerClient)
	}
	switch {
	case f.insecureNoClientAuth && f.clientCA != "":
		return f, errors.New("--insecure-no-client-auth and --client-ca contradict each other")
	case f.clientCA == "" && !f.insecureNoClientAuth && !loopbackListen(f.listen):
		return f, fmt.Errorf("--listen %s is reachable beyond loopback and no --client-ca is given: anyone who reaches it could unwrap layer keys; "+
			"give --client-ca (with --tls-cert and --tls-key) or, to serve anyway, --insecure-no-client-auth", f.listen)
	}
	if f.name == "" || strings.ContainsAny(f.name, ": \t\n") {
		return f, fmt.Errorf("--name %q: want a name without ':' or white space", f.name)
	}
	return f, nil
}

// loopbackListen says whether a listen address accepts connections from
// this machine alone: a loopback IP or "localhost". No host (":50051",
// every interface) and any other name (it may resolve to anything) are
// not.
func loopbackListen(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func keyproviderCmd(ctx context.Context, args []string, stderr io.Writer) int {
	f, err := parseKeyprovider(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "shroud keyprovider: %v\n", err)
		return 2
	}
	log, err := config.Config{LogLevel: f.level, LogFormat: f.format}.Logger(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "shroud keyprovider: %v\n", err)
		return 2
	}
	if err := runKeyprovider(ctx, f, log); err != nil {
		log.Error("shroud keyprovider stopped", "err", err)
		return 1
	}
	return 0
}

func runKeyprovider(ctx context.Context, f keyproviderFlags, log *slog.Logger) error {
	cfg := config.Default()
	if f.configPath != "" {
		var err error
		if cfg, err = config.Load(f.configPath); err != nil {
			return err
		}
	}
	cfg.DataDir = f.dataDir
	if f.identity != "" {
		cfg.Identity = f.identity
	}
	if f.auditLog != "" {
		cfg.AuditLog = f.auditLog
	}
	id, err := loadIdentity(ctx, cfg, log)
	if err != nil {
		return err
	}
	var pol *keyprovider.Policy
	if len(cfg.Policy) > 0 {
		rules := make([]keyprovider.Rule, 0, len(cfg.Policy))
		for _, r := range cfg.Policy {
			rules = append(rules, keyprovider.Rule{Pattern: r.Repositories, Deny: r.Action == string(crypto.Deny)})
		}
		if pol, err = keyprovider.NewPolicy(rules); err != nil {
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
	}
	var check keyprovider.KeyChecker
	if cfg.Trust.Source != "" {
		tc, err := keyproviderTrust(ctx, cfg, id, auditLog, log)
		if err != nil {
			return err
		}
		check = tc
	}
	var tlsCfg *tls.Config
	if f.tlsCert != "" {
		cas, err := clientCAs(f.clientCA)
		if err != nil {
			return err
		}
		if tlsCfg, err = serverTLS(f.tlsCert, f.tlsKey, cas, log); err != nil {
			return err
		}
		if cas != nil {
			tlsCfg.ClientAuth = tls.RequireAndVerifyClientCert
		}
	} else {
		log.Warn("serving the key provider without TLS: layer keys cross the network in the clear; use --tls-cert/--tls-key (and --client-ca)")
	}
	if f.insecureNoClientAuth && !loopbackListen(f.listen) {
		log.Warn("--insecure-no-client-auth: serving callers without client certificates beyond loopback; anyone who reaches the address can unwrap the layer keys the policy and trust documents allow",
			"listen", f.listen)
	}
	srv, err := keyprovider.New(keyprovider.Options{Identity: id, Name: f.name, Policy: pol, KeyCheck: check,
		RequireClientCert: f.clientCA != "", MaxPerClient: f.maxPerClient, Audit: auditLog, Logger: log})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return err
	}
	g := keyprovider.GRPCServer(srv, tlsCfg)
	context.AfterFunc(ctx, g.GracefulStop)
	log.Info("shroud keyprovider is serving", "listen", ln.Addr().String(), "name", f.name, "identity", id.Fingerprint(),
		"tls", tlsCfg != nil, "client_certs", f.clientCA != "", "max_requests_per_client", f.maxPerClient, "policy_rules", len(cfg.Policy), "trust", cfg.Trust.Source != "")
	if err := g.Serve(ln); err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

// keyproviderTrust is serve's trust checker for the key provider: the
// same documents, refreshed the same way, the identity the key checked.
// An oci: source would need an upstream the key provider has not.
func keyproviderTrust(ctx context.Context, cfg config.Config, id *crypto.Identity, auditLog *audit.Logger, log *slog.Logger) (keyprovider.KeyChecker, error) {
	if strings.HasPrefix(cfg.Trust.Source, "oci:") {
		return nil, errors.New("trust.source: shroud keyprovider reads a directory or an https:// URL, not oci:")
	}
	keys, err := crypto.NewKeyring(id, nil)
	if err != nil {
		return nil, err
	}
	// Only the grace periods are read from this policy.
	var rules []crypto.Rule
	for _, r := range policyRules(cfg) {
		c := crypto.Rule{Pattern: r.Repositories, Action: crypto.Action(r.Action)}
		if c.Action == crypto.Encrypt {
			c.Recipients = &crypto.Recipients{}
		}
		rules = append(rules, c)
	}
	pol, err := crypto.NewPolicy(rules)
	if err != nil {
		return nil, err
	}
	return trustChecker(ctx, cfg, nil, pol, keys, nil, auditLog, log)
}

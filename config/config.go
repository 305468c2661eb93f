// Package config is shroud's configuration: a YAML file whose keys are the
// long names of the command-line flags (flags win over the file).
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is everything `shroud serve` needs.
type Config struct {
	// Listen is the address shroud serves the distribution API on.
	// Default ":5000".
	Listen string `yaml:"listen"`
	// Upstream is the registry behind shroud, http:// or https://. Empty
	// runs an embedded distribution v3 registry storing under
	// DataDir/registry, on a loopback port of its own.
	Upstream string `yaml:"upstream"`
	// Upstreams maps an origin registry host to the registry that serves
	// it when shroud is containerd's mirror: containerd sends ?ns=<origin
	// host> with every request. An origin not listed uses Upstream.
	Upstreams map[string]string `yaml:"upstreams"`
	// DataDir holds shroud's identity key pair, the embedded registry's
	// storage and the spool where concurrent pulls of one blob share an
	// upstream fetch (unlinked files). Default "./shroud-data".
	DataDir string `yaml:"data-dir"`
	// Identity is the private key file of shroud's own key pair, or
	// "pkcs11:<ocicrypt PKCS#11 key file>" for a key pair in a PKCS#11
	// token (loaded through the modules PKCS11 allows; nothing of it is
	// written to DataDir). Empty means DataDir/identity.pem, generated on
	// first start.
	Identity string `yaml:"identity"`
	// PreviousIdentities are the private key files of identities Identity
	// replaces (identity rotation): they unwrap and open seals, nothing is
	// wrapped or sealed for them, until `shroud rotate identity` has
	// moved every image to Identity. A key in a token cannot be one.
	PreviousIdentities []string `yaml:"previous-identities"`
	// Recipients are the keys every layer is wrapped for besides the
	// identity, in skopeo's --encryption-key form ("jwe:<public key file>").
	Recipients []string `yaml:"recipient"`
	// DecryptionKeys are extra private key files ("file" or
	// "file:password") shroud may unwrap layers with that it did not
	// encrypt itself.
	DecryptionKeys []string `yaml:"decryption-key"`
	// Policy is an ordered list of rules; the first whose repositories
	// glob matches a repository decides for it, and a repository no rule
	// matches is denied. Recipients (the flags) add a last rule: encrypt
	// "**" for them. With neither, every repository is encrypted for
	// shroud's identity alone.
	Policy []Rule `yaml:"policy"`
	// KeyProviders are ocicrypt key providers by name, for provider:<name>
	// recipients and for unwrapping layers they wrapped. Those of the file
	// $OCICRYPT_KEYPROVIDER_CONFIG are added (these win on a name clash).
	KeyProviders map[string]KeyProvider `yaml:"key-providers"`
	// PKCS11 says which PKCS#11 modules pkcs11 key files may load.
	PKCS11 PKCS11 `yaml:"pkcs11"`
	// LogLevel is debug, info, warn or error. Default "info".
	LogLevel string `yaml:"log-level"`
	// LogFormat is "text" (logfmt key=value lines) or "json" (one JSON
	// object a line, for a log pipeline). Default "text".
	LogFormat string `yaml:"log-format"`
	// Tracing exports OpenTelemetry traces over OTLP/HTTP, where the
	// OTEL_EXPORTER_OTLP_* environment says (the SDK reads it). Off by
	// default.
	Tracing Tracing `yaml:"tracing"`
	// CacheEntries bounds each table of the in-process mapping cache.
	// Default 100000.
	CacheEntries int `yaml:"cache-entries"`
	// MetricsListen is the address shroud serves Prometheus metrics on,
	// at /metrics, apart from the registry API. Empty: none.
	MetricsListen string `yaml:"metrics-listen"`
	// AuditLog is where the audit log goes: a file (appended to, created
	// mode 0600) or "-" for stdout. One JSON line per key decision (a
	// refused wrap or unwrap, a trust refresh, a job step, an admin
	// action), apart from the access log, naming keys by id and never
	// holding key material. Empty: none.
	AuditLog string `yaml:"audit-log"`
	// EncryptOnly makes every encrypt rule encrypt-only (Rule.EncryptOnly):
	// an edge that holds no key for what it stored. Default false.
	EncryptOnly bool `yaml:"encrypt-only"`
	// UploadTTL is how long an idle upload session is kept. Default 1h.
	UploadTTL time.Duration `yaml:"upload-ttl"`
	// StallTimeout is how long a response (a blob pull) or a request body
	// (an upload) may make no progress before shroud cuts it; it bounds
	// no stream's length. 0: none. Default 2m.
	StallTimeout time.Duration `yaml:"stall-timeout"`
	// IdleTimeout is how long a client connection is kept open with no
	// request on it. 0: for ever. Default 2m.
	IdleTimeout time.Duration `yaml:"idle-timeout"`
	// DrainTimeout is how long, after SIGTERM, the requests in flight
	// (pulls, uploads) get to finish before shroud cuts them and exits;
	// /readyz answers 503 from the signal on. Default 30s.
	DrainTimeout time.Duration `yaml:"drain-timeout"`
	// DrainDelay is how long after SIGTERM shroud goes on taking new
	// requests (while /readyz says 503) before it stops listening: the
	// time a load balancer takes to see it go (Kubernetes: an endpoints
	// update, a few seconds). Default 0.
	DrainDelay time.Duration `yaml:"drain-delay"`
	// Shared is the shared tier replicas keep their mappings and upload
	// ledger in. Empty: each replica keeps its own, in memory.
	Shared Shared `yaml:"shared"`
	// Trust is the signed allow and deny lists keys are checked against
	// before shroud wraps for them or unwraps with them.
	Trust Trust `yaml:"trust"`
	// MaxStreams bounds the blob streams (blob GETs, upload requests with
	// a body) served at once; beyond it a client is answered 429
	// TOOMANYREQUESTS with a Retry-After. 0: no bound. Default 256.
	MaxStreams int `yaml:"max-streams"`
	// TLSCert and TLSKey are the PEM certificate (chain) and private key
	// shroud serves HTTPS with; both or neither. Empty: plain HTTP. The
	// files are read again when they change (a rotated Kubernetes secret).
	TLSCert string `yaml:"tls-cert"`
	TLSKey  string `yaml:"tls-key"`
	// UpstreamCA is a PEM file of CA certificates trusted for https://
	// upstreams besides the system's roots (a private registry's CA).
	UpstreamCA string `yaml:"upstream-ca"`
	// UpstreamAuthFile is a Docker config.json (a Kubernetes
	// dockerconfigjson secret) whose "auths" shroud reads upstreams with,
	// by host, when a client sends no credentials of its own: containerd
	// asks a mirror anonymously. Only reads (GET, HEAD): writes always
	// need the client's own credentials. Under Auth shroud uses them for
	// every request, writes included.
	UpstreamAuthFile string `yaml:"upstream-auth-file"`
	// Auth has shroud authenticate clients itself and authorize them by
	// the policy rules' pull and push grants, instead of letting the
	// upstream decide with the client's own credentials. The upstream is
	// then asked with shroud's credentials (UpstreamAuthFile, for writes
	// too) or none; the client's never leave shroud.
	Auth Auth `yaml:"auth"`
	// Admin is the admin API: the key-rotation jobs started, watched and
	// cancelled over HTTP, on a listener of its own.
	Admin Admin `yaml:"admin"`
}

// Admin is the admin API (package admin).
type Admin struct {
	// Listen is the address the admin API is served on, apart from the
	// registry API (with tls-cert, over TLS too). Empty: none.
	Listen string `yaml:"listen"`
	// TokenFile holds the bearer token every admin request must carry;
	// required with Listen. A file that is missing, empty or readable by
	// every user is refused at start.
	TokenFile string `yaml:"token-file"`
	// AccessRequests serves the access-request API (package access):
	// anyone may submit a signed request for a key to become a recipient
	// under /shroud/v1/access on the registry listener; owners list and
	// decide them through the admin API, which it needs. Off by default.
	AccessRequests bool `yaml:"access-requests"`
	// AccessAutoApprove approves, at submission, a request whose key the
	// trust documents' signed allow list names for every repository it
	// asks for (none of them encrypt-only), and starts its rewrap: the
	// allow list is the owners' access control list, signed offline.
	// Needs access-requests and trust.source. Off by default.
	AccessAutoApprove bool `yaml:"access-auto-approve"`
	// Owners may list and decide access requests with their own
	// credentials (auth: htpasswd, jwt, client-ca) instead of the token:
	// grants as a rule's pull and push take them ("user:<name>",
	// "group:<name>", "subject:<certificate subject>"). Empty: the token
	// alone.
	Owners []string `yaml:"owners"`
}

// Auth is shroud's own authentication: any of htpasswd, jwt and
// client-ca. None: the upstream decides who gets plaintext.
type Auth struct {
	// Htpasswd is a file of user:bcrypt-hash lines (htpasswd -B) checked
	// against Basic credentials; read again when it changes.
	Htpasswd string `yaml:"htpasswd"`
	// JWT verifies bearer tokens.
	JWT *JWT `yaml:"jwt"`
	// ClientCA is a PEM file of the CAs whose client certificates
	// authenticate (mTLS; needs tls-cert). The certificate's subject is
	// the principal.
	ClientCA string `yaml:"client-ca"`
	// Challenge is the scheme of the 401 challenge, "basic" or "bearer";
	// empty: basic with htpasswd, else bearer.
	Challenge string `yaml:"challenge"`
}

// Enabled says whether any method is configured.
func (a Auth) Enabled() bool { return a.Htpasswd != "" || a.JWT != nil || a.ClientCA != "" }

// JWT configures bearer token verification.
type JWT struct {
	// Issuer every token's iss must equal; required.
	Issuer string `yaml:"issuer"`
	// Audience that must be among a token's aud; required.
	Audience string `yaml:"audience"`
	// JWKS is the key set tokens are signed with: a file or an https://
	// URL (fetched again every Refresh, and on an unknown key id).
	JWKS string `yaml:"jwks"`
	// Refresh is how often a JWKS URL is fetched again. Default 5m.
	Refresh time.Duration `yaml:"refresh"`
	// UsernameClaim names the user. Default "sub".
	UsernameClaim string `yaml:"username-claim"`
	// GroupsClaim holds the user's groups. Default "groups".
	GroupsClaim string `yaml:"groups-claim"`
	// Realm and Service go into the bearer challenge: the token endpoint
	// clients get tokens from, and for what. Defaults: the issuer, the
	// audience.
	Realm   string `yaml:"realm"`
	Service string `yaml:"service"`
}

// KeyProvider is a key provider, as ocicrypt's key-provider config has it:
// a command, or a gRPC address with optional TLS.
type KeyProvider struct {
	Cmd *struct {
		Path string   `yaml:"path"`
		Args []string `yaml:"args"`
	} `yaml:"cmd"`
	Grpc    string `yaml:"grpc"`
	GrpcTLS *struct {
		RootCAFile         string `yaml:"root-ca-file"`
		CertFile           string `yaml:"cert-file"`
		KeyFile            string `yaml:"key-file"`
		ServerName         string `yaml:"server-name"`
		InsecureSkipVerify bool   `yaml:"insecure-skip-verify"`
	} `yaml:"grpc-tls"`
}

// PKCS11 is the PKCS#11 configuration, as ocicrypt's.
type PKCS11 struct {
	// AllowedModulePaths are the modules (absolute paths) a key file may
	// name; a key file naming another fails at start-up.
	AllowedModulePaths []string `yaml:"allowed-module-paths"`
	// ModuleDirectories are searched for a module named without a path.
	ModuleDirectories []string `yaml:"module-directories"`
}

// Rule is one policy rule.
type Rule struct {
	// Repositories is a glob over repository names: "*" within one path
	// segment, "**" across segments ("team-a/**", "**").
	Repositories string `yaml:"repositories"`
	// Action is encrypt, passthrough (a plain reverse proxy) or deny.
	Action string `yaml:"action"`
	// Recipients of an encrypt rule, in skopeo's --encryption-key form;
	// shroud's identity is always one.
	Recipients []string `yaml:"recipients"`
	// Layers an encrypt rule encrypts, by index as skopeo's
	// --encrypt-layer takes them (negative counts from the end); empty:
	// all. The others are stored in plaintext.
	Layers []int `yaml:"layers"`
	// Platforms ("os/arch[/variant]") an encrypt rule encrypts images of;
	// empty: all. Images of other platforms are stored in plaintext.
	Platforms []string `yaml:"platforms"`
	// AcceptFrom (encrypt rules): repository globs whose images, sealed by
	// shroud for those repositories and copied here straight at the
	// upstream (a promotion), this rule's repositories may open. By
	// default a repository opens only what was sealed for it; a source a
	// deny rule covers is never accepted.
	AcceptFrom []string `yaml:"accept-from"`
	// AcceptForeign (encrypt rules): open with shroud's identity layers no
	// valid seal of shroud's vouches for (images another tool encrypted to
	// shroud's public key, or an older shroud sealed). Default false:
	// anyone can encrypt to a public key.
	AcceptForeign bool `yaml:"accept-foreign"`
	// DecryptionKeys (encrypt rules): the decryption-key files (or
	// provider:<name>) that may open images encrypted elsewhere in this
	// rule's repositories; empty: every configured decryption key.
	DecryptionKeys []string `yaml:"decryption-keys"`
	// VerifyRanges (encrypt rules): answer a Range request with the whole
	// blob, verified, instead of an unverified decrypted range.
	VerifyRanges bool `yaml:"verify-ranges"`
	// VerifyBeforeRelease (encrypt rules): release no plaintext byte of a
	// blob before its HMAC and digest verified (the ciphertext is fetched
	// whole first: in memory when small, spooled to data-dir otherwise).
	VerifyBeforeRelease bool `yaml:"verify-before-release"`
	// DedupScope (encrypt rules): how far a layer pushed to one
	// repository answers a HEAD or a mount in another: "repository"
	// (never across repositories), "rule" (the repositories this rule
	// matches; the default) or "global" (the repositories of every rule
	// that says global too).
	DedupScope string `yaml:"dedup-scope"`
	// ArtifactTypes (passthrough and deny rules) narrow the rule to the
	// manifests pushed with one of these artifact types (a manifest's
	// artifactType, else its config's media type) to the repositories
	// it names, ahead of the encrypt rule that covers them otherwise: a
	// passthrough rule keeps such artifacts (signatures, SBOMs,
	// attestations) readable upstream, their subject still the
	// encrypted image's; a deny rule refuses them.
	ArtifactTypes []string `yaml:"artifact-types"`
	// Pull and Push are who may pull from and push to this rule's
	// repositories when shroud authenticates clients itself (auth):
	// "user:<name>", "group:<name>", "subject:<certificate subject>"
	// (names may hold * wildcards), "authenticated" or "anonymous". With
	// neither list every authenticated client may pull and push; once
	// either is set, only what the lists name. Push implies pull.
	Pull []string `yaml:"pull"`
	Push []string `yaml:"push"`
	// TrustGrace (encrypt rules): how long after the trust documents
	// froze (an expired timestamp, snapshot or targets) shroud still
	// unwraps layer keys for this rule's repositories; wrapping stops at
	// once. Default 0: unwrapping stops at once too. The rule of every
	// repository ("**") gets none unless it says so.
	TrustGrace time.Duration `yaml:"trust-grace"`
	// EncryptOnly (encrypt rules): shroud keeps no key that opens this
	// rule's images. Layer keys are wrapped for the recipients alone (not
	// shroud's identity), no original manifest is sealed, and pulls
	// through shroud get the ciphertext, with the upstream's digests
	// (EncryptOnlyPulls). Needs at least one recipient. Default false,
	// or the top-level encrypt-only.
	EncryptOnly bool `yaml:"encrypt-only"`
	// EncryptOnlyPulls (encrypt-only rules): "ciphertext" (the default:
	// manifests and blobs as the upstream holds them, by tag or by their
	// upstream digests) or "refuse" (403).
	EncryptOnlyPulls string `yaml:"encrypt-only-pulls"`
}

// Tracing configures OpenTelemetry traces.
type Tracing struct {
	// Enabled exports traces. Default false.
	Enabled bool `yaml:"enabled"`
	// SampleRatio is the share of new traces sampled (0 to 1); a trace a
	// client started keeps the client's decision. Zero: the SDK's
	// OTEL_TRACES_SAMPLER, else every trace.
	SampleRatio float64 `yaml:"sample-ratio"`
}

// Trust is where the signed trust documents (TUF: the allow and deny
// lists of keys) come from. Empty Source: none, and keys are checked
// against their own validity alone (X.509 NotAfter, OpenPGP expiry).
type Trust struct {
	// Source is a directory, an https:// URL, or oci:<repository>[:<tag>]
	// (default tag "trust"), an artifact in the default upstream, read
	// with shroud's credentials for it: every replica and every site then
	// sees the same documents.
	Source string `yaml:"source"`
	// Root is the file of the initial trusted root.json (the offline
	// root's first version), never taken from the network; once a
	// refresh succeeds, the rotated root persisted in data-dir is used.
	Root string `yaml:"root"`
	// Refresh is how often the documents are fetched. Default 5m.
	Refresh time.Duration `yaml:"refresh"`
}

// Shared is a Redis or Valkey deployment (go-redis' universal client:
// one address is a single server, several a cluster, a MasterName a
// sentinel set). Keys are keyed hashes and values are sealed with keys
// derived from shroud's identity: the server learns no digest, name or
// key. Run it with maxmemory-policy allkeys-lru (README "Replicas").
type Shared struct {
	// Addrs are host:port addresses. Empty: no shared tier.
	Addrs []string `yaml:"addrs"`
	// MasterName is the sentinel master's name, for a sentinel set.
	MasterName string `yaml:"master-name"`
	// Username and PasswordFile are the ACL user and a file holding its
	// password (the password never sits in the config).
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password-file"`
	// DB is the database number (single server and sentinel only).
	DB int `yaml:"db"`
	// TLS connects with TLS, trusting the system roots and CA (a PEM
	// file) if set.
	TLS bool   `yaml:"tls"`
	CA  string `yaml:"ca"`
	// Prefix starts every key. Default "shroud:".
	Prefix string `yaml:"prefix"`
	// TTL is how long an entry lives after its last write. Default 720h.
	TTL time.Duration `yaml:"ttl"`
	// Timeout bounds each call; a slower server is treated as down for
	// that call. Default 500ms.
	Timeout time.Duration `yaml:"timeout"`
}

// Enabled says whether a shared tier is configured.
func (s Shared) Enabled() bool { return len(s.Addrs) > 0 }

// Default returns the configuration with every default filled in.
func Default() Config {
	return Config{
		Listen:       ":5000",
		DataDir:      "./shroud-data",
		LogLevel:     "info",
		CacheEntries: 100_000,
		UploadTTL:    time.Hour,
		StallTimeout: 2 * time.Minute,
		IdleTimeout:  2 * time.Minute,
		MaxStreams:   256,
		DrainTimeout: 30 * time.Second,
	}
}

// Load reads a YAML file over the defaults. Unknown keys are an error.
func Load(path string) (Config, error) {
	c := Default()
	b, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Validate checks the configuration without touching any file.
func (c Config) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("listen %q: %w", c.Listen, err))
	}
	if c.Upstream != "" {
		if err := validUpstream(c.Upstream); err != nil {
			errs = append(errs, fmt.Errorf("upstream %q: %w", c.Upstream, err))
		}
	}
	for host, u := range c.Upstreams {
		if err := validUpstream(u); err != nil || host == "" {
			errs = append(errs, fmt.Errorf("upstreams[%q] = %q: want an origin host mapped to http://host[:port] or https://host[:port]", host, u))
		}
	}
	if c.Trust.Source != "" && c.Trust.Root == "" {
		errs = append(errs, fmt.Errorf("trust: source %q needs root, the initial root.json file (shroud trust init writes it)", c.Trust.Source))
	}
	if strings.HasPrefix(c.Trust.Source, "http://") {
		errs = append(errs, fmt.Errorf("trust: source %q: the documents are fetched over https:// only", c.Trust.Source))
	}
	if c.Trust.Refresh < 0 {
		errs = append(errs, fmt.Errorf("trust: refresh %v is negative", c.Trust.Refresh))
	}
	for i, r := range c.Policy {
		if r.TrustGrace < 0 {
			errs = append(errs, fmt.Errorf("policy rule %d (%s): trust-grace %v is negative", i, r.Repositories, r.TrustGrace))
		}
		eo := r.EncryptOnly || c.EncryptOnly
		switch r.EncryptOnlyPulls {
		case "", "ciphertext", "refuse":
		default:
			errs = append(errs, fmt.Errorf("policy rule %d (%s): encrypt-only-pulls %q: want ciphertext or refuse", i, r.Repositories, r.EncryptOnlyPulls))
		}
		if r.EncryptOnlyPulls != "" && !eo {
			errs = append(errs, fmt.Errorf("policy rule %d (%s): encrypt-only-pulls belongs to encrypt-only rules", i, r.Repositories))
		}
		switch r.Action {
		case "encrypt":
			if eo && len(r.Recipients) == 0 {
				errs = append(errs, fmt.Errorf("policy rule %d (%s): an encrypt-only rule needs recipients: shroud's identity is not one, and nothing else could open its images", i, r.Repositories))
			}
			if len(r.ArtifactTypes) > 0 {
				errs = append(errs, fmt.Errorf("policy rule %d (%s): artifact-types narrow passthrough and deny rules (put one ahead of this rule): an encrypt rule covers every artifact of its repositories", i, r.Repositories))
			}
			if eo && (r.AcceptForeign || len(r.AcceptFrom) > 0 || len(r.DecryptionKeys) > 0 || r.VerifyRanges || r.VerifyBeforeRelease) {
				errs = append(errs, fmt.Errorf("policy rule %d (%s): accept-foreign, accept-from, decryption-keys, verify-ranges and verify-before-release are about decrypting, which an encrypt-only rule never does", i, r.Repositories))
			}
		case "passthrough", "deny":
			if r.EncryptOnly {
				errs = append(errs, fmt.Errorf("policy rule %d (%s): encrypt-only belongs to encrypt rules", i, r.Repositories))
			}
			if len(r.Recipients)+len(r.Layers)+len(r.Platforms)+len(r.AcceptFrom)+len(r.DecryptionKeys) > 0 || r.AcceptForeign || r.VerifyRanges || r.VerifyBeforeRelease || r.DedupScope != "" {
				errs = append(errs, fmt.Errorf("policy rule %d (%s): recipients, layers, platforms, accept-from, accept-foreign, decryption-keys, verify-ranges, verify-before-release and dedup-scope belong to encrypt rules", i, r.Repositories))
			}
		default:
			errs = append(errs, fmt.Errorf("policy rule %d (%s): action %q: want encrypt, passthrough or deny", i, r.Repositories, r.Action))
		}
		if r.Repositories == "" {
			errs = append(errs, fmt.Errorf("policy rule %d: no repositories", i))
		}
	}
	if !c.Auth.Enabled() {
		for i, r := range c.Policy {
			if len(r.Pull)+len(r.Push) > 0 {
				errs = append(errs, fmt.Errorf("policy rule %d (%s): pull and push grants need shroud's own authentication (auth: htpasswd, jwt or client-ca)", i, r.Repositories))
			}
		}
	}
	if c.Auth.ClientCA != "" && c.TLSCert == "" {
		errs = append(errs, errors.New("auth.client-ca (client certificates) needs tls-cert and tls-key"))
	}
	if j := c.Auth.JWT; j != nil && (j.Issuer == "" || j.Audience == "" || j.JWKS == "") {
		errs = append(errs, errors.New("auth.jwt needs issuer, audience and jwks"))
	}
	switch c.Auth.Challenge {
	case "", "basic", "bearer":
	default:
		errs = append(errs, fmt.Errorf("auth.challenge %q: want basic or bearer", c.Auth.Challenge))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("data-dir is empty"))
	}
	if _, err := c.Logger(io.Discard); err != nil {
		errs = append(errs, err)
	}
	if c.CacheEntries < 0 {
		errs = append(errs, fmt.Errorf("cache-entries %d is negative", c.CacheEntries))
	}
	if c.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			errs = append(errs, fmt.Errorf("metrics-listen %q: %w", c.MetricsListen, err))
		}
	}
	if c.Admin.AccessAutoApprove && (!c.Admin.AccessRequests || c.Trust.Source == "") {
		errs = append(errs, errors.New("admin.access-auto-approve approves by the trust documents' allow list: it needs admin.access-requests and trust.source"))
	}
	if len(c.Admin.Owners) > 0 && (!c.Admin.AccessRequests || !c.Auth.Enabled()) {
		errs = append(errs, errors.New("admin.owners decide access requests with shroud's own credentials: it needs admin.access-requests and auth (htpasswd, jwt or client-ca)"))
	}
	if c.Admin.AccessRequests && c.Admin.Listen == "" {
		errs = append(errs, errors.New("admin.access-requests: owners decide requests through the admin API: set admin.listen and admin.token-file"))
	}
	if c.Admin.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Admin.Listen); err != nil {
			errs = append(errs, fmt.Errorf("admin.listen %q: %w", c.Admin.Listen, err))
		}
		if c.Admin.Listen == c.Listen || c.Admin.Listen == c.MetricsListen {
			errs = append(errs, fmt.Errorf("admin.listen %q: the admin API needs a listener of its own", c.Admin.Listen))
		}
		if c.Admin.TokenFile == "" {
			errs = append(errs, errors.New("admin.listen needs admin.token-file, the bearer token's file"))
		}
	} else if c.Admin.TokenFile != "" {
		errs = append(errs, errors.New("admin.token-file without admin.listen"))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("tls-cert and tls-key go together: give both or neither"))
	}
	if c.Tracing.SampleRatio < 0 || c.Tracing.SampleRatio > 1 {
		errs = append(errs, fmt.Errorf("tracing.sample-ratio %v: want 0 to 1", c.Tracing.SampleRatio))
	}
	if c.UploadTTL < 0 {
		errs = append(errs, fmt.Errorf("upload-ttl %s is negative", c.UploadTTL))
	}
	if c.StallTimeout < 0 {
		errs = append(errs, fmt.Errorf("stall-timeout %s is negative (0 turns it off)", c.StallTimeout))
	}
	if c.DrainTimeout <= 0 {
		errs = append(errs, fmt.Errorf("drain-timeout %s must be positive", c.DrainTimeout))
	}
	if c.DrainDelay < 0 {
		errs = append(errs, fmt.Errorf("drain-delay %s is negative", c.DrainDelay))
	}
	if c.Shared.TTL < 0 || c.Shared.Timeout < 0 {
		errs = append(errs, fmt.Errorf("shared: ttl and timeout must not be negative"))
	}
	if !c.Shared.Enabled() && (c.Shared.MasterName != "" || c.Shared.PasswordFile != "" || c.Shared.TLS) {
		errs = append(errs, fmt.Errorf("shared: settings without addrs"))
	}
	if c.IdleTimeout < 0 {
		errs = append(errs, fmt.Errorf("idle-timeout %s is negative (0 turns it off)", c.IdleTimeout))
	}
	if c.MaxStreams < 0 {
		errs = append(errs, fmt.Errorf("max-streams %d is negative (0 turns the bound off)", c.MaxStreams))
	}
	return errors.Join(errs...)
}

func validUpstream(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("want http://host[:port] or https://host[:port]")
	}
	return nil
}

// Logger is the logger the config asks for, writing to w.
func (c Config) Logger(w io.Writer) (*slog.Logger, error) {
	level, err := c.Level()
	if err != nil {
		return nil, err
	}
	o := &slog.HandlerOptions{Level: level}
	switch c.LogFormat {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, o)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, o)), nil
	}
	return nil, fmt.Errorf("log-format %q: want text or json", c.LogFormat)
}

// Level parses LogLevel.
func (c Config) Level() (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return 0, fmt.Errorf("log-level %q: want debug, info, warn or error", c.LogLevel)
	}
	return l, nil
}

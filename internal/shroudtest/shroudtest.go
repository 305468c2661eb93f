// Package shroudtest starts what shroud's tests need: real upstream
// registries (distribution v3 embedded, go-containerregistry's registry)
// and shroud in front of them, all on 127.0.0.1 and torn down with the test.
package shroudtest

import (
	"context"
	"crypto/tls"
	"go.opentelemetry.io/otel/trace"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	keyproviderconfig "github.com/containers/ocicrypt/config/keyprovider-config"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/registry"
	"go.opentelemetry.io/otel/metric"

	"github.com/shroud-oci/shroud/audit"
	"github.com/shroud-oci/shroud/auth"
	"github.com/shroud-oci/shroud/cache"
	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/embedded"
	"github.com/shroud-oci/shroud/proxy"
	"github.com/shroud-oci/shroud/proxy/upstream"
)

// Upstream is a registry for shroud to stand in front of.
type Upstream struct {
	Name string
	URL  string // http://127.0.0.1:port
	// Dir is the distribution storage root, empty for registries that
	// keep blobs elsewhere.
	Dir string
}

// Host is the upstream's host:port.
func (u Upstream) Host() string { return strings.TrimPrefix(u.URL, "http://") }

// Distribution starts an embedded distribution v3 registry.
func Distribution(t testing.TB) Upstream {
	t.Helper()
	dir := t.TempDir()
	reg, err := embedded.Start(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close(context.Background()) })
	return Upstream{Name: "distribution", URL: reg.URL, Dir: dir}
}

// GGCR starts go-containerregistry's registry (which does not check that a
// manifest's blobs exist) with referrers support.
func GGCR(t testing.TB) Upstream {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0)), registry.WithReferrersSupport(true)))
	t.Cleanup(srv.Close)
	return Upstream{Name: "ggcr", URL: srv.URL}
}

// Upstreams starts one of each upstream.
func Upstreams(t testing.TB) []Upstream { return []Upstream{Distribution(t), GGCR(t)} }

// Shroud is shroud running in front of an upstream.
type Shroud struct {
	URL     string
	Keyring *crypto.Keyring
	// DataDir holds identity.pem and identity.pub.pem.
	DataDir string
	// Handler is the proxy the server runs, for the jobs tests run on it.
	Handler *proxy.Handler
}

// Host is shroud's host:port.
func (s Shroud) Host() string {
	return strings.TrimPrefix(strings.TrimPrefix(s.URL, "http://"), "https://")
}

// Option changes how Start builds shroud.
type Option func(*options)

type options struct {
	providers  map[string]keyproviderconfig.KeyProviderAttrs
	p11Modules []string
	mirrors    map[string]Upstream
	rules      []Rule
	recipients []crypto.Recipient
	keys       []crypto.DecryptionKey
	handler    func(http.Handler) http.Handler
	meter      metric.Meter
	auth       *auth.Config
	upAuth     authn.Authenticator
	tls        *tls.Config
	spool      string
	ledger     cache.Ledger
	cache      cache.Store
	keyCheck   proxy.KeyChecker
	grants     proxy.Grants
	tp         trace.TracerProvider
	now        func() time.Time
	audit      *audit.Logger
}

// WithKeyCheck has shroud ask c about every key it wraps for or unwraps
// with (proxy.Options.KeyCheck).
func WithKeyCheck(c proxy.KeyChecker) Option {
	return func(o *options) { o.keyCheck = c }
}

// WithGrants has shroud add g's recipients to its rules'
// (proxy.Options.Grants).
func WithGrants(g proxy.Grants) Option {
	return func(o *options) { o.grants = g }
}

// WithTracerProvider has shroud trace with tp.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(o *options) { o.tp = tp }
}

// WithClock has shroud check key validity at now (proxy.Options.Now).
func WithClock(now func() time.Time) Option {
	return func(o *options) { o.now = now }
}

// WithAudit has shroud write its audit log to l.
func WithAudit(l *audit.Logger) Option {
	return func(o *options) { o.audit = l }
}

// WithLedger gives shroud a shared upload ledger (replicas that share
// one see each other's upload steps, as with the Redis tier).
func WithLedger(l cache.Ledger) Option {
	return func(o *options) { o.ledger = l }
}

// WithCache has shroud's default upstream use store for its mappings
// (replicas that share one share what they learned, as with the Redis
// tier).
func WithCache(store cache.Store) Option {
	return func(o *options) { o.cache = store }
}

// WithSpoolDir has shroud spool shared fetches and held blobs in dir.
func WithSpoolDir(dir string) Option {
	return func(o *options) { o.spool = dir }
}

// WithAuth has shroud authenticate clients itself with c; each policy
// rule's Pull and Push are its grants.
func WithAuth(c auth.Config) Option {
	return func(o *options) { o.auth = &c }
}

// WithOwnUpstreamCredentials has shroud ask the upstream with a, for every
// request (as under shroud's own authentication).
func WithOwnUpstreamCredentials(a authn.Authenticator) Option {
	return func(o *options) { o.upAuth = a }
}

// WithServerTLS serves shroud over TLS with c (its Certificates, and
// ClientCAs for client certificates); Shroud.URL is then https://.
func WithServerTLS(c *tls.Config) Option {
	return func(o *options) { o.tls = c }
}

// WithRecipients adds recipients to every layer.
func WithRecipients(r ...crypto.Recipient) Option {
	return func(o *options) { o.recipients = append(o.recipients, r...) }
}

// Rule is a policy rule for WithPolicy, with its recipients not yet
// compiled.
type Rule struct {
	Pattern    string
	Action     crypto.Action
	Recipients []crypto.Recipient
	Layers     []int
	Platforms  []string
	// AcceptFrom, AcceptForeign, DecryptionKeys and VerifyRanges are
	// crypto.Rule's.
	AcceptFrom     []string
	AcceptForeign  bool
	DecryptionKeys []string
	VerifyRanges   bool
	// VerifyBeforeRelease and DedupScope are crypto.Rule's too.
	VerifyBeforeRelease bool
	DedupScope          crypto.DedupScope
	// EncryptOnly and RefusePulls are crypto.Rule's: the rule's set is
	// compiled WithoutIdentity.
	EncryptOnly, RefusePulls bool
	// ArtifactTypes is crypto.Rule's.
	ArtifactTypes []string
	// Pull and Push are the rule's grants under WithAuth.
	Pull, Push []string
}

// WithPolicy sets the policy's rules (before the "**" rule of
// WithRecipients, if any, as the command line does).
func WithPolicy(rules ...Rule) Option {
	return func(o *options) { o.rules = append(o.rules, rules...) }
}

// WithDecryptionKeys adds keys shroud may unwrap with.
func WithDecryptionKeys(k ...crypto.DecryptionKey) Option {
	return func(o *options) { o.keys = append(o.keys, k...) }
}

// WithMirror serves origin (containerd's ?ns=) from up.
func WithMirror(origin string, up Upstream) Option {
	return func(o *options) {
		if o.mirrors == nil {
			o.mirrors = map[string]Upstream{}
		}
		o.mirrors[origin] = up
	}
}

// WithKeyProviders configures key providers.
func WithKeyProviders(p map[string]keyproviderconfig.KeyProviderAttrs) Option {
	return func(o *options) { o.providers = p }
}

// WithPKCS11Modules allows PKCS#11 modules.
func WithPKCS11Modules(paths ...string) Option {
	return func(o *options) { o.p11Modules = append(o.p11Modules, paths...) }
}

// WithMiddleware wraps shroud's handler (to count or break requests).
func WithMiddleware(f func(http.Handler) http.Handler) Option {
	return func(o *options) { o.handler = f }
}

// WithMeter has shroud record its metrics with m.
func WithMeter(m metric.Meter) Option {
	return func(o *options) { o.meter = m }
}

// Start runs shroud in front of up with a fresh identity.
func Start(t testing.TB, up Upstream, opts ...Option) Shroud {
	t.Helper()
	var o options
	for _, f := range opts {
		f(&o)
	}
	dir := t.TempDir()
	id, _, err := crypto.LoadOrCreateIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	kr, err := crypto.NewKeyring(id, o.keys, crypto.WithPKCS11(o.p11Modules, nil), crypto.WithKeyProviders(o.providers))
	if err != nil {
		t.Fatal(err)
	}
	return start(t, up, kr, dir, o)
}

// StartWithKeyring runs shroud with a given keyring (a restart keeps it).
func StartWithKeyring(t testing.TB, up Upstream, kr *crypto.Keyring, dir string, mw func(http.Handler) http.Handler) Shroud {
	t.Helper()
	return start(t, up, kr, dir, options{handler: mw})
}

func backend(t testing.TB, up Upstream, own authn.Authenticator) proxy.Backend {
	t.Helper()
	var hc *http.Client
	if own != nil {
		tr, err := upstream.WithOwnCredentials(http.DefaultTransport, up.URL, own)
		if err != nil {
			t.Fatal(err)
		}
		hc = &http.Client{Transport: tr}
	}
	cl, err := upstream.New(up.URL, hc)
	if err != nil {
		t.Fatal(err)
	}
	store, err := cache.NewLRU(0)
	if err != nil {
		t.Fatal(err)
	}
	return proxy.Backend{Upstream: cl, Cache: store}
}

func start(t testing.TB, up Upstream, kr *crypto.Keyring, dir string, o options) Shroud {
	t.Helper()
	rules := o.rules
	if len(rules) == 0 || len(o.recipients) > 0 {
		rules = append(rules, Rule{Pattern: "**", Action: crypto.Encrypt, Recipients: o.recipients})
	}
	var compiled []crypto.Rule
	var grants []auth.RuleGrants
	for _, r := range rules {
		grants = append(grants, auth.RuleGrants{Pull: r.Pull, Push: r.Push})
		c := crypto.Rule{Pattern: r.Pattern, Action: r.Action, Layers: r.Layers, Platforms: r.Platforms,
			AcceptFrom: r.AcceptFrom, AcceptForeign: r.AcceptForeign, DecryptionKeys: r.DecryptionKeys, VerifyRanges: r.VerifyRanges,
			VerifyBeforeRelease: r.VerifyBeforeRelease, DedupScope: r.DedupScope, EncryptOnly: r.EncryptOnly, RefusePulls: r.RefusePulls,
			ArtifactTypes: r.ArtifactTypes}
		if r.Action == crypto.Encrypt {
			rs, err := kr.Recipients(r.Recipients)
			if err == nil && r.EncryptOnly {
				rs, err = rs.WithoutIdentity()
			}
			if err != nil {
				t.Fatal(err)
			}
			c.Recipients = rs
		}
		compiled = append(compiled, c)
	}
	policy, err := crypto.NewPolicy(compiled)
	if err != nil {
		t.Fatal(err)
	}
	def := backend(t, up, o.upAuth)
	mirrors := map[string]proxy.Backend{}
	for origin, m := range o.mirrors {
		mirrors[origin] = backend(t, m, o.upAuth)
	}
	var authenticator *auth.Authenticator
	var access *auth.Access
	if o.auth != nil {
		if authenticator, err = auth.New(*o.auth); err != nil {
			t.Fatal(err)
		}
		if access, err = auth.NewAccess(grants); err != nil {
			t.Fatal(err)
		}
	}
	var log *slog.Logger
	if os.Getenv("SHROUD_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if o.cache != nil {
		def.Cache = o.cache
	}
	h, err := proxy.New(proxy.Options{Upstream: def.Upstream, Cache: def.Cache, Mirrors: mirrors, Keyring: kr, Policy: policy, Logger: log, Meter: o.meter, SpoolDir: o.spool,
		Auth: authenticator, Access: access, Ledger: o.ledger, KeyCheck: o.keyCheck, Grants: o.grants, Now: o.now, Audit: o.audit, TracerProvider: o.tp})
	if err != nil {
		t.Fatal(err)
	}
	var handler http.Handler = h
	if o.handler != nil {
		handler = o.handler(h)
	}
	srv := httptest.NewUnstartedServer(handler)
	if o.tls != nil {
		srv.TLS = o.tls
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	return Shroud{URL: srv.URL, Keyring: kr, DataDir: dir, Handler: h}
}

// IdentityFile is the path of the identity's private key.
func (s Shroud) IdentityFile() string { return filepath.Join(s.DataDir, crypto.IdentityFile) }

// BlobFiles lists the blob data files of a distribution storage root.
func BlobFiles(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	root := filepath.Join(dir, "docker", "registry", "v2", "blobs")
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() == "data" {
			out = append(out, p)
		}
		return nil
	})
	return out
}

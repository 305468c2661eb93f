package upstream

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	lru "github.com/hashicorp/golang-lru/v2"
)

// AuthFile is the "auths" of a Docker config.json (what `docker login`
// writes and a Kubernetes dockerconfigjson secret holds): credentials by
// registry host.
type AuthFile map[string]authn.AuthConfig

// LoadAuthFile reads a Docker config.json. Only its "auths" are read;
// credential helpers are not run.
func LoadAuthFile(path string) (AuthFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("upstream-auth-file: %w", err)
	}
	var cf struct {
		Auths map[string]authn.AuthConfig `json:"auths"`
	}
	if err := json.Unmarshal(b, &cf); err != nil {
		return nil, fmt.Errorf("upstream-auth-file %s: %w", path, err)
	}
	out := AuthFile{}
	for key, a := range cf.Auths {
		if a.Username == "" && a.IdentityToken == "" && a.RegistryToken == "" {
			return nil, fmt.Errorf("upstream-auth-file %s: the entry for %q has no credentials", path, key)
		}
		out[authHost(key)] = a
	}
	return out, nil
}

// authHost is the host[:port] a config.json key names: keys may be URLs
// ("https://index.docker.io/v1/"), and Docker Hub goes by several names.
func authHost(key string) string {
	if u, err := url.Parse(key); err == nil && u.Host != "" {
		key = u.Host
	}
	key = strings.TrimSuffix(key, "/")
	switch key {
	case "docker.io", "registry-1.docker.io", "index.docker.io":
		return "index.docker.io"
	}
	return key
}

// For returns the credentials for the registry at base, if the file has
// any.
func (f AuthFile) For(base string) (authn.Authenticator, bool) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, false
	}
	a, ok := f[authHost(u.Host)]
	if !ok {
		return nil, false
	}
	return authn.FromConfig(a), true
}

// scopedTransports bounds the per-repository token transports kept.
const scopedTransports = 1024

// credentialTransport authenticates shroud itself to one upstream, for the
// read requests (GET, HEAD) that carry no Authorization of the client's:
// containerd asks a mirror it holds no credentials for anonymously. A
// request that carries the client's Authorization, and every write, go
// out as they are: a client that cannot write upstream does not write
// through shroud. Basic and token auth (Bearer, per repository scope) are
// go-containerregistry's.
type credentialTransport struct {
	base   http.RoundTripper
	reg    name.Registry
	path   string // the upstream's base path
	auth   authn.Authenticator
	mu     sync.Mutex
	byRepo *lru.Cache[string, *lazyTransport]
	// writes: every request is shroud's own (WithOwnCredentials), not
	// only the reads.
	writes bool
}

// lazyTransport is the authenticated transport of one scope, built (a
// ping and, for token auth, a token) on first use.
type lazyTransport struct {
	once sync.Once
	rt   http.RoundTripper
	err  error
}

// WithCredentials wraps base so that the reads of the upstream at baseURL
// without the client's Authorization are made with auth.
func WithCredentials(base http.RoundTripper, baseURL string, auth authn.Authenticator) (http.RoundTripper, error) {
	return withCredentials(base, baseURL, auth, false)
}

// WithOwnCredentials wraps base so that every request to the upstream at
// baseURL, writes included, is made with auth: for a shroud that
// authenticates its clients itself and never forwards their credentials.
func WithOwnCredentials(base http.RoundTripper, baseURL string, auth authn.Authenticator) (http.RoundTripper, error) {
	return withCredentials(base, baseURL, auth, true)
}

func withCredentials(base http.RoundTripper, baseURL string, auth authn.Authenticator, writes bool) (http.RoundTripper, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("upstream URL %q: %w", redactString(baseURL), redactErr(err))
	}
	var opts []name.Option
	if u.Scheme == "http" {
		opts = append(opts, name.Insecure)
	}
	reg, err := name.NewRegistry(u.Host, opts...)
	if err != nil {
		return nil, fmt.Errorf("upstream URL %q: %w", redactString(baseURL), redactErr(err))
	}
	c, err := lru.New[string, *lazyTransport](scopedTransports)
	if err != nil {
		return nil, err
	}
	return &credentialTransport{base: base, reg: reg, path: strings.TrimSuffix(u.Path, "/"), auth: auth, byRepo: c, writes: writes}, nil
}

// scopedPath finds what a request reads: a repository, or the catalog.
var scopedPath = regexp.MustCompile(`^/v2/(?:(_catalog)$|(.+)/(?:manifests|blobs|tags|referrers)/)`)

func (t *credentialTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	read := req.Method == http.MethodGet || req.Method == http.MethodHead
	if req.Header.Get("Authorization") != "" || (!read && !t.writes) || req.URL.Host != t.reg.RegistryStr() {
		return t.base.RoundTrip(req)
	}
	m := scopedPath.FindStringSubmatch(strings.TrimPrefix(req.URL.Path, t.path))
	if m == nil { // the ping: the client sees the upstream's own challenge
		return t.base.RoundTrip(req)
	}
	scopes := []string{"registry:catalog:*"}
	if repo := m[2]; repo != "" {
		switch {
		case read:
			scopes = []string{"repository:" + repo + ":" + transport.PullScope}
		case req.Method == http.MethodDelete:
			scopes = []string{"repository:" + repo + ":" + transport.PushScope + ",delete"}
		default:
			scopes = []string{"repository:" + repo + ":" + transport.PushScope}
			if from := req.URL.Query().Get("from"); from != "" && req.Method == http.MethodPost {
				scopes = append(scopes, "repository:"+from+":"+transport.PullScope) // a mount
			}
		}
	}
	rt, err := t.transport(req.Context(), scopes)
	if err != nil {
		return nil, fmt.Errorf("authenticating to the upstream for %s: %w", strings.Join(scopes, " "), err)
	}
	return rt.RoundTrip(req)
}

func (t *credentialTransport) transport(ctx context.Context, scopes []string) (http.RoundTripper, error) {
	scope := strings.Join(scopes, " ")
	t.mu.Lock()
	lt, ok := t.byRepo.Get(scope)
	if !ok {
		lt = &lazyTransport{}
		t.byRepo.Add(scope, lt)
	}
	t.mu.Unlock()
	lt.once.Do(func() {
		lt.rt, lt.err = transport.NewWithContext(context.WithoutCancel(ctx), t.reg, t.auth, t.base, scopes)
	})
	if lt.err != nil {
		t.mu.Lock()
		t.byRepo.Remove(scope) // try again on the next request
		t.mu.Unlock()
	}
	return lt.rt, lt.err
}

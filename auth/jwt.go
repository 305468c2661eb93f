package auth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

const (
	// maxTokenSize bounds a bearer token.
	maxTokenSize = 16 << 10
	// maxJWKSSize bounds a key set.
	maxJWKSSize = 1 << 20
	// maxJWKSKeys bounds the keys of a set.
	maxJWKSKeys = 64
	// unknownKidRefresh is how soon after a fetch a token naming an
	// unknown key may make shroud fetch the set again (a key rotation).
	unknownKidRefresh = 30 * time.Second
	// jwksFetchTimeout bounds one fetch of a key set.
	jwksFetchTimeout = 10 * time.Second
	// leeway is the clock skew allowed on exp and nbf.
	leeway = 30 * time.Second
)

// signatureAlgorithms are the asymmetric algorithms a token may be signed
// with: a JWKS holds public keys, so HMAC ("HS256", a key confusion) and
// "none" never verify.
var signatureAlgorithms = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512, jose.EdDSA,
}

// JWTConfig configures bearer token verification.
type JWTConfig struct {
	// Issuer is the iss every token must carry; required.
	Issuer string
	// Audience must be among a token's aud; required.
	Audience string
	// JWKS is the key set the tokens are signed with: a file (read again
	// when it changes) or an https:// URL (fetched again every Refresh,
	// and on a token naming an unknown key).
	JWKS string
	// Refresh is how often a JWKS URL is fetched again; zero means five
	// minutes.
	Refresh time.Duration
	// UsernameClaim names the user; empty means "sub".
	UsernameClaim string
	// GroupsClaim holds the user's groups (an array of strings, or one
	// string); empty means "groups".
	GroupsClaim string
	// HTTPClient fetches a JWKS URL; nil means one with a timeout.
	HTTPClient *http.Client
}

// JWTVerifier verifies bearer tokens.
type JWTVerifier struct {
	cfg JWTConfig
	src jwksSource
	// name is the JWKS in messages: the file, or the URL without its
	// password.
	name string

	mu      sync.Mutex
	set     jose.JSONWebKeySet
	fetched time.Time
	// version tells a file's changes apart (modification time and size).
	version    string
	refreshing bool
}

type jwksSource interface {
	// load returns the set and a version that changes with it; an
	// unchanged version (the same as prev) may come with an empty set.
	load(ctx context.Context, prev string) (jose.JSONWebKeySet, string, error)
}

// NewJWTVerifier loads the key set: a JWKS that cannot be read stops
// shroud at start-up.
func NewJWTVerifier(ctx context.Context, cfg JWTConfig) (*JWTVerifier, error) {
	if cfg.Issuer == "" || cfg.Audience == "" || cfg.JWKS == "" {
		return nil, errors.New("jwt: issuer, audience and jwks are required")
	}
	if cfg.Refresh <= 0 {
		cfg.Refresh = 5 * time.Minute
	}
	if cfg.UsernameClaim == "" {
		cfg.UsernameClaim = "sub"
	}
	if cfg.GroupsClaim == "" {
		cfg.GroupsClaim = "groups"
	}
	v := &JWTVerifier{cfg: cfg}
	v.name = cfg.JWKS
	if u, err := url.Parse(cfg.JWKS); err == nil && u.Scheme != "" && u.Host != "" {
		// Errors are logged: they name the URL without its password.
		v.name = u.Redacted()
		if !secureURL(u) {
			return nil, fmt.Errorf("jwt: jwks URL %s: want https:// (http:// only on loopback)", v.name)
		}
		hc := &http.Client{Timeout: jwksFetchTimeout}
		if cfg.HTTPClient != nil {
			c := *cfg.HTTPClient
			hc = &c
		}
		// A redirect to plain http would let whoever is on that path
		// choose the keys.
		check := hc.CheckRedirect
		hc.CheckRedirect = func(req *http.Request, via []*http.Request) error {
			if !secureURL(req.URL) {
				return fmt.Errorf("redirected to %s: want https://", req.URL.Redacted())
			}
			if check != nil {
				return check(req, via)
			}
			if len(via) >= 10 {
				return errors.New("stopped after 10 redirects")
			}
			return nil
		}
		v.src = urlSource{url: u.String(), hc: hc}
	} else {
		v.src = fileSource(cfg.JWKS)
	}
	if err := v.refresh(ctx, time.Now()); err != nil {
		return nil, err
	}
	return v, nil
}

// secureURL says whether u may serve a key set: https, or http on
// loopback.
func secureURL(u *url.URL) bool {
	return u.Scheme == "https" || (u.Scheme == "http" && isLoopback(u.Hostname()))
}

func isLoopback(host string) bool {
	return host == "localhost" || host == "127.0.0.1" || host == "::1"
}

// refresh loads the set again.
func (v *JWTVerifier) refresh(ctx context.Context, now time.Time) error {
	set, version, err := v.src.load(ctx, v.version)
	if err != nil {
		return fmt.Errorf("jwt: jwks %s: %w", v.name, err)
	}
	if version != v.version || len(set.Keys) > 0 {
		v.set, v.version = set, version
	}
	v.fetched = now
	return nil
}

// keys returns the set, refreshed when due; a failed refresh keeps the
// set loaded before and is reported. One request refreshes at a time;
// the others use the set loaded before meanwhile.
func (v *JWTVerifier) keys(ctx context.Context, kid string) (jose.JSONWebKeySet, error) {
	v.mu.Lock()
	now := time.Now()
	_, isFile := v.src.(fileSource)
	due := now.Sub(v.fetched) >= v.cfg.Refresh || (isFile && now.Sub(v.fetched) >= reloadInterval)
	if !due && kid != "" && len(v.set.Key(kid)) == 0 && now.Sub(v.fetched) >= unknownKidRefresh {
		due = true
	}
	if !due || v.refreshing {
		set := v.set
		v.mu.Unlock()
		return set, nil
	}
	v.refreshing = true
	prev := v.version
	v.mu.Unlock()

	set, version, err := v.src.load(ctx, prev)

	v.mu.Lock()
	defer v.mu.Unlock()
	v.refreshing = false
	v.fetched = now // a failure is not tried again on every request
	if err != nil {
		return v.set, fmt.Errorf("jwt: jwks %s: %w", v.name, err)
	}
	if version != prev || len(set.Keys) > 0 {
		v.set, v.version = set, version
	}
	return v.set, nil
}

// Claims of a verified token that shroud reads.
type Claims struct {
	Issuer   string
	Username string
	Groups   []string
	Expiry   time.Time
}

// Verify checks a compact JWS token: an allowed asymmetric algorithm, a
// key of the set (by kid; without one, the set's only key), the
// signature, iss, aud, exp (required) and nbf. refreshErr reports a key
// set that could not be loaded again (the one loaded before was used).
func (v *JWTVerifier) Verify(ctx context.Context, token string) (c Claims, refreshErr error, err error) {
	if len(token) > maxTokenSize {
		return c, nil, errors.New("the token is too large")
	}
	tok, err := jwt.ParseSigned(token, signatureAlgorithms)
	if err != nil {
		return c, nil, errors.New("the token is not a signed JWT with an allowed algorithm")
	}
	if !canonicalCompact(token) {
		// go-jose decodes base64url leniently (unused trailing bits) and
		// verifies the signature over the parts re-encoded: a token
		// whose text differs from what was signed would pass.
		return c, nil, errors.New("the token is not a signed JWT in canonical base64url (its text is not what was signed)")
	}
	if len(tok.Headers) != 1 {
		return c, nil, errors.New("the token has more than one signature")
	}
	hdr := tok.Headers[0]
	set, refreshErr := v.keys(ctx, hdr.KeyID)
	var key *jose.JSONWebKey
	switch ks := set.Key(hdr.KeyID); {
	case hdr.KeyID != "" && len(ks) > 0:
		key = &ks[0]
	case hdr.KeyID == "" && len(set.Keys) == 1:
		key = &set.Keys[0]
	default:
		return c, refreshErr, errors.New("the token's signing key is not in the key set")
	}
	if key.Algorithm != "" && key.Algorithm != hdr.Algorithm {
		return c, refreshErr, fmt.Errorf("the token is signed with %s, its key is for %s", hdr.Algorithm, key.Algorithm)
	}
	var std jwt.Claims
	custom := map[string]any{}
	if err := tok.Claims(key.Key, &std, &custom); err != nil {
		return c, refreshErr, errors.New("the token's signature does not verify")
	}
	if std.Expiry == nil {
		return c, refreshErr, errors.New("the token has no expiry (exp)")
	}
	exp := jwt.Expected{Issuer: v.cfg.Issuer, AnyAudience: jwt.Audience{v.cfg.Audience}, Time: time.Now()}
	if err := std.ValidateWithLeeway(exp, leeway); err != nil {
		return c, refreshErr, fmt.Errorf("the token is not valid here: %w", err)
	}
	c = Claims{Issuer: std.Issuer, Expiry: std.Expiry.Time()}
	name, _ := custom[v.cfg.UsernameClaim].(string)
	if name == "" {
		return c, refreshErr, fmt.Errorf("the token has no %q claim", v.cfg.UsernameClaim)
	}
	c.Username = name
	switch g := custom[v.cfg.GroupsClaim].(type) {
	case string:
		c.Groups = []string{g}
	case []any:
		for _, x := range g {
			if s, ok := x.(string); ok {
				c.Groups = append(c.Groups, s)
			}
		}
	}
	return c, refreshErr, nil
}

// ParseJWKS parses a key set: public keys only, at most maxJWKSKeys.
func ParseJWKS(b []byte) (jose.JSONWebKeySet, error) {
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(b, &set); err != nil {
		return set, fmt.Errorf("not a JWKS: %w", err)
	}
	if len(set.Keys) == 0 {
		return set, errors.New("the key set has no keys")
	}
	if len(set.Keys) > maxJWKSKeys {
		return set, fmt.Errorf("the key set has %d keys, more than %d", len(set.Keys), maxJWKSKeys)
	}
	for i, k := range set.Keys {
		if !k.Valid() || !k.IsPublic() {
			return set, fmt.Errorf("key %d (kid %q): want a valid public key", i, k.KeyID)
		}
		if k.Use != "" && k.Use != "sig" {
			return set, fmt.Errorf("key %d (kid %q): use %q, want sig", i, k.KeyID, k.Use)
		}
	}
	return set, nil
}

type fileSource string

func (f fileSource) load(_ context.Context, prev string) (jose.JSONWebKeySet, string, error) {
	fi, err := os.Stat(string(f))
	if err != nil {
		return jose.JSONWebKeySet{}, "", err
	}
	version := fmt.Sprintf("%d/%d", fi.ModTime().UnixNano(), fi.Size())
	if version == prev {
		return jose.JSONWebKeySet{}, prev, nil
	}
	if fi.Size() > maxJWKSSize {
		return jose.JSONWebKeySet{}, "", fmt.Errorf("larger than %d bytes", maxJWKSSize)
	}
	b, err := os.ReadFile(string(f))
	if err != nil {
		return jose.JSONWebKeySet{}, "", err
	}
	set, err := ParseJWKS(b)
	return set, version, err
}

type urlSource struct {
	url string
	hc  *http.Client
}

func (u urlSource) load(ctx context.Context, _ string) (jose.JSONWebKeySet, string, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), jwksFetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.url, nil)
	if err != nil {
		return jose.JSONWebKeySet{}, "", err
	}
	resp, err := u.hc.Do(req)
	if err != nil {
		return jose.JSONWebKeySet{}, "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return jose.JSONWebKeySet{}, "", fmt.Errorf("GET answered %s", resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSSize+1))
	if err != nil {
		return jose.JSONWebKeySet{}, "", err
	}
	if len(b) > maxJWKSSize {
		return jose.JSONWebKeySet{}, "", fmt.Errorf("larger than %d bytes", maxJWKSSize)
	}
	set, err := ParseJWKS(b)
	return set, "", err
}

// canonicalCompact says whether token is three parts of canonical
// base64url (no padding, no unused bits set): the exact text a signer
// produces.
func canonicalCompact(token string) bool {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return false
	}
	for _, p := range parts {
		// encoding/base64 skips \r and \n even in strict mode (and
		// go-jose strips all whitespace): only the alphabet is canonical.
		if strings.ContainsFunc(p, func(r rune) bool {
			return !('A' <= r && r <= 'Z' || 'a' <= r && r <= 'z' || '0' <= r && r <= '9' || r == '-' || r == '_')
		}) {
			return false
		}
		if _, err := base64.RawURLEncoding.Strict().DecodeString(p); err != nil {
			return false
		}
	}
	return true
}

package upstream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
)

// maxRedirects bounds the hops of a blob read: registries redirect a
// download once, to their storage or a CDN.
const maxRedirects = 3

// ErrRedirectRefused is wrapped by the error of an upstream call whose
// answer was a redirect shroud does not follow: any redirect but a blob
// download's, one past maxRedirects, or one to an address that is not
// public. It is never relayed to the client as an answer.
var ErrRedirectRefused = errors.New("upstream redirect refused")

// ErrForeignLocation is wrapped by the error of an upload step whose
// session location is not on the upstream's origin (scheme, host, port).
var ErrForeignLocation = errors.New("upload location is not on the upstream")

// blobRead matches the path of a blob (not an upload: that last segment
// is no digest) under /v2/.
var blobRead = regexp.MustCompile(`^/v2/[^/].*/blobs/[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$`)

// markKey is the context key of a *hopMark.
type markKey struct{}

// hopMark is what Client.do puts in the context of each upstream request,
// for its redirect check and the dial guard: net/http hands the first
// request's context to every hop of a redirect chain, and its values to
// the dials made for them.
type hopMark struct {
	client   *Client // the one making the request
	blobRead bool    // the request is a blob download: redirects may be followed

	mu sync.Mutex // the dials of a chain run apart from its redirect checks
	// foreign holds the host:port of every hop the redirect check let go
	// to another host than the upstream: the dial guard checks those.
	foreign []string
}

func markFrom(ctx context.Context) *hopMark {
	m, _ := ctx.Value(markKey{}).(*hopMark)
	return m
}

func (m *hopMark) addForeign(addr string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.foreign = append(m.foreign, addr)
}

// isForeign says whether addr (as net/http dials it) is one of the
// foreign hops'.
func (m *hopMark) isForeign(addr string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.ContainsFunc(m.foreign, func(f string) bool { return strings.EqualFold(f, addr) })
}

// checkRedirect is the CheckRedirect of a Client's http.Client. It
// follows, up to maxRedirects hops, only the redirects of blob downloads
// made by Client.do, and only to the upstream's own origin or to an
// http(s) host whose every address is public; a hop to another host goes
// without the client's credentials.
func checkRedirect(req *http.Request, via []*http.Request) error {
	m := markFrom(req.Context())
	first := via[0]
	refuse := func(why string, args ...any) error {
		return fmt.Errorf("%w: %s %s to %s: %s", ErrRedirectRefused, first.Method, first.URL.Path, redactURL(req.URL), fmt.Sprintf(why, args...))
	}
	switch {
	case m == nil || !m.blobRead || !m.client.isBlobRead(first) || (req.Method != http.MethodGet && req.Method != http.MethodHead):
		return refuse("only blob downloads are redirected")
	case len(via) > maxRedirects:
		return refuse("more than %d redirects", maxRedirects)
	case req.URL.Scheme != "http" && req.URL.Scheme != "https":
		return refuse("not http(s)")
	case req.URL.User != nil:
		return refuse("credentials in the URL")
	case !isASCII(req.URL.Hostname()):
		// net/http would dial its IDNA form, which the guard must match.
		return refuse("not an ASCII host name")
	}
	c := m.client
	if req.URL.Scheme == c.base.Scheme && hostPort(req.URL) == c.hostPort {
		return nil
	}
	if _, err := c.policy.check(req.Context(), "ip", req.URL.Hostname()); err != nil {
		return refuse("%v", err)
	}
	m.addForeign(hostPort(req.URL))
	// net/http keeps these for another port of the same host name, and
	// for a subdomain: they are for the upstream alone.
	for _, h := range []string{"Authorization", "Proxy-Authorization", "Cookie", "Cookie2", "Referer"} {
		req.Header.Del(h)
	}
	return nil
}

func isASCII(s string) bool {
	for i := range len(s) {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// isBlobRead says whether r is a blob download from the upstream.
func (c *Client) isBlobRead(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	if hostPort(r.URL) != c.hostPort {
		return false
	}
	p, ok := strings.CutPrefix(r.URL.Path, c.base.Path)
	return ok && blobRead.MatchString(p)
}

// hostPort is a URL's host:port, lower case, with the scheme's default
// port where it names none: the address net/http dials for it.
func hostPort(u *url.URL) string {
	port := u.Port()
	if port == "" {
		switch u.Scheme {
		case "https":
			port = "443"
		default:
			port = "80"
		}
	}
	return net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

// addrPolicy decides which addresses a followed redirect may reach. Its
// zero value resolves with net.DefaultResolver and allows public
// addresses only; tests replace either function.
type addrPolicy struct {
	lookup  func(ctx context.Context, network, host string) ([]netip.Addr, error)
	allowed func(netip.Addr) bool
}

// check resolves host (a name or an IP literal) on network ("ip", "ip4",
// "ip6") and returns its addresses if every one is allowed.
func (p addrPolicy) check(ctx context.Context, network, host string) ([]netip.Addr, error) {
	allowed := p.allowed
	if allowed == nil {
		allowed = isPublic
	}
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else {
		lookup := p.lookup
		if lookup == nil {
			lookup = net.DefaultResolver.LookupNetIP
		}
		if addrs, err = lookup(ctx, network, host); err != nil {
			return nil, fmt.Errorf("resolving %s: %w", host, err)
		}
		if len(addrs) == 0 {
			return nil, fmt.Errorf("resolving %s: no addresses", host)
		}
	}
	for _, a := range addrs {
		if !allowed(a) {
			return nil, fmt.Errorf("%s has the non-public address %s", host, a)
		}
	}
	return addrs, nil
}

// GuardedDialContext wraps d (nil: a zero net.Dialer) for the
// http.Transport to the upstream. A connection made for a redirect that
// a Client let go to a host other than the upstream is dialed to an
// address the guard resolved itself (with d.Resolver) and found public,
// so that a name answering differently now than when the redirect was
// checked (DNS rebinding) cannot lead to an internal address. Every
// other connection (the upstream's own, a token realm's) is d's as it is.
//
// Through an HTTP proxy the proxy resolves names: the dial is to the
// proxy, and only the redirect check applies.
func GuardedDialContext(d *net.Dialer) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if d == nil {
		d = &net.Dialer{}
	}
	r := d.Resolver
	if r == nil {
		r = net.DefaultResolver
	}
	return guardedDial(d, addrPolicy{lookup: r.LookupNetIP, allowed: isPublic})
}

func guardedDial(d *net.Dialer, p addrPolicy) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if m := markFrom(ctx); m == nil || !m.isForeign(addr) {
			return d.DialContext(ctx, network, addr)
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("dial %s: %w", addr, err)
		}
		ipNet := "ip"
		switch network {
		case "tcp4":
			ipNet = "ip4"
		case "tcp6":
			ipNet = "ip6"
		}
		addrs, err := p.check(ctx, ipNet, host)
		if err != nil {
			return nil, fmt.Errorf("dial %s: %w: %w", addr, ErrRedirectRefused, err)
		}
		var errs []error
		for _, a := range addrs {
			conn, err := d.DialContext(ctx, network, net.JoinHostPort(a.String(), port))
			if err == nil {
				return conn, nil
			}
			errs = append(errs, err)
		}
		return nil, errors.Join(errs...)
	}
}

// isPublic says whether a is a public unicast address: not loopback,
// private (RFC 1918, fc00::/7), link-local, CGNAT, "this network",
// unspecified, multicast, broadcast or reserved, in any IPv4-in-IPv6
// form (mapped, NAT64, 6to4).
func isPublic(a netip.Addr) bool {
	a = a.Unmap()
	if !a.IsValid() || a.IsUnspecified() || a.IsLoopback() || a.IsPrivate() ||
		a.IsLinkLocalUnicast() || a.IsMulticast() || a.IsInterfaceLocalMulticast() {
		return false
	}
	if a.Is4() {
		b := a.As4()
		switch {
		case b[0] == 0: // 0.0.0.0/8, "this network"
		case b[0] == 100 && b[1]&0xc0 == 64: // 100.64.0.0/10, CGNAT
		case b[0] == 192 && b[1] == 0 && b[2] == 0: // 192.0.0.0/24, IETF protocol assignments
		case b[0] == 198 && b[1]&0xfe == 18: // 198.18.0.0/15, benchmarking
		case b[0] >= 240: // 240.0.0.0/4, reserved, and the broadcast address
		default:
			return true
		}
		return false
	}
	b := a.As16()
	switch {
	case [12]byte(b[:12]) == [12]byte{0, 0x64, 0xff, 0x9b}: // 64:ff9b::/96, NAT64
		return isPublic(netip.AddrFrom4([4]byte(b[12:])))
	case b[0] == 0x20 && b[1] == 0x02: // 2002::/16, 6to4
		return isPublic(netip.AddrFrom4([4]byte(b[2:6])))
	case [12]byte(b[:12]) == [12]byte{}: // ::/96, IPv4-compatible (deprecated)
		return false
	case b[0] == 0 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b && b[4] == 0 && b[5] == 1: // 64:ff9b:1::/48, local NAT64
		return false
	case b[0] == 0x20 && b[1] == 0x01 && b[2] == 0 && b[3] == 0: // 2001::/32, Teredo
		return false
	case b[0] == 0xfe && b[1]&0xc0 == 0xc0: // fec0::/10, site-local (deprecated)
		return false
	}
	return true
}

package upstream

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
)

// fakeDNS holds the answers for names a hostile upstream controls.
type fakeDNS map[string][]string

func (f fakeDNS) lookup(ctx context.Context, network, host string) ([]netip.Addr, error) {
	ips, ok := f[strings.ToLower(host)]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	var out []netip.Addr
	for _, s := range ips {
		out = append(out, netip.MustParseAddr(s))
	}
	return out, nil
}

// allTo is a test transport whose every connection, whatever address it
// is for, goes to the server s: a stand-in for a network where those
// addresses are reachable.
func allTo(t *testing.T, s *httptest.Server) *http.Transport {
	t.Helper()
	return &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, s.Listener.Addr().String())
	}}
}

// portOf is the port of a test server.
func portOf(t *testing.T, s *httptest.Server) string {
	t.Helper()
	u, err := url.Parse(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	return u.Port()
}

// The upstream redirects a blob download to an internal address
// (instance metadata, the cluster network, loopback, in each of its
// spellings): shroud refuses before connecting. A public address is
// followed.
func TestBlobRedirectToInternalAddressesIsNotFollowed(t *testing.T) {
	internal := startInternal(t)
	var target string
	up := hostile(t, func(w http.ResponseWriter, r *http.Request) { redirectTo(target)(w, r) })
	// Every connection but the upstream's own reaches the internal service.
	upAddr := up.Listener.Addr().String()
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		if addr != upAddr {
			addr = internal.Listener.Addr().String()
		}
		return d.DialContext(ctx, network, addr)
	}}
	dns := fakeDNS{
		"metadata.attacker.example": {"169.254.169.254"},
		"mixed.attacker.example":    {"93.184.215.14", "10.0.0.7"},
		"public.example":            {"93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"},
	}
	c := newClient(t, up.URL, &http.Client{Transport: tr})
	c.policy.lookup = dns.lookup
	for _, host := range []string{
		"127.0.0.1", "127.1.2.3", "[::1]", "localhost",
		"10.1.2.3", "172.16.0.1", "192.168.1.1",
		"169.254.169.254", "[fe80::1]", "[fc00::1]", "[fd12:3456::1]",
		"100.64.0.1", "0.0.0.0", "0.1.2.3", "[::]",
		"224.0.0.1", "[ff02::1]", "255.255.255.255",
		"[::ffff:127.0.0.1]", "[::ffff:169.254.169.254]", "[::ffff:10.0.0.1]",
		"[64:ff9b::a9fe:a9fe]", "[2002:a9fe:a9fe::1]", "[::a9fe:a9fe]",
		"metadata.attacker.example", "mixed.attacker.example", "unresolvable.attacker.example",
	} {
		target = "http://" + host + ":" + portOf(t, internal.Server) + "/latest/meta-data/"
		resp, err := c.GetBlob(t.Context(), "evil/repo", blobDigest, "")
		if body := readAll(resp); err == nil {
			t.Errorf("redirect to %s followed: %q", host, body)
		}
	}
	if n := internal.hits.Load(); n != 0 {
		t.Fatalf("the internal service was reached %d times", n)
	}
	for _, host := range []string{"93.184.215.14", "[2606:4700:4700::1111]", "[64:ff9b::808:808]", "public.example"} {
		target = "http://" + host + "/blob"
		resp, err := c.GetBlob(t.Context(), "evil/repo", blobDigest, "")
		if body := readAll(resp); err != nil || body != internalSecret {
			t.Errorf("redirect to public %s not followed: %v %q", host, err, body)
		}
	}
}

// Registries redirect blob downloads to public storage (S3, a CDN): that
// is followed, but the client's Authorization, meant for the upstream,
// does not go along, not even to another port of the upstream's host.
func TestBlobRedirectToPublicStorageDoesNotCarryAuthorization(t *testing.T) {
	storage := startInternal(t) // stands for public storage here
	up := hostile(t, redirectTo(storage.URL+"/bucket/blob?X-Amz-Signature=sig"))
	c := newClient(t, up.URL, nil).WithAuthorization("Bearer client-token")
	c.policy.allowed = func(netip.Addr) bool { return true } // loopback counts as public
	for _, get := range []func() error{
		func() error { resp, err := c.GetBlob(t.Context(), "r", blobDigest, ""); readAll(resp); return err },
		func() error { _, _, err := c.HeadBlob(t.Context(), "r", blobDigest); return err },
	} {
		if err := get(); err != nil {
			t.Fatalf("redirect to public storage not followed: %v", err)
		}
	}
	for _, a := range storage.authSeen() {
		if a != "" {
			t.Fatalf("the storage got the client's Authorization %q", a)
		}
	}
	if n := storage.hits.Load(); n != 2 {
		t.Fatalf("storage reached %d times, want 2", n)
	}
}

// DNS rebinding: the redirect target's name resolves to a public address
// when the redirect is checked and to loopback when shroud connects. The
// dial guard resolves the name itself and connects only to the address
// it checked, so the internal service is not reached, however the name
// is spelled.
func TestDNSRebindingAfterTheRedirectCheckIsRefusedAtDial(t *testing.T) {
	for _, name := range []string{"rebind.attacker.example", "Rebind.ATTACKER.example"} {
		t.Run(name, func(t *testing.T) { testRebinding(t, name) })
	}
}

func testRebinding(t *testing.T, name string) {
	internal := startInternal(t)
	up := hostile(t, redirectTo("http://"+name+":"+portOf(t, internal.Server)+"/secret"))
	checked := fakeDNS{"rebind.attacker.example": {"93.184.215.14"}}    // when CheckRedirect asks
	rebound := fakeDNS{"rebind.attacker.example": {"127.0.0.1", "::1"}} // when the dialer asks
	get := func(dialPolicy addrPolicy) (string, error) {
		tr := &http.Transport{DialContext: guardedDial(&net.Dialer{}, dialPolicy)}
		defer tr.CloseIdleConnections()
		c := newClient(t, up.URL, &http.Client{Transport: tr})
		c.policy.lookup = checked.lookup
		resp, err := c.GetBlob(t.Context(), "evil/repo", blobDigest, "")
		return readAll(resp), err
	}
	// The guard does connect where the name resolves to when it allows
	// the address: here loopback is taken for public.
	if body, err := get(addrPolicy{lookup: rebound.lookup, allowed: func(netip.Addr) bool { return true }}); err != nil || body != internalSecret {
		t.Fatalf("the guard did not dial the address it resolved: %v %q", err, body)
	}
	internal.hits.Store(0)
	body, err := get(addrPolicy{lookup: rebound.lookup, allowed: isPublic})
	if err == nil || internal.hits.Load() != 0 {
		t.Fatalf("rebinding reached the internal service: err %v, body %q, %d hits", err, body, internal.hits.Load())
	}
}

// The dial guard applies only to the connections of a followed redirect
// to a foreign host: the upstream itself, a redirect to its own storage
// path and a token realm on loopback are reached as before.
func TestGuardedDialLeavesTheUpstreamAndTokenRealmsAlone(t *testing.T) {
	realm := startInternal(t)
	var up *httptest.Server
	up = hostile(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v2/":
			w.Header().Set("WWW-Authenticate", fmt.Sprintf("Bearer realm=%q", realm.URL+"/token"))
			w.WriteHeader(http.StatusUnauthorized)
		case strings.HasPrefix(r.URL.Path, "/storage/"):
			w.Write([]byte("ciphertext"))
		default:
			http.Redirect(w, r, "/storage/x", http.StatusTemporaryRedirect)
		}
	})
	tr := &http.Transport{DialContext: GuardedDialContext(&net.Dialer{})}
	defer tr.CloseIdleConnections()
	c := newClient(t, strings.Replace(up.URL, "127.0.0.1", "localhost", 1), &http.Client{Transport: tr})
	ctx := t.Context()
	if err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	resp, err := c.GetBlob(ctx, "r", blobDigest, "")
	if body := readAll(resp); err != nil || body != "ciphertext" {
		t.Fatalf("blob redirect to the upstream's own storage: %v %q", err, body)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, strings.Replace(realm.URL, "127.0.0.1", "localhost", 1)+"/token", nil)
	resp, err = (&http.Client{Transport: tr}).Do(req)
	if body := readAll(resp); err != nil || body != internalSecret {
		t.Fatalf("token realm on loopback: %v %q", err, body)
	}
}

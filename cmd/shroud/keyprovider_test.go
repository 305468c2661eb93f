package main

import (
	"io"
	"strings"
	"testing"
)

// TestParseKeyprovider: TLS flags go together, --client-ca needs TLS, and
// the provider name cannot carry a recipient's separator.
func TestParseKeyprovider(t *testing.T) {
	for _, c := range []struct {
		args []string
		err  string
	}{
		{[]string{"--tls-cert", "c.pem"}, "go together"},
		{[]string{"--client-ca", "ca.pem"}, "needs --tls-cert"},
		{[]string{"--name", "a:b"}, "--name"},
		{[]string{"extra"}, "unexpected"},
	} {
		if _, err := parseKeyprovider(c.args, io.Discard); err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%v: %v, want %q", c.args, err, c.err)
		}
	}
	f, err := parseKeyprovider([]string{"--listen", "127.0.0.1:1", "--tls-cert", "c", "--tls-key", "k", "--client-ca", "ca"}, io.Discard)
	if err != nil || f.listen != "127.0.0.1:1" || f.clientCA != "ca" || f.name != "shroud" {
		t.Fatalf("%+v %v", f, err)
	}
}

package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shroud-oci/shroud/keyprovider"
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
		{[]string{"--max-requests-per-client", "0"}, "at least 1"},
		{[]string{"--listen", ":1", "--tls-cert", "c", "--tls-key", "k", "--client-ca", "ca", "--insecure-no-client-auth"}, "contradict"},
	} {
		if _, err := parseKeyprovider(c.args, io.Discard); err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%v: %v, want %q", c.args, err, c.err)
		}
	}
	f, err := parseKeyprovider([]string{"--listen", "127.0.0.1:1", "--tls-cert", "c", "--tls-key", "k", "--client-ca", "ca"}, io.Discard)
	if err != nil || f.listen != "127.0.0.1:1" || f.clientCA != "ca" || f.name != "shroud" || f.maxPerClient != keyprovider.DefaultMaxPerClient {
		t.Fatalf("%+v %v", f, err)
	}
	if f, err := parseKeyprovider([]string{"--listen", ":1", "--insecure-no-client-auth", "--max-requests-per-client", "2"}, io.Discard); err != nil || !f.insecureNoClientAuth || f.maxPerClient != 2 {
		t.Fatalf("--insecure-no-client-auth: %+v %v", f, err)
	}
}

// TestKeyproviderInsecureNoClientAuthWarns: serving beyond loopback
// without client certificates, as --insecure-no-client-auth asks, is
// said at start-up as a warning.
func TestKeyproviderInsecureNoClientAuthWarns(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- keyproviderCmd(ctx, []string{"--listen", "0.0.0.0:0", "--insecure-no-client-auth", "--data-dir", t.TempDir()}, &out)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "is serving") {
		select {
		case rc := <-done:
			t.Fatalf("exited %d:\n%s", rc, out.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("not serving:\n%s", out.String())
		}
	}
	cancel()
	if rc := <-done; rc != 0 {
		t.Fatalf("exit %d", rc)
	}
	if !strings.Contains(out.String(), "level=WARN msg=\"--insecure-no-client-auth") {
		t.Fatalf("no warning at start-up:\n%s", out.String())
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

package keyprovider_test

// Review of shroud keyprovider, second round: what a refusal tells the
// caller, what the audit log keeps of the unwraps that succeed, and how
// much of the server one client can hold.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containers/ocicrypt/config"
	keyproviderconfig "github.com/containers/ocicrypt/config/keyprovider-config"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shroud-oci/shroud/audit"
	"github.com/shroud-oci/shroud/internal/testkeys"
	"github.com/shroud-oci/shroud/keyprovider"
)

// documentRefusal is a trust refusal whose message names the namespace's
// deny list, as trust.Refusal's does.
type documentRefusal struct{}

func (documentRefusal) Error() string {
	return `trust: unwrap refused: revoked (keyCompromise) by team-r/revocations.json`
}
func (documentRefusal) RefusalReason() string { return "revoked" }

type refuseAll struct{}

func (refuseAll) Check(context.Context, string, string, string, time.Time) error {
	return documentRefusal{}
}

// TestAttackRefusalRevealsDenyPatterns: any caller (a node, or anyone on
// the network when no --client-ca is given) maps shroud's policy by
// sending wraps it makes itself with the public key: each refusal
// answered with the deny rule's glob ("policy denies %q (rule
// "internal-*/secret/**")") or the trust document and revocation reason
// behind it. The answer must say only that the policy refused the scope;
// the log and the audit keep the rule.
func TestAttackRefusalRevealsDenyPatterns(t *testing.T) {
	id := identity(t)
	pol, err := keyprovider.NewPolicy([]keyprovider.Rule{{Pattern: "internal-*/secret/**", Deny: true}, {Pattern: "**"}})
	if err != nil {
		t.Fatal(err)
	}
	var auditBuf bytes.Buffer
	w := wrapper(serve(t, newServer(t, keyprovider.Options{Identity: id, Policy: pol, Audit: audit.New(&auditBuf)}), nil), nil)
	wr := wrapper(serve(t, newServer(t, keyprovider.Options{Identity: id, KeyCheck: refuseAll{}}), nil), nil)
	for _, c := range []struct {
		scope string
		w     interface {
			UnwrapKey(*config.DecryptConfig, []byte) ([]byte, error)
		}
	}{
		{"internal-x/secret/db", w}, // its first rule denies
		{"internal-x/*/db", w},      // a glob over the deny rule
		{"", w},                     // unbound while a rule denies
		{"team-r/app", wr},          // revoked by a trust document
	} {
		ann, err := id.WrapOptions(opts, c.scope)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.w.UnwrapKey(&config.DecryptConfig{}, []byte(ann))
		if st, _ := status.FromError(errors.Unwrap(err)); st.Code() != codes.PermissionDenied {
			t.Fatalf("scope %q: %v, want PermissionDenied", c.scope, err)
		}
		if !strings.Contains(err.Error(), "unwrap refused by ") {
			t.Errorf("scope %q: the refusal does not say it was refused by the policy or the trust documents: %v", c.scope, err)
		}
		for _, leak := range []string{"internal-*", "secret/**", "team-r/revocations.json", "keyCompromise"} {
			if strings.Contains(err.Error(), leak) {
				t.Errorf("scope %q: the refusal tells the caller %q: %v", c.scope, leak, err)
			}
		}
	}
	if !strings.Contains(auditBuf.String(), "internal-*/secret/**") {
		t.Errorf("the audit log lost the rule that refused:\n%s", auditBuf.String())
	}
}

// tlsServer serves s over TLS that verifies client certificates against
// a new CA, and returns its address, the server certificate file and a
// function making client certificates of that CA (CN=node-1, a new key
// each: file pair, and the certificate's SHA-256 fingerprint).
func tlsServer(t *testing.T, s *keyprovider.Server) (addr, serverCert string, client func() (cert, key, fingerprint string)) {
	t.Helper()
	dir := t.TempDir()
	serverCert, serverKey := testkeys.Cert(t, dir, "server", true)
	caCert, caKey := clientCA(t)
	pair, err := tls.LoadX509KeyPair(serverCert, serverKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	addr = serve(t, s, &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12})
	return addr, serverCert, func() (string, string, string) {
		cert, key := clientCertificate(t, t.TempDir(), caCert, caKey)
		b, err := os.ReadFile(cert)
		if err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode(b)
		sum := sha256.Sum256(blk.Bytes)
		return cert, key, "sha256:" + hex.EncodeToString(sum[:])
	}
}

// TestAttackUnwrapLeavesNoAuditTrail: a node's certificate is stolen and
// used to unwrap the layer keys of every image it can name. Each unwrap
// succeeds and the audit log, which records every key decision, says
// nothing: no event names the scope, the certificate or the key. Every
// unwrap must be audited, allowed or refused, with the caller's
// certificate subject and fingerprint, and no key material.
func TestAttackUnwrapLeavesNoAuditTrail(t *testing.T) {
	id := identity(t)
	var auditBuf bytes.Buffer
	addr, serverCert, client := tlsServer(t, newServer(t, keyprovider.Options{Identity: id, RequireClientCert: true, Audit: audit.New(&auditBuf)}))
	cert, key, fp := client()
	ann, err := id.WrapOptions(opts, "team-a/app")
	if err != nil {
		t.Fatal(err)
	}
	got, err := wrapper(addr, &keyproviderconfig.GrpcTLS{RootCAFile: serverCert, CertFile: cert, KeyFile: key}).UnwrapKey(&config.DecryptConfig{}, []byte(ann))
	if err != nil || !bytes.Equal(got, opts) {
		t.Fatalf("unwrap: %q %v", got, err)
	}
	var found bool
	for _, line := range strings.Split(strings.TrimSpace(auditBuf.String()), "\n") {
		var e map[string]any
		if line == "" || json.Unmarshal([]byte(line), &e) != nil {
			continue
		}
		if e["kind"] == "unwrap-allowed" && e["op"] == "unwrap" && e["repository"] == "team-a/app" && e["key_id"] == id.KeyID() &&
			strings.Contains(e["actor"].(string), "CN=node-1") && e["actor_cert"] == fp {
			found = true
		}
	}
	if !found {
		t.Errorf("no audit event of the unwrap (kind unwrap-allowed, scope, key id, certificate subject and fingerprint %s):\n%s", fp, auditBuf.String())
	}
	if strings.Contains(auditBuf.String(), "symkey") || strings.Contains(auditBuf.String(), ann) {
		t.Error("the audit log shows key material")
	}
}

// blockingCheck holds every unwrap until release is closed, counting the
// unwraps it holds.
type blockingCheck struct {
	release chan struct{}
	mu      sync.Mutex
	held    int
}

func (b *blockingCheck) Check(ctx context.Context, _, _, _ string, _ time.Time) error {
	b.mu.Lock()
	b.held++
	b.mu.Unlock()
	select {
	case <-b.release:
	case <-ctx.Done():
	}
	return nil
}

func (b *blockingCheck) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.held
}

// TestAttackOneClientHoldsEveryUnwrap: one client (one certificate)
// opens many connections and keeps unwraps in flight (a slow key check:
// a freeze being refreshed, an HSM under load) until the server has no
// room left for the other nodes. Past a bound per client its further
// unwraps must be refused (ResourceExhausted) while another client is
// still served.
func TestAttackOneClientHoldsEveryUnwrap(t *testing.T) {
	id := identity(t)
	bc := &blockingCheck{release: make(chan struct{})}
	addr, serverCert, client := tlsServer(t, newServer(t, keyprovider.Options{Identity: id, RequireClientCert: true, KeyCheck: bc}))
	ann, err := id.WrapOptions(opts, "team-a/app")
	if err != nil {
		t.Fatal(err)
	}
	cert, key, _ := client()
	greedy := &keyproviderconfig.GrpcTLS{RootCAFile: serverCert, CertFile: cert, KeyFile: key}
	const attempts = 64
	errs := make(chan error, attempts)
	for range attempts {
		go func() {
			// ocicrypt's client dials a connection per call.
			_, err := wrapper(addr, greedy).UnwrapKey(&config.DecryptConfig{}, []byte(ann))
			errs <- err
		}()
	}
	deadline := time.After(15 * time.Second)
	var exhausted bool
	for !exhausted {
		select {
		case err := <-errs:
			if st, _ := status.FromError(errors.Unwrap(err)); err != nil && st.Code() == codes.ResourceExhausted {
				exhausted = true
			} else {
				t.Fatalf("an unwrap of the greedy client ended with %v while the others are held; want ResourceExhausted", err)
			}
		case <-deadline:
			close(bc.release)
			t.Fatalf("%d unwraps of one client held at once, none refused", bc.count())
		}
	}
	held := bc.count()
	if held >= attempts {
		t.Fatalf("all %d unwraps of one client held", held)
	}
	// Another node is served meanwhile (its unwrap reaches the check).
	cert2, key2, _ := client()
	done := make(chan error, 1)
	go func() {
		_, err := wrapper(addr, &keyproviderconfig.GrpcTLS{RootCAFile: serverCert, CertFile: cert2, KeyFile: key2}).UnwrapKey(&config.DecryptConfig{}, []byte(ann))
		done <- err
	}()
	for bc.count() == held {
		select {
		case err := <-done:
			t.Fatalf("the other client's unwrap: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	close(bc.release)
	if err := <-done; err != nil {
		t.Fatalf("the other client's unwrap: %v", err)
	}
}

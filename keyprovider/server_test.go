package keyprovider_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containers/ocicrypt/config"
	keyproviderconfig "github.com/containers/ocicrypt/config/keyprovider-config"
	ockp "github.com/containers/ocicrypt/keywrap/keyprovider"
	pb "github.com/containers/ocicrypt/utils/keyprovider"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/shroud-oci/shroud/audit"
	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/testkeys"
	"github.com/shroud-oci/shroud/keyprovider"
)

// opts stands for a layer's private options (ocicrypt's JSON of the
// symmetric key, cipher and HMAC).
var opts = []byte(`{"cipher":"AES_256_CTR_HMAC_SHA256","symkey":"c2VjcmV0IGxheWVyIGtleSAzMiBieXRlcyBsb25nISE=","hmac":"aG1hYw=="}`)

func identity(t *testing.T) *crypto.Identity {
	t.Helper()
	id, _, err := crypto.LoadOrCreateIdentity(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// serve starts s on 127.0.0.1 and returns its address.
func serve(t *testing.T, s *keyprovider.Server, tlsCfg *tls.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := keyprovider.GRPCServer(s, tlsCfg)
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	return ln.Addr().String()
}

func newServer(t *testing.T, o keyprovider.Options) *keyprovider.Server {
	t.Helper()
	s, err := keyprovider.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// wrapper is ocicrypt's own key-provider client (what ctd-decoder and
// skopeo use) for the provider "shroud" at addr.
func wrapper(addr string, tlsCfg *keyproviderconfig.GrpcTLS) interface {
	WrapKeys(*config.EncryptConfig, []byte) ([]byte, error)
	UnwrapKey(*config.DecryptConfig, []byte) ([]byte, error)
} {
	return ockp.NewKeyWrapper("shroud", keyproviderconfig.KeyProviderAttrs{Grpc: addr, GrpcTLS: tlsCfg})
}

func ecFor(scope string) *config.EncryptConfig {
	// Other schemes' parameters travel too (ocicrypt sends them all): the
	// server must read its own alone.
	return &config.EncryptConfig{Parameters: map[string][][]byte{"shroud": {[]byte(scope)}, "privkeys": {[]byte("not for the provider")}}}
}

// TestRoundTripThroughOcicrypt wraps and unwraps through ocicrypt's own
// key-provider client code: the options come back byte for byte, and the
// wrapped annotation carries neither them nor anything readable of them.
func TestRoundTripThroughOcicrypt(t *testing.T) {
	id := identity(t)
	pol, err := keyprovider.NewPolicy([]keyprovider.Rule{{Pattern: "team-a/secret/**", Deny: true}, {Pattern: "**"}})
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, newServer(t, keyprovider.Options{Identity: id, Policy: pol}), nil)
	w := wrapper(addr, nil)
	for _, scope := range []string{"team-a/app", "team-b/*"} {
		ann, err := w.WrapKeys(ecFor(scope), opts)
		if err != nil {
			t.Fatalf("wrap %q: %v", scope, err)
		}
		if bytes.Contains(ann, opts) || bytes.Contains(ann, []byte("symkey")) {
			t.Fatalf("the annotation shows the options: %s", ann)
		}
		got, err := w.UnwrapKey(&config.DecryptConfig{}, ann)
		if err != nil {
			t.Fatalf("unwrap %q: %v", scope, err)
		}
		if !bytes.Equal(got, opts) {
			t.Fatalf("unwrap %q = %q, want %q", scope, got, opts)
		}
	}
}

type revoked struct{ keyID, repo string }

type refusal struct{}

func (refusal) Error() string         { return "revoked by the deny list" }
func (refusal) RefusalReason() string { return "revoked" }

func (r revoked) Check(_ context.Context, op, repo, keyID string, _ time.Time) error {
	if op == "unwrap" && keyID == r.keyID && strings.HasPrefix(repo, r.repo) {
		return refusal{}
	}
	return nil
}

// TestRefusals: a wrap the policy denies (its repository, a glob that
// may cover a denied one, no repository while a rule denies), a key the
// trust documents revoke, and a wrap for another identity are refused
// with PermissionDenied (InvalidArgument for the foreign wrap), audited,
// and the options are not in the answer.
func TestRefusals(t *testing.T) {
	id := identity(t)
	var auditBuf bytes.Buffer
	pol, err := keyprovider.NewPolicy([]keyprovider.Rule{{Pattern: "team-a/secret/**", Deny: true}, {Pattern: "team-a/**"}, {Pattern: "team-r/**"}})
	if err != nil {
		t.Fatal(err)
	}
	s := newServer(t, keyprovider.Options{Identity: id, Policy: pol, KeyCheck: revoked{keyID: id.KeyID(), repo: "team-r/"}, Audit: audit.New(&auditBuf)})
	addr := serve(t, s, nil)
	w := wrapper(addr, nil)
	other := identity(t)
	// Wraps any holder of the public key could make: the server's own
	// WrapKey would refuse none of them.
	wrapFor := func(id *crypto.Identity, scope string) []byte {
		a, err := id.WrapOptions(opts, scope)
		if err != nil {
			t.Fatal(err)
		}
		return []byte(a)
	}
	for _, c := range []struct {
		name string
		ann  []byte
		code codes.Code
	}{
		{"denied repository", wrapFor(id, "team-a/secret/x"), codes.PermissionDenied},
		{"glob over a denied repository", wrapFor(id, "team-a/*/x"), codes.PermissionDenied},
		{"no rule", wrapFor(id, "elsewhere/x"), codes.PermissionDenied},
		{"unbound under a deny rule", wrapFor(id, ""), codes.PermissionDenied},
		{"revoked identity", wrapFor(id, "team-r/app"), codes.PermissionDenied},
		{"another identity", wrapFor(other, "team-a/app"), codes.InvalidArgument},
		{"garbage", []byte("eyJhbGciOiJub25lIn0.x.y.z.w"), codes.InvalidArgument},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := w.UnwrapKey(&config.DecryptConfig{}, c.ann)
			if err == nil {
				t.Fatalf("unwrapped %q", got)
			}
			if st, _ := status.FromError(errors.Unwrap(err)); st.Code() != c.code {
				t.Fatalf("error %v: want code %v", err, c.code)
			}
			if strings.Contains(err.Error(), "symkey") {
				t.Fatalf("the error shows the options: %v", err)
			}
		})
	}
	lines := strings.Split(strings.TrimSpace(auditBuf.String()), "\n")
	if len(lines) != 7 {
		t.Fatalf("audit: %d lines, want 7 (every refused unwrap):\n%s", len(lines), auditBuf.String())
	}
	var e audit.Event
	if err := json.Unmarshal([]byte(lines[4]), &e); err != nil || e.Kind != audit.UnwrapRefused || e.Reason != "revoked" || e.Repository != "team-r/app" || e.KeyID != id.KeyID() {
		t.Fatalf("audit event %s (%v)", lines[4], err)
	}
	if strings.Contains(auditBuf.String(), "symkey") {
		t.Fatal("the audit log shows the options")
	}
}

// TestBounds: requests over MaxRequest, options over
// crypto.MaxProviderOptions, a scope over MaxScope or outside the
// repository characters, and a request of the wrong operation are refused.
func TestBounds(t *testing.T) {
	id := identity(t)
	addr := serve(t, newServer(t, keyprovider.Options{Identity: id}), nil)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := pb.NewKeyProviderServiceClient(conn)
	call := func(in ockp.KeyProviderKeyWrapProtocolInput) error {
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		req := &pb.KeyProviderKeyWrapProtocolInput{KeyProviderKeyWrapProtocolInput: b}
		if in.Operation == ockp.OpKeyUnwrap {
			_, err = c.UnWrapKey(context.Background(), req)
		} else {
			_, err = c.WrapKey(context.Background(), req)
		}
		return err
	}
	wrap := func(scope string, o []byte) ockp.KeyProviderKeyWrapProtocolInput {
		return ockp.KeyProviderKeyWrapProtocolInput{Operation: ockp.OpKeyWrap, KeyWrapParams: ockp.KeyWrapParams{Ec: ecFor(scope), OptsData: o}}
	}
	for _, tc := range []struct {
		name string
		in   ockp.KeyProviderKeyWrapProtocolInput
		code codes.Code
	}{
		{"oversized request", wrap("a/b", bytes.Repeat([]byte("x"), keyprovider.MaxRequest)), codes.ResourceExhausted},
		{"oversized options", wrap("a/b", bytes.Repeat([]byte("x"), crypto.MaxProviderOptions+1)), codes.InvalidArgument},
		{"oversized scope", wrap(strings.Repeat("a", keyprovider.MaxScope+1), opts), codes.InvalidArgument},
		{"scope with other characters", wrap("a/b\nc", opts), codes.InvalidArgument},
		{"no options", wrap("a/b", nil), codes.InvalidArgument},
		{"unwrap sent to wrap", ockp.KeyProviderKeyWrapProtocolInput{Operation: ockp.OpKeyWrap, KeyUnwrapParams: ockp.KeyUnwrapParams{Annotation: []byte("x")}}, codes.InvalidArgument},
		{"oversized unwrap request", ockp.KeyProviderKeyWrapProtocolInput{Operation: ockp.OpKeyUnwrap, KeyUnwrapParams: ockp.KeyUnwrapParams{Annotation: bytes.Repeat([]byte("x"), keyprovider.MaxRequest)}}, codes.ResourceExhausted},
		{"oversized annotation", ockp.KeyProviderKeyWrapProtocolInput{Operation: ockp.OpKeyUnwrap, KeyUnwrapParams: ockp.KeyUnwrapParams{Annotation: bytes.Repeat([]byte("x"), crypto.MaxProviderWrapped+1)}}, codes.InvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := call(tc.in)
			if st, _ := status.FromError(err); st.Code() != tc.code {
				t.Fatalf("error %v: want code %v", err, tc.code)
			}
		})
	}
}

// TestClientCertificates: with RequireClientCert over TLS that verifies
// client certificates against a CA, ocicrypt's client without a
// certificate cannot unwrap; with one the CA signed, it can.
func TestClientCertificates(t *testing.T) {
	dir := t.TempDir()
	id := identity(t)
	serverCert, serverKey := testkeys.Cert(t, dir, "server", true)
	caCert, caKey := clientCA(t)
	clientCert, clientKey := clientCertificate(t, dir, caCert, caKey)
	pair, err := tls.LoadX509KeyPair(serverCert, serverKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	addr := serve(t, newServer(t, keyprovider.Options{Identity: id, RequireClientCert: true}),
		&tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12})
	ann, err := id.WrapOptions(opts, "a/b")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := wrapper(addr, &keyproviderconfig.GrpcTLS{RootCAFile: serverCert}).UnwrapKey(&config.DecryptConfig{}, []byte(ann)); err == nil {
		t.Fatalf("a caller without a client certificate unwrapped %q", got)
	}
	got, err := wrapper(addr, &keyproviderconfig.GrpcTLS{RootCAFile: serverCert, CertFile: clientCert, KeyFile: clientKey}).UnwrapKey(&config.DecryptConfig{}, []byte(ann))
	if err != nil || !bytes.Equal(got, opts) {
		t.Fatalf("with a client certificate: %q, %v", got, err)
	}
	// The check in the server itself, for a server whose TLS does not
	// verify client certificates: no certificate, no key.
	addr2 := serve(t, newServer(t, keyprovider.Options{Identity: id, RequireClientCert: true}),
		&tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12})
	_, err = wrapper(addr2, &keyproviderconfig.GrpcTLS{RootCAFile: serverCert}).UnwrapKey(&config.DecryptConfig{}, []byte(ann))
	if st, _ := status.FromError(errors.Unwrap(err)); st.Code() != codes.Unauthenticated {
		t.Fatalf("no client certificate: %v, want Unauthenticated", err)
	}
}

func clientCA(t *testing.T) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "nodes CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, k
}

func clientCertificate(t *testing.T, dir string, ca *x509.Certificate, caKey *ecdsa.PrivateKey) (cert, key string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "node-1"}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, k.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	p8, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	cert, key = filepath.Join(dir, "node.crt"), filepath.Join(dir, "node.key")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key
}

package crypto

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	keyproviderconfig "github.com/containers/ocicrypt/config/keyprovider-config"
	pb "github.com/containers/ocicrypt/utils/keyprovider"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/shroud-oci/shroud/internal/keyprovidertest"
	"github.com/shroud-oci/shroud/internal/testkeys"
)

// buildProvider builds the tests' key provider command.
func buildProvider(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "testprovider")
	if out, err := exec.Command("go", "build", "-o", bin, "../internal/keyprovidertest/testprovider").CombinedOutput(); err != nil {
		t.Fatalf("build the test key provider: %v\n%s", err, out)
	}
	return bin
}

// grpcProvider serves the test provider over gRPC with TLS and returns its
// address and the CA file that verifies it.
func grpcProvider(t *testing.T) (addr, caFile string) {
	t.Helper()
	caFile, keyFile := testkeys.Cert(t, t.TempDir(), "provider", true)
	cert, err := tls.LoadX509KeyPair(caFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}})))
	pb.RegisterKeyProviderServiceServer(s, keyprovidertest.Server{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	t.Cleanup(s.Stop)
	return ln.Addr().String(), caFile
}

// Both transports: a layer wrapped through the provider opens through it,
// in shroud and in ocicrypt; the provider sees only its own parameters.
func TestKeyProviders(t *testing.T) {
	addr, ca := grpcProvider(t)
	for name, attrs := range map[string]keyproviderconfig.KeyProviderAttrs{
		"cmd":      {Command: &keyproviderconfig.Command{Path: buildProvider(t)}},
		"grpc-tls": {Grpc: addr, GrpcTLS: &keyproviderconfig.GrpcTLS{RootCAFile: ca, ServerName: "localhost"}},
	} {
		t.Run(name, func(t *testing.T) {
			base, _ := testKeyring(t)
			providers := map[string]keyproviderconfig.KeyProviderAttrs{keyprovidertest.Name: attrs}
			kr, err := NewKeyring(base.Identity(), nil, WithKeyProviders(providers))
			if err != nil {
				t.Fatal(err)
			}
			plain, ct, desc, opts := wrappedFor(t, kr, "provider:"+keyprovidertest.Name+":team-a")
			ann := desc.Annotations
			pub, _ := ParsePublicOptions(ann)
			pkey := AnnotationKeys + "provider." + keyprovidertest.Name
			only := map[string]string{pkey: ann[pkey], AnnotationPubOpts: ann[AnnotationPubOpts]}
			if ann[pkey] == "" {
				t.Fatalf("no provider-wrapped key: %v", ann)
			}
			// Another shroud configured with the provider (and with its
			// identity's private key in the same config) opens it.
			other, _ := testKeyring(t)
			kr2, err := NewKeyring(other.Identity(), nil, WithKeyProviders(providers))
			if err != nil {
				t.Fatal(err)
			}
			got, err := kr2.Unwrap(only)
			if err != nil || !bytes.Equal(got.Key.Key, opts.Key.Key) {
				t.Fatalf("unwrap through the provider: %v", err)
			}
			if by := kr2.OpenedBy(only); by != "key provider "+keyprovidertest.Name {
				t.Fatalf("OpenedBy = %q", by)
			}
			dr, _ := DecryptReader(bytes.NewReader(ct), got.Key, pub.HMAC, got.PlainDigest)
			if b, err := io.ReadAll(dr); err != nil || !bytes.Equal(b, plain) {
				t.Fatalf("decrypt with the provider-unwrapped key: %v", err)
			}
		})
	}
}

// A provider that is not there, or does not answer, stops shroud at
// start-up; a recipient naming an unconfigured provider too.
func TestKeyProviderFailures(t *testing.T) {
	base, _ := testKeyring(t)
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close()
	for name, attrs := range map[string]keyproviderconfig.KeyProviderAttrs{
		"missing command": {Command: &keyproviderconfig.Command{Path: "/nonexistent/provider"}},
		"dead grpc":       {Grpc: deadAddr},
		"nothing":         {},
	} {
		if _, err := NewKeyring(base.Identity(), nil, WithKeyProviders(map[string]keyproviderconfig.KeyProviderAttrs{"kms": attrs})); err == nil || !strings.Contains(err.Error(), `"kms"`) {
			t.Errorf("%s: err = %v, want one naming the provider", name, err)
		}
	}
	rec, _ := ParseRecipient("provider:unknown:x")
	if _, err := base.Recipients([]Recipient{rec}); err == nil {
		t.Error("a recipient of an unconfigured provider was accepted")
	}
}

package e2e

import (
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	keyproviderconfig "github.com/containers/ocicrypt/config/keyprovider-config"

	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/shroudtest"
	"github.com/shroud-oci/shroud/internal/testkeys"
)

// startGRPCProvider runs the test provider as a gRPC service with TLS and
// returns its address and the CA that verifies it.
func startGRPCProvider(t *testing.T) (addr, ca string) {
	t.Helper()
	dir := t.TempDir()
	ca, key := testkeys.Cert(t, dir, "kms", true)
	addr = freeAddr(t)
	cmd := exec.Command(tool("testprovider"), "--grpc", addr, "--tls-cert", ca, "--tls-key", key)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; i < 100; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr, ca
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("the gRPC key provider did not start")
	return
}

// Key providers over both transports (a command; gRPC with TLS): shroud
// wraps each repository's layer keys through its provider, another shroud
// configured with the providers serves the plaintext, and one without
// them is denied naming the provider.
func TestKeyProvidersThroughShroud(t *testing.T) {
	addr, ca := startGRPCProvider(t)
	providers := map[string]keyproviderconfig.KeyProviderAttrs{
		"kms-cmd":  {Command: &keyproviderconfig.Command{Path: tool("testprovider")}},
		"kms-grpc": {Grpc: addr, GrpcTLS: &keyproviderconfig.GrpcTLS{RootCAFile: ca}},
	}
	recCmd, _ := crypto.ParseRecipient("provider:kms-cmd:team-a")
	recGRPC, _ := crypto.ParseRecipient("provider:kms-grpc:team-b")
	s := sharedShroud(t, shroudtest.WithKeyProviders(providers), shroudtest.WithPolicy(
		shroudtest.Rule{Pattern: "providers/cmd", Action: crypto.Encrypt, Recipients: []crypto.Recipient{recCmd}},
		shroudtest.Rule{Pattern: "providers/grpc", Action: crypto.Encrypt, Recipients: []crypto.Recipient{recGRPC}},
	))
	other := sharedShroud(t, shroudtest.WithKeyProviders(providers))
	none := sharedShroud(t)
	for _, repo := range []string{"providers/cmd", "providers/grpc"} {
		src, img := ociLayout(t, 2, 100_000)
		recordLayers(t, img)
		skopeo(t, "copy", "--dest-tls-verify=false", src, "docker://"+s.Host()+"/"+repo+":1")
		out := filepath.Join(t.TempDir(), "out")
		skopeo(t, "copy", "--src-tls-verify=false", "docker://"+other.Host()+"/"+repo+":1", "oci:"+out+":app")
		_, om := layoutManifest(t, out)
		if got, want := manifestLayerDigests(om), layerDigests(t, img); !slices.Equal(got, want) {
			t.Fatalf("%s through a shroud with the providers: %v, want %v", repo, got, want)
		}
		msg, err := skopeoErr(t, "inspect", "--raw", "--tls-verify=false", "docker://"+none.Host()+"/"+repo+":1")
		if err == nil || !strings.Contains(msg, "provider.kms-") {
			t.Fatalf("%s through a shroud without providers: %v %s", repo, err, msg)
		}
	}
}

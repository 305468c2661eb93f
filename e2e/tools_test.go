package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/shroud-oci/shroud/internal/shroudtest"
)

// toolsDir holds the tools TestMain builds from the Go modules go.mod pins
// (its tool directives): the conformance suite, distribution's registry
// and crane; the tests' own key provider; and oras and cosign, from the
// module internal/signtools pins them in.
var toolsDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "shroud-e2e-tools")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cmd := exec.Command("go", "build", "-o", dir+"/",
		"github.com/opencontainers/distribution-spec/conformance",
		"github.com/distribution/distribution/v3/cmd/registry",
		"github.com/google/go-containerregistry/cmd/crane",
		"github.com/shroud-oci/shroud/internal/keyprovidertest/testprovider")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building the e2e tools: %v\n%s", err, out)
		os.Exit(1)
	}
	// oras and cosign, from the module internal/signtools pins them in
	// (a module of its own, out of shroud's go.mod); -p 1: cosign is big
	// and CI machines have two cores.
	cmd = exec.Command("go", "build", "-p", "1", "-o", dir+"/",
		"oras.land/oras/cmd/oras",
		"github.com/sigstore/cosign/v2/cmd/cosign")
	cmd.Dir = "../internal/signtools"
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building oras and cosign in internal/signtools: %v\n%s", err, out)
		os.Exit(1)
	}
	toolsDir = dir
	stop, err := startShared()
	if err != nil {
		fmt.Fprintf(os.Stderr, "starting the shared upstream: %v\n", err)
		os.Exit(1)
	}
	code := m.Run()
	// After the suite: the shared upstream's storage holds no plaintext of
	// any layer pushed through shroud.
	if err := shared.checkNoPlaintext(); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
		code = 1
	} else {
		summarize(fmt.Sprintf("upstream storage scan: %d files, none holds any of the %d plaintext layers pushed through shroud", shared.files, shared.layers()))
	}
	stop()
	os.RemoveAll(dir)
	os.Exit(code)
}

func tool(name string) string { return filepath.Join(toolsDir, name) }

// summarize prints figures for the CI log: go test shows a passing
// package's output only with -v, so they also go to the file
// $SHROUD_E2E_SUMMARY names, which .ci/run prints.
func summarize(lines ...string) {
	for _, l := range lines {
		fmt.Println(l)
	}
	if p := os.Getenv("SHROUD_E2E_SUMMARY"); p != "" {
		f, err := os.OpenFile(p, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return
		}
		defer f.Close()
		for _, l := range lines {
			fmt.Fprintln(f, l)
		}
	}
}

// registryConfig is a distribution config (v3 and Debian's 2.8 read the
// same format) storing under dir and listening on addr.
func registryConfig(t *testing.T, dir, addr, extra string) string {
	t.Helper()
	p, err := writeRegistryConfig(dir, addr, extra)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// writeRegistryConfig writes registryConfig's file outside a test (for
// TestMain's shared registry).
func writeRegistryConfig(dir, addr, extra string) (string, error) {
	p := filepath.Join(dir, "config.yml")
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
  secret: e2e-secret
%s`, filepath.Join(dir, "storage"), addr, extra)
	return p, os.WriteFile(p, []byte(cfg), 0o600)
}

// registryProcess is a registry binary serving on a fixed address, which
// a test can stop and start again on the same storage.
type registryProcess struct {
	t    *testing.T
	name string
	bin  string
	cfg  string
	addr string
	cmd  *exec.Cmd
	logs *syncBuffer
}

func (p *registryProcess) start() {
	p.t.Helper()
	p.logs = &syncBuffer{}
	p.cmd = exec.Command(p.bin, "serve", p.cfg)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		if resp, err := http.Get("http://" + p.addr + "/v2/"); err == nil {
			resp.Body.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.t.Fatalf("%s did not start:\n%s", p.name, p.logs)
}

func (p *registryProcess) stop() {
	if p.cmd != nil && p.cmd.Process != nil {
		p.cmd.Process.Kill()
		p.cmd.Wait()
	}
}

// startRegistryProcess runs a registry binary (`<bin> serve <config>`) and
// waits for it to answer.
func startRegistryProcess(t *testing.T, name, bin, extraConfig string) shroudtest.Upstream {
	up, _ := startRegistry(t, name, bin, extraConfig)
	return up
}

func startRegistry(t *testing.T, name, bin, extraConfig string) (shroudtest.Upstream, *registryProcess) {
	t.Helper()
	if _, err := exec.LookPath(bin); err != nil {
		t.Fatalf("%s is not installed (.ci/run installs it): %v", bin, err)
	}
	dir := t.TempDir()
	p := &registryProcess{t: t, name: name, bin: bin, addr: freeAddr(t)}
	p.cfg = registryConfig(t, dir, p.addr, extraConfig)
	p.start()
	t.Cleanup(p.stop)
	return shroudtest.Upstream{Name: name, URL: "http://" + p.addr, Dir: filepath.Join(dir, "storage")}, p
}

// distributionV3 runs distribution's registry built from its Go module.
func distributionV3(t *testing.T) shroudtest.Upstream {
	return startRegistryProcess(t, "distribution-v3", tool("registry"), "")
}

// debianRegistry runs Debian's docker-registry (distribution 2.8).
func debianRegistry(t *testing.T) shroudtest.Upstream {
	return startRegistryProcess(t, "docker-registry-2.8", "/usr/bin/docker-registry", "")
}

// upstreamKinds are the upstreams the e2e tests run against, each started
// fresh by its function.
var upstreamKinds = []struct {
	name  string
	start func(*testing.T) shroudtest.Upstream
}{
	{"distribution-v3", distributionV3},
	{"docker-registry-2.8", debianRegistry},
	{"ggcr-referrers", func(t *testing.T) shroudtest.Upstream { return shroudtest.GGCR(t) }},
}

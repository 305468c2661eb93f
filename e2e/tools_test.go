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
// and crane.
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
		"github.com/google/go-containerregistry/cmd/crane")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building the e2e tools: %v\n%s", err, out)
		os.Exit(1)
	}
	toolsDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func tool(name string) string { return filepath.Join(toolsDir, name) }

// registryConfig is a distribution config (v3 and Debian's 2.8 read the
// same format) storing under dir and listening on addr.
func registryConfig(t *testing.T, dir, addr, extra string) string {
	t.Helper()
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
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// startRegistryProcess runs a registry binary (`<bin> serve <config>`) and
// waits for it to answer.
func startRegistryProcess(t *testing.T, name, bin, extraConfig string) shroudtest.Upstream {
	t.Helper()
	if _, err := exec.LookPath(bin); err != nil {
		t.Fatalf("%s is not installed (.ci/run installs it): %v", bin, err)
	}
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := registryConfig(t, dir, addr, extraConfig)
	logs := &syncBuffer{}
	cmd := exec.Command(bin, "serve", cfg)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		if resp, err := http.Get("http://" + addr + "/v2/"); err == nil {
			resp.Body.Close()
			return shroudtest.Upstream{Name: name, URL: "http://" + addr, Dir: filepath.Join(dir, "storage")}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not start:\n%s", name, logs)
	return shroudtest.Upstream{}
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

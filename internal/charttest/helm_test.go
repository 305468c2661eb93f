package charttest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// chartDir is charts/shroud, from this package's directory.
const chartDir = "../../charts/shroud"

// helmBin is the helm command built in TestMain from the module go.mod
// pins as a tool.
var helmBin string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "charttest-helm")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	helmBin = filepath.Join(dir, "helm")
	// -p 1: helm and the Kubernetes libraries are big; CI machines have
	// two cores and other work. The build cache makes later runs quick.
	build := exec.Command("go", "build", "-p", "1", "-o", helmBin, "helm.sh/helm/v4/cmd/helm")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building helm from its module:", err)
		return 1
	}
	return m.Run()
}

// helm runs the helm command with a home of its own (no user config,
// no repositories) and returns its output and error.
func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	home := t.TempDir()
	cmd := exec.Command(helmBin, args...)
	cmd.Env = append(os.Environ(), "HELM_CONFIG_HOME="+home, "HELM_CACHE_HOME="+home, "HELM_DATA_HOME="+home)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// valuesFile writes values (YAML) to a file for helm's -f.
func valuesFile(t *testing.T, values string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(f, []byte(values), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// template renders the chart with values as release "r" in namespace
// "shroud" and returns the objects, failing the test if helm does.
func template(t *testing.T, values string, extra ...string) objects {
	t.Helper()
	out, err := templateErr(t, values, extra...)
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, out)
	}
	return decodeAll(t, out)
}

func templateErr(t *testing.T, values string, extra ...string) (string, error) {
	t.Helper()
	args := append([]string{"template", "r", chartDir, "--namespace", "shroud", "-f", valuesFile(t, values)}, extra...)
	return helm(t, args...)
}

// lint runs helm lint --strict with values.
func lint(t *testing.T, values string) {
	t.Helper()
	if out, err := helm(t, "lint", "--strict", chartDir, "--namespace", "shroud", "-f", valuesFile(t, values)); err != nil || !strings.Contains(out, "0 chart(s) failed") {
		t.Fatalf("helm lint: %v\n%s", err, out)
	}
}

package e2e

import (
	"os/exec"
	"testing"
)

// The Helm chart's tests (internal/charttest, a module of its own so that
// helm and the Kubernetes libraries stay out of shroud's), run from here
// so that the README's one test command covers the chart too: helm lint
// and template for several value sets with helm built from its pinned
// module, strict decoding into the Kubernetes types, the rendered config
// loaded by shroud, the identity kept across upgrades.
func TestHelmChart(t *testing.T) {
	for _, args := range [][]string{{"vet", "./..."}, {"test", "-count=1", "./..."}} {
		cmd := exec.Command("go", args...)
		cmd.Dir = "../internal/charttest"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %v in internal/charttest: %v\n%s", args, err, out)
		}
	}
}

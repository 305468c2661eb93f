package e2e

import (
	"encoding/xml"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/shroud-oci/shroud/internal/shroudtest"
)

// junit is the part of the conformance suite's junit.xml read here.
type junit struct {
	Cases []struct {
		Name    string    `xml:"name,attr"`
		Status  string    `xml:"status,attr"`
		Failure *struct{} `xml:"failure"`
		Skipped *struct{} `xml:"skipped"`
	} `xml:"testsuite>testcase"`
}

// conformance runs the OCI distribution-spec conformance suite against a
// registry and returns how many times each test name passed.
func conformance(t *testing.T, host string) (passes map[string]int, total int) {
	t.Helper()
	results := t.TempDir()
	if keep := os.Getenv("SHROUD_CONFORMANCE_KEEP"); keep != "" {
		results = filepath.Join(keep, strings.ReplaceAll(t.Name(), "/", "_")+"_"+strings.ReplaceAll(host, ":", "_"))
		os.MkdirAll(results, 0o755)
	}
	cmd := exec.Command(tool("conformance"))
	cmd.Dir = results
	cmd.Env = append(os.Environ(),
		"OCI_REGISTRY="+host,
		"OCI_TLS=disabled",
		"OCI_RESULTS_DIR="+results,
		"OCI_LOG=error",
	)
	out, _ := cmd.CombinedOutput() // it exits non-zero whenever any test fails
	b, err := os.ReadFile(filepath.Join(results, "junit.xml"))
	if err != nil {
		t.Fatalf("conformance suite wrote no junit.xml: %v\n%s", err, out)
	}
	var j junit
	if err := xml.Unmarshal(b, &j); err != nil {
		t.Fatal(err)
	}
	passes = map[string]int{}
	for _, c := range j.Cases {
		if c.Failure == nil && c.Skipped == nil && (c.Status == "" || c.Status == "passed") {
			passes[c.Name]++
			total++
		}
	}
	return passes, total
}

// Every conformance test that passes straight at an upstream passes
// through shroud in front of a fresh instance of the same upstream.
func TestConformanceParity(t *testing.T) {
	var summary []string
	for _, kind := range upstreamKinds {
		t.Run(kind.name, func(t *testing.T) {
			direct, directTotal := conformance(t, kind.start(t).Host())
			s := shroudtest.Start(t, kind.start(t))
			through, throughTotal := conformance(t, s.Host())
			var lost []string
			for name, n := range direct {
				if through[name] < n {
					lost = append(lost, fmt.Sprintf("%s (%d of %d)", name, through[name], n))
				}
			}
			sort.Strings(lost)
			line := fmt.Sprintf("conformance %s: passed direct %d / passed through shroud %d / lost %d; referrers tests passed direct %d / through shroud %d",
				kind.name, directTotal, throughTotal, len(lost), referrersPasses(direct), referrersPasses(through))
			summary = append(summary, line)
			t.Log(line)
			if len(lost) > 0 {
				t.Errorf("tests that pass straight at %s fail through shroud:\n  %s", kind.name, strings.Join(lost, "\n  "))
			}
		})
	}
	summarize(summary...)
}

// referrersPasses counts the passes of the suite's referrers API tests.
func referrersPasses(passes map[string]int) int {
	n := 0
	for name, k := range passes {
		if strings.Contains(strings.ToLower(name), "referrers") {
			n += k
		}
	}
	return n
}

package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/shroud-oci/shroud/internal/shroudtest"
)

// signToolEnv is the environment oras and cosign run with: a home and a
// Docker config of their own (no user credentials, no sigstore cache
// shared between tests), plus extra.
func signToolEnv(t *testing.T, extra ...string) []string {
	t.Helper()
	home := t.TempDir()
	env := filteredEnv("HOME", "DOCKER_CONFIG", "TUF_ROOT", "COSIGN_PASSWORD", "COSIGN_EXPERIMENTAL")
	env = append(env, "HOME="+home, "DOCKER_CONFIG="+filepath.Join(home, ".docker"), "TUF_ROOT="+filepath.Join(home, ".sigstore", "root"))
	return append(env, extra...)
}

// filteredEnv is os.Environ without the variables named.
func filteredEnv(names ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		keep := true
		for _, n := range names {
			if k == n {
				keep = false
			}
		}
		if keep {
			out = append(out, kv)
		}
	}
	return out
}

// runTool runs one of the built tools in dir with env and returns its
// stdout and stderr apart.
func runTool(t *testing.T, dir string, env []string, bin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s was not built (TestMain builds it from internal/signtools): %v", bin, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir, cmd.Env = dir, env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}

// oras runs the oras command (plain HTTP: shroud and the upstreams serve
// http on 127.0.0.1) in dir, failing the test with its output on error.
func oras(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, errb, err := orasErr(t, dir, args...)
	if err != nil {
		t.Fatalf("oras %s: %v\n%s%s", strings.Join(args, " "), err, out, errb)
	}
	return out
}

func orasErr(t *testing.T, dir string, args ...string) (string, string, error) {
	t.Helper()
	if len(args) > 0 && args[0] == "cp" {
		args = append(args, "--from-plain-http", "--to-plain-http")
	} else {
		args = append(args, "--plain-http")
	}
	return runTool(t, dir, signToolEnv(t), tool("oras"), args...)
}

// orasDescriptor is what oras prints for a descriptor with --format json
// (push, attach, discover); discover nests each subject's referrers.
type orasDescriptor struct {
	Reference    string            `json:"reference"`
	MediaType    string            `json:"mediaType"`
	Digest       string            `json:"digest"`
	Size         int64             `json:"size"`
	ArtifactType string            `json:"artifactType"`
	Annotations  map[string]string `json:"annotations"`
	Referrers    []orasDescriptor  `json:"referrers"`
}

// orasJSON runs oras with --format json and decodes the descriptor it
// prints.
func orasJSON(t *testing.T, dir string, args ...string) orasDescriptor {
	t.Helper()
	out := oras(t, dir, append(args, "--format", "json")...)
	var d orasDescriptor
	if err := json.Unmarshal([]byte(out), &d); err != nil || d.Digest == "" {
		t.Fatalf("oras %s printed no descriptor (%v):\n%s", strings.Join(args, " "), err, out)
	}
	return d
}

// discover is `oras discover --format json ref`: the subject's digest and
// its direct referrers as sorted "digest artifactType" lines.
func discover(t *testing.T, dir, ref string, extra ...string) (subject string, referrers []string) {
	t.Helper()
	d := orasJSON(t, dir, append([]string{"discover", ref}, extra...)...)
	for _, r := range d.Referrers {
		referrers = append(referrers, r.Digest+" "+r.ArtifactType)
	}
	sort.Strings(referrers)
	return d.Digest, referrers
}

// cosignRun runs cosign in dir with env, failing the test with its output
// on error; it returns stdout.
func cosignRun(t *testing.T, dir string, env []string, args ...string) string {
	t.Helper()
	out, errb, err := runTool(t, dir, env, tool("cosign"), args...)
	if err != nil {
		t.Fatalf("cosign %s: %v\n%s%s", strings.Join(args, " "), err, out, errb)
	}
	return out
}

// digestTagPattern is a tag naming a digest the way the referrers tag
// schema and cosign's tags do (sha256-<hex>, with or without a suffix).
var digestTagPattern = regexp.MustCompile(`sha256-[0-9a-f]{64}`)

// noDigestTagsUpstream fails the test if a tag of repo, listed straight
// from the upstream (not through shroud), names a digest as sha256-<hex>
// or holds the hex of any of digests: the registry must never learn a
// plaintext digest from a tag name.
func noDigestTagsUpstream(t *testing.T, up shroudtest.Upstream, repo string, digests ...string) {
	t.Helper()
	out := crane(t, "ls", up.Host()+"/"+repo)
	t.Logf("the upstream's tags of %s: %s", repo, strings.Join(strings.Fields(out), " "))
	for _, tag := range strings.Fields(out) {
		if digestTagPattern.MatchString(tag) {
			t.Errorf("the upstream %s holds the tag %s:%s, which names a digest", up.Name, repo, tag)
			continue
		}
		for _, d := range digests {
			if _, hex, _ := strings.Cut(d, ":"); hex != "" && strings.Contains(tag, hex) {
				t.Errorf("the upstream %s holds the tag %s:%s, which names the plaintext digest %s", up.Name, repo, tag, d)
			}
		}
	}
}

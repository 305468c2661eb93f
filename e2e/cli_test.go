package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// buildShroud builds the binary the README tells users to run.
func buildShroud(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "shroud")
	cmd := exec.Command("go", "build", "-o", bin, "../cmd/shroud")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/shroud: %v\n%s", err, out)
	}
	return bin
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startShroud runs `shroud serve` and waits until its liveness probe
// answers 200.
func startShroud(t *testing.T, bin string, args ...string) (addr string, cmd *exec.Cmd, logs *syncBuffer) {
	t.Helper()
	return startShroudWith(t, bin, "http", http.DefaultClient, args...)
}

// startShroudWith is startShroud for a shroud serving scheme (https when
// args give it a certificate), asked with client.
func startShroudWith(t *testing.T, bin, scheme string, client *http.Client, args ...string) (addr string, cmd *exec.Cmd, logs *syncBuffer) {
	t.Helper()
	addr = freeAddr(t)
	logs = &syncBuffer{}
	cmd = exec.Command(bin, append([]string{"serve", "--listen", addr}, args...)...)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		if resp, err := client.Get(scheme + "://" + addr + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return addr, cmd, logs
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("shroud did not answer /healthz within 30s:\n%s", logs)
	return
}

// syncBuffer is a bytes.Buffer safe to read while a process writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// waitFor waits up to 10 s for the log to hold text (a process's output
// arrives through a pipe, after what it caused).
func (s *syncBuffer) waitFor(text string) bool {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if strings.Contains(s.String(), text) {
			return true
		}
	}
	return false
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// The README's quick start: `shroud serve` alone (embedded registry),
// an identity generated on first start, skopeo in and out, a clean stop.
func TestServeEmbeddedQuickStart(t *testing.T) {
	bin := buildShroud(t)
	data := filepath.Join(t.TempDir(), "data")
	addr, cmd, logs := startShroud(t, bin, "--data-dir", data)

	st, err := os.Stat(filepath.Join(data, "identity.pem"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("identity.pem: %v mode %v, want a 0600 file", err, st)
	}
	if _, err := os.Stat(filepath.Join(data, "identity.pub.pem")); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), filepath.Join(data, "identity.pem")) {
		t.Fatalf("start-up log does not say where the new identity is:\n%s", logs)
	}
	src, img := ociLayout(t, 2, 200_000)
	skopeo(t, "copy", "--dest-tls-verify=false", src, "docker://"+addr+"/team/app:1")
	back := filepath.Join(t.TempDir(), "back")
	skopeo(t, "copy", "--src-tls-verify=false", "docker://"+addr+"/team/app:1", "oci:"+back+":app")
	raw, _ := layoutManifest(t, back)
	if want, _ := img.RawManifest(); !bytes.Equal(raw, want) {
		t.Fatal("round trip through the shroud binary changed the manifest")
	}
	// The log records what left: the image, the rule, its layers encrypted.
	wantDigest, _ := img.Digest()
	if !logs.waitFor(`msg="manifest stored" request_id=`) || !strings.Contains(logs.String(), "plain_digest="+wantDigest.String()) ||
		!strings.Contains(logs.String(), `rule="policy rule 0 (encrypt \"**\")" layers=2 encrypted_layers=2`) {
		t.Fatalf("no record of the stored manifest in the log:\n%s", logs)
	}
	// The embedded registry's storage holds no plaintext layer.
	ls, _ := img.Layers()
	filepath.WalkDir(filepath.Join(data, "registry"), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		b, _ := os.ReadFile(p)
		for _, l := range ls {
			rc, _ := l.Compressed()
			head := make([]byte, 4096)
			n, _ := rc.Read(head)
			rc.Close()
			if n > 0 && bytes.Contains(b, head[:n]) {
				t.Errorf("embedded storage file %s holds plaintext", p)
			}
		}
		return nil
	})

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("shroud did not exit cleanly on SIGTERM: %v\n%s", err, logs)
	}

	// A restart keeps the identity and serves what was pushed before.
	addr2, _, _ := startShroud(t, bin, "--data-dir", data)
	back2 := filepath.Join(t.TempDir(), "back2")
	skopeo(t, "copy", "--src-tls-verify=false", "docker://"+addr2+"/team/app:1", "oci:"+back2+":app")
	if raw2, _ := layoutManifest(t, back2); !bytes.Equal(raw2, raw) {
		t.Fatal("pull after restart changed the manifest")
	}
}

// Bad start-up input fails loudly, naming what is wrong.
func TestServeRejectsBadInput(t *testing.T) {
	bin := buildShroud(t)
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	os.WriteFile(garbage, []byte("not a key"), 0o600)
	cfg := filepath.Join(dir, "shroud.yaml")
	os.WriteFile(cfg, []byte("listn: :5000\n"), 0o600)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--recipient", "jwe:" + garbage}, garbage},
		{[]string{"--recipient", "pkcs9:x"}, "unknown scheme"},
		{[]string{"--decryption-key", garbage}, garbage},
		{[]string{"--upstream", "localhost:5000"}, "upstream"},
		{[]string{"--config", cfg}, "listn"},
		{[]string{"--tls-cert", garbage}, "tls-key"},
		{[]string{"--tls-cert", garbage, "--tls-key", garbage}, garbage},
		{[]string{"--upstream-ca", garbage}, garbage},
		{[]string{"--upstream-auth-file", garbage}, garbage},
	} {
		args := append([]string{"serve", "--listen", freeAddr(t), "--data-dir", filepath.Join(dir, "d")}, tc.args...)
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("shroud %v: err %v, output %q; want a failure naming %q", tc.args, err, out, tc.want)
		}
	}
}

// Flags win over the config file.
func TestServeConfigFile(t *testing.T) {
	bin := buildShroud(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "shroud.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("listen: 127.0.0.1:1\ndata-dir: %s\nlog-level: debug\n", filepath.Join(dir, "fromfile"))), 0o600)
	_, _, _ = startShroud(t, bin, "--config", cfg) // --listen from the flag wins over the file's port 1
	if _, err := os.Stat(filepath.Join(dir, "fromfile", "identity.pem")); err != nil {
		t.Fatalf("data-dir from the config file not used: %v", err)
	}
}

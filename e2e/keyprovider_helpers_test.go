package e2e

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/protobuf/encoding/protowire"
)

// imgcryptVersion is the imgcrypt whose cmd/ctd-decoder the tests run as
// a node's containerd would: its module zip holds the command, which the
// Go proxy serves though the cmd module itself is not.
const imgcryptVersion = "v1.1.8"

var ctdDecoderBin struct {
	once sync.Once
	path string
	err  error
	out  []byte
}

// ctdDecoder builds imgcrypt's ctd-decoder once into the user's cache
// directory (downloading the module from the Go proxy on a fresh machine)
// and returns its path. It is built in its own module, not shroud's.
func ctdDecoder(t *testing.T) string {
	t.Helper()
	ctdDecoderBin.once.Do(func() {
		cache, err := os.UserCacheDir()
		if err != nil {
			cache = os.TempDir()
		}
		p := filepath.Join(cache, "shroud-e2e", "ctd-decoder-"+imgcryptVersion)
		if _, err := os.Stat(p); err == nil {
			ctdDecoderBin.path = p
			return
		}
		dl := exec.Command("go", "mod", "download", "-json", "github.com/containerd/imgcrypt@"+imgcryptVersion)
		dl.Dir = os.TempDir() // outside shroud's module
		out, err := dl.Output()
		if err != nil {
			ctdDecoderBin.err, ctdDecoderBin.out = err, out
			return
		}
		var mod struct{ Dir string }
		if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
			ctdDecoderBin.err, ctdDecoderBin.out = err, out
			return
		}
		b := exec.Command("go", "build", "-mod=mod", "-o", p+".tmp", "./cmd/ctd-decoder")
		b.Dir = mod.Dir
		b.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
		if ctdDecoderBin.out, ctdDecoderBin.err = b.CombinedOutput(); ctdDecoderBin.err != nil {
			return
		}
		ctdDecoderBin.err = os.Rename(p+".tmp", p)
		ctdDecoderBin.path = p
	})
	if ctdDecoderBin.err != nil {
		t.Fatalf("building imgcrypt %s's ctd-decoder: %v\n%s", imgcryptVersion, ctdDecoderBin.err, ctdDecoderBin.out)
	}
	return ctdDecoderBin.path
}

// ctdPayload is what containerd hands ctd-decoder on fd 3: a protobuf Any
// (type_url = 1, value = 2) whose value is imgcrypt's Payload, which
// typeurl registers without a proto type and so encodes as JSON.
func ctdPayload(t *testing.T, desc ocispec.Descriptor) []byte {
	t.Helper()
	v, err := json.Marshal(struct {
		DecryptConfig struct{ Parameters map[string][][]byte }
		Descriptor    ocispec.Descriptor
	}{Descriptor: desc})
	if err != nil {
		t.Fatal(err)
	}
	b := protowire.AppendTag(nil, 1, protowire.BytesType)
	b = protowire.AppendString(b, "io.containerd.ocicrypt.v1.Payload")
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

// runCtdDecoder runs ctd-decoder as containerd's stream processor does:
// the layer on stdin, the payload on fd 3, the key providers of
// providerConfig (OCICRYPT_KEYPROVIDER_CONFIG), and no key of its own
// unless args give it one (--decryption-keys-path). It returns stdout and
// stderr.
func runCtdDecoder(t *testing.T, layer []byte, desc ocispec.Descriptor, providerConfig string, args ...string) (stdout, stderr []byte, err error) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	go func() { w.Write(ctdPayload(t, desc)); w.Close() }()
	defer r.Close()
	cmd := exec.Command(ctdDecoder(t), args...)
	cmd.Stdin = bytes.NewReader(layer)
	cmd.ExtraFiles = []*os.File{r}
	cmd.Env = []string{"OCICRYPT_KEYPROVIDER_CONFIG=" + providerConfig, "STREAM_PROCESSOR_MEDIATYPE=" + desc.MediaType, "PATH=/usr/bin:/bin"}
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(time.Minute):
		cmd.Process.Kill()
		err = <-done
	}
	return o.Bytes(), e.Bytes(), err
}

// waitTCP waits up to 30 s for addr to accept a connection.
func waitTCP(t *testing.T, p *process, addr string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if !p.running() {
			t.Fatalf("%s exited (%v):\n%s", p.name, p.err, p.logs)
		}
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
	}
	t.Fatalf("%s does not listen on %s:\n%s", p.name, addr, p.logs)
}

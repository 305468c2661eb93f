package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/shroud-oci/shroud/internal/shroudtest"
)

// shared is one distribution v3 registry that the whole e2e suite pushes
// into through shroud; after the suite its storage is read for plaintext.
var shared sharedUpstream

type sharedUpstream struct {
	up shroudtest.Upstream

	mu     sync.Mutex
	plains [][]byte // a prefix of each plaintext layer pushed
	files  int
}

// startShared runs the shared registry (distribution v3 built from its
// module) until stop.
func startShared() (stop func(), err error) {
	dir, err := os.MkdirTemp("", "shroud-e2e-shared")
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg, err := writeRegistryConfig(dir, addr, "")
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(tool("registry"), "serve", cfg)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	stop = func() { cmd.Process.Kill(); cmd.Wait(); os.RemoveAll(dir) }
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		if resp, err := http.Get("http://" + addr + "/v2/"); err == nil {
			resp.Body.Close()
			shared.up = shroudtest.Upstream{Name: "shared-distribution-v3", URL: "http://" + addr, Dir: filepath.Join(dir, "storage")}
			return stop, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	return nil, fmt.Errorf("the shared registry did not start")
}

// sharedShroud is a shroud in front of the shared upstream.
func sharedShroud(t *testing.T, opts ...shroudtest.Option) shroudtest.Shroud {
	return shroudtest.Start(t, shared.up, opts...)
}

// recordLayers notes the plaintext of an image's layers, pushed through
// shroud into the shared upstream.
func recordLayers(t *testing.T, img v1.Image) {
	t.Helper()
	for _, b := range layerPrefixes(t, img) {
		if len(b) >= 64 {
			shared.mu.Lock()
			shared.plains = append(shared.plains, b)
			shared.mu.Unlock()
		}
	}
}

// layerPrefixes returns the first 4 KiB of each of an image's layers (as
// pushed, compressed): what a storage scan looks for.
func layerPrefixes(t *testing.T, img v1.Image) [][]byte {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, l := range ls {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(io.LimitReader(rc, 4096))
		rc.Close()
		out = append(out, b)
	}
	return out
}

func (s *sharedUpstream) layers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.plains)
}

// checkNoPlaintext reads every file of the shared storage.
func (s *sharedUpstream) checkNoPlaintext() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.plains) == 0 {
		summarize("upstream storage scan: no layer went to the shared upstream in this run (a -run filter?): nothing to check")
		return nil
	}
	var bad error
	filepath.WalkDir(s.up.Dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		s.files++
		b, err := os.ReadFile(p)
		if err != nil {
			bad = err
			return nil
		}
		for _, plain := range s.plains {
			if bytes.Contains(b, plain) {
				bad = fmt.Errorf("upstream storage file %s holds plaintext of a layer pushed through shroud", p)
			}
		}
		return nil
	})
	return bad
}

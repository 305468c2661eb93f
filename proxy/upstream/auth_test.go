package upstream

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
)

// The keys a config.json may hold (a host, a URL, Docker Hub's legacy
// index URL) find the upstream they name; an entry without credentials
// and a file that is not JSON fail naming the file.
func TestLoadAuthFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(body), 0o600)
		return p
	}
	f, err := LoadAuthFile(write("config.json", `{"auths": {
		"registry.example.com:5000": {"auth": "YWxpY2U6czNjcmV0"},
		"https://ghcr.io/": {"username": "bob", "password": "pw"},
		"https://index.docker.io/v1/": {"auth": "Y2Fyb2w6aHVi"}
	}, "credsStore": "desktop"}`))
	if err != nil {
		t.Fatal(err)
	}
	for base, user := range map[string]string{
		"https://registry.example.com:5000": "alice",
		"https://ghcr.io":                   "bob",
		"https://registry-1.docker.io":      "carol",
	} {
		a, ok := f.For(base)
		if !ok {
			t.Fatalf("no credentials for %s", base)
		}
		cfg, _ := authn.Authorization(t.Context(), a)
		if cfg.Username != user {
			t.Fatalf("%s: user %q, want %q", base, cfg.Username, user)
		}
	}
	if _, ok := f.For("https://quay.io"); ok {
		t.Fatal("credentials for a registry the file does not name")
	}
	for name, body := range map[string]string{
		"empty.json": `{"auths": {"quay.io": {}}}`,
		"junk.json":  `not json`,
	} {
		p := write(name, body)
		if _, err := LoadAuthFile(p); err == nil || !strings.Contains(err.Error(), p) {
			t.Fatalf("%s: %v, want an error naming the file", name, err)
		}
	}
}

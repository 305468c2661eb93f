package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "shroud.yaml")
	os.WriteFile(p, []byte("listen: 127.0.0.1:6000\nupstream: https://registry.example\nrecipient: [jwe:a.pem, jwe:b.pem]\nupload-ttl: 5m\nupstreams:\n  docker.io: http://127.0.0.1:5001\n"), 0o600)
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:6000" || c.Upstream != "https://registry.example" || len(c.Recipients) != 2 || c.UploadTTL != 5*time.Minute || c.Upstreams["docker.io"] != "http://127.0.0.1:5001" {
		t.Fatalf("Load = %+v", c)
	}
	if c.DataDir != "./shroud-data" || c.CacheEntries != 100_000 {
		t.Fatalf("defaults lost: %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestLoadPolicyAndProviders(t *testing.T) {
	p := filepath.Join(t.TempDir(), "shroud.yaml")
	os.WriteFile(p, []byte(`policy:
  - repositories: "team-a/**"
    action: encrypt
    recipients: ["provider:kms:team-a"]
    layers: [0, -1]
    platforms: [linux/amd64]
  - repositories: "**"
    action: deny
key-providers:
  kms:
    grpc: 127.0.0.1:50051
    grpc-tls:
      root-ca-file: /etc/kms/ca.pem
  local:
    cmd:
      path: /usr/bin/provider
      args: [--fast]
pkcs11:
  allowed-module-paths: [/usr/lib/softhsm/libsofthsm2.so]
`), 0o600)
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Policy) != 2 || c.Policy[0].Layers[1] != -1 || c.Policy[0].Platforms[0] != "linux/amd64" || c.Policy[1].Action != "deny" {
		t.Fatalf("policy = %+v", c.Policy)
	}
	if c.KeyProviders["kms"].GrpcTLS.RootCAFile != "/etc/kms/ca.pem" || c.KeyProviders["local"].Cmd.Args[0] != "--fast" {
		t.Fatalf("key-providers = %+v", c.KeyProviders)
	}
	if c.PKCS11.AllowedModulePaths[0] != "/usr/lib/softhsm/libsofthsm2.so" {
		t.Fatalf("pkcs11 = %+v", c.PKCS11)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c.Policy[1].Action = "shred"
	if err := c.Validate(); err == nil {
		t.Fatal("an unknown action validated")
	}
}

func TestLoadRejectsUnknownKeys(t *testing.T) {
	p := filepath.Join(t.TempDir(), "shroud.yaml")
	os.WriteFile(p, []byte("listn: :5000\n"), 0o600)
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "listn") {
		t.Fatalf("Load with a misspelt key: err = %v, want one naming it", err)
	}
}

// The admin section, read from a file, with the previous identities of a
// rotation.
func TestLoadAdminAndPreviousIdentities(t *testing.T) {
	p := filepath.Join(t.TempDir(), "shroud.yaml")
	os.WriteFile(p, []byte("admin:\n  listen: 127.0.0.1:5002\n  token-file: /etc/shroud/admin.token\nprevious-identities: [/etc/shroud/old.pem]\n"), 0o600)
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.Admin.Listen != "127.0.0.1:5002" || c.Admin.TokenFile != "/etc/shroud/admin.token" || len(c.PreviousIdentities) != 1 {
		t.Fatalf("Load = %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestValidate(t *testing.T) {
	for _, bad := range []func(*Config){
		func(c *Config) { c.Listen = "nope" },
		func(c *Config) { c.Upstream = "ftp://x" },
		func(c *Config) { c.Upstream = "localhost:5000" },
		func(c *Config) { c.DataDir = "" },
		func(c *Config) { c.LogLevel = "loud" },
		func(c *Config) { c.LogFormat = "xml" },
		func(c *Config) { c.Upstreams = map[string]string{"docker.io": "nope"} },
		func(c *Config) { c.TLSCert = "cert.pem" }, // no key
		func(c *Config) { c.DrainTimeout = 0 },
		func(c *Config) { c.DrainDelay = -time.Second },
		func(c *Config) { c.Shared = Shared{PasswordFile: "pw"} }, // no addrs
		func(c *Config) { c.Shared = Shared{Addrs: []string{"r:6379"}, Timeout: -time.Second} },
		func(c *Config) { c.Admin = Admin{Listen: "127.0.0.1:5002"} },             // no token file
		func(c *Config) { c.Admin = Admin{Listen: c.Listen, TokenFile: "token"} }, // the registry's listener
		func(c *Config) { c.Admin = Admin{Listen: "nope", TokenFile: "token"} },   // no port
		func(c *Config) { c.Admin = Admin{AccessRequests: true} },                 // access requests no owner can decide
		// An encrypt-only rule nothing could open, one with a pull mode
		// of neither kind, decrypting options on one, and encrypt-only
		// on a passthrough rule.
		func(c *Config) { c.Policy = []Rule{{Repositories: "**", Action: "encrypt", EncryptOnly: true}} },
		func(c *Config) {
			c.EncryptOnly, c.Policy = true, []Rule{{Repositories: "**", Action: "encrypt", Recipients: []string{"jwe:k.pem"}, EncryptOnlyPulls: "plaintext"}}
		},
		func(c *Config) {
			c.Policy = []Rule{{Repositories: "**", Action: "encrypt", Recipients: []string{"jwe:k.pem"}, EncryptOnly: true, AcceptForeign: true}}
		},
		func(c *Config) { c.Policy = []Rule{{Repositories: "**", Action: "passthrough", EncryptOnly: true}} },
		func(c *Config) {
			c.Policy = []Rule{{Repositories: "**", Action: "encrypt", EncryptOnlyPulls: "refuse"}}
		},
	} {
		c := Default()
		bad(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("Validate(%+v) passed", c)
		}
	}
}

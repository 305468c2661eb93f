package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shroud-oci/shroud/config"
	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/softhsm"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// tokenConfig is a config whose identity is a new SoftHSM2 token's key
// pair, the module allowed, and a data dir that does not exist yet.
func tokenConfig(t *testing.T) (config.Config, string) {
	t.Helper()
	_, priv := softhsm.Token(t, 2048, true)
	cfg := config.Default()
	cfg.DataDir = filepath.Join(t.TempDir(), "data")
	cfg.Identity = "pkcs11:" + priv
	cfg.PKCS11.AllowedModulePaths = []string{softhsm.Module}
	return cfg, priv
}

// A token identity is loaded from the token, whatever the data dir holds:
// an identity.pem there from before is not used, and nothing is written.
func TestLoadIdentityFromToken(t *testing.T) {
	cfg, priv := tokenConfig(t)
	id, err := loadIdentity(context.Background(), cfg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if !id.InToken() || id.Path() != priv {
		t.Fatalf("InToken %v, Path %q; want the token's key file %s", id.InToken(), id.Path(), priv)
	}
	if _, err := os.Stat(cfg.DataDir); !os.IsNotExist(err) {
		t.Fatalf("loading a token identity touched the data dir: %v", err)
	}

	old, _, err := crypto.LoadOrCreateIdentity(cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	again, err := loadIdentity(context.Background(), cfg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if again.Fingerprint() == old.Fingerprint() || again.Fingerprint() != id.Fingerprint() {
		t.Fatal("a token identity used the data dir's identity.pem")
	}
	keys, err := keyring(context.Background(), cfg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer keys.Close()
	if !keys.Identity().InToken() {
		t.Fatal("serve's keyring does not hold the token identity")
	}
}

// Every way a token identity fails to load is an error naming the key
// file, never the PIN, and leaves the data dir as it was: absent, or
// holding an identity.pem that is not used instead.
func TestLoadIdentityTokenFailures(t *testing.T) {
	cfg, priv := tokenConfig(t)
	orig, err := os.ReadFile(priv)
	if err != nil {
		t.Fatal(err)
	}
	variant := func(old, new string) string {
		p := filepath.Join(t.TempDir(), "key.yaml")
		if err := os.WriteFile(p, []byte(strings.Replace(string(orig), old, new, 1)), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, c := range []struct {
		name, file string
		modules    []string
		want, pin  string
	}{
		{"wrong PIN", variant("pin-value=1234", "pin-value=9876"), cfg.PKCS11.AllowedModulePaths, "PIN_INCORRECT", "9876"},
		{"no such token", variant("token=shroud", "token=absent"), cfg.PKCS11.AllowedModulePaths, `token "absent"`, "1234"},
		{"no such object", variant("object=ops", "object=absent"), cfg.PKCS11.AllowedModulePaths, `object="absent"`, "1234"},
		{"module not allowed", priv, nil, "allowed-module-paths", "1234"},
		{"no key file", filepath.Join(t.TempDir(), "absent.yaml"), cfg.PKCS11.AllowedModulePaths, "absent.yaml", "1234"},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, withOld := range []bool{false, true} {
				cfg := cfg
				cfg.DataDir = filepath.Join(t.TempDir(), "data")
				cfg.Identity = "pkcs11:" + c.file
				cfg.PKCS11.AllowedModulePaths = c.modules
				var before []byte
				if withOld {
					if _, _, err := crypto.LoadOrCreateIdentity(cfg.DataDir); err != nil {
						t.Fatal(err)
					}
					before = dirSnapshot(t, cfg.DataDir)
				}
				_, err := keyring(context.Background(), cfg, quiet)
				if err == nil {
					t.Fatal("loaded")
				}
				msg := err.Error()
				if !strings.Contains(msg, c.file) || !strings.Contains(msg, c.want) {
					t.Errorf("error %q does not name %s and %q", msg, c.file, c.want)
				}
				if strings.Contains(msg, c.pin) {
					t.Errorf("error %q holds the PIN", msg)
				}
				if !withOld {
					if _, err := os.Stat(cfg.DataDir); !os.IsNotExist(err) {
						t.Errorf("a failed token identity created the data dir: %v", err)
					}
				} else if after := dirSnapshot(t, cfg.DataDir); string(after) != string(before) {
					t.Error("a failed token identity changed the data dir")
				}
			}
		})
	}
}

// A previous identity in a token is refused by name: the keyring opens a
// previous identity's wraps with its private key's bytes.
func TestPreviousIdentityInTokenRefused(t *testing.T) {
	cfg, priv := tokenConfig(t)
	cfg.Identity = ""
	cfg.PreviousIdentities = []string{"pkcs11:" + priv}
	_, err := keyring(context.Background(), cfg, quiet)
	if err == nil || !strings.Contains(err.Error(), "previous identity pkcs11:"+priv) || !strings.Contains(err.Error(), "PKCS#11 token") {
		t.Fatalf("keyring with a token previous identity: %v; want an error naming it", err)
	}
}

// dirSnapshot is every file's path, mode and bytes under dir.
func dirSnapshot(t *testing.T, dir string) []byte {
	t.Helper()
	var out []byte
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		out = append(out, p+" "+info.Mode().String()+"\n"...)
		if !d.IsDir() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out = append(out, b...)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

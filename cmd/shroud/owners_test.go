package main

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/shroud-oci/shroud/auth"
	"github.com/shroud-oci/shroud/config"
	"github.com/shroud-oci/shroud/crypto"
)

// Owners named by admin.owners are told apart from everyone else by
// shroud's own authentication: the owner's credentials name it, another
// user's, wrong ones and none do not; a grant of anonymous is refused.
func TestOwnerAuthNamesOnlyOwners(t *testing.T) {
	dir := t.TempDir()
	line := func(user, pw string) string {
		h, _ := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		return user + ":" + string(h) + "\n"
	}
	htp := filepath.Join(dir, "htpasswd")
	os.WriteFile(htp, []byte(line("olive", "owner-pw")+line("carl", "ci-pw")), 0o600)
	h, err := auth.LoadHtpasswd(htp)
	if err != nil {
		t.Fatal(err)
	}
	authn, err := auth.New(auth.Config{Htpasswd: h})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	cfg := config.Default()
	cfg.Admin.Owners = []string{"user:olive"}
	check, err := ownerAuth(cfg, authn, log)
	if err != nil || check == nil {
		t.Fatal(err)
	}
	ask := func(user, pw string) (string, bool) {
		r := httptest.NewRequest(http.MethodGet, "/admin/v1/access/requests", nil)
		if user != "" {
			r.SetBasicAuth(user, pw)
		}
		return check(context.Background(), r)
	}
	if who, ok := ask("olive", "owner-pw"); !ok || who != "olive" {
		t.Fatalf("the owner's credentials: %q %v", who, ok)
	}
	for _, c := range [][2]string{{"carl", "ci-pw"}, {"olive", "wrong"}, {"", ""}} {
		if _, ok := ask(c[0], c[1]); ok {
			t.Errorf("credentials %q/%q are taken for an owner's", c[0], c[1])
		}
	}
	cfg.Admin.Owners = []string{"anonymous"}
	if _, err := ownerAuth(cfg, authn, log); err == nil {
		t.Fatal("an owner grant of anonymous clients is taken")
	}
}

// An encrypt-only rule may not name a recipient shroud itself opens: one
// of its decryption keys, or a key provider.
func TestEncryptOnlyRefusesRecipientsShroudOpens(t *testing.T) {
	dir := t.TempDir()
	priv, pub, err := crypto.GenerateKeyPair("ec")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "k.pem"), priv, 0o600)
	os.WriteFile(filepath.Join(dir, "k.pub.pem"), pub, 0o644)
	id, _, _ := crypto.LoadOrCreateIdentity(filepath.Join(dir, "data"))
	dk, err := crypto.ParseDecryptionKey(filepath.Join(dir, "k.pem"))
	if err != nil {
		t.Fatal(err)
	}
	rec, err := crypto.ParseRecipient("jwe:" + filepath.Join(dir, "k.pub.pem"))
	if err != nil {
		t.Fatal(err)
	}
	with := func(dks ...crypto.DecryptionKey) error {
		kr, err := crypto.NewKeyring(id, dks)
		if err != nil {
			t.Fatal(err)
		}
		cfg := config.Default()
		cfg.Policy = []config.Rule{{Repositories: "**", Action: "encrypt", EncryptOnly: true, Recipients: []string{"jwe:" + filepath.Join(dir, "k.pub.pem")}}}
		_, err = policy(cfg, kr)
		return err
	}
	if err := with(); err != nil {
		t.Fatalf("an encrypt-only rule for a key shroud does not hold: %v", err)
	}
	if err := with(dk); err == nil {
		t.Fatalf("an encrypt-only rule for %s, whose private key shroud holds as a decryption key, was taken", rec.Spec)
	}
}

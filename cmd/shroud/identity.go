package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/shroud-oci/shroud/config"
	"github.com/shroud-oci/shroud/crypto"
)

// loadIdentity loads shroud's identity as cfg names it, for every command
// that holds one (serve, rotate, keyprovider, inspect):
//
//   - "pkcs11:<key file>": a key pair in a PKCS#11 token, named by an
//     ocicrypt PKCS#11 key file, loaded through the modules the pkcs11
//     section allows. Its private key never reaches shroud's disk, and
//     nothing falls back to the data dir: whatever fails (a wrong PIN, a
//     token or key pair that is not there, a module not allowed), the
//     error names the key file and the token, never the PIN, and nothing
//     is written anywhere.
//   - any other non-empty value: a private key file.
//   - empty: <data-dir>/identity.pem, generated on first start.
func loadIdentity(ctx context.Context, cfg config.Config, log *slog.Logger) (*crypto.Identity, error) {
	switch {
	case crypto.IsTokenIdentity(cfg.Identity):
		id, err := crypto.LoadTokenIdentity(ctx, cfg.Identity, crypto.TokenModules{
			AllowedModulePaths: cfg.PKCS11.AllowedModulePaths,
			ModuleDirectories:  cfg.PKCS11.ModuleDirectories,
		})
		if err != nil {
			return nil, err
		}
		log.Info("identity in a PKCS#11 token: its private key stays there, the data dir holds none",
			"key_file", id.Path(), "identity", id.Fingerprint(), "identity_key_id", id.KeyID())
		return id, nil
	case cfg.Identity != "":
		return crypto.LoadIdentity(cfg.Identity)
	}
	id, created, err := crypto.LoadOrCreateIdentity(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	if created {
		log.Info("generated a new identity key pair: back it up, it opens every image shroud encrypts",
			"private", id.Path(), "public", filepath.Join(cfg.DataDir, crypto.IdentityPublicFile))
	}
	return id, nil
}

// loadPreviousIdentity loads a --previous-identity: a private key file.
// The keyring opens a previous identity's wraps with its private key
// bytes, which a token does not give out: rotate to a token identity,
// not from one.
func loadPreviousIdentity(spec string) (*crypto.Identity, error) {
	if crypto.IsTokenIdentity(spec) {
		return nil, fmt.Errorf("previous identity %s: a previous identity must be a private key file, not a key in a PKCS#11 token (rotate to a token identity, not from one)", spec)
	}
	id, err := crypto.LoadIdentity(spec)
	if err != nil {
		return nil, fmt.Errorf("previous identity: %w", err)
	}
	return id, nil
}

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/trust"
)

const trustUsage = `usage: shroud trust <command> [flags]

The trust documents: a TUF repository in a directory whose target files
are the allow list (recipients.json) and the deny list (revocations.json).
Keys are PEM files (ed25519 or ECDSA P-256, as shroud keygen --type ec
writes them); keep the root keys offline.

commands:
  init      write version 1 of root, targets, snapshot and timestamp:
            --dir D --root-key K [--root-key K2 --threshold 2] --targets-key T
            --snapshot-key S --timestamp-key TS [--generate]
  add-key   set a key's allow entry: --dir D (--key-id ID | --public-key FILE)
            --scheme S --scope GLOB... [--not-before T] [--not-after T]
            [--role R] --targets-key T [--snapshot-key S --timestamp-key TS]
  revoke    add a deny entry: --dir D --key-id ID --reason keyCompromise|superseded|retired
            [--role R] --targets-key T [--snapshot-key S --timestamp-key TS]
  delegate  delegate a namespace to a role: --dir D --role NAME --path 'team-a/*'
            --role-key FILE... [--threshold N] --targets-key T [--snapshot-key S --timestamp-key TS]
  sign      bump a role's version and re-sign it: --dir D --role R --key K...
            [--expires 24h] [--set-keys ROLE=FILE,FILE] [--threshold ROLE=N]
  status    show versions, expiries and lists: --dir D | --url U --root FILE [--data-dir D]
  publish   push the directory, once it verifies, as the OCI artifact --trust-source oci: reads,
            straight to the registry: --dir D --to HOST/REPO[:TAG] [--plain-http] [--auth-file FILE]
            [--force: over a published artifact that does not verify, another trust repository]
`

// trustCmd runs `shroud trust ...`.
func trustCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, trustUsage)
		return 2
	}
	cmds := map[string]func(context.Context, *flag.FlagSet, []string, io.Writer) error{
		"init": trustInit, "add-key": trustAddKey, "revoke": trustRevoke,
		"delegate": trustDelegate, "sign": trustSign, "status": trustStatus,
		"publish": trustPublish,
	}
	if args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stdout, trustUsage)
		return 0
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "shroud trust: unknown command %q\n%s", args[0], trustUsage)
		return 2
	}
	fs := flag.NewFlagSet("shroud trust "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	if err := cmd(ctx, fs, args[1:], stdout); err != nil {
		var u usageError
		if errors.As(err, &u) {
			fmt.Fprintf(stderr, "shroud trust %s: %v\n", args[0], err)
			return 2
		}
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "shroud trust %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

type usageError struct{ error }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	return nil
}

func trustInit(_ context.Context, fs *flag.FlagSet, args []string, stdout io.Writer) error {
	dir := fs.String("dir", "", "directory of the trust repository (required)")
	var rootKeys listFlag
	fs.Var(&rootKeys, "root-key", "root signing key, repeatable (required)")
	threshold := fs.Int("threshold", 1, "root keys needed to sign a root")
	targetsKey := fs.String("targets-key", "", "targets signing key (required)")
	snapshotKey := fs.String("snapshot-key", "", "snapshot signing key (required)")
	timestampKey := fs.String("timestamp-key", "", "timestamp signing key (required)")
	generate := fs.Bool("generate", false, "generate the key files that do not exist (ECDSA P-256; FILE and FILE's .pub.pem)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *dir == "" || len(rootKeys) == 0 || *targetsKey == "" || *snapshotKey == "" || *timestampKey == "" {
		return usagef("--dir, --root-key, --targets-key, --snapshot-key and --timestamp-key are required")
	}
	all := append(slices.Clone([]string(rootKeys)), *targetsKey, *snapshotKey, *timestampKey)
	if *generate {
		for _, k := range all {
			if err := generateKey(k, stdout); err != nil {
				return err
			}
		}
	}
	load := func(paths ...string) ([]signature.Signer, []*metadata.Key, error) {
		var ss []signature.Signer
		var ks []*metadata.Key
		for _, p := range paths {
			s, err := trust.LoadSigner(p)
			if err != nil {
				return nil, nil, err
			}
			k, err := trust.KeyOf(s)
			if err != nil {
				return nil, nil, err
			}
			ss, ks = append(ss, s), append(ks, k)
		}
		return ss, ks, nil
	}
	signers := map[string][]signature.Signer{}
	keys := trust.RootKeys{RootThreshold: *threshold}
	var err error
	if signers[metadata.ROOT], keys.Root, err = load(rootKeys...); err != nil {
		return err
	}
	if signers[metadata.TARGETS], keys.Targets, err = load(*targetsKey); err != nil {
		return err
	}
	if signers[metadata.SNAPSHOT], keys.Snapshot, err = load(*snapshotKey); err != nil {
		return err
	}
	if signers[metadata.TIMESTAMP], keys.Timestamp, err = load(*timestampKey); err != nil {
		return err
	}
	repo, err := trust.CreateRepository(*dir, keys, time.Now())
	if err != nil {
		return err
	}
	for _, role := range []string{metadata.ROOT, metadata.TARGETS, metadata.SNAPSHOT, metadata.TIMESTAMP} {
		if err := repo.Sign(role, signers[role]...); err != nil {
			return err
		}
	}
	if err := repo.Write(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "trust repository: %s (root v1, threshold %d of %d)\ngive shroud its initial root: --trust-root %s\n",
		*dir, *threshold, len(rootKeys), filepath.Join(*dir, "metadata", "1.root.json"))
	return nil
}

// generateKey writes an ECDSA P-256 key pair to path (and its .pub.pem)
// unless path exists.
func generateKey(path string, stdout io.Writer) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	priv, pub, err := crypto.GenerateKeyPair("ec")
	if err != nil {
		return err
	}
	pubPath := strings.TrimSuffix(path, ".pem") + ".pub.pem"
	if err := writeKeyPair(filepath.Dir(path), path, pubPath, priv, pub); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "generated %s (and %s)\n", path, pubPath)
	return nil
}

// publishFlags are the flags of a change to one role's lists.
type publishFlags struct {
	dir, role, namespace, targetsKey, snapshotKey, timestampKey *string
	expires                                                     *time.Duration
}

func addPublishFlags(fs *flag.FlagSet) publishFlags {
	return publishFlags{
		dir:          fs.String("dir", "", "directory of the trust repository (required)"),
		role:         fs.String("role", metadata.TARGETS, "role whose lists change: targets (every repository) or a delegated role"),
		namespace:    fs.String("namespace", "", "namespace of the lists (default: the role's, from its delegated paths)"),
		targetsKey:   fs.String("targets-key", "", "signing key of --role (required)"),
		snapshotKey:  fs.String("snapshot-key", "", "snapshot signing key: also publish a new snapshot"),
		timestampKey: fs.String("timestamp-key", "", "timestamp signing key: also publish a new timestamp (with --snapshot-key)"),
		expires:      fs.Duration("expires", 0, "validity of the new role version (default: 90 days)"),
	}
}

// open opens the repository and finds the namespace the role's lists are
// for.
func (p publishFlags) open() (*trust.Repository, string, error) {
	if *p.dir == "" || *p.targetsKey == "" {
		return nil, "", usagef("--dir and --targets-key are required")
	}
	repo, err := trust.OpenRepository(*p.dir)
	if err != nil {
		return nil, "", err
	}
	if repo.Roles[*p.role] == nil {
		return nil, "", fmt.Errorf("no role %s in %s", *p.role, *p.dir)
	}
	if *p.role == metadata.TARGETS || *p.namespace != "" {
		return repo, *p.namespace, nil
	}
	ns := repo.Namespaces(*p.role)
	if len(ns) != 1 {
		return nil, "", usagef("role %s signs for namespaces %q: say which with --namespace", *p.role, ns)
	}
	return repo, ns[0], nil
}

// publish signs the changed role and, with their keys, a new snapshot
// and timestamp.
func (p publishFlags) publish(repo *trust.Repository, stdout io.Writer) error {
	return publishRole(repo, *p.role, *p.targetsKey, *p.expires, *p.snapshotKey, *p.timestampKey, stdout)
}

func publishRole(repo *trust.Repository, role, key string, expires time.Duration, snapshotKey, timestampKey string, stdout io.Writer) error {
	chain := []struct{ role, key string }{{role, key}}
	if snapshotKey != "" {
		chain = append(chain, struct{ role, key string }{metadata.SNAPSHOT, snapshotKey})
		if timestampKey != "" {
			chain = append(chain, struct{ role, key string }{metadata.TIMESTAMP, timestampKey})
		}
	}
	for i, c := range chain {
		s, err := trust.LoadSigner(c.key)
		if err != nil {
			return err
		}
		d := trust.Expiry(c.role)
		if i == 0 && expires > 0 {
			d = expires
		}
		if err := repo.Bump(c.role, time.Now().Add(d)); err != nil {
			return err
		}
		if err := repo.Sign(c.role, s); err != nil {
			return err
		}
	}
	if err := repo.Write(); err != nil {
		return err
	}
	switch {
	case snapshotKey == "":
		fmt.Fprintf(stdout, "signed %s; now publish it: shroud trust sign --role snapshot, then --role timestamp\n", role)
	case timestampKey == "":
		fmt.Fprintf(stdout, "signed %s and snapshot; now publish them: shroud trust sign --role timestamp\n", role)
	default:
		fmt.Fprintf(stdout, "published %s, snapshot v%d, timestamp v%d\n", role, repo.Snapshot.Signed.Version, repo.Timestamp.Signed.Version)
	}
	return nil
}

func parseTime(name, v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, usagef("--%s: %v (want RFC 3339, 2030-01-02T15:04:05Z)", name, err)
	}
	return t.UTC(), nil
}

func trustAddKey(_ context.Context, fs *flag.FlagSet, args []string, stdout io.Writer) error {
	p := addPublishFlags(fs)
	keyID := fs.String("key-id", "", "key id (sha256:<hex>, pgp:<FINGERPRINT>, pkcs11:..., provider:<name>)")
	pubFile := fs.String("public-key", "", "the key itself (public key: PEM, DER or JWK; certificate; OpenPGP public key): its id is computed and its public key alone is distributed in the list (a private key is refused)")
	scheme := fs.String("scheme", "", "jwe, pgp, pkcs7, pkcs11 or provider (required)")
	url := fs.String("url", "", "where to get the key, when the list does not carry it")
	var scopes listFlag
	fs.Var(&scopes, "scope", "repository glob the key may be wrapped for (team-a/**), repeatable (required)")
	notBefore := fs.String("not-before", "", "start of validity (RFC 3339)")
	notAfter := fs.String("not-after", "", "end of validity (RFC 3339)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *scheme == "" || len(scopes) == 0 || (*keyID == "") == (*pubFile == "") {
		return usagef("--scheme, --scope and one of --key-id or --public-key are required")
	}
	e := trust.Recipient{KeyID: *keyID, Scheme: *scheme, URL: *url, Scopes: scopes}
	var err error
	if e.NotBefore, err = parseTime("not-before", *notBefore); err != nil {
		return err
	}
	if e.NotAfter, err = parseTime("not-after", *notAfter); err != nil {
		return err
	}
	if *pubFile != "" {
		if e.KeyID, e.PublicKey, err = publicKeyEntry(*scheme, *pubFile); err != nil {
			return err
		}
	}
	if err := e.Validate(); err != nil {
		return usageError{err}
	}
	repo, ns, err := p.open()
	if err != nil {
		return err
	}
	l, err := repo.Recipients(ns)
	if err != nil {
		return err
	}
	l.Recipients = slices.DeleteFunc(l.Recipients, func(r trust.Recipient) bool { return r.KeyID == e.KeyID })
	l.Recipients = append(l.Recipients, e)
	if err := repo.SetRecipients(*p.role, ns, l); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "allow %s (%s) for %s in %s\n", e.KeyID, e.Scheme, strings.Join(e.Scopes, ", "), listName(ns, trust.RecipientsFile))
	return p.publish(repo, stdout)
}

func trustRevoke(_ context.Context, fs *flag.FlagSet, args []string, stdout io.Writer) error {
	p := addPublishFlags(fs)
	keyID := fs.String("key-id", "", "key id to revoke, as shroud writes it: sha256:<64 lower-case hex>, pgp:<FINGERPRINT>, pkcs11:..., provider:<name> (required)")
	reason := fs.String("reason", "", "keyCompromise, superseded or retired (required)")
	at := fs.String("revoked-at", "", "when the key stopped being trusted (RFC 3339; default now)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *keyID == "" || *reason == "" {
		return usagef("--key-id and --reason are required")
	}
	// Key ids are compared as strings: one spelt otherwise than shroud
	// computes it (no "sha256:", upper case) would revoke nothing.
	if err := crypto.ValidKeyID(*keyID); err != nil {
		return usagef("--key-id: %v; nothing revoked", err)
	}
	e := trust.Revocation{KeyID: *keyID, Reason: *reason, RevokedAt: time.Now().UTC().Truncate(time.Second)}
	if *at != "" {
		t, err := parseTime("revoked-at", *at)
		if err != nil {
			return err
		}
		e.RevokedAt = t
	}
	if err := e.Validate(); err != nil {
		return usageError{err}
	}
	repo, ns, err := p.open()
	if err != nil {
		return err
	}
	l, err := repo.Revocations(ns)
	if err != nil {
		return err
	}
	// An entry is never dropped: a second revocation of the key updates
	// it (a retired key found compromised).
	if i := slices.IndexFunc(l.Revocations, func(r trust.Revocation) bool { return r.KeyID == e.KeyID }); i >= 0 {
		l.Revocations[i] = e
	} else {
		l.Revocations = append(l.Revocations, e)
	}
	if err := repo.SetRevocations(*p.role, ns, l); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "revoke %s (%s) in %s\n", e.KeyID, e.Reason, listName(ns, trust.RevocationsFile))
	return p.publish(repo, stdout)
}

func trustDelegate(_ context.Context, fs *flag.FlagSet, args []string, stdout io.Writer) error {
	dir := fs.String("dir", "", "directory of the trust repository (required)")
	role := fs.String("role", "", "name of the new role (required)")
	parent := fs.String("parent", metadata.TARGETS, "delegating role")
	var paths, roleKeys listFlag
	fs.Var(&paths, "path", "TUF path pattern delegated: 'team-a/*' lets the role sign namespace team-a's lists (repeatable, required)")
	fs.Var(&roleKeys, "role-key", "the role's key, public or private (a private one signs its first version), repeatable (required)")
	threshold := fs.Int("threshold", 1, "role keys needed to sign the role")
	parentKey := fs.String("targets-key", "", "signing key of --parent (required)")
	snapshotKey := fs.String("snapshot-key", "", "snapshot signing key: also publish a new snapshot")
	timestampKey := fs.String("timestamp-key", "", "timestamp signing key: also publish a new timestamp")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *dir == "" || *role == "" || len(paths) == 0 || len(roleKeys) == 0 || *parentKey == "" {
		return usagef("--dir, --role, --path, --role-key and --targets-key are required")
	}
	repo, err := trust.OpenRepository(*dir)
	if err != nil {
		return err
	}
	var keys []*metadata.Key
	var signers []signature.Signer
	for _, f := range roleKeys {
		k, err := trust.LoadPublicKey(f)
		if err != nil {
			return err
		}
		keys = append(keys, k)
		if s, err := trust.LoadSigner(f); err == nil {
			signers = append(signers, s)
		}
	}
	if err := repo.Delegate(*parent, *role, paths, keys, *threshold, time.Now().Add(trust.Expiry(*role))); err != nil {
		return err
	}
	if len(signers) > 0 {
		if err := repo.Sign(*role, signers...); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(stdout, "role %s is unsigned: its owners run shroud trust sign --role %s --key K\n", *role, *role)
	}
	fmt.Fprintf(stdout, "%s delegates %s to %s\n", *parent, strings.Join(paths, ", "), *role)
	return publishRole(repo, *parent, *parentKey, 0, *snapshotKey, *timestampKey, stdout)
}

func trustSign(_ context.Context, fs *flag.FlagSet, args []string, stdout io.Writer) error {
	dir := fs.String("dir", "", "directory of the trust repository (required)")
	role := fs.String("role", "", "root, targets, snapshot, timestamp or a delegated role (required)")
	var keyFiles, setKeys, thresholds listFlag
	fs.Var(&keyFiles, "key", "signing key, repeatable (a new root: enough keys of the old root and of the new one) (required)")
	expires := fs.Duration("expires", 0, "validity of the new version (default: root 365d, targets 90d, snapshot 7d, timestamp 24h)")
	fs.Var(&setKeys, "set-keys", "with --role root or a delegator: ROLE=FILE[,FILE] makes these the keys of ROLE (rotation), repeatable")
	fs.Var(&thresholds, "threshold", "with --set-keys: ROLE=N, the keys ROLE needs (default 1)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *dir == "" || *role == "" || len(keyFiles) == 0 {
		return usagef("--dir, --role and --key are required")
	}
	repo, err := trust.OpenRepository(*dir)
	if err != nil {
		return err
	}
	th := map[string]int{}
	for _, t := range thresholds {
		name, n, ok := strings.Cut(t, "=")
		v, err := strconv.Atoi(n)
		if !ok || err != nil {
			return usagef("--threshold %q: want ROLE=N", t)
		}
		th[name] = v
	}
	for _, sk := range setKeys {
		name, files, ok := strings.Cut(sk, "=")
		if !ok || files == "" {
			return usagef("--set-keys %q: want ROLE=FILE[,FILE]", sk)
		}
		var keys []*metadata.Key
		for _, f := range strings.Split(files, ",") {
			k, err := trust.LoadPublicKey(f)
			if err != nil {
				return err
			}
			keys = append(keys, k)
		}
		n := th[name]
		if n == 0 {
			n = 1
		}
		if err := repo.SetRoleKeys(name, keys, n); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "keys of %s: %d, threshold %d\n", name, len(keys), n)
	}
	var signers []signature.Signer
	for _, f := range keyFiles {
		s, err := trust.LoadSigner(f)
		if err != nil {
			return err
		}
		signers = append(signers, s)
	}
	d := trust.Expiry(*role)
	if *expires > 0 {
		d = *expires
	}
	if err := repo.Bump(*role, time.Now().Add(d)); err != nil {
		return err
	}
	if err := repo.Sign(*role, signers...); err != nil {
		return err
	}
	if err := repo.Write(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "signed %s v%d, expires %s\n", *role, roleVersion(repo, *role), time.Now().Add(d).UTC().Format(time.RFC3339))
	switch *role {
	case metadata.TIMESTAMP:
	case metadata.SNAPSHOT:
		fmt.Fprintln(stdout, "now publish it: shroud trust sign --role timestamp")
	case metadata.ROOT:
		fmt.Fprintln(stdout, "clients take it at their next refresh; rotated online keys re-sign their roles: shroud trust sign --role targets|snapshot|timestamp")
	default:
		fmt.Fprintln(stdout, "now publish it: shroud trust sign --role snapshot, then --role timestamp")
	}
	return nil
}

func roleVersion(repo *trust.Repository, role string) int64 {
	switch role {
	case metadata.ROOT:
		return repo.Root.Signed.Version
	case metadata.TIMESTAMP:
		return repo.Timestamp.Signed.Version
	case metadata.SNAPSHOT:
		return repo.Snapshot.Signed.Version
	}
	return repo.Roles[role].Signed.Version
}

func listName(ns, file string) string {
	if ns == "" {
		return file
	}
	return ns + "/" + file
}

// publicKeyEntry is the key id of the key in file and the public_key the
// allow entry carries: the public key alone, re-serialized
// (trust.PublicKeyOnly), the list being published. A file that holds a
// private or secret key is refused, not copied; a pkcs11 key file is not
// carried (its URI may hold a PIN), and a provider has no key file.
func publicKeyEntry(scheme, file string) (id, public string, err error) {
	if scheme == "provider" {
		return "", "", usagef("--scheme provider names its key by --key-id provider:<name>, not by --public-key")
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return "", "", err
	}
	if scheme != "pkcs11" {
		public, err = trust.PublicKeyOnly(scheme, data)
		switch {
		case errors.Is(err, trust.ErrPrivateKey):
			return "", "", fmt.Errorf("%s %w: give its public key (the list is published, in the registry); nothing changed", file, err)
		case err != nil:
			return "", "", fmt.Errorf("%s: %w", file, err)
		}
	}
	if id, err = keyIDOf(scheme, file); err != nil {
		return "", "", fmt.Errorf("%s: %w", file, err)
	}
	return id, public, nil
}

// keyIDOf names the key of a key file as the trust documents do, through
// package crypto's parser (the ids the proxy checks): a jwe: public key,
// a pkcs7: certificate, a pgp: armored key (one key per entry), a pkcs11:
// key file.
func keyIDOf(scheme, file string) (string, error) {
	r, err := crypto.ParseRecipient(scheme + ":" + file)
	if err != nil {
		return "", err
	}
	ids := r.KeyIDs()
	if len(ids) != 1 {
		return "", fmt.Errorf("%d keys in %s: one per entry (give --key-id)", len(ids), file)
	}
	return ids[0], nil
}

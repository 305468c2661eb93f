package trust

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// t0 is the tests' reference time: documents expire relative to it and
// the Checker's clock is set from it, never from the real clock.
var t0 = time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)

// testRepo is a trust repository the tests publish to and attack, in the
// directory a DirSource reads.
type testRepo struct {
	t    *testing.T
	repo *Repository
	// signers of each role.
	signers map[string][]signature.Signer
}

func newSigner(t *testing.T) signature.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := signature.LoadSigner(priv, 0)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newECDSASigner(t *testing.T) signature.Signer {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := signerOf(priv, "test")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func keyOfSigner(t *testing.T, s signature.Signer) *metadata.Key {
	t.Helper()
	k, err := KeyOf(s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// newTestRepo writes a version-1 repository (one key per role, empty
// lists) whose documents expire relative to t0.
func newTestRepo(t *testing.T) *testRepo {
	t.Helper()
	tr := &testRepo{t: t, signers: map[string][]signature.Signer{}}
	keys := RootKeys{}
	for _, role := range []string{metadata.ROOT, metadata.TARGETS, metadata.SNAPSHOT, metadata.TIMESTAMP} {
		tr.signers[role] = []signature.Signer{newSigner(t)}
	}
	keys.Root = []*metadata.Key{keyOfSigner(t, tr.signers[metadata.ROOT][0])}
	keys.Targets = []*metadata.Key{keyOfSigner(t, tr.signers[metadata.TARGETS][0])}
	keys.Snapshot = []*metadata.Key{keyOfSigner(t, tr.signers[metadata.SNAPSHOT][0])}
	keys.Timestamp = []*metadata.Key{keyOfSigner(t, tr.signers[metadata.TIMESTAMP][0])}
	r, err := CreateRepository(t.TempDir(), keys, t0)
	if err != nil {
		t.Fatal(err)
	}
	tr.repo = r
	for _, role := range []string{metadata.ROOT, metadata.TARGETS, metadata.SNAPSHOT, metadata.TIMESTAMP} {
		tr.sign(role)
	}
	tr.write()
	return tr
}

func (tr *testRepo) sign(role string) {
	tr.t.Helper()
	if err := tr.repo.Sign(role, tr.signers[role]...); err != nil {
		tr.t.Fatal(err)
	}
}

func (tr *testRepo) write() {
	tr.t.Helper()
	if err := tr.repo.Write(); err != nil {
		tr.t.Fatal(err)
	}
}

// publish makes new versions of roles and then of snapshot and timestamp
// (the chain), signed by their keys, expiring as DefaultExpiry says from
// t0.
func (tr *testRepo) publish(roles ...string) {
	tr.t.Helper()
	for _, role := range append(roles, metadata.SNAPSHOT, metadata.TIMESTAMP) {
		if err := tr.repo.Bump(role, t0.Add(Expiry(role))); err != nil {
			tr.t.Fatal(err)
		}
		tr.sign(role)
	}
	tr.write()
}

// allow adds an allow entry to namespace ns's list, signed by role.
func (tr *testRepo) allow(role, ns string, entries ...Recipient) {
	tr.t.Helper()
	l, err := tr.repo.Recipients(ns)
	if err != nil {
		tr.t.Fatal(err)
	}
	l.Recipients = append(l.Recipients, entries...)
	if err := tr.repo.SetRecipients(role, ns, l); err != nil {
		tr.t.Fatal(err)
	}
}

// revoke adds deny entries to namespace ns's list, signed by role.
func (tr *testRepo) revoke(role, ns string, entries ...Revocation) {
	tr.t.Helper()
	l, err := tr.repo.Revocations(ns)
	if err != nil {
		tr.t.Fatal(err)
	}
	l.Revocations = append(l.Revocations, entries...)
	if err := tr.repo.SetRevocations(role, ns, l); err != nil {
		tr.t.Fatal(err)
	}
}

// writeUnchecked writes role's document as it is in memory, whatever its
// signatures: what an attacker serves.
func (tr *testRepo) writeUnchecked(role string, names ...string) {
	tr.t.Helper()
	var data []byte
	var err error
	switch role {
	case metadata.ROOT:
		data, err = tr.repo.Root.ToBytes(true)
	case metadata.TIMESTAMP:
		data, err = tr.repo.Timestamp.ToBytes(true)
	case metadata.SNAPSHOT:
		data, err = tr.repo.Snapshot.ToBytes(true)
	default:
		data, err = tr.repo.Roles[role].ToBytes(true)
	}
	if err != nil {
		tr.t.Fatal(err)
	}
	for _, n := range names {
		tr.writeFile(filepath.Join(metadataDir, n), data)
	}
}

func (tr *testRepo) writeFile(name string, data []byte) {
	tr.t.Helper()
	if err := os.WriteFile(filepath.Join(tr.repo.Dir(), name), data, 0o644); err != nil {
		tr.t.Fatal(err)
	}
}

func (tr *testRepo) readFile(name string) []byte {
	tr.t.Helper()
	data, err := os.ReadFile(filepath.Join(tr.repo.Dir(), name))
	if err != nil {
		tr.t.Fatal(err)
	}
	return data
}

// initialRoot is the version-1 root an operator hands shroud.
func (tr *testRepo) initialRoot() []byte {
	data, _ := os.ReadFile(filepath.Join(tr.repo.Dir(), metadataDir, "1.root.json"))
	return data
}

// clock is a settable clock for the Checker's refreshes.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

// events collects what a Checker reports.
type events struct {
	mu  sync.Mutex
	got []Event
}

func (e *events) add(ev Event) {
	e.mu.Lock()
	e.got = append(e.got, ev)
	e.mu.Unlock()
}

func (e *events) last() Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.got) == 0 {
		return Event{}
	}
	return e.got[len(e.got)-1]
}

func (e *events) kind(k string) []Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []Event
	for _, ev := range e.got {
		if ev.Kind == k {
			out = append(out, ev)
		}
	}
	return out
}

type checkerEnv struct {
	*Checker
	clock   *clock
	events  *events
	dataDir string
}

// newChecker makes a Checker reading tr's directory, its data in dataDir
// ("" for a new one), its clock at t0.
func newChecker(t *testing.T, tr *testRepo, dataDir string, mod ...func(*Options)) *checkerEnv {
	t.Helper()
	if dataDir == "" {
		dataDir = t.TempDir()
	}
	src, err := DirSource(tr.repo.Dir())
	if err != nil {
		t.Fatal(err)
	}
	env := &checkerEnv{clock: &clock{now: t0}, events: &events{}, dataDir: dataDir}
	opts := Options{
		Source:  src,
		Root:    tr.initialRoot(),
		DataDir: dataDir,
		OnEvent: env.events.add,
		Logger:  slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Clock:   env.clock.Now,
	}
	for _, m := range mod {
		m(&opts)
	}
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	env.Checker = c
	return env
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}

func (env *checkerEnv) refresh(t *testing.T) {
	t.Helper()
	if err := env.Refresh(context.Background()); err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if o := env.Status().LastOutcome; o != OutcomeOK {
		t.Fatalf("refresh outcome %s: %v", o, env.Status().Refusals)
	}
}

func (env *checkerEnv) refreshFails(t *testing.T, target error) error {
	t.Helper()
	err := env.Refresh(context.Background())
	if err == nil {
		t.Fatal("refresh succeeded; want it refused")
	}
	if target != nil && !errors.Is(err, target) {
		t.Fatalf("refresh: %v; want %T", err, target)
	}
	if ev := env.events.last(); ev.Kind != EventRefresh || ev.Outcome != OutcomeFailed || ev.Error == "" {
		t.Fatalf("last event %+v; want a failed trust-refresh", ev)
	}
	return err
}

// allowed asserts that Check allows op.
func (env *checkerEnv) allowed(t *testing.T, op, repo, keyID string, now time.Time) {
	t.Helper()
	if err := env.Check(context.Background(), op, repo, keyID, now); err != nil {
		t.Fatalf("Check(%s, %s): %v; want allowed", op, repo, err)
	}
}

// refused asserts that Check refuses op for reason and returns the refusal.
func (env *checkerEnv) refused(t *testing.T, op, repo, keyID string, now time.Time, reason string) *Refusal {
	t.Helper()
	err := env.Check(context.Background(), op, repo, keyID, now)
	var r *Refusal
	if !errors.As(err, &r) {
		t.Fatalf("Check(%s, %s): %v; want a %s refusal", op, repo, err, reason)
	}
	if r.Reason != reason {
		t.Fatalf("Check(%s, %s): %v; want reason %s", op, repo, err, reason)
	}
	if r.Op != op || r.Repo != repo || r.KeyID != keyID {
		t.Fatalf("refusal %+v does not name op, repository and key", r)
	}
	return r
}

// recipientKey is a recipient's key pair as a test makes it, and its key
// id computed here (not by package crypto): SHA-256 of the SPKI DER.
type recipientKey struct {
	id string
}

func newRecipientKey(t *testing.T) recipientKey {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	return recipientKey{id: "sha256:" + hex.EncodeToString(sum[:])}
}

func (k recipientKey) entry(scopes ...string) Recipient {
	return Recipient{KeyID: k.id, Scheme: "jwe", Scopes: scopes}
}

func (k recipientKey) revocation(reason string) Revocation {
	return Revocation{KeyID: k.id, RevokedAt: t0, Reason: reason}
}

func (tr *testRepo) signersFor(s ...signature.Signer) []signature.Signer { return s }

// publishRoot makes and writes a new root version signed by the root key
// (the same in both versions).
func (tr *testRepo) publishRoot() {
	tr.t.Helper()
	if err := tr.repo.Bump(metadata.ROOT, t0.Add(Expiry(metadata.ROOT))); err != nil {
		tr.t.Fatal(err)
	}
	tr.sign(metadata.ROOT)
	tr.write()
}

// delegate makes targets delegate paths to a new role signed by s (the
// role's version 1 is signed; targets must be published).
func (tr *testRepo) delegate(name string, s signature.Signer, paths ...string) {
	tr.t.Helper()
	if err := tr.repo.Delegate(metadata.TARGETS, name, paths, []*metadata.Key{keyOfSigner(tr.t, s)}, 1, t0.Add(Expiry(name))); err != nil {
		tr.t.Fatal(err)
	}
	tr.signers[name] = []signature.Signer{s}
	tr.sign(name)
}

func (tr *testRepo) bumpSign(role string) {
	tr.t.Helper()
	if err := tr.repo.Bump(role, t0.Add(Expiry(role))); err != nil {
		tr.t.Fatal(err)
	}
	tr.sign(role)
}

// writeFileAll writes a target file where clients fetch it.
func (tr *testRepo) writeFileAll(ns string, tf *metadata.TargetFiles, data []byte) {
	tr.t.Helper()
	dir := filepath.Join(tr.repo.Dir(), targetsDir, ns)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tr.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, hexHash(tf)+"."+filepath.Base(tf.Path)), data, 0o644); err != nil {
		tr.t.Fatal(err)
	}
}

func hexHash(tf *metadata.TargetFiles) string { return hex.EncodeToString(tf.Hashes["sha256"]) }

func itoa(v int64) string { return strconv.FormatInt(v, 10) }

func removeFile(tr *testRepo, name string) error {
	return os.Remove(filepath.Join(tr.repo.Dir(), name))
}

func removeAll(dir string) error { return os.RemoveAll(dir) }

func asErr[T error](err error, target *T) bool { return errors.As(err, target) }

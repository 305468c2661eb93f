package access

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	scrypto "github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/testkeys"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// fixture is a store over a keyring with a fresh identity, and a policy
// encrypting ** for the identity alone.
type fixture struct {
	dir   string
	keys  *scrypto.Keyring
	store *Store
	clock *clock
	rule  *scrypto.Rule
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	id, _, err := scrypto.LoadOrCreateIdentity(filepath.Join(dir, "data"))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := scrypto.NewKeyring(id, nil)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := keys.Recipients(nil)
	if err != nil {
		t.Fatal(err)
	}
	pol, err := scrypto.NewPolicy([]scrypto.Rule{{Pattern: "**", Action: scrypto.Encrypt, Recipients: rs}})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{dir: filepath.Join(dir, "access"), keys: keys, clock: &clock{t: time.Now().UTC().Truncate(time.Second)}, rule: pol.Match("team/app")}
	f.store = f.open(t)
	return f
}

func (f *fixture) open(t *testing.T) *Store {
	t.Helper()
	s, err := Open(Options{Dir: f.dir, Keyring: f.keys, Now: f.clock.now})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func ecKey(t *testing.T) (*ecdsa.PrivateKey, string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	return k, string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// signed is a request for repos by a new key, as `shroud access request`
// makes it, with change applied to its payload before signing.
func (f *fixture) signed(t *testing.T, signer crypto.Signer, pub string, change func(*Payload), repos ...string) []byte {
	t.Helper()
	p := Payload{Audience: f.store.Audience(), Name: "alice", Repositories: repos, Scheme: "jwe", Key: pub, Created: f.clock.now()}
	if change != nil {
		change(&p)
	}
	jws, err := Sign(p, signer)
	if err != nil {
		t.Fatal(err)
	}
	return []byte(jws)
}

func TestRequestsThatProveNothingAreRefusedAndKeptNowhere(t *testing.T) {
	f := newFixture(t)
	k, pub := ecKey(t)
	other, _ := ecKey(t)
	for name, body := range map[string][]byte{
		"not a JWS":           []byte(`{"name":"x"}`),
		"signed by another":   f.signed(t, other, pub, nil, "team/app"),
		"for another shroud":  f.signed(t, k, pub, func(p *Payload) { p.Audience = "sha256:" + strings.Repeat("0", 64) }, "team/app"),
		"made an hour ago":    f.signed(t, k, pub, func(p *Payload) { p.Created = p.Created.Add(-time.Hour) }, "team/app"),
		"made in the future":  f.signed(t, k, pub, func(p *Payload) { p.Created = p.Created.Add(time.Hour) }, "team/app"),
		"no repository":       f.signed(t, k, pub, nil),
		"a bad repository":    f.signed(t, k, pub, nil, "Team/App"),
		"a glob":              f.signed(t, k, pub, nil, "team/**"),
		"a repository twice":  f.signed(t, k, pub, nil, "team/app", "team/app"),
		"an unknown version":  f.signed(t, k, pub, func(p *Payload) { p.Version = "v0" }, "team/app"),
		"a pgp key":           f.signed(t, k, pub, func(p *Payload) { p.Scheme = "pgp" }, "team/app"),
		"no name":             f.signed(t, k, pub, func(p *Payload) { p.Name = "" }, "team/app"),
		"a name with control": f.signed(t, k, pub, func(p *Payload) { p.Name = "a\nb" }, "team/app"),
	} {
		_, _, err := f.store.Submit(body, "")
		var inv *InvalidError
		if !errors.As(err, &inv) {
			t.Errorf("a request %s: %v, want an InvalidError", name, err)
		}
	}
	if n := len(f.store.List()); n != 0 {
		t.Fatalf("%d refused requests were kept", n)
	}
	if files, _ := filepath.Glob(filepath.Join(f.dir, "*")); len(files) != 0 {
		t.Fatalf("refused requests left files: %v", files)
	}
}

func TestApprovedKeyIsAddedToItsRepositoriesAloneUntilDeniedOrExpired(t *testing.T) {
	f := newFixture(t)
	k, pub := ecKey(t)
	r, created, err := f.store.Submit(f.signed(t, k, pub, nil, "team/app"), "")
	if err != nil || !created || r.State != Pending {
		t.Fatalf("submit: %+v %v %v", r, created, err)
	}
	if again, created, err := f.store.Submit(f.signed(t, k, pub, nil, "team/app"), ""); err != nil || created || again.ID != r.ID {
		t.Fatalf("the same request again: %+v %v %v, want the pending one", again, created, err)
	}
	count := func(repo string) int {
		rs, err := f.store.Extend(repo, f.rule)
		if err != nil {
			t.Fatal(err)
		}
		return len(rs.Keys())
	}
	if n := count("team/app"); n != 0 {
		t.Fatalf("a pending request adds %d recipients", n)
	}
	if _, err := f.store.Approve(r.ID, "owner", f.clock.now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if n := count("team/app"); n != 1 {
		t.Fatalf("the approved key: %d recipients for team/app, want 1", n)
	}
	for _, repo := range []string{"team/app/sub", "team/ap", "team/other", "team/app2"} {
		if n := count(repo); n != 0 {
			t.Errorf("the key approved for team/app is a recipient of %s", repo)
		}
	}
	if _, err := f.store.Approve(r.ID, "owner", time.Time{}); !errors.Is(err, ErrNotPending) {
		t.Errorf("approving twice: %v", err)
	}
	// The grant survives a restart, and ends at its expiry.
	f.store = f.open(t)
	if n := count("team/app"); n != 1 {
		t.Fatalf("after a restart: %d recipients, want 1", n)
	}
	f.clock.add(2 * time.Hour)
	if n := count("team/app"); n != 0 {
		t.Fatalf("an expired grant still adds %d recipients", n)
	}
	if got, _ := f.store.Get(r.ID); got.State != Expired {
		t.Fatalf("an expired grant reads %s", got.State)
	}

	// A denial ends a grant at once.
	k2, pub2 := ecKey(t)
	r2, _, err := f.store.Submit(f.signed(t, k2, pub2, nil, "team/app"), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.Approve(r2.ID, "owner", time.Time{}); err != nil {
		t.Fatal(err)
	}
	if n := count("team/app"); n != 1 {
		t.Fatalf("the second grant: %d", n)
	}
	if d, err := f.store.Deny(r2.ID, "owner", "left the team"); err != nil || d.State != Denied {
		t.Fatalf("deny: %+v %v", d, err)
	}
	if n := count("team/app"); n != 0 {
		t.Fatalf("a denied grant still adds %d recipients", n)
	}
}

func TestPendingRequestsExpireAndAreBounded(t *testing.T) {
	f := newFixture(t)
	k, pub := ecKey(t)
	r, _, err := f.store.Submit(f.signed(t, k, pub, nil, "team/app"), "")
	if err != nil {
		t.Fatal(err)
	}
	f.clock.add(PendingFor + time.Minute)
	if got, _ := f.store.Get(r.ID); got.State != Expired {
		t.Fatalf("a request pending past PendingFor reads %s", got.State)
	}
	if _, err := f.store.Approve(r.ID, "owner", time.Time{}); !errors.Is(err, ErrNotPending) {
		t.Fatalf("approving an expired request: %v", err)
	}
	// MaxPending requests wait at most.
	for i := range MaxPending {
		f.store.reqs[newID()] = &entry{req: Request{ID: newID(), State: Pending, Created: f.clock.now(), KeyID: "sha256:x" + string(rune(i))}}
	}
	if _, _, err := f.store.Submit(f.signed(t, k, pub, nil, "team/app"), ""); !errors.Is(err, ErrTooMany) {
		t.Fatalf("request %d: %v, want ErrTooMany", MaxPending+1, err)
	}
}

func TestAStoreFileThatDoesNotParseStopsOpen(t *testing.T) {
	f := newFixture(t)
	k, pub := ecKey(t)
	r, _, err := f.store.Submit(f.signed(t, k, pub, nil, "team/app"), "")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(f.dir, r.ID+".json")
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the request's file: %v %v", fi, err)
	}
	if err := os.Rename(path, filepath.Join(f.dir, newID()+".json")); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(Options{Dir: f.dir, Keyring: f.keys}); err == nil {
		t.Fatal("a file not named after its request opened")
	}
}

func TestCertificateRequestsArePKCS7Recipients(t *testing.T) {
	f := newFixture(t)
	cert, keyFile := testkeys.Cert(t, t.TempDir(), "carol", false)
	cb, _ := os.ReadFile(cert)
	kb, _ := os.ReadFile(keyFile)
	blk, _ := pem.Decode(kb)
	priv, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		if priv, err = x509.ParsePKCS1PrivateKey(blk.Bytes); err != nil {
			t.Fatal(err)
		}
	}
	r, _, err := f.store.Submit(f.signed(t, priv.(crypto.Signer), string(cb), func(p *Payload) { p.Scheme = "pkcs7" }, "team/app"), "")
	if err != nil {
		t.Fatal(err)
	}
	if r.Scheme != "pkcs7" || !strings.HasPrefix(r.KeyID, "sha256:") {
		t.Fatalf("a certificate's request: %+v", r)
	}
}

package proxy_test

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containers/ocicrypt"
	"github.com/containers/ocicrypt/config"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shroud-oci/shroud/audit"
	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/shroudtest"
	"github.com/shroud-oci/shroud/internal/testkeys"
)

// auditBuffer is an audit log a test reads back.
type auditBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *auditBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// events are the audit lines of kind.
func (b *auditBuffer) events(t *testing.T, kind audit.Kind) []audit.Event {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []audit.Event
	for _, line := range bytes.Split(bytes.TrimSpace(b.buf.Bytes()), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var e audit.Event
		if err := json.Unmarshal(line, &e); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		if e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}

// wantAudited asserts one audit line of kind names key id for reason in
// repo.
func (b *auditBuffer) wantAudited(t *testing.T, kind audit.Kind, repo, id, reason string) audit.Event {
	t.Helper()
	for _, e := range b.events(t, kind) {
		if e.KeyID == id && e.Repository == repo && e.Reason == reason {
			return e
		}
	}
	t.Fatalf("no %s audit line for %s in %s (%s); the log: %s", kind, id, repo, reason, b.buf.String())
	return audit.Event{}
}

// opensAll says whether a keyring of the given key files alone opens a
// layer (a pkcs7 key needs its certificate beside it).
func opensAll(t *testing.T, l ocispec.Descriptor, files ...string) bool {
	t.Helper()
	var dks []crypto.DecryptionKey
	for _, f := range files {
		dks = append(dks, must[crypto.DecryptionKey](t)(crypto.ParseDecryptionKey(f)))
	}
	id, _, _ := crypto.LoadOrCreateIdentity(t.TempDir())
	kr := must[*crypto.Keyring](t)(crypto.NewKeyring(id, dks))
	_, err := kr.Unwrap(l.Annotations)
	if err != nil && !errors.Is(err, crypto.ErrNoKey) {
		t.Fatal(err)
	}
	return err == nil
}

// pushPulls pushes a random image to repo:1 through s and pulls it back,
// byte for byte; it returns the upstream's encrypted manifest.
func pushPulls(t *testing.T, s shroudtest.Shroud, up shroudtest.Upstream, repo string) ocispec.Manifest {
	t.Helper()
	img := must[v1.Image](t)(random.Image(20_000, 3))
	if err := remote.Write(ref(t, s.Host(), repo+":1"), img); err != nil {
		t.Fatalf("push: %v", err)
	}
	got := must[v1.Image](t)(remote.Image(ref(t, s.Host(), repo+":1")))
	if must[v1.Hash](t)(got.Digest()) != must[v1.Hash](t)(img.Digest()) {
		t.Fatal("the pulled manifest differs")
	}
	want := layerBytes(t, img)
	for d, b := range must[map[v1.Hash][]byte](t)(atkReadLayers(got)) {
		if !bytes.Equal(b, want[d]) {
			t.Fatalf("layer %s differs", d)
		}
	}
	m := upstreamManifest(t, up, repo+":1")
	if len(m.Layers) != 3 {
		t.Fatalf("upstream manifest has %d layers", len(m.Layers))
	}
	return m
}

// A pkcs7 recipient whose certificate expired is left out of the layers'
// wrapped keys, with no trust documents at all; the rule's other
// recipient still gets them, the push and pull go through, and the audit
// log and the metric say what was dropped and why.
func TestExpiredCertificateRecipientIsNotWrappedFor(t *testing.T) {
	dir := t.TempDir()
	up := shroudtest.Distribution(t)
	recA, kA := keyPair(t, "ec")
	keyA := kA.Path
	certFile, certKey := testkeys.CertValid(t, dir, "old", time.Now().Add(-72*time.Hour), time.Now().Add(-time.Hour))
	expired := must[crypto.Recipient](t)(crypto.ParseRecipient("pkcs7:" + certFile))
	liveCert, liveKey := testkeys.CertValid(t, dir, "live", time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	live := must[crypto.Recipient](t)(crypto.ParseRecipient("pkcs7:" + liveCert))
	var log auditBuffer
	m := newMeter()
	s := shroudtest.Start(t, up, m.opt, shroudtest.WithAudit(audit.New(&log)), shroudtest.WithPolicy(
		shroudtest.Rule{Pattern: "team/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{recA, expired, live}}))

	man := pushPulls(t, s, up, "team/app")
	for i, l := range man.Layers {
		if !opensAll(t, l, keyA) || !opensAll(t, l, liveKey, liveCert) {
			t.Fatalf("layer %d is not wrapped for the valid recipients", i)
		}
		if opensAll(t, l, certKey, certFile) {
			t.Fatalf("layer %d is wrapped for the recipient whose certificate expired", i)
		}
		if d := s.Keyring.Describe(l.Annotations); !strings.Contains(strings.Join(d, " "), `issuer "CN=live"`) || strings.Contains(strings.Join(d, " "), `"CN=old"`) {
			t.Fatalf("layer %d is wrapped for %v", i, d)
		}
	}
	e := log.wantAudited(t, audit.WrapRefused, "team/app", expired.KeyID(), "expired")
	if e.Op != "wrap" || !strings.Contains(e.Rule, `"team/**"`) || !strings.Contains(e.Detail, "expired at") {
		t.Errorf("audit line %+v", e)
	}
	if n := len(log.events(t, audit.WrapRefused)); n != 1 {
		t.Errorf("%d wrap-refused lines for one push, want 1", n)
	}
	if n := m.values(t)["shroud.keys.refused{shroud.op=wrap,shroud.reason=expired}"]; n != 1 {
		t.Errorf("shroud.keys.refused{wrap,expired} = %d, want 1", n)
	}
}

// An expired OpenPGP recipient (its primary key's lifetime over) is left
// out; so is one that expires by shroud's clock only. ocicrypt would fail
// the whole wrap for it: the push used to fail.
func TestExpiredPGPRecipientIsNotWrappedFor(t *testing.T) {
	dir := t.TempDir()
	up := shroudtest.Distribution(t)
	recA, _ := keyPair(t, "ec")
	gonePub, gonePriv, goneFP := testkeys.PGPValid(t, dir, "gone", time.Now().Add(-2*time.Hour), time.Hour, 0)
	soonPub, soonPriv, soonFP := testkeys.PGPValid(t, dir, "soon", time.Now().Add(-time.Minute), 0, time.Hour)
	gone := must[crypto.Recipient](t)(crypto.ParseRecipient("pgp:" + gonePub))
	soon := must[crypto.Recipient](t)(crypto.ParseRecipient("pgp:" + soonPub))
	if gone.KeyID() != "pgp:"+goneFP || soon.KeyID() != "pgp:"+soonFP {
		t.Fatalf("key ids %s %s", gone.KeyID(), soon.KeyID())
	}
	var clock struct {
		sync.Mutex
		at time.Time
	}
	clock.at = time.Now()
	now := func() time.Time { clock.Lock(); defer clock.Unlock(); return clock.at }
	var log auditBuffer
	s := shroudtest.Start(t, up, shroudtest.WithClock(now), shroudtest.WithAudit(audit.New(&log)), shroudtest.WithPolicy(
		shroudtest.Rule{Pattern: "team/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{recA, gone, soon}}))

	man := pushPulls(t, s, up, "team/app")
	for i, l := range man.Layers {
		if opensAll(t, l, gonePriv) || !opensAll(t, l, soonPriv) {
			t.Fatalf("layer %d: the expired key opens it, or the valid one does not", i)
		}
	}
	log.wantAudited(t, audit.WrapRefused, "team/app", gone.KeyID(), "expired")

	// Two hours on, by shroud's clock, the other key's subkey expired too.
	clock.Lock()
	clock.at = clock.at.Add(2 * time.Hour)
	clock.Unlock()
	man = pushPulls(t, s, up, "team/later")
	for i, l := range man.Layers {
		if opensAll(t, l, soonPriv) {
			t.Fatalf("layer %d is wrapped for a key expired by shroud's clock", i)
		}
		if _, ok := l.Annotations[crypto.AnnotationKeys+"pgp"]; ok {
			t.Fatalf("layer %d has pgp wrapped keys: %v", i, s.Keyring.Describe(l.Annotations))
		}
	}
	log.wantAudited(t, audit.WrapRefused, "team/later", soon.KeyID(), "expired")
}

// A rule left with no recipient its layer keys may be wrapped for refuses
// the push: 403 DENIED naming the rule and each key with its reason, and
// no manifest stored upstream. A rule with no recipient besides the
// identity pushes as ever.
func TestRuleWithNoValidRecipientRefusesPush(t *testing.T) {
	dir := t.TempDir()
	up := shroudtest.Distribution(t)
	certFile, _ := testkeys.CertValid(t, dir, "old", time.Now().Add(-72*time.Hour), time.Now().Add(-time.Hour))
	pgpPub, _, _ := testkeys.PGPValid(t, dir, "gone", time.Now().Add(-2*time.Hour), time.Hour, 0)
	expiredCert := must[crypto.Recipient](t)(crypto.ParseRecipient("pkcs7:" + certFile))
	expiredPGP := must[crypto.Recipient](t)(crypto.ParseRecipient("pgp:" + pgpPub))
	var log auditBuffer
	s := shroudtest.Start(t, up, shroudtest.WithAudit(audit.New(&log)), shroudtest.WithPolicy(
		shroudtest.Rule{Pattern: "team/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{expiredCert, expiredPGP}},
		shroudtest.Rule{Pattern: "solo/**", Action: crypto.Encrypt}))

	c := call{t, s.URL}
	layer := atkRandBytes(t, 5000)
	l := atkLayerDesc(layer)
	atkPushBlob(t, c, "team/app", layer)
	cfg := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: atkPushBlob(t, c, "team/app", atkPlainConfig), Size: int64(len(atkPlainConfig))}
	body := atkImageManifest(t, cfg, l)
	a := c.do("PUT", "/v2/team/app/manifests/1", bytes.NewReader(body), "Content-Type", ocispec.MediaTypeImageManifest)
	a.want(t, http.StatusForbidden, "DENIED")
	for _, want := range []string{`policy rule 0 (encrypt \"team/**\")`, expiredCert.KeyID(), expiredPGP.KeyID(), "expired at"} {
		if !strings.Contains(string(a.body), want) {
			t.Errorf("the refusal does not say %s: %s", want, a.body)
		}
	}
	if strings.Contains(string(a.body), dir) {
		t.Errorf("the refusal shows the key files' paths: %s", a.body)
	}
	t.Logf("refusal: %s", a.body)
	if _, err := remote.Get(ref(t, up.Host(), "team/app:1")); err == nil {
		t.Fatal("a manifest was stored upstream")
	}
	log.wantAudited(t, audit.WrapRefused, "team/app", expiredCert.KeyID(), "expired")
	log.wantAudited(t, audit.WrapRefused, "team/app", expiredPGP.KeyID(), "expired")

	// skopeo's and crane's clients show the message.
	err := remote.Write(ref(t, s.Host(), "team/app:2"), must[v1.Image](t)(random.Image(1000, 1)))
	if err == nil || !strings.Contains(err.Error(), "no recipient") || !strings.Contains(err.Error(), "DENIED") {
		t.Errorf("go-containerregistry's push error: %v", err)
	}
	pushPulls(t, s, up, "solo/app")
}

// refusal is a KeyChecker's error as package trust makes them: a reason,
// the document the decision rests on.
type refusal struct {
	Reason   string
	Document string
	Expires  time.Time
	KeyID    string
}

func (r *refusal) RefusalReason() string     { return r.Reason }
func (r *refusal) RefusalDocument() string   { return r.Document }
func (r *refusal) RefusalExpires() time.Time { return r.Expires }

func (r *refusal) Error() string {
	return fmt.Sprintf("key %s is %s by %s", r.KeyID, r.Reason, r.Document)
}

// checker is a fake KeyChecker: it refuses the keys it is told to, per op,
// and records what it was asked.
type checker struct {
	mu     sync.Mutex
	refuse map[[2]string]string // {op, key id} -> reason
	asked  map[[3]string]int    // {op, repo, key id}
}

func newChecker() *checker {
	return &checker{refuse: map[[2]string]string{}, asked: map[[3]string]int{}}
}

func (c *checker) set(op, id, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if reason == "" {
		delete(c.refuse, [2]string{op, id})
		return
	}
	c.refuse[[2]string{op, id}] = reason
}

func (c *checker) Check(ctx context.Context, op, repo, keyID string, now time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.asked[[3]string{op, repo, keyID}]++
	if reason, ok := c.refuse[[2]string{op, keyID}]; ok {
		return fmt.Errorf("trust: %w", &refusal{Reason: reason, Document: "revocations.json", Expires: now.Add(time.Hour), KeyID: keyID})
	}
	return nil
}

func (c *checker) times(op, repo, id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.asked[[3]string{op, repo, id}]
}

// A recipient the KeyChecker refuses for "wrap" is dropped from the push
// (the others still wrapped for), audited with the checker's reason and
// document, and counted; the identity is asked about too.
func TestKeyCheckRefusalDropsRecipient(t *testing.T) {
	up := shroudtest.Distribution(t)
	recA, keyA := keyPair(t, "ec")
	recB, keyB := keyPair(t, "rsa")
	chk := newChecker()
	chk.set("wrap", recB.KeyID(), "revoked")
	var log auditBuffer
	m := newMeter()
	s := shroudtest.Start(t, up, m.opt, shroudtest.WithKeyCheck(chk), shroudtest.WithAudit(audit.New(&log)), shroudtest.WithPolicy(
		shroudtest.Rule{Pattern: "team/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{recA, recB}}))

	man := pushPulls(t, s, up, "team/app")
	for i, l := range man.Layers {
		if !opens(t, keyA, l) || opens(t, keyB, l) {
			t.Fatalf("layer %d: A opens %v, B (revoked) opens %v", i, opens(t, keyA, l), opens(t, keyB, l))
		}
	}
	e := log.wantAudited(t, audit.WrapRefused, "team/app", recB.KeyID(), "revoked")
	if e.Document != "revocations.json" || e.Expires.IsZero() || !strings.Contains(e.Detail, "revoked (trust: key") {
		t.Errorf("audit line %+v", e)
	}
	if n := m.values(t)["shroud.keys.refused{shroud.op=wrap,shroud.reason=revoked}"]; n != 1 {
		t.Errorf("shroud.keys.refused{wrap,revoked} = %d, want 1", n)
	}
	id := s.Keyring.Identity().KeyID()
	if chk.times("wrap", "team/app", id) != 1 || chk.times("wrap", "team/app", recA.KeyID()) != 1 {
		t.Errorf("the checker was asked about the identity %d times and A %d times for one push, want once each",
			chk.times("wrap", "team/app", id), chk.times("wrap", "team/app", recA.KeyID()))
	}
	// The pull opened its layers with the identity, checked for unwrap.
	if chk.times("unwrap", "team/app", id) == 0 {
		t.Error("the identity was not checked before the pull unwrapped with it")
	}
}

// shroud's identity refused for "wrap" refuses every push: an image it
// cannot open could not be pulled back. Nothing is stored upstream.
func TestIdentityRefusedRefusesPush(t *testing.T) {
	up := shroudtest.Distribution(t)
	recA, _ := keyPair(t, "ec")
	chk := newChecker()
	var log auditBuffer
	s := shroudtest.Start(t, up, shroudtest.WithKeyCheck(chk), shroudtest.WithAudit(audit.New(&log)), shroudtest.WithPolicy(
		shroudtest.Rule{Pattern: "team/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{recA}},
		shroudtest.Rule{Pattern: "solo/**", Action: crypto.Encrypt}))
	id := s.Keyring.Identity().KeyID()
	chk.set("wrap", id, "frozen")
	img := must[v1.Image](t)(random.Image(1000, 1))
	for _, repo := range []string{"team/app", "solo/app"} {
		err := remote.Write(ref(t, s.Host(), repo+":1"), img)
		if err == nil || !strings.Contains(err.Error(), "shroud's identity") || !strings.Contains(err.Error(), id) || !strings.Contains(err.Error(), "frozen") {
			t.Fatalf("%s: push with the identity refused: %v", repo, err)
		}
		if _, err := remote.Get(ref(t, up.Host(), repo+":1")); err == nil {
			t.Fatalf("%s: a manifest was stored upstream", repo)
		}
		log.wantAudited(t, audit.WrapRefused, repo, id, "frozen")
	}
	chk.set("wrap", id, "")
	pushPulls(t, s, up, "team/app")
}

// foreignImage is an image encrypted elsewhere (ocicrypt, as skopeo
// --encryption-key does) to the public key pub alone, stored straight at
// the upstream as repo:tag; it returns the plaintext of its layers.
func foreignImage(t *testing.T, up shroudtest.Upstream, repo, tag string, pub []byte) map[digest.Digest][]byte {
	t.Helper()
	cc := must[config.CryptoConfig](t)(config.EncryptWithJwe([][]byte{pub}))
	plain := map[digest.Digest][]byte{}
	var layers []ocispec.Descriptor
	for range 2 {
		b := atkRandBytes(t, 30_000)
		d := atkLayerDesc(b)
		r, fin, err := ocicrypt.EncryptLayer(cc.EncryptConfig, bytes.NewReader(b), d)
		if err != nil {
			t.Fatal(err)
		}
		ct := must[[]byte](t)(io.ReadAll(r))
		ann := must[map[string]string](t)(fin())
		layers = append(layers, ocispec.Descriptor{MediaType: d.MediaType + "+encrypted", Digest: atkPushUpstreamBlob(t, up, repo, ct), Size: int64(len(ct)), Annotations: ann})
		plain[d.Digest] = b
	}
	cfg := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: atkPushUpstreamBlob(t, up, repo, atkPlainConfig), Size: int64(len(atkPlainConfig))}
	atkPutUpstream(t, up, repo, tag, ocispec.MediaTypeImageManifest, atkImageManifest(t, cfg, layers...))
	return plain
}

// A decryption key the KeyChecker refuses for "unwrap" opens nothing: an
// image encrypted elsewhere to that key alone is refused (403 DENIED
// naming the key and why, audited), and served once the checker accepts
// it again; refused once more, its blobs are refused at every GET even
// though the manifest was restored before.
func TestRevokedDecryptionKeyCannotPull(t *testing.T) {
	up := shroudtest.Distribution(t)
	dir := t.TempDir()
	priv, pub, err := crypto.GenerateKeyPair("ec")
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "k.pem")
	os.WriteFile(keyFile, priv, 0o600)
	key := must[crypto.DecryptionKey](t)(crypto.ParseDecryptionKey(keyFile))
	plain := foreignImage(t, up, "team/app", "1", pub)

	chk := newChecker()
	chk.set("unwrap", key.KeyID(), "revoked")
	var log auditBuffer
	s := shroudtest.Start(t, up, shroudtest.WithDecryptionKeys(key), shroudtest.WithKeyCheck(chk), shroudtest.WithAudit(audit.New(&log)),
		shroudtest.WithPolicy(shroudtest.Rule{Pattern: "team/**", Action: crypto.Encrypt}))
	c := call{t, s.URL}

	a := c.do("GET", "/v2/team/app/manifests/1", nil, "Accept", ocispec.MediaTypeImageManifest)
	a.want(t, http.StatusForbidden, "DENIED")
	if !strings.Contains(string(a.body), key.KeyID()) || !strings.Contains(string(a.body), "revoked") {
		t.Fatalf("the refusal does not name the key and why: %s", a.body)
	}
	if strings.Contains(string(a.body), dir) {
		t.Errorf("the refusal shows the key file's path: %s", a.body)
	}
	t.Logf("refusal: %s", a.body)
	log.wantAudited(t, audit.UnwrapRefused, "team/app", key.KeyID(), "revoked")

	// Accepted: served (the refusal was not remembered as the manifest's).
	chk.set("unwrap", key.KeyID(), "")
	img := must[v1.Image](t)(remote.Image(ref(t, s.Host(), "team/app:1")))
	got := must[map[v1.Hash][]byte](t)(atkReadLayers(img))
	if len(got) != len(plain) {
		t.Fatalf("pulled %d layers, want %d", len(got), len(plain))
	}
	for d, b := range got {
		if !bytes.Equal(b, plain[digest.Digest(d.String())]) {
			t.Fatalf("layer %s differs", d)
		}
	}

	// Refused again: every blob GET is, whatever was restored before.
	chk.set("unwrap", key.KeyID(), "revoked")
	before := len(log.events(t, audit.UnwrapRefused))
	for d := range plain {
		a := c.do("GET", "/v2/team/app/blobs/"+d.String(), nil)
		atkWantDenied(t, "blob GET with a revoked key", a, plain[d][:1024])
		if !strings.Contains(string(a.body), key.KeyID()) {
			t.Errorf("blob refusal does not name the key: %s", a.body)
		}
	}
	if n := len(log.events(t, audit.UnwrapRefused)) - before; n != len(plain) {
		t.Errorf("%d unwrap-refused lines for %d blob GETs", n, len(plain))
	}
}

// A decryption key whose certificate (configured beside it, for pkcs7)
// expired no longer unwraps, with no trust documents at all: an image
// encrypted elsewhere to that key is refused, naming it and its expiry.
func TestExpiredDecryptionKeyCannotPull(t *testing.T) {
	up := shroudtest.Distribution(t)
	dir := t.TempDir()
	certFile, keyFile := testkeys.CertValid(t, dir, "old", time.Now().Add(-72*time.Hour), time.Now().Add(-time.Hour))
	key := must[crypto.DecryptionKey](t)(crypto.ParseDecryptionKey(keyFile))
	cert := must[crypto.DecryptionKey](t)(crypto.ParseDecryptionKey(certFile))
	blk, _ := pem.Decode(must[[]byte](t)(os.ReadFile(keyFile)))
	pk := must[any](t)(x509.ParsePKCS8PrivateKey(blk.Bytes)).(*rsa.PrivateKey)
	pub := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: must[[]byte](t)(x509.MarshalPKIXPublicKey(&pk.PublicKey))})
	foreignImage(t, up, "team/app", "1", pub)
	var log auditBuffer
	s := shroudtest.Start(t, up, shroudtest.WithDecryptionKeys(key, cert), shroudtest.WithAudit(audit.New(&log)),
		shroudtest.WithPolicy(shroudtest.Rule{Pattern: "team/**", Action: crypto.Encrypt}))
	a := call{t, s.URL}.do("GET", "/v2/team/app/manifests/1", nil, "Accept", ocispec.MediaTypeImageManifest)
	a.want(t, http.StatusForbidden, "DENIED")
	if !strings.Contains(string(a.body), key.KeyID()) || !strings.Contains(string(a.body), "expired at") {
		t.Fatalf("the refusal does not name the key and its expiry: %s", a.body)
	}
	log.wantAudited(t, audit.UnwrapRefused, "team/app", key.KeyID(), "expired")
}

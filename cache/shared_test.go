package cache

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/redis/go-redis/v9"

	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/redistest"
)

// layerBlob is a blob mapping as the proxy records it: the layer key
// wrapped (JWE) for shroud's identity and for extra recipients, and the
// pubopts with the layer's HMAC.
func layerBlob(t *testing.T, id *crypto.Identity, repo, plain string, extra int) Blob {
	t.Helper()
	kr, err := crypto.NewKeyring(id, nil)
	if err != nil {
		t.Fatal(err)
	}
	lk, err := crypto.NewLayerKey()
	if err != nil {
		t.Fatal(err)
	}
	hmac := make([]byte, crypto.HMACSize)
	rand.Read(hmac)
	plainDigest := digest.FromString(plain)
	opts := crypto.PrivateOptions{Key: lk, PlainDigest: plainDigest}
	pub := crypto.PublicOptions{HMAC: hmac}
	var ann map[string]string
	if extra == 0 {
		ann, err = kr.WrapForIdentity(opts, pub)
	} else {
		var rs []crypto.Recipient
		for i := range extra {
			_, pubPEM, err := crypto.GenerateKeyPair("ec")
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), fmt.Sprintf("r%d.pub.pem", i))
			if err := os.WriteFile(path, pubPEM, 0o644); err != nil {
				t.Fatal(err)
			}
			r, err := crypto.ParseRecipient("jwe:" + path)
			if err != nil {
				t.Fatal(err)
			}
			rs = append(rs, r)
		}
		set, err := kr.Recipients(rs)
		if err != nil {
			t.Fatal(err)
		}
		ann, err = kr.Wrap(opts, pub, set)
	}
	if err != nil {
		t.Fatal(err)
	}
	return Blob{
		PlainDigest:  plainDigest,
		CipherDigest: digest.FromString("cipher of " + plain),
		Size:         27_000_000,
		Annotations:  ann,
		Repository:   repo,
		Bound:        true,
		Layer:        true,
	}
}

// testManifest is a manifest mapping as the proxy records it.
func testManifest(repo, plain string) Manifest {
	return Manifest{
		Repository:        repo,
		PlainDigest:       digest.FromString(plain),
		ContentType:       "application/vnd.oci.image.manifest.v1+json",
		Size:              1_234,
		UpstreamDigest:    digest.FromString("upstream " + plain),
		UpstreamMediaType: "application/vnd.oci.image.manifest.v1+json",
		UpstreamSize:      5_678,
	}
}

func equalBlob(a, b Blob) bool {
	if !maps.Equal(a.Annotations, b.Annotations) {
		return false
	}
	a.Annotations, b.Annotations = nil, nil
	return reflect.DeepEqual(a, b)
}

// storeRoundTrip exercises every Store method through w (the writer) and
// r (the reader: the same store, or another replica of it).
func storeRoundTrip(t *testing.T, id *crypto.Identity, w, r Store) {
	t.Helper()
	ctx := ctxT(t)
	b := layerBlob(t, id, "team-a/app", "layer", 0)
	if err := w.PutBlob(ctx, b); err != nil {
		t.Fatal(err)
	}
	if got, ok, err := r.Blob(ctx, "team-a/app", b.PlainDigest); err != nil || !ok || !equalBlob(got, b) {
		t.Fatalf("Blob = %+v %v %v, want what was put", got, ok, err)
	}
	if _, ok, err := r.Blob(ctx, "team-b/app", b.PlainDigest); err != nil || ok {
		t.Fatalf("Blob in another repository = %v %v, want a miss", ok, err)
	}
	unbound := b
	unbound.Repository, unbound.Bound = "elsewhere/app", false
	if err := w.PutBlob(ctx, unbound); err != nil {
		t.Fatal(err)
	}
	if got, ok, err := r.Blob(ctx, "elsewhere/app", b.PlainDigest); err != nil || !ok || got.Bound {
		t.Fatalf("unbound Blob = %+v %v %v", got, ok, err)
	}

	// Origins: most recent first, within accept, at most OriginsPerDigest.
	b2 := b
	b2.Repository, b2.CipherDigest = "team-b/app", digest.FromString("b2")
	if err := w.PutBlob(ctx, b2); err != nil {
		t.Fatal(err)
	}
	inA := func(repo string) bool { return strings.HasPrefix(repo, "team-a/") }
	if got, ok, err := r.Origin(ctx, "", b.PlainDigest, inA); err != nil || !ok || got.Repository != "team-a/app" || !equalBlob(got, b) {
		t.Fatalf("Origin within team-a = %+v %v %v", got, ok, err)
	}
	// Another replica's LRU, filled by the lookup above, knows fewer
	// origins: any bound one serves a mount, the newest is a preference.
	if got, ok, err := r.Origin(ctx, "", b.PlainDigest, nil); err != nil || !ok || got.Repository != "team-b/app" && (w == r || got.Repository != "team-a/app") {
		t.Fatalf("Origin anywhere = %+v %v %v, want the newest (team-b/app)", got, ok, err)
	}
	if _, ok, err := r.Origin(ctx, "", b.PlainDigest, func(string) bool { return false }); err != nil || ok {
		t.Fatalf("Origin outside every scope = %v %v", ok, err)
	}
	if _, ok, err := r.Origin(ctx, "", digest.FromString("never pushed"), nil); err != nil || ok {
		t.Fatalf("Origin of an unknown digest = %v %v", ok, err)
	}
	// Another dedup scope's origins are not this one's, and the other
	// way round.
	b3 := b
	b3.Repository, b3.CipherDigest, b3.Scope = "team-c/app", digest.FromString("b3"), "another scope"
	if err := w.PutBlob(ctx, b3); err != nil {
		t.Fatal(err)
	}
	if got, ok, err := r.Origin(ctx, "", b.PlainDigest, func(repo string) bool { return repo == "team-c/app" }); err != nil || ok {
		t.Fatalf("Origin in scope \"\" finds %+v of another scope (%v)", got, err)
	}
	if got, ok, err := r.Origin(ctx, "another scope", b.PlainDigest, nil); err != nil || !ok || got.Repository != "team-c/app" {
		t.Fatalf("Origin in its own scope = %+v %v %v", got, ok, err)
	}
	for i := range OriginsPerDigest {
		o := b
		o.Repository = fmt.Sprintf("other/%d", i)
		if err := w.PutBlob(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok, err := w.Origin(ctx, "", b.PlainDigest, inA); err != nil || ok {
		t.Fatalf("Origin within team-a after %d newer origins = %v %v: more than %d remembered", OriginsPerDigest, ok, err, OriginsPerDigest)
	}

	m := testManifest("team-a/app", "manifest")
	if err := w.PutManifest(ctx, m); err != nil {
		t.Fatal(err)
	}
	if got, ok, err := r.Manifest(ctx, m.Repository, m.PlainDigest); err != nil || !ok || got != m {
		t.Fatalf("Manifest = %+v %v %v", got, ok, err)
	}
	if got, ok, err := r.ManifestByUpstream(ctx, m.Repository, m.UpstreamDigest); err != nil || !ok || got != m {
		t.Fatalf("ManifestByUpstream = %+v %v %v", got, ok, err)
	}
	if _, ok, err := r.Manifest(ctx, "team-b/app", m.PlainDigest); err != nil || ok {
		t.Fatalf("Manifest in another repository = %v %v", ok, err)
	}
	if _, ok, err := r.ManifestByUpstream(ctx, m.Repository, m.PlainDigest); err != nil || ok {
		t.Fatalf("ManifestByUpstream by the plaintext digest = %v %v", ok, err)
	}
	if err := w.DeleteManifest(ctx, m.Repository, m.PlainDigest); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := w.Manifest(ctx, m.Repository, m.PlainDigest); err != nil || ok {
		t.Fatalf("Manifest after DeleteManifest = %v %v", ok, err)
	}
	if _, ok, err := w.ManifestByUpstream(ctx, m.Repository, m.UpstreamDigest); err != nil || ok {
		t.Fatalf("ManifestByUpstream after DeleteManifest = %v %v", ok, err)
	}
}

func TestSharedRoundTrip(t *testing.T) {
	rs := redistest.Start(t)
	id := testIdentity(t)
	c := rs.Client()
	s := newTestShared(t, c, keysOf(t, id), SharedOptions{TTL: time.Hour})
	storeRoundTrip(t, id, s, s)

	// Every entry expires TTL after its last write, and carries the prefix.
	ctx := ctxT(t)
	keys, err := c.Keys(ctx, "*").Result()
	if err != nil || len(keys) == 0 {
		t.Fatalf("KEYS = %v %v", keys, err)
	}
	for _, k := range keys {
		if !strings.HasPrefix(k, DefaultPrefix) {
			t.Errorf("key %q lacks the prefix %q", k, DefaultPrefix)
		}
		if ttl := c.TTL(ctx, k).Val(); ttl <= 59*time.Minute || ttl > time.Hour {
			t.Errorf("key %q has TTL %v, want about the 1h configured", k, ttl)
		}
	}
}

// The prefix keeps two deployments sharing one Redis apart.
func TestSharedPrefixSeparatesDeployments(t *testing.T) {
	rs := redistest.Start(t)
	id := testIdentity(t)
	c := rs.Client()
	a := newTestShared(t, c, keysOf(t, id), SharedOptions{Prefix: "prod:"})
	b := newTestShared(t, c, keysOf(t, id), SharedOptions{Prefix: "staging:"})
	ctx := ctxT(t)
	m := testManifest("r", "m")
	if err := a.PutManifest(ctx, m); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := b.Manifest(ctx, "r", m.PlainDigest); err != nil || ok {
		t.Fatalf("another prefix's Manifest = %v %v, want a miss", ok, err)
	}
	if n := c.Keys(ctx, "prod:*").Val(); len(n) != 2 {
		t.Fatalf("keys under prod: = %v, want the manifest's two", n)
	}
}

// dumpRedis returns every key and every value in the Redis, whatever its
// type.
func dumpRedis(t *testing.T, c redis.UniversalClient) map[string][][]byte {
	t.Helper()
	ctx := ctxT(t)
	out := map[string][][]byte{}
	iter := c.Scan(ctx, 0, "*", 100).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		switch typ := c.Type(ctx, k).Val(); typ {
		case "string":
			v, err := c.Get(ctx, k).Bytes()
			if err != nil {
				t.Fatal(err)
			}
			out[k] = append(out[k], v)
		case "hash":
			for f, v := range c.HGetAll(ctx, k).Val() {
				out[k] = append(out[k], []byte(f), []byte(v))
			}
		case "list":
			for _, v := range c.LRange(ctx, k, 0, -1).Val() {
				out[k] = append(out[k], []byte(v))
			}
		case "set":
			for _, v := range c.SMembers(ctx, k).Val() {
				out[k] = append(out[k], []byte(v))
			}
		case "zset":
			for _, v := range c.ZRange(ctx, k, 0, -1).Val() {
				out[k] = append(out[k], []byte(v))
			}
		default:
			t.Fatalf("key %q is a %s, which the scan cannot read", k, typ)
		}
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// An operator's (or an intruder's) view of the Redis: SCAN every key,
// read every value. None holds a plaintext digest, a repository name, an
// annotation value (the wrapped layer keys) or a ledger value.
func TestSharedTierLearnsNoPlaintextDigest(t *testing.T) {
	rs := redistest.Start(t)
	id := testIdentity(t)
	c := rs.Client()
	s := newTestShared(t, c, keysOf(t, id), SharedOptions{})
	ctx := ctxT(t)

	var secrets []string
	for i, repo := range []string{"secret-team/payroll", "secret-team/payroll-ui", "acme/ledger-service"} {
		b := layerBlob(t, id, repo, fmt.Sprintf("layer %d", i), 1)
		if err := s.PutBlob(ctx, b); err != nil {
			t.Fatal(err)
		}
		m := testManifest(repo, fmt.Sprintf("manifest %d", i))
		if err := s.PutManifest(ctx, m); err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, repo, b.PlainDigest.Encoded(), b.CipherDigest.Encoded(), m.PlainDigest.Encoded(), m.UpstreamDigest.Encoded())
		for _, v := range b.Annotations {
			secrets = append(secrets, v)
		}
	}
	if ok, err := s.Ledger().Swap(ctx, "upload-session-42", "", "offset-1048576", time.Hour); err != nil || !ok {
		t.Fatalf("ledger Swap = %v %v", ok, err)
	}
	secrets = append(secrets, "upload-session-42", "offset-1048576")

	dump := dumpRedis(t, c)
	if len(dump) < 10 {
		t.Fatalf("Redis holds %d keys after 3 blobs, 3 manifests and a ledger entry", len(dump))
	}
	keyForm := regexp.MustCompile(`^shroud:[bomul][0-9a-f]{64}$`)
	for k, vs := range dump {
		if !keyForm.MatchString(k) {
			t.Errorf("key %q is not prefix, kind and keyed hash", k)
		}
		for _, sec := range secrets {
			// A digest's first 16 hex digits are enough to recognize it.
			needle := sec
			if len(needle) > 16 {
				needle = needle[:16]
			}
			if strings.Contains(k, needle) {
				t.Errorf("key %q contains %q", k, needle)
			}
			for _, v := range vs {
				if bytes.Contains(v, []byte(needle)) {
					t.Errorf("value of %q contains %q", k, needle)
				}
			}
		}
	}
	t.Logf("scanned %d keys: none holds any of %d plaintext names, digests or annotation values", len(dump), len(secrets))
}

// What shroud did not seal for a key is no mapping: a value moved to
// another key, damaged, or written with another key is a miss (never an
// error), and OnForeign says so.
func TestSharedForeignValuesAreMisses(t *testing.T) {
	rs := redistest.Start(t)
	id := testIdentity(t)
	c := rs.Client()
	var mu sync.Mutex
	foreign := map[string]int{}
	k := keysOf(t, id)
	s := newTestShared(t, c, k, SharedOptions{OnForeign: func(op string) { mu.Lock(); foreign[op]++; mu.Unlock() }})
	ctx := ctxT(t)

	a := layerBlob(t, id, "r", "a", 0)
	b := layerBlob(t, id, "r", "b", 0)
	b.Bound = false
	for _, bl := range []Blob{a, b} {
		if err := s.PutBlob(ctx, bl); err != nil {
			t.Fatal(err)
		}
	}
	ka, kb := s.key(kindBlob, "r", a.PlainDigest.String()), s.key(kindBlob, "r", b.PlainDigest.String())
	va, vb := c.Get(ctx, ka).Val(), c.Get(ctx, kb).Val()

	miss := func(what string, want int) {
		t.Helper()
		for _, bl := range []Blob{a, b} {
			if got, ok, err := s.Blob(ctx, "r", bl.PlainDigest); err != nil || ok {
				t.Errorf("%s: Blob(%s) = %+v %v %v, want a miss and no error", what, bl.PlainDigest, got, ok, err)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		if foreign["blob"] != want {
			t.Errorf("%s: OnForeign(blob) called %d times in all, want %d", what, foreign["blob"], want)
		}
	}

	// Swapped between the two keys.
	c.Set(ctx, ka, vb, 0)
	c.Set(ctx, kb, va, 0)
	miss("values swapped", 2)

	// One byte flipped, anywhere.
	for _, at := range []int{0, len(va) / 2, len(va) - 1} {
		v := []byte(va)
		v[at] ^= 0x01
		c.Set(ctx, ka, v, 0)
		if _, ok, err := s.Blob(ctx, "r", a.PlainDigest); err != nil || ok {
			t.Errorf("byte %d flipped: Blob = %v %v, want a miss", at, ok, err)
		}
	}
	// Truncated, empty, garbage.
	for _, v := range []string{va[:10], "", "not sealed at all"} {
		c.Set(ctx, ka, v, 0)
		if _, ok, err := s.Blob(ctx, "r", a.PlainDigest); err != nil || ok {
			t.Errorf("value %q: Blob = %v %v, want a miss", v, ok, err)
		}
	}

	// Written under the right name by someone with another value key (a
	// replica of another deployment, or whoever learned the names).
	other := newTestShared(t, c, sharedKeys{names: k.names, box: keysOf(t, testIdentity(t)).box}, SharedOptions{})
	if err := other.PutBlob(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := other.PutManifest(ctx, testManifest("r", "m")); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := s.Blob(ctx, "r", a.PlainDigest); err != nil || ok {
		t.Errorf("value sealed with another key: Blob = %v %v, want a miss", ok, err)
	}
	if _, ok, err := s.Origin(ctx, "", a.PlainDigest, nil); err != nil || ok {
		t.Errorf("origins sealed with another key: Origin = %v %v, want a miss", ok, err)
	}
	m := testManifest("r", "m")
	if _, ok, err := s.Manifest(ctx, "r", m.PlainDigest); err != nil || ok {
		t.Errorf("manifest sealed with another key: Manifest = %v %v, want a miss", ok, err)
	}
	if _, ok, err := s.ManifestByUpstream(ctx, "r", m.UpstreamDigest); err != nil || ok {
		t.Errorf("manifest sealed with another key: ManifestByUpstream = %v %v, want a miss", ok, err)
	}

	// Sealed with shroud's key for this very Redis key, but naming another
	// repository or digest (defence in depth: a bug that seals the wrong
	// mapping must not serve it).
	for _, wrong := range []Blob{{Repository: "other", PlainDigest: a.PlainDigest, CipherDigest: a.CipherDigest}, {Repository: "r", PlainDigest: b.PlainDigest, CipherDigest: a.CipherDigest}} {
		sealed, err := s.seal(ka, sharedBlob(wrong))
		if err != nil {
			t.Fatal(err)
		}
		c.Set(ctx, ka, sealed, 0)
		if got, ok, err := s.Blob(ctx, "r", a.PlainDigest); err != nil || ok {
			t.Errorf("sealed mapping of %s@%s under r@%s's key: Blob = %+v %v %v, want a miss", wrong.Repository, wrong.PlainDigest, a.PlainDigest, got, ok, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if foreign["manifest"] != 1 || foreign["manifest by upstream"] != 1 || foreign["origin"] != 1 {
		t.Errorf("OnForeign calls = %v, want one per foreign manifest and origin entry", foreign)
	}
}

// The figures SharedOptions' doc gives for sizing maxmemory: MEMORY USAGE
// memoryScope is a dedup scope as the proxy names one of a rule's.
const memoryScope = "rule\x000\x00team/**"

// of each kind of entry as the proxy writes them.
func TestSharedMemoryUsage(t *testing.T) {
	rs := redistest.Start(t)
	id := testIdentity(t)
	c := rs.Client()
	s := newTestShared(t, c, keysOf(t, id), SharedOptions{})
	ctx := ctxT(t)
	usage := func(key string) int64 {
		t.Helper()
		n, err := c.MemoryUsage(ctx, key).Result()
		if err != nil {
			t.Fatalf("MEMORY USAGE %s: %v", key, err)
		}
		return n
	}
	const n = 20
	var blob0, blob1, blob3, origins, unbound int64
	for i := range n {
		for extra, sum := range map[int]*int64{0: &blob0, 1: &blob1, 3: &blob3} {
			b := layerBlob(t, id, "team/app", fmt.Sprintf("layer %d %d", i, extra), extra)
			b.Scope = memoryScope
			if err := s.PutBlob(ctx, b); err != nil {
				t.Fatal(err)
			}
			*sum += usage(s.key(kindBlob, b.Repository, b.PlainDigest.String()))
			if extra == 0 {
				origins += usage(s.key(kindOrigins, b.Scope, b.PlainDigest.String()))
			}
		}
		u := Blob{Repository: "team/app", PlainDigest: digest.FromString(fmt.Sprint("unbound", i)), CipherDigest: digest.FromString(fmt.Sprint("c", i)), Size: 1234}
		if err := s.PutBlob(ctx, u); err != nil {
			t.Fatal(err)
		}
		unbound += usage(s.key(kindBlob, u.Repository, u.PlainDigest.String()))
	}
	// A digest whose origin list is full.
	full := layerBlob(t, id, "team/app", "shared base layer", 0)
	full.Scope = memoryScope
	for i := range OriginsPerDigest {
		full.Repository = fmt.Sprintf("team-%d/some-application", i)
		if err := s.PutBlob(ctx, full); err != nil {
			t.Fatal(err)
		}
	}
	fullOrigins := usage(s.key(kindOrigins, full.Scope, full.PlainDigest.String()))
	var byPlain, byUpstream int64
	for i := range n {
		m := testManifest("team/app", fmt.Sprint("manifest", i))
		if err := s.PutManifest(ctx, m); err != nil {
			t.Fatal(err)
		}
		byPlain += usage(s.key(kindManifest, m.Repository, m.PlainDigest.String()))
		byUpstream += usage(s.key(kindUpstream, m.Repository, m.UpstreamDigest.String()))
	}
	l := s.Ledger()
	var ledger int64
	for i := range n {
		name := fmt.Sprint("session", i)
		if _, err := l.Swap(ctx, name, "", "0123456789abcdef", time.Hour); err != nil {
			t.Fatal(err)
		}
		ledger += usage(s.key(kindLedger, name))
	}
	t.Logf("MEMORY USAGE, bytes per entry (mean of %d):", n)
	t.Logf("  blob mapping, key wrapped for the identity alone: %d", blob0/n)
	t.Logf("  blob mapping, identity + 1 JWE recipient:        %d", blob1/n)
	t.Logf("  blob mapping, identity + 3 JWE recipients:       %d", blob3/n)
	t.Logf("  blob mapping without annotations:                %d", unbound/n)
	t.Logf("  origin list of one repository:                   %d", origins/n)
	t.Logf("  origin list of %d repositories:                   %d", OriginsPerDigest, fullOrigins)
	t.Logf("  manifest mapping, by plaintext digest:           %d", byPlain/n)
	t.Logf("  manifest mapping, by upstream digest:            %d", byUpstream/n)
	t.Logf("  ledger entry:                                    %d", ledger/n)
	// The doc's figures, kept honest.
	for _, c := range []struct {
		what      string
		got, most int64
	}{
		{"blob mapping (identity alone)", blob0 / n, 1800},
		{"manifest mapping, both entries", (byPlain + byUpstream) / n, 1100},
		{"full origin list", fullOrigins, 700},
	} {
		if c.got > c.most {
			t.Errorf("%s takes %d bytes, more than the %d the Shared doc's sizing says", c.what, c.got, c.most)
		}
	}
}

// hungRedis is a TCP listener that accepts connections, reads what is
// sent and never answers: a Redis that hangs.
func hungRedis(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 4096)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return l.Addr().String()
}

// A Redis that accepts and never answers costs each call OpTimeout at
// most, whether or not the client heeds context deadlines itself.
func TestSharedHungRedisCostsOpTimeout(t *testing.T) {
	addr := hungRedis(t)
	id := testIdentity(t)
	const opTimeout = 200 * time.Millisecond
	deaf := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{addr}, DisableIdentity: true, MaxRetries: -1})
	t.Cleanup(func() { deaf.Close() })
	for name, c := range map[string]redis.UniversalClient{"ContextTimeoutEnabled": redistest.Client(t, addr), "client default timeouts": deaf} {
		t.Run(name, func(t *testing.T) {
			s := newTestShared(t, c, keysOf(t, id), SharedOptions{OpTimeout: opTimeout})
			ctx := context.Background()
			b := layerBlob(t, id, "r", "l", 0)
			m := testManifest("r", "m")
			l := s.Ledger()
			calls := map[string]func() error{
				"Blob":               func() error { _, _, err := s.Blob(ctx, "r", b.PlainDigest); return err },
				"PutBlob":            func() error { return s.PutBlob(ctx, b) },
				"Origin":             func() error { _, _, err := s.Origin(ctx, "", b.PlainDigest, nil); return err },
				"Manifest":           func() error { _, _, err := s.Manifest(ctx, "r", m.PlainDigest); return err },
				"ManifestByUpstream": func() error { _, _, err := s.ManifestByUpstream(ctx, "r", m.UpstreamDigest); return err },
				"PutManifest":        func() error { return s.PutManifest(ctx, m) },
				"DeleteManifest":     func() error { return s.DeleteManifest(ctx, "r", m.PlainDigest) },
				"Ping":               func() error { return s.Ping(ctx) },
				"Ledger.Get":         func() error { _, _, err := l.Get(ctx, "n"); return err },
				"Ledger.Swap":        func() error { _, err := l.Swap(ctx, "n", "", "v", time.Minute); return err },
			}
			for op, call := range calls {
				start := time.Now()
				err := call()
				took := time.Since(start)
				if err == nil {
					t.Errorf("%s against a hung Redis succeeded", op)
				} else if !errors.Is(err, context.DeadlineExceeded) {
					t.Logf("%s: %v", op, err)
				}
				// One OpTimeout per Redis call, and a call of the Store
				// makes one (the first fails).
				if took > opTimeout+150*time.Millisecond {
					t.Errorf("%s against a hung Redis took %v, more than OpTimeout %v", op, took, opTimeout)
				}
			}
		})
	}
}

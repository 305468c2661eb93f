package cache

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/redis/go-redis/v9"

	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/redistest"
)

// newTestTiered returns a replica's Tiered on client: its own LRU, the
// deployment's keys.
func newTestTiered(t *testing.T, client redis.UniversalClient, id *crypto.Identity, opts TieredOptions) *Tiered {
	t.Helper()
	front, err := NewLRU(0)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := NewTiered(front, newTestShared(t, client, keysOf(t, id), SharedOptions{OpTimeout: 300 * time.Millisecond}), opts)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func TestTieredRoundTrip(t *testing.T) {
	rs := redistest.Start(t)
	id := testIdentity(t)
	tr := newTestTiered(t, rs.Client(), id, TieredOptions{})
	storeRoundTrip(t, id, tr, tr)
}

// Two replicas sharing one Redis: what one writes, the other reads.
func TestTieredReplicasShareOneRedis(t *testing.T) {
	rs := redistest.Start(t)
	id := testIdentity(t)
	a := newTestTiered(t, rs.Client(), id, TieredOptions{})
	b := newTestTiered(t, rs.Client(), id, TieredOptions{})
	storeRoundTrip(t, id, a, b)

	// A delete on one replica reaches a third that had not read it; the
	// second's LRU may keep it (see Tiered's doc).
	ctx := ctxT(t)
	m := testManifest("team/app", "deleted later")
	if err := a.PutManifest(ctx, m); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := b.Manifest(ctx, m.Repository, m.PlainDigest); !ok {
		t.Fatal("replica b does not see replica a's manifest")
	}
	if err := a.DeleteManifest(ctx, m.Repository, m.PlainDigest); err != nil {
		t.Fatal(err)
	}
	c := newTestTiered(t, rs.Client(), id, TieredOptions{})
	if _, ok, err := c.Manifest(ctx, m.Repository, m.PlainDigest); ok || err != nil {
		t.Fatalf("replica c finds a manifest replica a deleted: %v %v", ok, err)
	}
}

// Redis dies mid-test: calls answer from the LRU with no error, OnError
// counts the failures, Health says degraded; Redis back on the same port:
// Health is nil again and writes reach it.
func TestTieredSurvivesRedisDeath(t *testing.T) {
	rs := redistest.Start(t)
	id := testIdentity(t)
	var mu sync.Mutex
	var failures []string
	tr := newTestTiered(t, rs.Client(), id, TieredOptions{
		Backoff: time.Hour, // only Health ends the wait
		OnError: func(op string, err error) { mu.Lock(); failures = append(failures, op); mu.Unlock() },
	})
	ctx := ctxT(t)
	before := layerBlob(t, id, "r", "before", 0)
	if err := tr.PutBlob(ctx, before); err != nil {
		t.Fatal(err)
	}
	if err := tr.Health(ctx); err != nil {
		t.Fatalf("Health with Redis up = %v", err)
	}

	rs.Stop()
	m := testManifest("r", "during")
	during := layerBlob(t, id, "r", "during", 0)
	if err := tr.PutBlob(ctx, during); err != nil {
		t.Fatalf("PutBlob with Redis down = %v, want nil", err)
	}
	if err := tr.PutManifest(ctx, m); err != nil {
		t.Fatalf("PutManifest with Redis down = %v, want nil", err)
	}
	for _, bl := range []Blob{before, during} {
		if got, ok, err := tr.Blob(ctx, "r", bl.PlainDigest); err != nil || !ok || !equalBlob(got, bl) {
			t.Fatalf("Blob with Redis down = %v %v, want the LRU's answer", ok, err)
		}
	}
	if _, ok, err := tr.Manifest(ctx, "r", m.PlainDigest); err != nil || !ok {
		t.Fatalf("Manifest with Redis down = %v %v", ok, err)
	}
	if _, ok, err := tr.Blob(ctx, "r", testManifest("r", "unknown").PlainDigest); err != nil || ok {
		t.Fatalf("Blob miss with Redis down = %v %v, want a plain miss", ok, err)
	}
	mu.Lock()
	if len(failures) == 0 || failures[0] != "put blob" {
		t.Errorf("OnError calls = %v, want the failing put blob first", failures)
	}
	mu.Unlock()
	if err := tr.Health(ctx); err == nil {
		t.Fatal("Health with Redis down = nil")
	} else {
		t.Logf("Health with Redis down: %v", err)
	}

	rs.Restart()
	if err := tr.Health(ctx); err != nil {
		t.Fatalf("Health with Redis back = %v", err)
	}
	after := layerBlob(t, id, "r", "after", 0)
	if err := tr.PutBlob(ctx, after); err != nil {
		t.Fatal(err)
	}
	other := newTestTiered(t, rs.Client(), id, TieredOptions{})
	if _, ok, err := other.Blob(ctx, "r", after.PlainDigest); err != nil || !ok {
		t.Fatalf("a write after Redis came back did not reach it: %v %v", ok, err)
	}
}

// Against a hung Redis the first call costs OpTimeout and the calls in the
// backoff after it cost nothing.
func TestTieredBacksOffAHungRedis(t *testing.T) {
	addr := hungRedis(t)
	id := testIdentity(t)
	errs := 0
	var mu sync.Mutex
	tr := newTestTiered(t, redistest.Client(t, addr), id, TieredOptions{Backoff: time.Hour, OnError: func(string, error) { mu.Lock(); errs++; mu.Unlock() }})
	ctx := ctxT(t)
	m := testManifest("r", "m")
	start := time.Now()
	if _, ok, err := tr.Manifest(ctx, "r", m.PlainDigest); ok || err != nil {
		t.Fatalf("Manifest = %v %v", ok, err)
	}
	if took := time.Since(start); took > 450*time.Millisecond {
		t.Fatalf("first call took %v, more than OpTimeout", took)
	}
	start = time.Now()
	for range 20 {
		tr.Manifest(ctx, "r", m.PlainDigest)
		tr.PutManifest(ctx, m)
	}
	if took := time.Since(start); took > 50*time.Millisecond {
		t.Fatalf("40 calls in the backoff took %v: they waited on the hung Redis", took)
	}
	mu.Lock()
	defer mu.Unlock()
	if errs != 1 {
		t.Fatalf("OnError called %d times, want once (then skipped)", errs)
	}
}

// Every pull restores its manifest's mappings: writing again what the
// shared tier already holds costs no Redis write, and a changed entry is
// written.
func TestTieredWritesUnchangedEntriesOnce(t *testing.T) {
	rs := redistest.Start(t)
	id := testIdentity(t)
	client := rs.Client()
	tr := newTestTiered(t, client, id, TieredOptions{})
	ctx := ctxT(t)
	writes := func() int64 { return redisWrites(t, client) }
	b := layerBlob(t, id, "team/app", "layer", 0)
	m := testManifest("team/app", "manifest")
	if err := tr.PutBlob(ctx, b); err != nil {
		t.Fatal(err)
	}
	if err := tr.PutManifest(ctx, m); err != nil {
		t.Fatal(err)
	}
	first := writes()
	if first == 0 {
		t.Fatal("nothing was written to Redis")
	}
	for range 5 {
		tr.PutBlob(ctx, b)
		tr.PutManifest(ctx, m)
	}
	if n := writes(); n != first {
		t.Fatalf("unchanged entries written again: %d SETs, was %d", n, first)
	}
	b.Size++
	tr.PutBlob(ctx, b)
	if n := writes(); n == first {
		t.Fatal("a changed entry was not written")
	}
	other := newTestTiered(t, client, id, TieredOptions{})
	if got, ok, _ := other.Blob(ctx, b.Repository, b.PlainDigest); !ok || got.Size != b.Size {
		t.Fatalf("another replica reads %+v, want the changed entry", got)
	}
}

// A delete on one replica is seen by another, though the other's LRU had
// the blob and manifest: it is marked in Redis, and the other replica's
// Deleted asks Redis. A push on the second replica clears it for the
// first, whose own LRU had marked it. With Redis gone, each replica
// answers from what it marked itself.
func TestTieredDeletionsAreShared(t *testing.T) {
	rs := redistest.Start(t)
	id := testIdentity(t)
	a := newTestTiered(t, rs.Client(), id, TieredOptions{Backoff: -1})
	b := newTestTiered(t, rs.Client(), id, TieredOptions{Backoff: -1})
	ctx := ctxT(t)
	const repo = "team/app"
	d := digest.FromString("deleted on a")
	if del, err := b.Deleted(ctx, repo, d); del || err != nil {
		t.Fatalf("deleted before any delete: %v %v", del, err)
	}
	if err := a.SetDeleted(ctx, repo, d, true); err != nil {
		t.Fatal(err)
	}
	if del, _ := b.Deleted(ctx, repo, d); !del {
		t.Fatal("replica b does not see replica a's delete")
	}
	if del, _ := b.Deleted(ctx, "team/other", d); del {
		t.Fatal("a delete in one repository marks another")
	}
	if err := b.SetDeleted(ctx, repo, d, false); err != nil {
		t.Fatal(err)
	}
	if del, _ := a.Deleted(ctx, repo, d); del {
		t.Fatal("replica a still says deleted after replica b's push cleared it")
	}
	// Marked again on a; Redis dies: a answers from its LRU, b from its
	// own (which read "deleted" last from Redis).
	a.SetDeleted(ctx, repo, d, true)
	if del, _ := b.Deleted(ctx, repo, d); !del {
		t.Fatal("replica b does not see the second delete")
	}
	rs.Stop()
	if del, err := a.Deleted(ctx, repo, d); !del || err != nil {
		t.Fatalf("with Redis down, replica a forgets its own delete: %v %v", del, err)
	}
	if del, err := b.Deleted(ctx, repo, d); !del || err != nil {
		t.Fatalf("with Redis down, replica b forgets the delete it read: %v %v", del, err)
	}
}

// Stale drops a replica's LRU copies of a mapping another replica
// replaced (a blob uploaded again under a new key, a manifest pushed
// again), and the next lookup reads what Redis holds now.
func TestTieredStaleReadsTheSharedTierAgain(t *testing.T) {
	rs := redistest.Start(t)
	id := testIdentity(t)
	a := newTestTiered(t, rs.Client(), id, TieredOptions{})
	b := newTestTiered(t, rs.Client(), id, TieredOptions{})
	ctx := ctxT(t)
	v1 := layerBlob(t, id, "team/app", "layer", 0)
	m1 := testManifest("team/app", "manifest")
	m1.PlainDigest = v1.PlainDigest // one digest names both, as Stale takes it
	if err := a.PutBlob(ctx, v1); err != nil {
		t.Fatal(err)
	}
	if err := a.PutManifest(ctx, m1); err != nil {
		t.Fatal(err)
	}
	if got, ok, _ := b.Blob(ctx, v1.Repository, v1.PlainDigest); !ok || got.CipherDigest != v1.CipherDigest {
		t.Fatal("replica b does not read replica a's blob")
	}
	b.Manifest(ctx, m1.Repository, m1.PlainDigest)
	v2, m2 := v1, m1
	v2.CipherDigest = digest.FromString("cipher of the second upload")
	m2.UpstreamDigest = digest.FromString("the second push")
	a.PutBlob(ctx, v2)
	a.PutManifest(ctx, m2)
	if got, _, _ := b.Blob(ctx, v1.Repository, v1.PlainDigest); got.CipherDigest != v1.CipherDigest {
		t.Fatal("the test means b's LRU to hold the first upload")
	}
	b.Stale(ctx, v1.Repository, v1.PlainDigest)
	if got, ok, _ := b.Blob(ctx, v1.Repository, v1.PlainDigest); !ok || got.CipherDigest != v2.CipherDigest {
		t.Fatalf("after Stale replica b reads %s, want the second upload's %s", got.CipherDigest, v2.CipherDigest)
	}
	if got, ok, _ := b.Manifest(ctx, m1.Repository, m1.PlainDigest); !ok || got.UpstreamDigest != m2.UpstreamDigest {
		t.Fatalf("after Stale replica b maps the manifest to %s, want %s", got.UpstreamDigest, m2.UpstreamDigest)
	}
	// The second copy was read from Redis and is known to be there: a
	// pull restoring it writes nothing.
	before := redisWrites(t, rs.Client())
	b.PutBlob(ctx, v2)
	if after := redisWrites(t, rs.Client()); after != before {
		t.Fatalf("writing back what was just read cost %d SETs", after-before)
	}
}

// redisWrites counts the SETs the server has taken so far.
func redisWrites(t *testing.T, client redis.UniversalClient) int64 {
	t.Helper()
	info, err := client.Info(ctxT(t), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, line := range strings.Split(info, "\n") {
		for _, cmd := range []string{"cmdstat_set:", "cmdstat_setex:", "cmdstat_psetex:"} {
			if rest, ok := strings.CutPrefix(strings.TrimSpace(line), cmd); ok {
				var n int64
				fmt.Sscanf(strings.TrimPrefix(rest, "calls="), "%d", &n)
				total += n
			}
		}
	}
	return total
}

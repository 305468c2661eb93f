package proxy_test

import (
	"context"
	"sort"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/shroud-oci/shroud/cache"
	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/redistest"
	"github.com/shroud-oci/shroud/internal/shroudtest"
)

// Attack (by whoever runs the Redis of the shared tier): learn that two
// tenants pushed the same layer. Keys are keyed hashes, but a digest's
// list of origins was one key for every repository: the second tenant's
// push rewrote the key the first tenant's had written, telling Redis
// that both hold that layer, though their rules keep layers apart (the
// upstream never sees a mount between them). A push now writes no key
// another dedup scope wrote; within one scope it does (the control: the
// upstream sees the mount there anyway).
func TestAttackRedisLinksLayersAcrossDedupScopes(t *testing.T) {
	rs := redistest.Start(t)
	client := rs.Client()
	names := must[*crypto.KeyedHash](t)(crypto.NewKeyedHash(atkRandBytes(t, 32)))
	box := must[*crypto.Box](t)(crypto.NewBox(atkRandBytes(t, 32)))
	shared := must[*cache.Shared](t)(cache.NewShared(client, names, box, cache.SharedOptions{}))
	tier := must[*cache.Tiered](t)(cache.NewTiered(must[*cache.LRU](t)(cache.NewLRU(0)), shared, cache.TieredOptions{}))
	s := shroudtest.Start(t, shroudtest.Distribution(t), shroudtest.WithCache(tier), shroudtest.WithLedger(shared.Ledger()),
		shroudtest.WithPolicy(
			shroudtest.Rule{Pattern: "team-a/**", Action: crypto.Encrypt},
			shroudtest.Rule{Pattern: "team-b/**", Action: crypto.Encrypt}))
	c := call{t, s.URL}
	layer := atkRandBytes(t, 20_000)

	atkPushBlob(t, c, "team-a/app", layer)
	before := redisSnapshot(t, client)
	atkPushBlob(t, c, "team-b/app", layer)
	if rewritten := rewrittenKeys(before, redisSnapshot(t, client)); len(rewritten) > 0 {
		t.Fatalf("team-b's push of team-a's layer rewrote %d of the keys team-a's push wrote (%v): Redis learns both hold it", len(rewritten), rewritten)
	}

	// The control: within team-a's scope the same push does rewrite the
	// digest's origins (so the check above can see a rewrite).
	before = redisSnapshot(t, client)
	atkPushBlob(t, c, "team-a/other", layer)
	if rewritten := rewrittenKeys(before, redisSnapshot(t, client)); len(rewritten) == 0 {
		t.Fatal("a push within one scope rewrote no key: the origins of a digest are not shared within a scope, or the snapshot misses writes")
	}
}

// redisSnapshot returns every key of the server with its value.
func redisSnapshot(t *testing.T, client redis.UniversalClient) map[string]string {
	t.Helper()
	ctx := context.Background()
	keys, err := client.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	snap := map[string]string{}
	for _, k := range keys {
		v, err := client.Get(ctx, k).Result()
		if err != nil && err != redis.Nil {
			t.Fatal(err)
		}
		snap[k] = v
	}
	return snap
}

// rewrittenKeys lists the keys of before whose value after differs (or
// that are gone).
func rewrittenKeys(before, after map[string]string) []string {
	var out []string
	for k, v := range before {
		if w, ok := after[k]; !ok || w != v {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

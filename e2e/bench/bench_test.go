package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// The harness runs end to end on a small image: every measurement is
// taken and every concurrent pull gets the right digests. (The figures of
// a small run mean nothing; BENCHMARKS.md has those of a full one.) The
// replicas section needs Debian's redis-server and nginx: without them
// the run fails, naming the package.
func TestHarnessSmall(t *testing.T) {
	var out bytes.Buffer
	res, err := run(context.Background(), options{Layers: 2, LayerSize: 1 << 20, Rounds: 1, BigLayer: 8 << 20, Clients: 4, CPUBlob: 8 << 20,
		ManifestSamples: 2, RedisImages: 1}, &out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, k := range []string{"push plain direct", "push skopeo-encrypted direct", "push through shroud", "re-push through shroud",
		"pull plain direct", "pull skopeo-decrypted direct", "pull through shroud", "pull through shroud verify-before-release"} {
		if res.Seconds[k] <= 0 {
			t.Errorf("no figure for %q", k)
		}
	}
	if res.PeakRSSPushMiB <= 0 || res.PeakRSSPullMiB <= 0 || res.ManifestShroud <= 0 || len(res.UpstreamFetches) == 0 {
		t.Errorf("missing figures: %+v", res)
	}
	if len(res.ImagePull["cold"]) == 0 || len(res.ImagePull["warm"]) == 0 {
		t.Errorf("no upstream request counts for one image pull: %v", res.ImagePull)
	}
	if c := res.CPU; c == nil || c.CryptoAlone <= 0 || len(c.Rounds["shroud, pull cold"]) != 1 || len(c.Rounds["shroud, pull warm"]) != 1 ||
		len(c.Rounds["shroud, push"]) != 1 || len(c.Rounds["registry, plain pull straight"]) != 1 {
		t.Errorf("missing CPU figures: %+v", c)
	}
	if rr := res.Replicas; rr == nil {
		t.Errorf("no replicas figures")
	} else {
		for _, s := range []string{"one shroud", "one shroud + Redis", "nginx + 2 replicas + Redis"} {
			if rr.Seconds["push, "+s] <= 0 || rr.Seconds["pull, "+s] <= 0 {
				t.Errorf("no push or pull figure for %q: %v", s, rr.Seconds)
			}
		}
		for _, k := range []string{"cold, without Redis", "warm, without Redis", "cold, with Redis", "warm, with Redis", "straight to the registry"} {
			if m := rr.Manifest[k]; m == nil || m.MedianMs <= 0 {
				t.Errorf("no manifest GET figure for %q", k)
			}
		}
		if m := rr.Manifest["cold, with Redis"]; m != nil && m.Redis["get"] == 0 {
			t.Errorf("a cold manifest GET with Redis read nothing from Redis: %v", m.Redis)
		}
		for _, op := range []string{"push", "pull, a new replica"} {
			if s := rr.Redis[op+", 4 layers"]; len(s) != 1 || s[0].total() == 0 || s[0].trips() == 0 {
				t.Errorf("no Redis commands or round trips for %q: %+v", op, s)
			}
		}
		if m := rr.RedisMemory; m == nil || m.UsedMemory <= 0 || m.Keys["b"] == 0 {
			t.Errorf("no Redis memory figures: %+v", m)
		}
		if len(rr.Concurrent) != 1 {
			t.Errorf("no concurrent pulls through the replicas: %+v", rr.Concurrent)
		} else {
			c := rr.Concurrent[0]
			for l := range c.Full[0] {
				if c.Full[0][l]+c.Full[1][l] == 0 {
					t.Errorf("layer %d was never fetched from the upstream: %+v", l, c)
				}
			}
		}
	}
	if !strings.Contains(out.String(), "targets:") {
		t.Errorf("no targets in the report:\n%s", out.String())
	}
	t.Log(out.String())
}

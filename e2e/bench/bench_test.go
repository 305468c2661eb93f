package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// The harness runs end to end on a small image: every measurement is
// taken and every concurrent pull gets the right digests. (The figures of
// a small run mean nothing; BENCHMARKS.md has those of a full one.)
func TestHarnessSmall(t *testing.T) {
	var out bytes.Buffer
	res, err := run(context.Background(), options{Layers: 2, LayerSize: 1 << 20, Rounds: 1, BigLayer: 8 << 20, Clients: 4, CPUBlob: 8 << 20}, &out)
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
	if !strings.Contains(out.String(), "targets:") {
		t.Errorf("no targets in the report:\n%s", out.String())
	}
	t.Log(out.String())
}

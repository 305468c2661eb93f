// Command bench is shroud's end-to-end performance harness. In one run it
// measures, alternating the alternatives over several rounds, pushes and
// pulls of a large image with skopeo: straight to a distribution v3
// registry (plain, and encrypted by skopeo itself) and through shroud;
// it reports medians and ratios, shroud's peak memory for one big layer,
// how often 16 concurrent pulls fetch each blob from the registry, and
// the latency shroud adds to a manifest GET, how many upstream requests
// one pull of an image costs, and shroud's CPU seconds per GiB pushed and
// pulled (cold and warm) for a client that does no work of its own; and
// (replicas.go) nginx and two replicas sharing Redis against one shroud:
// push and pull, the manifest GET by digest cold and warm, Redis commands,
// round trips and memory per image, and upstream fetches per layer for
// concurrent pulls through the replicas.
//
//	go run ./e2e/bench [-layers 4] [-layer-size 256MiB] [-rounds 3] [-big-layer 2GiB] [-cpu-blob 1GiB] [-json out.json]
//	go run ./e2e/bench -only cpu -shroud-before /tmp/shroud-old   # before/after in one run
//	go run ./e2e/bench -only replicas -layers 4 -layer-size 64MiB
//
// It needs skopeo and the Go toolchain, and for the replicas section
// Debian's redis-server and nginx; it builds shroud and distribution's
// registry (pinned in go.mod) itself, and runs everything on 127.0.0.1.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
)

func main() {
	o := defaultOptions()
	flag.IntVar(&o.Layers, "layers", o.Layers, "layers in the image")
	flag.Var(sizeFlag{&o.LayerSize}, "layer-size", "bytes per layer (KiB, MiB, GiB suffixes)")
	flag.IntVar(&o.Rounds, "rounds", o.Rounds, "rounds of A/B measurements (medians over them)")
	flag.Var(sizeFlag{&o.BigLayer}, "big-layer", "the one layer of the memory measurement")
	flag.IntVar(&o.Clients, "clients", o.Clients, "concurrent pulls")
	flag.StringVar(&o.JSON, "json", "", "also write the results as JSON to this file")
	flag.Var(sizeFlag{&o.CPUBlob}, "cpu-blob", "the one blob of the CPU measurement (at least 512MiB for figures that mean something)")
	flag.StringVar(&o.ShroudBefore, "shroud-before", "", "another shroud binary (the code before a change) to measure in the CPU section, in the same run")
	flag.IntVar(&o.ManifestSamples, "manifest-samples", o.ManifestSamples, "replicas section: manifest GETs by digest of each kind (cold, warm; with Redis and without)")
	flag.IntVar(&o.RedisImages, "redis-images", o.RedisImages, "replicas section: images of 10 layers the Redis memory per image is measured over")
	only := flag.String("only", "", "comma-separated sections to run: timing, memory, concurrency, cpu, replicas (default: all)")
	flag.Parse()
	if *only != "" {
		o.Only = strings.Split(*only, ",")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	res, err := run(ctx, o, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	if o.JSON != "" {
		if err := res.writeJSON(o.JSON); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
	}
}

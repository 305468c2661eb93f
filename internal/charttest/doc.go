// Package charttest checks charts/shroud without a cluster, as a reviewer
// would: `helm lint` and `helm template` (the helm command built from its
// pinned Go module) for several value sets, every rendered object decoded
// strictly into its Kubernetes type, what each set must and must not
// render, the rendered config loaded by shroud's own config loader, and
// the generated identity kept across upgrades (the chart's `lookup`,
// rendered by helm's engine against a fake cluster).
//
// It is a module of its own so that helm and the Kubernetes libraries
// stay out of shroud's: run it with `cd internal/charttest && go test ./...`.
package charttest

// Package cache keeps the mappings between what clients see (plaintext
// digests) and what the upstream registry holds (ciphertext blobs and
// encrypted manifests).
//
// The upstream is the source of truth: every entry can be rebuilt from the
// encrypted manifests stored there, so the cache only saves work. Store is
// the interface the proxy uses; LRU is the in-process tier (bounded by entry
// count); Shared is the tier the replicas of a deployment share, on
// Redis/Valkey, whose keys are keyed hashes and whose values are sealed, so
// Redis learns no digest, repository or wrapped key; Tiered puts an LRU in
// front of a Shared and answers from the LRU alone while Redis is down. No
// entry holds a secret in the clear: layer keys stay wrapped.
//
// Ledger is a compare-and-swap register (MemoryLedger in process,
// RedisLedger in a Shared's Redis) that upload sessions use so that a
// sealed session state is used at most once, across replicas.
//
// The tests start Debian's redis-server (apt-get install redis-server) on
// a free port of their own; go test -short skips them without it.
package cache

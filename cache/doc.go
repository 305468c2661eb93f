// Package cache keeps the mappings between what clients see (plaintext
// digests) and what the upstream registry holds (ciphertext blobs and
// encrypted manifests).
//
// The upstream is the source of truth: every entry can be rebuilt from the
// encrypted manifests stored there, so the cache only saves work. Store is
// the interface the proxy uses; LRU is the in-process tier (bounded by entry
// count). A shared tier (Redis/Valkey) implements the same interface. No
// entry holds a secret in the clear: layer keys stay wrapped.
package cache

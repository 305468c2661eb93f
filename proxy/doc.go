// Package proxy is the OCI distribution API shroud serves to clients.
//
// It encrypts blobs as they are uploaded (push.go), rewrites manifests to
// their ocicrypt form on the way up (manifest_push.go) and restores them on
// the way down (manifest_pull.go), and decrypts blobs as they are downloaded
// (pull.go). Every manifest it stores is also tagged upstream with a
// pointer, a tag named by a keyed hash of the digest its client pushed, so
// that a pull by that digest finds it after a restart and on any replica
// (pointer.go). The ping passes through, tag lists without the pointers,
// the catalog filtered by the policy (passthrough.go); /healthz and
// /readyz answer probes (health.go).
// Every key is checked before a push wraps a layer key for it and before a
// pull unwraps with it: its own validity (X.509, OpenPGP expiry) and
// Options.KeyCheck (trust documents); refusals are logged, audited
// (Options.Audit) and counted (keycheck.go).
// What happens is counted with the OpenTelemetry Meter given (metrics.go).
// Handlers return errors; errors.go writes them once as OCI error JSON.
//
// Decisions where the design is silent:
//   - An upload session belongs to the repository it was opened in; a
//     request for it under another name is BLOB_UPLOAD_UNKNOWN.
//   - A PATCH that fails half way (client or upstream gone) leaves the
//     session unusable (the hashes cannot be rewound): later requests get
//     BLOB_UPLOAD_INVALID and the client starts a new upload, as docker and
//     containerd do on any upload error.
//   - Only sha256 blob digests are accepted on push (DIGEST_INVALID
//     otherwise), which is what every client sends.
//   - A manifest whose layer shroud has no mapping for, but which the
//     upstream holds in plaintext, gets that layer encrypted from the
//     upstream copy: a manifest that leaves shroud never names a plaintext
//     layer.
//   - A manifest asked for by its upstream (encrypted) digest is served as
//     the upstream holds it: a client always gets the bytes of the digest it
//     asked for.
//   - HEAD of a blob mounts its ciphertext from another repository (the
//     design's dedup), except into a repository the client deleted it from:
//     deleted blobs and manifests are marked per repository in the cache
//     (cache.Store.SetDeleted: the shared tier's mark, seen by every
//     replica; the LRU's while it is down), so a delete sticks as the
//     distribution spec requires. A mapping whose ciphertext the upstream
//     answers 404 for is dropped from process memory (cache.Store.Stale)
//     and looked up once more: another replica deleted it or stored it
//     again under a new key.
//
// Decisions that keep a hostile upstream (DESIGN §10) from steering shroud:
//   - The seal (crypto.Seal) is signed by shroud's identity, then encrypted
//     to it, and names the upstream and repository it was written for and
//     every layer's pairing (plaintext digest, ciphertext digest, size,
//     HMAC). A manifest is served from its seal only when the signature
//     verifies, the seal is for this upstream and repository (or the
//     rule's accept-from names its repository and no deny rule covers
//     that), and every sealed layer is found in the manifest by its
//     ciphertext digest (never by position) with the sealed HMAC and size
//     and a wrapped key that unwraps to the sealed plaintext digest.
//     Anything else is treated as foreign.
//   - A foreign manifest (no seal, a forged or first-format seal, one for
//     another repository) opens only with the decryption keys its rule
//     allows; shroud's identity opens it only under accept-foreign, since
//     anyone can encrypt to a public key and a copy of shroud's ciphertext
//     without its seal must not open elsewhere.
//   - Blob mappings are per repository. Only a mapping shroud vouches for
//     (it encrypted the blob, or a verified seal names it: cache.Blob.Bound)
//     answers a HEAD, sources a cross-repository mount, is decrypted into a
//     config or sealed into a new manifest; a foreign one serves pulls of
//     its repository only, verified to its plaintext digest.
//   - What a mapping tells (existence, size, a 416 range) is said only
//     after the upstream, asked with the client's credentials, showed the
//     client may see the ciphertext.
//   - A manifest PUT is validated (descriptor count, wrapped keys of layers
//     that claim +encrypted) and authorized (an upstream upload session is
//     opened with the client's credentials and cancelled) before any work;
//     identical repeated descriptors are worked on once.
//   - The config is read from the client's own bytes (shroud's ciphertext
//     of the upload, or the upstream's copy checked against the digest),
//     never from the upstream unverified: platform rules decide on it, and a
//     config that names no platform is encrypted. A config is refused when a
//     manifest of the repository names the blob as a layer, when it is a
//     gzip, zstd or tar archive, or when an image config does not parse.
//   - Inline data is dropped from every descriptor shroud rewrites.
//   - A Range covering the whole blob is verified like a GET; other ranges
//     are decrypted unverified (the client's digest check over the whole
//     covers them), or, under a rule's verify-ranges, answered with the
//     whole verified blob.
//   - Restored manifests are remembered by upstream digest (bounded, ten
//     minutes), an index restores at most 1024 distinct children, referrers
//     one level deep (at most 1024).
//   - A pointer tag (shroud-<64 hex>: HMAC of backend, repository and the
//     client's digest under a key derived from the identity) is trusted
//     only when what it names restores from a seal valid for the
//     repository to an original of exactly that digest; anything else is
//     MANIFEST_UNKNOWN, never the bytes it names. Pushed by tag, a
//     manifest is PUT by its pointer first, then by the tag; by digest,
//     by its pointer alone. Tags of the pointer form are shroud's: a
//     client's PUT of one is DENIED, a GET or DELETE MANIFEST_UNKNOWN, and
//     tag lists leave them out (a page may hold fewer than n, even none;
//     its Link leads on while the upstream has more). A DELETE by digest
//     deletes the manifest the cache maps it to and the one its pointer
//     names, then the pointer; deleting a tag leaves the pointer.
//   - A request path that is not in its clean form (dot or empty segments,
//     encoded dots or slashes) is NAME_INVALID before the policy decides.
//   - Cancelling an upload is cancelled upstream first, with the client's
//     credentials: holding the session's URL is not enough.
//   - Configs, layers a policy leaves in plaintext and layers that arrived
//     already encrypted are stored upstream as the client sent them, by
//     streaming shroud's own ciphertext back through decryption.
//   - sha512 blobs are verified after the commit by decrypting them back:
//     the upload stream hashes sha256 only, what nearly every client sends.
//   - Range is answered by shroud (suffix and open ranges; 416 as
//     distribution answers), whatever the upstream supports.
//   - Concurrent pulls of one blob with one Authorization share an upstream
//     fetch (fetch.go); a lone pull streams straight from the upstream.
//   - A repository no policy rule matches is denied, and so are left out
//     of the catalog, with those a deny rule matches: a page may then hold
//     fewer names than n asked for, its Link leading on.
//   - Who gets plaintext (access.go): without Options.Auth the upstream,
//     asked with the client's credentials; with it shroud, which
//     authenticates and checks the rule's pull or push grant before any
//     cache lookup (a refused client gets the same answer whether anything
//     exists), never forwards the client's credentials, asks the upstream
//     with its own, and answers an upstream 401 with a 502 rather than
//     relaying a challenge the client would answer with what it sent.
//   - An upload session belongs to the principal that opened it (Basic:
//     user and password; a token: issuer and subject; under own auth the
//     verified principal); credentials the upstream has not accepted for
//     the session yet are checked with a status request before they may
//     touch it, so a refused request never abandons the owner's upload.
//   - A layer pushed already encrypted is rewrapped for the rule's
//     recipients only with the keys the rule opens foreign layers with:
//     its annotations are the client's and may be another repository's.
package proxy

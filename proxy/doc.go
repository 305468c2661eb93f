// Package proxy is the OCI distribution API shroud serves to clients.
//
// It encrypts blobs as they are uploaded (push.go), rewrites manifests to
// their ocicrypt form on the way up (manifest_push.go) and restores them on
// the way down (manifest_pull.go), and decrypts blobs as they are downloaded
// (pull.go). Tags and the ping pass through, the catalog filtered by the
// policy (passthrough.go); /healthz and /readyz answer probes (health.go).
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
//     deleted blobs and manifests are remembered per repository (bounded,
//     in process), so a delete sticks as the distribution spec requires.
//   - A manifest sealed by a shroud with another identity is served
//     decrypted, like one encrypted by another tool, when shroud holds a key
//     to its layers; DENIED only when none opens.
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
package proxy

// Package proxy is the OCI distribution API shroud serves to clients.
//
// It encrypts blobs as they are uploaded (push.go), rewrites manifests to
// their ocicrypt form on the way up (manifest_push.go) and restores them on
// the way down (manifest_pull.go), and decrypts blobs as they are downloaded
// (pull.go). Catalog, tags and the ping pass through (passthrough.go).
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
package proxy

// Package access keeps the access requests of keys that ask to become
// recipients of a repository's images, and the grants an owner's approval
// makes of them (the "centralized, untrusted key distribution" model of
// the OCI image-encryption proposal).
//
// A requester submits a public key (jwe: an RSA or EC public key; pkcs7:
// an X.509 certificate), the repositories it asks for, a name, and proof
// that it holds the private key: the request is a JWS (go-jose) signed by
// that key, over a payload naming this shroud (its identity's key id, the
// audience) and the time it was made, so that a request cannot be
// replayed to another shroud or long after. A request is pending until an
// owner decides it; a pending request opens nothing. An approved request
// is a grant: its key is added to the recipients of the rule of each
// repository it names (Store.Extend, proxy.Grants), so every later push
// wraps layer keys for it, and a rewrap job adds it to the images stored
// before (blobs unchanged). A denial, or the grant's expiry, removes it
// from the recipients again (a rewrap then drops it from stored images).
//
// Where trust documents are configured, their allow list still decides:
// a granted key the allow list does not name is refused at wrap time like
// any recipient ("not-allowed"). The owner adds it to the signed allow
// list with the offline keys; shroud cannot sign trust documents.
//
// The store keeps one JSON file per request under its directory (mode
// 0600, written atomically); it holds public keys only.
package access

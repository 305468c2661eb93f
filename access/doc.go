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
// before (blobs unchanged). A denial removes it from the recipients
// again, and its rewrap drops it from the stored images. A grant's expiry
// ends the wraps of later pushes only: the images stored while it held
// keep the key until the owner denies the expired grant (whose rewrap
// takes it back). A granted key the key checks refuse (an expired
// certificate, trust documents) is left out of a push, never a reason to
// refuse it.
//
// Where trust documents are configured, their allow list still decides:
// a granted key the allow list does not name is left out at wrap time
// ("not-allowed", audited). The owner adds it to the signed allow
// list with the offline keys; shroud cannot sign trust documents.
//
// The store keeps one JSON file per request under its directory (mode
// 0600, written atomically); it holds public keys only.
package access

// Package crypto holds shroud's cryptography, none of it HTTP-aware:
//
//   - layer streams in the ocicrypt AES_256_CTR_HMAC_SHA256 format
//     (stream.go): an Encrypter that turns plaintext into ciphertext while
//     hashing both, and readers that decrypt a whole blob (verifying the HMAC
//     and the plaintext digest before the last bytes are released) or a range
//     of it;
//   - the layer options ocicrypt wraps per recipient (options.go), the
//     recipient and decryption-key files (keys.go), and the Keyring that
//     wraps layer keys for sets of recipients (keyring.go) and unwraps them
//     (unwrap.go) with ocicrypt's key wrappers, plus shroud's own identity
//     key (identity.go); ValidateEncrypted (validate.go) checks, with no
//     key, that a layer's annotations are ocicrypt's; Describe
//     (describe.go) names a layer's recipients; a compiled set of
//     recipients (recipients.go) narrows to a subset of its keys without
//     parsing again; every key has a key id (keyid.go: SPKI SHA-256, PGP
//     fingerprint, PKCS#11 URI, provider name) and the validity its own
//     material gives it (validity.go: X.509 NotBefore/NotAfter, OpenPGP
//     expiry), which the proxy checks before it wraps or unwraps;
//   - the sealing of a client's original manifest bytes to shroud's identity
//     (seal.go), so that a pull can return them byte for byte;
//   - the layer options shroud keyprovider wraps to the identity, bound
//     to a repository scope (provider_wrap.go);
//   - the media-type mapping between plain and encrypted layers
//     (mediatype.go).
//
// The wire format is ocicrypt's exactly; stream_compat_test.go proves both
// directions against the ocicrypt library.
//
// The annotations a layer is unwrapped from come from the registry, which
// shroud does not trust, so the Keyring guards ocicrypt's wrappers where
// they are unsafe as they are:
//
//   - the work of one unwrap is bounded: a layer with more than
//     MaxWrappedKeys wrapped keys (comma-separated parts, and the
//     recipients within each) is refused before any is tried; an unwrap
//     yields at most MaxPrivateOptionsSize bytes (the PGP unwrap, pgp.go,
//     is shroud's own so that a compressed message is not inflated
//     whole; a compressed JWE, which ocicrypt never writes, is refused);
//     a key provider call has a deadline (provider.go speaks the
//     key-provider protocol itself, over one kept gRPC connection); and a
//     wrapped key a key failed to open is not tried with it again for a
//     minute;
//   - UnwrapWith tries only the keys its caller allows, and says which key
//     opened the layer;
//   - a key provider is sent its own parameters only (ocicrypt would send
//     it the whole decrypt config, private keys included);
//   - ocicrypt's PKCS#7 wrapping sets a package variable and its PKCS#11
//     wrapper sets process environment variables: each has a lock of its
//     own, held for one operation, and an operation with no recipient or
//     key of a scheme never takes its lock (wrapping for the identity
//     waits for neither);
//   - JWE recipients carry their JWK thumbprint as "kid".
//
// Policy (policy.go) is an ordered list of repository globs.
package crypto

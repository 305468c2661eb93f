// Package crypto holds shroud's cryptography, none of it HTTP-aware:
//
//   - layer streams in the ocicrypt AES_256_CTR_HMAC_SHA256 format
//     (stream.go): an Encrypter that turns plaintext into ciphertext while
//     hashing both, and readers that decrypt a whole blob (verifying the HMAC
//     and the plaintext digest before the last bytes are released) or a range
//     of it;
//   - the layer options ocicrypt wraps per recipient (options.go) and the
//     Keyring that wraps and unwraps them with ocicrypt's key wrappers
//     (keyring.go), plus shroud's own identity key (identity.go);
//   - the sealing of a client's original manifest bytes to shroud's identity
//     (seal.go), so that a pull can return them byte for byte;
//   - the media-type mapping between plain and encrypted layers
//     (mediatype.go).
//
// The wire format is ocicrypt's exactly; stream_compat_test.go proves both
// directions against the ocicrypt library. Where ocicrypt's wrappers are
// unsafe to use as they are, the Keyring guards them: a key provider is
// sent its own parameters only (ocicrypt would send it the whole decrypt
// config, private keys included); the PKCS#7 and PKCS#11 wrappers, which
// set a package variable and process environment variables, run one at a
// time; JWE recipients carry their JWK thumbprint as "kid". Policy
// (policy.go) is an ordered list of repository globs.
package crypto

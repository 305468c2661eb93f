package crypto

import (
	"bytes"
	"compress/flate"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/go-jose/go-jose/v4"
	"github.com/opencontainers/go-digest"
)

// AnnotationOriginal is the manifest annotation that carries the bytes a
// client pushed, sealed by shroud's identity, so that a pull returns them
// byte for byte (and with them the client's digest).
const AnnotationOriginal = "dev.shroud.manifest.original"

// MaxSealedManifest bounds what Open inflates.
const MaxSealedManifest = 8 << 20

// headerSeal names the seal format in the JWE's protected header. Version
// 2 is signed (a JWS by the identity) and then encrypted (a JWE to the
// identity); version 1 (no such header, encrypted only) could be forged
// by anyone holding the public key and is foreign to this shroud.
const (
	headerSeal  = "dev.shroud.seal"
	sealVersion = 2
)

// ErrForeignSeal is a sealed original that this shroud's identity did not
// write: it does not decrypt, its signature does not verify, or it is of
// the unsigned first format. Nothing in it is trusted.
var ErrForeignSeal = errors.New("not sealed by this shroud")

// Seal is what shroud writes into every manifest it stores and trusts when
// it reads the manifest back: the client's original bytes and the pairing
// of every plaintext with what the upstream holds, bound to the upstream
// and repository it was written for. Only the identity's private key can
// make one (it is signed) or read one (it is encrypted).
type Seal struct {
	// Upstream names the upstream the manifest was stored in: "" for the
	// default, a mirror's origin host otherwise.
	Upstream string `json:"upstream"`
	// Repository is the repository the manifest was pushed to.
	Repository string `json:"repository"`
	// ContentType and Manifest are what the client pushed.
	ContentType string `json:"contentType"`
	Manifest    []byte `json:"manifest"`
	// Layers pair each encrypted layer's plaintext with its ciphertext.
	Layers []SealedLayer `json:"layers,omitempty"`
	// Children pair each index child the client named with the encrypted
	// manifest the upstream holds for it.
	Children []SealedChild `json:"children,omitempty"`
	// Wrapped lists the key ids the layer keys are wrapped for (shroud's
	// identity among them), sorted, and Selection the rule's choice of
	// layers and platforms they were encrypted by: a second push of the
	// same manifest reuses this copy only while both are what the policy
	// says now, so that a key revoked or added since is never carried
	// over (proxy: reuse). Empty in seals written before either existed:
	// those are never reused.
	Wrapped   []string `json:"wrapped,omitempty"`
	Selection string   `json:"selection,omitempty"`
	// Previous are the upstream digests of earlier copies of the same
	// manifest in the same repository, newest first, which this one
	// replaced as its pointer's target: referrers attached to them are
	// listed with this copy's.
	Previous []digest.Digest `json:"previous,omitempty"`
	// Tags are the client's digest tags ("sha256-<hex>.sig") this copy
	// was pushed under, which the upstream holds under names keyed by
	// the identity: an identity rotation renames them from these.
	Tags []string `json:"tags,omitempty"`
}

// MaxPreviousCopies bounds Seal.Previous, MaxSealedTags Seal.Tags.
const (
	MaxPreviousCopies = 16
	MaxSealedTags     = 64
)

// SealedLayer is the pairing of one layer: its plaintext digest, the
// digest and size of its ciphertext, and the HMAC of that ciphertext under
// the layer key. A ciphertext that passes the HMAC is the plaintext
// PlainDigest names, whatever key the upstream's annotations unwrap to.
type SealedLayer struct {
	PlainDigest  digest.Digest `json:"plain"`
	CipherDigest digest.Digest `json:"cipher"`
	Size         int64         `json:"size"`
	HMAC         []byte        `json:"hmac"`
}

// SealedChild pairs an index child's plaintext digest with its upstream one.
type SealedChild struct {
	PlainDigest    digest.Digest `json:"plain"`
	UpstreamDigest digest.Digest `json:"upstream"`
}

// Layer returns the pairing of the ciphertext cipherDigest, if sealed.
func (s *Seal) Layer(cipherDigest digest.Digest) (SealedLayer, bool) {
	for _, l := range s.Layers {
		if l.CipherDigest == cipherDigest {
			return l, true
		}
	}
	return SealedLayer{}, false
}

// Seal signs s with the identity, compresses it and encrypts it to the
// identity: a compact JWE (A256GCM; ECDH-ES+A256KW, RSA-OAEP-256, or
// RSA-OAEP for an identity in a token) whose
// payload is a compact JWS (ES256/384/512 or PS256) over the raw-DEFLATE
// compressed JSON of s. go-jose's own "zip" is not used: it refuses to
// inflate more than ten times the compressed size, and a large manifest of
// repetitive annotations compresses far better than that.
func (id *Identity) Seal(s Seal) (string, error) {
	plain, err := json.Marshal(s)
	if err != nil {
		return "", fmt.Errorf("seal manifest: %w", err)
	}
	var z bytes.Buffer
	zw, err := flate.NewWriter(&z, flate.BestCompression)
	if err != nil {
		return "", fmt.Errorf("seal manifest: %w", err)
	}
	zw.Write(plain)
	if err := zw.Close(); err != nil {
		return "", fmt.Errorf("seal manifest: %w", err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: id.signatureAlgorithm(), Key: id.jwsSigningKey()}, nil)
	if err != nil {
		return "", fmt.Errorf("seal manifest: %w", err)
	}
	jws, err := signer.Sign(z.Bytes())
	if err != nil {
		return "", fmt.Errorf("seal manifest: sign: %w", err)
	}
	signed, err := jws.CompactSerialize()
	if err != nil {
		return "", fmt.Errorf("seal manifest: %w", err)
	}
	opts := (&jose.EncrypterOptions{}).WithContentType("JWT").WithHeader(headerSeal, sealVersion)
	enc, err := jose.NewEncrypter(jose.A256GCM,
		jose.Recipient{Algorithm: id.keyAlgorithm(), Key: id.private.Public()}, opts)
	if err != nil {
		return "", fmt.Errorf("seal manifest: %w", err)
	}
	obj, err := enc.Encrypt([]byte(signed))
	if err != nil {
		return "", fmt.Errorf("seal manifest: %w", err)
	}
	return obj.CompactSerialize()
}

// Open reverses Seal. Anything this identity did not sign, or that does
// not decrypt with it, is ErrForeignSeal.
func (id *Identity) Open(sealed string) (Seal, error) {
	foreign := func(format string, args ...any) (Seal, error) {
		return Seal{}, fmt.Errorf("%w: "+format, append([]any{ErrForeignSeal}, args...)...)
	}
	if len(sealed) > 2*MaxSealedManifest {
		return foreign("the seal has %d bytes", len(sealed))
	}
	obj, err := jose.ParseEncryptedCompact(sealed,
		[]jose.KeyAlgorithm{id.keyAlgorithm()},
		[]jose.ContentEncryption{jose.A256GCM})
	if err != nil {
		return foreign("parse: %v", err)
	}
	if v, _ := obj.Header.ExtraHeaders[headerSeal].(float64); v != sealVersion {
		return foreign("an unsigned seal (format 1, or none): anyone with the public key could have written it")
	}
	signed, err := obj.Decrypt(id.jweDecryptionKey())
	if err != nil {
		return foreign("does not decrypt with identity %s: %v", id.Fingerprint(), err)
	}
	jws, err := jose.ParseSignedCompact(string(signed), []jose.SignatureAlgorithm{id.signatureAlgorithm()})
	if err != nil {
		return foreign("parse signature: %v", err)
	}
	z, err := jws.Verify(id.private.Public())
	if err != nil {
		return foreign("signature does not verify with identity %s: %v", id.Fingerprint(), err)
	}
	plain, err := io.ReadAll(io.LimitReader(flate.NewReader(bytes.NewReader(z)), MaxSealedManifest+1))
	if err != nil {
		return Seal{}, fmt.Errorf("inflate sealed manifest: %w", err)
	}
	if len(plain) > MaxSealedManifest {
		return Seal{}, fmt.Errorf("sealed manifest inflates to more than %d bytes", MaxSealedManifest)
	}
	var s Seal
	if err := json.Unmarshal(plain, &s); err != nil {
		return Seal{}, fmt.Errorf("sealed manifest: %w", err)
	}
	return s, nil
}

// signatureAlgorithm is the JWS algorithm for the identity.
func (id *Identity) signatureAlgorithm() jose.SignatureAlgorithm {
	if k, ok := id.private.Public().(*ecdsa.PublicKey); ok {
		switch k.Curve {
		case elliptic.P384():
			return jose.ES384
		case elliptic.P521():
			return jose.ES512
		}
		return jose.ES256
	}
	return jose.PS256
}

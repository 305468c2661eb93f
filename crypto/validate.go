package crypto

import (
	"bytes"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/go-jose/go-jose/v4"
)

// ErrInvalidEncryption is wrapped by the errors of a layer whose
// encryption annotations are not ocicrypt's: ValidateEncrypted's, and
// Unwrap's for a layer with more wrapped keys than MaxWrappedKeys or a
// wrapped key that is not base64.
var ErrInvalidEncryption = errors.New("the layer's encryption annotations are not ocicrypt's")

// MaxWrappedKeys is the most wrapped keys a layer may carry, counted
// across its schemes: each comma-separated part of an
// org.opencontainers.image.enc.keys.<scheme> annotation, and within a
// part each recipient it lists (a JWE's recipients, an OpenPGP message's
// session-key packets, a CMS envelope's recipient infos, a PKCS#11 blob's
// recipients). Every one is an attempt with each key (a token login, a
// key provider call): a layer over it is refused before any is tried.
const MaxWrappedKeys = 64

// jweAlgorithms are the algorithms ocicrypt's JWE key wrapper accepts.
func jweAlgorithms() ([]jose.KeyAlgorithm, []jose.ContentEncryption) {
	return []jose.KeyAlgorithm{jose.RSA_OAEP, jose.RSA_OAEP_256, jose.ECDH_ES_A128KW, jose.ECDH_ES_A192KW, jose.ECDH_ES_A256KW},
		[]jose.ContentEncryption{jose.A128CBC_HS256, jose.A192CBC_HS384, jose.A256CBC_HS512, jose.A128GCM, jose.A192GCM, jose.A256GCM}
}

// oidEnvelopedData is CMS's id-envelopedData.
func oidEnvelopedData() asn1.ObjectIdentifier {
	return asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 3}
}

// ValidateEncrypted says whether a layer's annotations are those of an
// ocicrypt-encrypted layer, with no key and no I/O: there is at least one
// wrapped-key annotation; the public options parse (ocicrypt's cipher, a
// 32-byte HMAC); there are at most MaxWrappedKeys wrapped keys; every
// part is non-empty base64 and parses as its scheme writes it (jwe: a JWE
// in the JSON serialization, uncompressed; pgp: public-key encrypted
// session keys followed by encrypted data; pkcs7: a CMS enveloped-data
// ContentInfo; pkcs11: ocicrypt's JSON blob; provider.<name>: opaque
// bytes). An unknown scheme does not parse. The error, which wraps
// ErrInvalidEncryption, names the annotation at fault.
//
// It says nothing of whether anyone can open the layer: the bytes only
// look like what ocicrypt writes.
func ValidateEncrypted(annotations map[string]string) error {
	var keys []string
	for a := range annotations {
		if strings.HasPrefix(a, AnnotationKeys) {
			keys = append(keys, a)
		}
	}
	if len(keys) == 0 {
		return fmt.Errorf("%w: no wrapped key (no %s<scheme> annotation)", ErrInvalidEncryption, AnnotationKeys)
	}
	if _, err := ParsePublicOptions(annotations); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidEncryption, err)
	}
	slices.Sort(keys)
	if n := countParts(annotations); n > MaxWrappedKeys {
		return fmt.Errorf("%w: %s: %d wrapped keys in all, more than %d", ErrInvalidEncryption, strings.Join(keys, ", "), n, MaxWrappedKeys)
	}
	total := 0
	for _, a := range keys {
		scheme := strings.TrimPrefix(a, AnnotationKeys)
		parts := strings.Split(annotations[a], ",")
		for i, part := range parts {
			fail := func(format string, args ...any) error {
				where := a
				if len(parts) > 1 {
					where = fmt.Sprintf("%s (part %d of %d)", a, i+1, len(parts))
				}
				return fmt.Errorf("%w: %s: "+format, append([]any{ErrInvalidEncryption, where}, args...)...)
			}
			b, err := base64.StdEncoding.DecodeString(part)
			if err != nil {
				return fail("not base64: %w", err)
			}
			if len(b) == 0 {
				return fail("empty wrapped key")
			}
			n, err := parseWrapped(scheme, b)
			if err != nil {
				return fail("%w", err)
			}
			if total += n; total > MaxWrappedKeys {
				return fail("%d wrapped keys in all, more than %d", total, MaxWrappedKeys)
			}
		}
	}
	return nil
}

// parseWrapped checks that b is a wrapped key as scheme writes it, and
// returns the number of recipients it lists.
func parseWrapped(scheme string, b []byte) (int, error) {
	switch scheme {
	case "jwe":
		return parseJWE(b, true)
	case "pgp":
		return parsePGPMessage(b)
	case "pkcs7":
		ed, err := parsePKCS7(b)
		if err != nil {
			return 0, err
		}
		return len(ed.RecipientInfos), nil
	case "pkcs11":
		return parsePKCS11(b)
	}
	if name, ok := strings.CutPrefix(scheme, "provider."); ok {
		if name == "" {
			return 0, errors.New("a key provider annotation without the provider's name")
		}
		return 1, nil // opaque to all but the provider
	}
	return 0, fmt.Errorf("unknown key wrapping scheme %q", scheme)
}

// recipientsIn counts the recipients a wrapped key lists, for the limit
// on the work an unwrap may do; one that does not parse counts as one.
func recipientsIn(scheme string, b []byte) int {
	var n int
	switch scheme {
	case "jwe":
		n, _ = parseJWE(b, false)
	case "pgp":
		n, _ = parsePGPMessage(b)
	case "pkcs7":
		if ed, err := parsePKCS7(b); err == nil {
			n = len(ed.RecipientInfos)
		}
	case "pkcs11":
		var blob pkcs11JSON
		if json.Unmarshal(b, &blob) == nil {
			n = len(blob.Recipients)
		}
	}
	return max(n, 1)
}

// countParts is the number of comma-separated wrapped keys of every
// scheme, counted without splitting them.
func countParts(annotations map[string]string) int {
	n := 0
	for a, v := range annotations {
		if strings.HasPrefix(a, AnnotationKeys) && v != "" {
			n += strings.Count(v, ",") + 1
		}
	}
	return n
}

// rawJWE is the JSON serialization of a JWE (RFC 7516 §7.2), as
// ocicrypt's JWE key wrapper writes it (go-jose's FullSerialize).
type rawJWE struct {
	Protected    string `json:"protected"`
	EncryptedKey string `json:"encrypted_key"`
	IV           string `json:"iv"`
	Ciphertext   string `json:"ciphertext"`
	Tag          string `json:"tag"`
	Recipients   []struct {
		EncryptedKey string `json:"encrypted_key"`
	} `json:"recipients"`
}

// parseJWE checks a JWE as ocicrypt's key wrapper reads it: the algorithms
// it accepts and no compression (which ocicrypt never writes, and whose
// output go-jose bounds only at ten times the input). With jsonOnly, it
// must be in the JSON serialization ocicrypt writes, with its iv,
// ciphertext, tag and an encrypted key per recipient. It returns the
// number of recipients.
func parseJWE(b []byte, jsonOnly bool) (int, error) {
	s := string(b)
	algs, encs := jweAlgorithms()
	var obj *jose.JSONWebEncryption
	var err error
	if jsonOnly {
		if !strings.HasPrefix(strings.TrimSpace(s), "{") {
			return 0, errors.New("not a JWE in the JSON serialization")
		}
		obj, err = jose.ParseEncryptedJSON(s, algs, encs)
	} else {
		obj, err = jose.ParseEncrypted(s, algs, encs)
	}
	if err != nil {
		return 0, fmt.Errorf("not a JWE: %w", err)
	}
	if _, zip := obj.Header.ExtraHeaders[jose.HeaderKey("zip")]; zip {
		return 0, errors.New(`a compressed JWE ("zip"), which ocicrypt never writes`)
	}
	var raw rawJWE
	if err := json.Unmarshal(b, &raw); err != nil {
		if jsonOnly {
			return 0, fmt.Errorf("not a JWE: %w", err)
		}
		return 1, nil // the compact serialization: one recipient
	}
	n := len(raw.Recipients)
	if !jsonOnly {
		return max(n, 1), nil
	}
	if raw.Protected == "" || raw.IV == "" || raw.Ciphertext == "" || raw.Tag == "" {
		return 0, errors.New("a JWE without its protected header, iv, ciphertext or tag")
	}
	if n == 0 {
		if raw.EncryptedKey == "" {
			return 0, errors.New("a JWE without an encrypted key")
		}
		return 1, nil
	}
	for i, r := range raw.Recipients {
		if r.EncryptedKey == "" {
			return 0, fmt.Errorf("JWE recipient %d has no encrypted key", i+1)
		}
	}
	return n, nil
}

// parsePGPMessage checks an OpenPGP message as ocicrypt's PGP key wrapper
// writes it: one or more public-key encrypted session key packets, then
// an integrity-protected encrypted data packet (whose contents are not
// read). It returns the number of session-key packets.
func parsePGPMessage(b []byte) (int, error) {
	packets := packet.NewReader(bytes.NewReader(b))
	n := 0
	for {
		p, err := packets.Next()
		if err == io.EOF {
			if n == 0 {
				return 0, errors.New("an OpenPGP message without a public-key encrypted session key")
			}
			return n, errors.New("an OpenPGP message without encrypted data")
		}
		if err != nil {
			return n, fmt.Errorf("not an OpenPGP message: %w", err)
		}
		switch p := p.(type) {
		case *packet.EncryptedKey:
			n++
		case *packet.SymmetricallyEncrypted:
			if n == 0 {
				return 0, errors.New("OpenPGP encrypted data before any public-key encrypted session key")
			}
			if !p.IntegrityProtected {
				return n, errors.New("OpenPGP encrypted data without integrity protection")
			}
			return n, nil
		case *packet.AEADEncrypted:
			if n == 0 {
				return 0, errors.New("OpenPGP encrypted data before any public-key encrypted session key")
			}
			return n, nil
		default:
			return n, fmt.Errorf("an OpenPGP %T packet where a session key or encrypted data belongs", p)
		}
	}
}

// envelopedData is the CMS EnvelopedData (RFC 5652 §6.1) down to its
// recipient infos.
type envelopedData struct {
	Version              int
	OriginatorInfo       asn1.RawValue   `asn1:"optional,tag:0"`
	RecipientInfos       []asn1.RawValue `asn1:"set"`
	EncryptedContentInfo struct {
		ContentType                asn1.ObjectIdentifier
		ContentEncryptionAlgorithm asn1.RawValue
		EncryptedContent           asn1.RawValue `asn1:"optional,tag:0"`
	}
	UnprotectedAttrs asn1.RawValue `asn1:"optional,tag:1"`
}

// parsePKCS7 reads a CMS ContentInfo of type enveloped-data, as ocicrypt's
// PKCS#7 key wrapper writes it (DER), with at least one recipient.
func parsePKCS7(b []byte) (*envelopedData, error) {
	var ci struct {
		ContentType asn1.ObjectIdentifier
		Content     asn1.RawValue `asn1:"explicit,tag:0"`
	}
	rest, err := asn1.Unmarshal(b, &ci)
	if err != nil {
		return nil, fmt.Errorf("not a CMS ContentInfo: %w", err)
	}
	if len(rest) > 0 {
		return nil, errors.New("trailing bytes after the CMS ContentInfo")
	}
	if !ci.ContentType.Equal(oidEnvelopedData()) {
		return nil, fmt.Errorf("CMS content type %s, not enveloped-data (%s)", ci.ContentType, oidEnvelopedData())
	}
	var ed envelopedData
	if rest, err := asn1.Unmarshal(ci.Content.Bytes, &ed); err != nil || len(rest) > 0 {
		return nil, fmt.Errorf("not a CMS EnvelopedData: %w", errors.Join(err, errors.New("unreadable")))
	}
	if len(ed.RecipientInfos) == 0 {
		return nil, errors.New("a CMS EnvelopedData without recipients")
	}
	return &ed, nil
}

// pkcs11JSON is the JSON ocicrypt's PKCS#11 key wrapper writes (its
// pkcs11.Pkcs11Blob, declared here because ocicrypt declares it only in
// builds with cgo, and shroud reads it in builds without too).
type pkcs11JSON struct {
	Version    uint `json:"version"`
	Recipients []struct {
		Version uint   `json:"version"`
		Blob    string `json:"blob"`
		Hash    string `json:"hash,omitempty"`
	} `json:"recipients"`
}

// parsePKCS11 checks the JSON ocicrypt's PKCS#11 key wrapper writes
// (pkcs11JSON, version 0) and returns its number of recipients.
func parsePKCS11(b []byte) (int, error) {
	var blob pkcs11JSON
	if err := json.Unmarshal(b, &blob); err != nil {
		return 0, fmt.Errorf("not ocicrypt's PKCS#11 JSON: %w", err)
	}
	if blob.Version != 0 {
		return 0, fmt.Errorf("PKCS#11 blob version %d (ocicrypt writes 0)", blob.Version)
	}
	if len(blob.Recipients) == 0 {
		return 0, errors.New("a PKCS#11 blob without recipients")
	}
	for i, r := range blob.Recipients {
		if r.Version != 0 {
			return 0, fmt.Errorf("PKCS#11 recipient %d: version %d (ocicrypt writes 0)", i+1, r.Version)
		}
		if c, err := base64.StdEncoding.DecodeString(r.Blob); err != nil || len(c) == 0 {
			return 0, fmt.Errorf("PKCS#11 recipient %d: its blob is not base64", i+1)
		}
		switch r.Hash {
		case "", "sha1", "sha256":
		default:
			return 0, fmt.Errorf("PKCS#11 recipient %d: OAEP hash %q", i+1, r.Hash)
		}
	}
	return len(blob.Recipients), nil
}

package crypto

import (
	"bytes"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/containers/ocicrypt/keywrap"
)

// Describe names the recipients a layer's keys are wrapped for, per
// scheme: JWE key algorithms (and key ids), OpenPGP key ids, the
// issuer and serial of PKCS#7 recipients. A layer with more wrapped keys
// than MaxWrappedKeys is described by their number alone.
func (k *Keyring) Describe(annotations map[string]string) []string {
	if n := countParts(annotations); n > MaxWrappedKeys {
		return []string{fmt.Sprintf("%d wrapped keys (more than the %d shroud reads)", n, MaxWrappedKeys)}
	}
	var out []string
	for _, w := range k.wrappers {
		for _, part := range strings.Split(annotations[w.GetAnnotationID()], ",") {
			if b, err := base64.StdEncoding.DecodeString(part); err == nil && len(b) > 0 {
				out = append(out, describeWrapped(w, b))
			}
		}
	}
	return out
}

// describePKCS7 names the recipients of a CMS EnvelopedData by the issuer
// and serial number of their certificates (what CMS records of them).
func describePKCS7(b []byte) string {
	type issuerAndSerial struct {
		Issuer asn1.RawValue
		Serial *big.Int
	}
	type recipientInfo struct {
		Version                int
		Recipient              issuerAndSerial
		KeyEncryptionAlgorithm pkix.AlgorithmIdentifier
		EncryptedKey           []byte
	}
	ed, err := parsePKCS7(b)
	if err != nil {
		return "pkcs7"
	}
	var out []string
	for _, raw := range ed.RecipientInfos {
		var ri recipientInfo
		if _, err := asn1.Unmarshal(raw.FullBytes, &ri); err != nil {
			out = append(out, "(unreadable)")
			continue
		}
		var rdn pkix.RDNSequence
		var name pkix.Name
		if _, err := asn1.Unmarshal(ri.Recipient.Issuer.FullBytes, &rdn); err == nil {
			name.FillFromRDNSequence(&rdn)
		}
		out = append(out, fmt.Sprintf("issuer %q serial %s", name.String(), ri.Recipient.Serial))
	}
	return "pkcs7 recipients [" + strings.Join(out, ", ") + "]"
}

func (k *Keyring) knows(annotation string) bool {
	for _, w := range k.wrappers {
		if w.GetAnnotationID() == annotation {
			return true
		}
	}
	return false
}

// describeWrapped names the recipients of one wrapped key for an error:
// the JWE key algorithms (and key ids, where set), the OpenPGP key ids.
func describeWrapped(w keywrap.KeyWrapper, b []byte) string {
	scheme := strings.TrimPrefix(w.GetAnnotationID(), AnnotationKeys)
	switch scheme {
	case "jwe":
	case "pkcs7":
		return describePKCS7(b)
	case "pgp":
		ids := pgpKeyIDs(b)
		if len(ids) == 0 {
			return "pgp"
		}
		var s []string
		for _, id := range ids {
			s = append(s, fmt.Sprintf("%016X", id))
		}
		return "pgp key ids [" + strings.Join(s, ", ") + "]"
	default:
		return scheme
	}
	var j struct {
		Recipients []struct {
			Header map[string]any `json:"header"`
		} `json:"recipients"`
		Header    map[string]any `json:"header"`
		Protected string         `json:"protected"`
	}
	if json.Unmarshal(b, &j) != nil {
		return "jwe (unreadable)"
	}
	var protected map[string]any
	if p, err := base64.RawURLEncoding.DecodeString(j.Protected); err == nil {
		_ = json.Unmarshal(p, &protected)
	}
	hdrs := []map[string]any{j.Header}
	if len(j.Recipients) > 0 {
		hdrs = hdrs[:0]
		for _, r := range j.Recipients {
			hdrs = append(hdrs, r.Header)
		}
	}
	var keys []string
	for _, h := range hdrs {
		alg, ok := h["alg"]
		if !ok {
			alg = protected["alg"]
		}
		d := fmt.Sprint(alg)
		kid, ok := h["kid"].(string)
		if !ok {
			kid, ok = protected["kid"].(string)
		}
		if ok {
			d += " kid " + kid
		}
		keys = append(keys, d)
	}
	return fmt.Sprintf("jwe recipients [%s]", strings.Join(keys, ", "))
}

// pgpKeyIDs are the key ids of an OpenPGP message's public-key encrypted
// session keys (what ocicrypt's GetKeyIdsFromPacket returns).
func pgpKeyIDs(b []byte) []uint64 {
	var ids []uint64
	packets := packet.NewReader(bytes.NewReader(b))
	for {
		p, err := packets.Next()
		if err != nil {
			return ids
		}
		k, ok := p.(*packet.EncryptedKey)
		if !ok {
			return ids
		}
		ids = append(ids, k.KeyId)
	}
}

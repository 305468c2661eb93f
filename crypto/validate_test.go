package crypto

import (
	"bytes"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"io"
	"maps"
	"os"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/containers/ocicrypt"
	"github.com/containers/ocicrypt/config"
	keyproviderconfig "github.com/containers/ocicrypt/config/keyprovider-config"
	"github.com/go-jose/go-jose/v4"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shroud-oci/shroud/internal/keyprovidertest"
	"github.com/shroud-oci/shroud/internal/softhsm"
	"github.com/shroud-oci/shroud/internal/testkeys"
)

// realWraps returns the annotations of layers wrapped for every scheme,
// by shroud's keyring and by ocicrypt itself (what skopeo writes).
func realWraps(t *testing.T) map[string]map[string]string {
	t.Helper()
	dir := t.TempDir()
	kr, _ := testKeyring(t)
	files := jweKeyFiles(t, dir)
	pgpPub, _, _ := testkeys.PGP(t, dir, "ivan", true)
	cert, _ := testkeys.Cert(t, dir, "judy", false)
	p11pub, _ := softhsm.Token(t, 2048, true)
	specs := map[string]string{
		"jwe rsa":  "jwe:" + files["rsa2-pem"][0],
		"jwe ec":   "jwe:" + files["ec-P-256"][0],
		"jwe jwk":  "jwe:" + files["ec-jwk"][0],
		"pgp":      "pgp:" + pgpPub,
		"pkcs7":    "pkcs7:" + cert,
		"pkcs11":   "pkcs11:" + p11pub,
		"provider": "provider:" + keyprovidertest.Name + ":team",
	}
	kr, err := NewKeyring(kr.Identity(), nil, WithPKCS11([]string{softhsmModule}, nil),
		WithKeyProviders(map[string]keyproviderconfig.KeyProviderAttrs{keyprovidertest.Name: {Command: &keyproviderconfig.Command{Path: buildProvider(t)}}}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kr.Close() })
	out := map[string]map[string]string{}
	for name, spec := range specs {
		_, _, desc, _ := wrappedFor(t, kr, spec)
		out["shroud "+name] = desc.Annotations
	}
	_, desc := shroudEncrypt(t, kr, []byte("identity only"))
	out["shroud identity"] = desc.Annotations

	// ocicrypt, as skopeo --encryption-key calls it.
	pgpRing, _ := parsePGPPublicFile(t, pgpPub)
	for name, cc := range map[string]*config.EncryptConfig{
		"jwe":   {Parameters: map[string][][]byte{"pubkeys": {readFile(t, files["rsa3-pem"][0]), readFile(t, files["ec-P-384"][0])}}},
		"pgp":   {Parameters: map[string][][]byte{"gpg-pubkeyringfile": {pgpRing}, "gpg-recipients": {[]byte("ivan@example.com")}}},
		"pkcs7": {Parameters: map[string][][]byte{"x509s": {readFile(t, cert)}}},
	} {
		r, fin, err := ocicrypt.EncryptLayer(cc, bytes.NewReader([]byte("layer")), ocispec.Descriptor{})
		if err != nil {
			t.Fatalf("ocicrypt %s: %v", name, err)
		}
		io.Copy(io.Discard, r)
		ann, err := fin()
		if err != nil {
			t.Fatal(err)
		}
		out["ocicrypt "+name] = ann
	}
	// Rewrap: keys appended to ocicrypt's.
	pgpRec, _ := ParseRecipient("pgp:" + pgpPub)
	rs, _ := kr.Recipients([]Recipient{pgpRec})
	cc, _ := config.EncryptWithJwe([][]byte{kr.Identity().PublicPEM()})
	r, fin, _ := ocicrypt.EncryptLayer(cc.EncryptConfig, bytes.NewReader([]byte("layer")), ocispec.Descriptor{})
	io.Copy(io.Discard, r)
	ann, _ := fin()
	if out["rewrapped"], err = kr.Rewrap(ann, rs, nil); err != nil {
		t.Fatal(err)
	}
	return out
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func parsePGPPublicFile(t *testing.T, path string) ([]byte, [][]byte) {
	t.Helper()
	r, err := ParseRecipient("pgp:" + path)
	if err != nil {
		t.Fatal(err)
	}
	return r.data, r.pgpIDs
}

// Every layer shroud, ocicrypt or skopeo encrypts passes.
func TestValidateEncryptedAcceptsEveryRealWrap(t *testing.T) {
	for name, ann := range realWraps(t) {
		if err := ValidateEncrypted(ann); err != nil {
			t.Errorf("%s: %v\n%v", name, err, ann)
		}
	}
}

// A client (or the registry) pushing a +encrypted layer whose annotations
// only look like ocicrypt's: each forgery is refused, with an error
// naming the annotation at fault.
func TestForgedEncryptedLayerIsNotTakenAsEncrypted(t *testing.T) {
	real := realWraps(t)
	jweAnn := real["shroud jwe rsa"]
	pub := jweAnn[AnnotationPubOpts]
	jweKey := AnnotationKeys + "jwe"
	validJWE := strings.Split(jweAnn[jweKey], ",")[0]
	jweJSON, _ := base64.StdEncoding.DecodeString(validJWE)
	pgpMsg, _ := base64.StdEncoding.DecodeString(real["shroud pgp"][AnnotationKeys+"pgp"])

	// JWE variants.
	var raw map[string]json.RawMessage
	json.Unmarshal(jweJSON, &raw)
	without := func(field string) string {
		m := maps.Clone(raw)
		delete(m, field)
		b, _ := json.Marshal(m)
		return b64(b)
	}
	manyRecipients := func(n int) string {
		var rs []json.RawMessage
		json.Unmarshal(raw["recipients"], &rs)
		m := maps.Clone(raw)
		var all []json.RawMessage
		for len(all) < n {
			all = append(all, rs...)
		}
		m["recipients"], _ = json.Marshal(all[:n])
		b, _ := json.Marshal(m)
		return b64(b)
	}
	kr, _ := testKeyring(t)
	idJWK, _ := withKeyID(kr.Identity().PublicPEM())
	var jwk jose.JSONWebKey
	jwk.UnmarshalJSON(idJWK)
	enc, _ := jose.NewEncrypter(jose.A256GCM, jose.Recipient{Algorithm: jose.KeyAlgorithm(jwk.Algorithm), Key: jwk.Key}, nil)
	obj, _ := enc.Encrypt(trialOptions())
	compact, _ := obj.CompactSerialize()
	zenc, _ := jose.NewMultiEncrypter(jose.A256GCM, []jose.Recipient{{Algorithm: jose.KeyAlgorithm(jwk.Algorithm), Key: jwk.Key}}, &jose.EncrypterOptions{Compression: jose.DEFLATE})
	zobj, _ := zenc.Encrypt(trialOptions())

	// OpenPGP variants.
	r := bytes.NewReader(pgpMsg)
	if _, err := packet.Read(r); err != nil {
		t.Fatal(err)
	}
	pkesk := pgpMsg[:len(pgpMsg)-r.Len()]
	var lit bytes.Buffer
	lw, _ := packet.SerializeLiteral(nopCloser{&lit}, true, "", 0)
	lw.Write(trialOptions())
	lw.Close()
	var sym bytes.Buffer
	sw, _ := openpgp.SymmetricallyEncrypt(&sym, []byte("pass"), nil, nil)
	sw.Write(trialOptions())
	sw.Close()

	// CMS variants.
	contentInfo := func(oid asn1.ObjectIdentifier, content []byte) string {
		b, _ := asn1.Marshal(struct {
			ContentType asn1.ObjectIdentifier
			Content     asn1.RawValue `asn1:"explicit,tag:0"`
		}{oid, asn1.RawValue{FullBytes: content}})
		return b64(b)
	}
	octets, _ := asn1.Marshal([]byte("not enveloped"))
	noRecipients, _ := asn1.Marshal(struct {
		Version        int
		RecipientInfos []asn1.RawValue `asn1:"set"`
		Content        asn1.RawValue
	}{0, []asn1.RawValue{}, asn1.RawValue{FullBytes: octets}})

	pubWith := func(cipher string, hmac []byte) string {
		b, _ := json.Marshal(map[string]any{"cipher": cipher, "hmac": hmac, "cipheroptions": map[string]any{}})
		return b64(b)
	}
	parts := make([]string, MaxWrappedKeys+1)
	for i := range parts {
		parts[i] = bogusProviderPart(i)
	}

	for name, c := range map[string]struct {
		ann   map[string]string
		names string
	}{
		"jwe eA==":                    {map[string]string{jweKey: "eA==", AnnotationPubOpts: pub}, jweKey},
		"jwe not base64":              {map[string]string{jweKey: "not base64!", AnnotationPubOpts: pub}, jweKey},
		"jwe empty part":              {map[string]string{jweKey: validJWE + ",", AnnotationPubOpts: pub}, jweKey},
		"jwe empty":                   {map[string]string{jweKey: "", AnnotationPubOpts: pub}, jweKey},
		"jwe compact":                 {map[string]string{jweKey: b64([]byte(compact)), AnnotationPubOpts: pub}, jweKey},
		"jwe zip":                     {map[string]string{jweKey: b64([]byte(zobj.FullSerialize())), AnnotationPubOpts: pub}, jweKey},
		"jwe without ciphertext":      {map[string]string{jweKey: without("ciphertext"), AnnotationPubOpts: pub}, jweKey},
		"jwe without recipients":      {map[string]string{jweKey: without("recipients"), AnnotationPubOpts: pub}, jweKey},
		"jwe listing 65 recipients":   {map[string]string{jweKey: manyRecipients(MaxWrappedKeys + 1), AnnotationPubOpts: pub}, jweKey},
		"jwe json array":              {map[string]string{jweKey: b64([]byte("[1,2]")), AnnotationPubOpts: pub}, jweKey},
		"pgp junk":                    {map[string]string{AnnotationKeys + "pgp": b64([]byte("junk junk junk")), AnnotationPubOpts: pub}, AnnotationKeys + "pgp"},
		"pgp literal data":            {map[string]string{AnnotationKeys + "pgp": b64(lit.Bytes()), AnnotationPubOpts: pub}, AnnotationKeys + "pgp"},
		"pgp passphrase only":         {map[string]string{AnnotationKeys + "pgp": b64(sym.Bytes()), AnnotationPubOpts: pub}, AnnotationKeys + "pgp"},
		"pgp session key only":        {map[string]string{AnnotationKeys + "pgp": b64(pkesk), AnnotationPubOpts: pub}, AnnotationKeys + "pgp"},
		"pgp session key and literal": {map[string]string{AnnotationKeys + "pgp": b64(append(slicesClone(pkesk), lit.Bytes()...)), AnnotationPubOpts: pub}, AnnotationKeys + "pgp"},
		"pkcs7 junk":                  {map[string]string{AnnotationKeys + "pkcs7": b64([]byte("junk")), AnnotationPubOpts: pub}, AnnotationKeys + "pkcs7"},
		"pkcs7 signed-data":           {map[string]string{AnnotationKeys + "pkcs7": contentInfo(asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}, noRecipients), AnnotationPubOpts: pub}, AnnotationKeys + "pkcs7"},
		"pkcs7 enveloped octets":      {map[string]string{AnnotationKeys + "pkcs7": contentInfo(asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 3}, octets), AnnotationPubOpts: pub}, AnnotationKeys + "pkcs7"},
		"pkcs7 no recipients":         {map[string]string{AnnotationKeys + "pkcs7": contentInfo(asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 3}, noRecipients), AnnotationPubOpts: pub}, AnnotationKeys + "pkcs7"},
		"pkcs11 not json":             {map[string]string{AnnotationKeys + "pkcs11": "eA==", AnnotationPubOpts: pub}, AnnotationKeys + "pkcs11"},
		"pkcs11 no recipients":        {map[string]string{AnnotationKeys + "pkcs11": b64([]byte(`{"version":0,"recipients":[]}`)), AnnotationPubOpts: pub}, AnnotationKeys + "pkcs11"},
		"pkcs11 version 1":            {map[string]string{AnnotationKeys + "pkcs11": b64([]byte(`{"version":1,"recipients":[{"version":0,"blob":"AAAA"}]}`)), AnnotationPubOpts: pub}, AnnotationKeys + "pkcs11"},
		"pkcs11 blob not base64":      {map[string]string{AnnotationKeys + "pkcs11": b64([]byte(`{"version":0,"recipients":[{"version":0,"blob":"!!"}]}`)), AnnotationPubOpts: pub}, AnnotationKeys + "pkcs11"},
		"pkcs11 unknown hash":         {map[string]string{AnnotationKeys + "pkcs11": b64([]byte(`{"version":0,"recipients":[{"version":0,"blob":"AAAA","hash":"md5"}]}`)), AnnotationPubOpts: pub}, AnnotationKeys + "pkcs11"},
		"pkcs11 65 recipients":        {map[string]string{AnnotationKeys + "pkcs11": b64(pkcs11Blob(MaxWrappedKeys + 1)), AnnotationPubOpts: pub}, AnnotationKeys + "pkcs11"},
		"provider empty":              {map[string]string{AnnotationKeys + "provider.kms": "", AnnotationPubOpts: pub}, AnnotationKeys + "provider.kms"},
		"provider without a name":     {map[string]string{AnnotationKeys + "provider.": "eA==", AnnotationPubOpts: pub}, AnnotationKeys + "provider."},
		"provider 65 parts":           {map[string]string{AnnotationKeys + "provider.kms": strings.Join(parts, ","), AnnotationPubOpts: pub}, AnnotationKeys + "provider.kms"},
		"unknown scheme":              {map[string]string{AnnotationKeys + "rot13": "eA==", AnnotationPubOpts: pub}, AnnotationKeys + "rot13"},
		"a forged key beside real":    {map[string]string{jweKey: jweAnn[jweKey], AnnotationKeys + "pgp": "eA==", AnnotationPubOpts: pub}, AnnotationKeys + "pgp"},
		"no wrapped key":              {map[string]string{AnnotationPubOpts: pub}, AnnotationKeys},
		"no pubopts":                  {map[string]string{jweKey: jweAnn[jweKey]}, AnnotationPubOpts},
		"pubopts not base64":          {map[string]string{jweKey: jweAnn[jweKey], AnnotationPubOpts: "!!"}, AnnotationPubOpts},
		"pubopts not json":            {map[string]string{jweKey: jweAnn[jweKey], AnnotationPubOpts: "eA=="}, AnnotationPubOpts},
		"pubopts other cipher":        {map[string]string{jweKey: jweAnn[jweKey], AnnotationPubOpts: pubWith("AES_128_CBC", make([]byte, 32))}, AnnotationPubOpts},
		"pubopts short hmac":          {map[string]string{jweKey: jweAnn[jweKey], AnnotationPubOpts: pubWith("AES_256_CTR_HMAC_SHA256", make([]byte, 16))}, AnnotationPubOpts},
		"pubopts no hmac":             {map[string]string{jweKey: jweAnn[jweKey], AnnotationPubOpts: pubWith("", nil)}, AnnotationPubOpts},
	} {
		err := ValidateEncrypted(c.ann)
		if err == nil {
			t.Errorf("%s: passed as encrypted", name)
		} else if !strings.Contains(err.Error(), c.names) {
			t.Errorf("%s: err = %v, want one naming %s", name, err, c.names)
		}
	}
}

// An HMAC that is not HMAC-SHA256's 32 bytes is not ocicrypt's format.
func TestPublicOptionsWithShortHMACAreRefused(t *testing.T) {
	for _, n := range []int{0, 16, 31, 33, 64} {
		b, _ := json.Marshal(map[string]any{"cipher": "AES_256_CTR_HMAC_SHA256", "hmac": make([]byte, n), "cipheroptions": map[string]any{}})
		if _, err := ParsePublicOptions(map[string]string{AnnotationPubOpts: b64(b)}); err == nil {
			t.Errorf("a %d-byte HMAC was accepted", n)
		}
	}
	if _, err := ParsePublicOptions(map[string]string{AnnotationPubOpts: pubOpts(t)}); err != nil {
		t.Fatalf("a 32-byte HMAC was refused: %v", err)
	}
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

func slicesClone(b []byte) []byte { return append([]byte(nil), b...) }

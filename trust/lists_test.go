package trust

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/go-jose/go-jose/v4"

	"github.com/shroud-oci/shroud/crypto"
)

func TestListsAreParsedStrictly(t *testing.T) {
	if _, err := ParseRecipients([]byte(`{"recipients":[{"key_id":"x","scheme":"jwe","scopes":["**"],"not_afer":"2030-01-01T00:00:00Z"}]}`)); err == nil {
		t.Error("a misspelt field was accepted")
	}
	if _, err := ParseRevocations([]byte(`{"revocations":[]} {}`)); err == nil {
		t.Error("trailing data was accepted")
	}
	l, err := ParseRecipients([]byte(`{"recipients":[{"key_id":"pgp:0123456789ABCDEF0123456789ABCDEF01234567","scheme":"pgp","scopes":["team-a/**"],"not_after":"2030-01-01T00:00:00Z"}]}`))
	if err != nil || len(l.Recipients) != 1 || l.Recipients[0].NotAfter.IsZero() {
		t.Fatalf("%+v, %v", l, err)
	}
	if err := l.Recipients[0].Validate(); err != nil {
		t.Error(err)
	}
}

func TestKeyIDForms(t *testing.T) {
	good := map[string]string{
		"jwe":      "sha256:" + strings.Repeat("ab", 32),
		"pkcs7":    "sha256:" + strings.Repeat("0f", 32),
		"pgp":      "pgp:" + strings.Repeat("AB", 20),
		"pkcs11":   "pkcs11:id=%01;token=t",
		"provider": "provider:kms",
	}
	for scheme, id := range good {
		if err := ValidKeyID(scheme, id); err != nil {
			t.Errorf("%s %s: %v", scheme, id, err)
		}
	}
	bad := map[string]string{
		"jwe": "sha256:" + strings.Repeat("AB", 32), // upper case
		"pgp": "pgp:" + strings.Repeat("ab", 20),    // lower case
		"x":   "provider:kms",
	}
	for scheme, id := range bad {
		if err := ValidKeyID(scheme, id); err == nil {
			t.Errorf("%s %s accepted", scheme, id)
		}
	}
}

func TestGlobsAndNamespaces(t *testing.T) {
	for _, c := range []struct {
		glob, repo string
		want       bool
	}{
		{"team-a/**", "team-a/app", true},
		{"team-a/**", "team-a/x/y", true},
		{"team-a/**", "team-a", false},
		{"team-a/*", "team-a/x/y", false},
		{"**", "anything/at/all", true},
		{"**/app", "app", true},
		{"team-?/app", "team-b/app", true},
	} {
		g, err := compileGlob(c.glob)
		if err != nil {
			t.Fatal(err)
		}
		if got := g.MatchString(c.repo); got != c.want {
			t.Errorf("%s ~ %s = %v; want %v", c.glob, c.repo, got, c.want)
		}
	}
	for p, want := range map[string]string{"team-a/*": "team-a", "team-a/prod/*": "team-a/prod", "team-a/recipients.json": "team-a"} {
		if ns, ok := namespaceOfPattern(p); !ok || ns != want {
			t.Errorf("%s: %q %v; want %q", p, ns, ok, want)
		}
	}
	for _, p := range []string{"team-*/*", "*", "../x/*", "team-a/*.txt"} {
		if ns, ok := namespaceOfPattern(p); ok {
			t.Errorf("%s names namespace %q", p, ns)
		}
	}
}

// TestPublicKeyOnly: an allow entry's public_key is published; what
// add-key is given is re-serialized to its public key alone, with the
// same key id, and private material in any form ocicrypt reads is
// refused.
func TestPublicKeyOnly(t *testing.T) {
	dir := t.TempDir()
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	spki, _ := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(ec)
	sec1, _ := x509.MarshalECPrivateKey(ec)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: spki})
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: t0, NotAfter: t0.Add(time.Hour)}
	certDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &ec.PublicKey, ec)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certDER})
	jwk := jose.JSONWebKey{Key: ec, Algorithm: string(jose.ECDH_ES_A256KW)}
	privJWK, _ := jwk.MarshalJSON()
	pubJWK, _ := jwk.Public().MarshalJSON()
	e, err := openpgp.NewEntity("team", "", "team@example.com", nil)
	if err != nil {
		t.Fatal(err)
	}
	var pgpSecret, pgpPublic, pgpArmoredSecret bytes.Buffer
	_ = e.SerializePrivate(&pgpSecret, nil)
	_ = e.Serialize(&pgpPublic)
	w, _ := armor.Encode(&pgpArmoredSecret, openpgp.PrivateKeyType, nil)
	_ = e.SerializePrivate(w, nil)
	w.Close()

	idOf := func(scheme string, data []byte) string {
		t.Helper()
		p := filepath.Join(dir, fmt.Sprintf("k%d", len(data)))
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		r, err := crypto.ParseRecipient(scheme + ":" + p)
		if err != nil {
			t.Fatalf("%s: %v", scheme, err)
		}
		return r.KeyID()
	}
	for _, c := range []struct {
		name, scheme string
		data         []byte
		prefix       string
	}{
		{"PEM", "jwe", pubPEM, "-----BEGIN PUBLIC KEY-----"},
		{"DER", "jwe", spki, "-----BEGIN PUBLIC KEY-----"},
		{"JWK", "jwe", pubJWK, "{"},
		{"certificate PEM", "pkcs7", certPEM, "-----BEGIN CERTIFICATE-----"},
		{"certificate DER", "pkcs7", certDER, "-----BEGIN CERTIFICATE-----"},
		{"OpenPGP binary", "pgp", pgpPublic.Bytes(), "-----BEGIN PGP PUBLIC KEY BLOCK-----"},
	} {
		got, err := PublicKeyOnly(c.scheme, c.data)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if !strings.HasPrefix(got, c.prefix) {
			t.Errorf("%s: %.40q; want %s", c.name, got, c.prefix)
		}
		if want, id := idOf(c.scheme, c.data), idOf(c.scheme, []byte(got)); id != want {
			t.Errorf("%s: re-serialized, id %s; given, %s", c.name, id, want)
		}
		if again, err := PublicKeyOnly(c.scheme, []byte(got)); err != nil || again != got {
			t.Errorf("%s: not stable: %v", c.name, err)
		}
	}
	for _, c := range []struct {
		name, scheme string
		data         []byte
	}{
		{"PKCS #8 PEM", "jwe", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})},
		{"SEC 1 PEM", "jwe", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})},
		{"PKCS #8 DER", "jwe", pkcs8},
		{"SEC 1 DER", "jwe", sec1},
		{"public key then private key", "jwe", append(bytes.Clone(pubPEM), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})...)},
		{"JWK with d", "jwe", privJWK},
		{"RSA JWK with p and q", "jwe", []byte(`{"kty":"RSA","n":"AQAB","e":"AQAB","p":"AQ","q":"AQ"}`)},
		{"certificate and its key", "pkcs7", append(bytes.Clone(certPEM), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})...)},
		{"OpenPGP secret key, binary", "pgp", pgpSecret.Bytes()},
		{"OpenPGP secret key, armored", "pgp", pgpArmoredSecret.Bytes()},
		{"OpenPGP secret key as jwe", "jwe", pgpSecret.Bytes()},
	} {
		if _, err := PublicKeyOnly(c.scheme, c.data); !errors.Is(err, ErrPrivateKey) {
			t.Errorf("%s: %v; want ErrPrivateKey", c.name, err)
		}
	}
	for _, c := range []struct {
		name, scheme string
		data         []byte
	}{
		{"certificate as jwe", "jwe", certPEM},
		{"public key as pkcs7", "pkcs7", pubPEM},
		{"garbage", "pgp", []byte("not a key")},
		{"pkcs11", "pkcs11", []byte("pkcs11:\n  uri: pkcs11:token=t;object=o?pin-value=1234\n")},
		{"provider", "provider", []byte("kms")},
	} {
		if _, err := PublicKeyOnly(c.scheme, c.data); err == nil {
			t.Errorf("%s: accepted", c.name)
		}
	}
}

func TestListsRefuseMalformedKeyIDs(t *testing.T) {
	id := "sha256:" + strings.Repeat("ab", 32)
	for _, bad := range []string{"", strings.TrimPrefix(id, "sha256:"), strings.ToUpper(id), "sha256:" + strings.Repeat("AB", 32)} {
		if _, err := ParseRevocations([]byte(`{"revocations":[{"key_id":"` + id + `","revoked_at":"2030-01-01T00:00:00Z","reason":"retired"},{"key_id":"` + bad + `","revoked_at":"2030-01-01T00:00:00Z","reason":"keyCompromise"}]}`)); !errors.Is(err, crypto.ErrInvalidKeyID) || !strings.Contains(err.Error(), "entry 2") {
			t.Errorf("a deny list with key_id %q: %v; want it refused", bad, err)
		}
		if _, err := ParseRecipients([]byte(`{"recipients":[{"key_id":"` + bad + `","scheme":"jwe","scopes":["**"]}]}`)); !errors.Is(err, crypto.ErrInvalidKeyID) {
			t.Errorf("an allow list with key_id %q: %v; want it refused", bad, err)
		}
		if err := (Revocation{KeyID: bad, Reason: ReasonKeyCompromise, RevokedAt: t0}).Validate(); err == nil {
			t.Errorf("Revocation{%q}.Validate passes", bad)
		}
	}
	// A well-formed id of another scheme is the entry's problem alone.
	l, err := ParseRecipients([]byte(`{"recipients":[{"key_id":"` + id + `","scheme":"pgp","scopes":["**"]}]}`))
	if err != nil || l.Recipients[0].Validate() == nil {
		t.Errorf("a sha256 id for a pgp entry: %v, %v", err, l.Recipients[0].Validate())
	}
}

// An allow-list entry whose pgp public_key holds no key at all (nothing,
// or only an OpenPGP marker packet, or what is left of a binary secret
// key after JSON replaced its bytes that are not UTF-8) was taken as a
// public key: an empty keyring armored. It is refused like any other
// public_key that is no key of its scheme, and so is the list at
// publication.
func TestAttackEmptyOpenPGPKeyringPassesAsAPublicKey(t *testing.T) {
	for name, data := range map[string][]byte{
		"empty":         {},
		"marker packet": {0xca, 0x03, 'P', 'G', 'P'},
	} {
		if out, err := PublicKeyOnly("pgp", data); err == nil {
			t.Errorf("%s: PublicKeyOnly took it as a public key: %q", name, out)
		}
	}
}

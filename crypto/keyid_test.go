package crypto

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/go-jose/go-jose/v4"

	"github.com/shroud-oci/shroud/internal/softhsm"
	"github.com/shroud-oci/shroud/internal/testkeys"
)

func writeFile(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func wantSPKIID(t *testing.T, pub any) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// One key has one id whatever form its file takes: a public key in PEM,
// DER or JWK, its private key, the certificate of it.
func TestKeyIDsOfJWEKeys(t *testing.T) {
	dir := t.TempDir()
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	for _, c := range []struct {
		name string
		pub  any
		priv any
		alg  jose.KeyAlgorithm
	}{{"ec", &ec.PublicKey, ec, jose.ECDH_ES_A256KW}, {"rsa", &rk.PublicKey, rk, jose.RSA_OAEP}} {
		want := wantSPKIID(t, c.pub)
		der, _ := x509.MarshalPKIXPublicKey(c.pub)
		jwk, _ := json.Marshal(jose.JSONWebKey{Key: c.pub, Algorithm: string(c.alg)})
		p8, _ := x509.MarshalPKCS8PrivateKey(c.priv)
		jwkPriv, _ := json.Marshal(jose.JSONWebKey{Key: c.priv, Algorithm: string(c.alg)})
		for form, file := range map[string]string{
			"pem": writeFile(t, dir, c.name+".pub.pem", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})),
			"der": writeFile(t, dir, c.name+".pub.der", der),
			"jwk": writeFile(t, dir, c.name+".pub.jwk", jwk),
		} {
			r, err := ParseRecipient("jwe:" + file)
			if err != nil {
				t.Fatal(err)
			}
			if r.KeyID() != want || len(r.KeyIDs()) != 1 {
				t.Errorf("%s %s: KeyID %s (%v), want %s", c.name, form, r.KeyID(), r.KeyIDs(), want)
			}
			if nb, na := r.Validity(); !nb.IsZero() || !na.IsZero() {
				t.Errorf("%s %s: a bare key has validity %v..%v, want none", c.name, form, nb, na)
			}
		}
		for form, file := range map[string]string{
			"pkcs8": writeFile(t, dir, c.name+".pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8})),
			"jwk":   writeFile(t, dir, c.name+".jwk", jwkPriv),
		} {
			k, err := ParseDecryptionKey(file)
			if err != nil {
				t.Fatal(err)
			}
			if k.KeyID() != want {
				t.Errorf("%s private %s: KeyID %s, want %s (its public half's)", c.name, form, k.KeyID(), want)
			}
		}
	}
	if !strings.HasPrefix(wantSPKIID(t, &ec.PublicKey), "sha256:") || len(wantSPKIID(t, &ec.PublicKey)) != len("sha256:")+64 {
		t.Fatal("id form")
	}
}

// The identity's id is that of its public key as a jwe: recipient.
func TestIdentityKeyID(t *testing.T) {
	kr, dir := testKeyring(t)
	r, err := ParseRecipient("jwe:" + filepath.Join(dir, IdentityPublicFile))
	if err != nil {
		t.Fatal(err)
	}
	if id := kr.Identity().KeyID(); id != r.KeyID() || !strings.HasPrefix(id, "sha256:") {
		t.Fatalf("identity KeyID %s, its public key file's %s", id, r.KeyID())
	}
	if info := kr.KeyInfo(); len(info) != 1 || info[0].Name != IdentityKey || info[0].IDs[0] != r.KeyID() {
		t.Fatalf("KeyInfo = %+v", info)
	}
}

// A pkcs7 recipient is named by its certificate's key: the same id as its
// private key, and as the certificate given as a decryption key; its
// validity is the certificate's.
func TestKeyIDAndValidityOfCertificates(t *testing.T) {
	dir := t.TempDir()
	nb, na := time.Now().Add(-48*time.Hour).Truncate(time.Second), time.Now().Add(-24*time.Hour).Truncate(time.Second)
	certFile, keyFile := testkeys.CertValid(t, dir, "old", nb, na)
	b, _ := os.ReadFile(certFile)
	blk, _ := pem.Decode(b)
	cert, _ := x509.ParseCertificate(blk.Bytes)
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	want := "sha256:" + hex.EncodeToString(sum[:])

	r, err := ParseRecipient("pkcs7:" + certFile)
	if err != nil {
		t.Fatal(err)
	}
	if r.KeyID() != want {
		t.Errorf("pkcs7 KeyID %s, want %s", r.KeyID(), want)
	}
	if gb, ga := r.Validity(); !gb.Equal(nb) || !ga.Equal(na) {
		t.Errorf("pkcs7 Validity %v..%v, want %v..%v", gb, ga, nb, na)
	}
	key := must(ParseDecryptionKey(keyFile))(t)
	crt := must(ParseDecryptionKey(certFile))(t)
	if key.KeyID() != want || crt.KeyID() != want {
		t.Errorf("private key %s, certificate %s, want both %s", key.KeyID(), crt.KeyID(), want)
	}
	if gb, ga := crt.Validity(); !gb.Equal(nb) || !ga.Equal(na) {
		t.Errorf("x509 decryption key Validity %v..%v", gb, ga)
	}
	if err := CheckValidity(r.KeyID(), nb, na, time.Now()); !isReason(err, ReasonExpired) || !strings.Contains(err.Error(), na.UTC().Format(time.RFC3339)) {
		t.Errorf("CheckValidity now = %v, want expired at %s", err, na)
	}
	if err := CheckValidity(r.KeyID(), nb, na, nb.Add(-time.Second)); !isReason(err, ReasonNotYetValid) {
		t.Errorf("CheckValidity before = %v, want not-yet-valid", err)
	}
	if err := CheckValidity(r.KeyID(), nb, na, na); err != nil {
		t.Errorf("CheckValidity at NotAfter = %v, want valid (inclusive)", err)
	}

	// The private key configured beside its expired certificate is
	// bounded by it; without the certificate it is not.
	id, _, _ := LoadOrCreateIdentity(t.TempDir())
	kr := must(NewKeyring(id, []DecryptionKey{key, crt}))(t)
	info := kr.KeyInfo()
	if len(info) != 2 || info[1].Name != keyFile || info[1].IDs[0] != want || !info[1].NotAfter.Equal(na) {
		t.Fatalf("KeyInfo = %+v, want the private key bounded by its certificate", info)
	}
	kr = must(NewKeyring(id, []DecryptionKey{key}))(t)
	if info := kr.KeyInfo(); !info[1].NotAfter.IsZero() {
		t.Fatalf("KeyInfo without the certificate = %+v, want unbounded", info)
	}
}

func isReason(err error, reason string) bool {
	var ie *InvalidKeyError
	return errors.As(err, &ie) && ie.Reason == reason
}

func must[T any](v T, err error) func(t *testing.T) T {
	return func(t *testing.T) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// An OpenPGP key is named by its primary key's fingerprint, public and
// private file alike; its validity is its primary key's lifetime, or its
// encryption subkey's when that ends first.
func TestKeyIDAndValidityOfOpenPGPKeys(t *testing.T) {
	dir := t.TempDir()
	created := time.Now().Add(-time.Hour).Truncate(time.Second)
	for _, c := range []struct {
		name             string
		primary, subkey  time.Duration
		wantNotAfter     time.Time
		wantValidAtNowOK bool
	}{
		{"forever", 0, 0, time.Time{}, true},
		{"primary", 30 * time.Minute, 0, created.Add(30 * time.Minute), false},
		{"subkey", 48 * time.Hour, 10 * time.Minute, created.Add(10 * time.Minute), false},
		{"later", 48 * time.Hour, 0, created.Add(48 * time.Hour), true},
	} {
		pub, priv, fp := testkeys.PGPValid(t, dir, c.name, created, c.primary, c.subkey)
		r, err := ParseRecipient("pgp:" + pub)
		if err != nil {
			t.Fatal(err)
		}
		k := must(ParseDecryptionKey(priv))(t)
		if r.KeyID() != "pgp:"+fp || k.KeyID() != "pgp:"+fp || len(fp) != 40 {
			t.Errorf("%s: KeyIDs %s / %s, want pgp:%s", c.name, r.KeyID(), k.KeyID(), fp)
		}
		nb, na := r.Validity()
		if !nb.Equal(created) || !na.Equal(c.wantNotAfter) {
			t.Errorf("%s: Validity %v..%v, want %v..%v", c.name, nb, na, created, c.wantNotAfter)
		}
		if kb, ka := k.Validity(); !kb.Equal(nb) || !ka.Equal(na) {
			t.Errorf("%s: private key Validity %v..%v, public %v..%v", c.name, kb, ka, nb, na)
		}
		if ok := CheckValidity(r.KeyID(), nb, na, time.Now()) == nil; ok != c.wantValidAtNowOK {
			t.Errorf("%s: valid now = %v, want %v", c.name, ok, c.wantValidAtNowOK)
		}
		// What go-crypto (ocicrypt's wrap) says agrees.
		el, _ := openpgp.ReadArmoredKeyRing(bytes.NewReader(must(os.ReadFile(pub))(t)))
		if _, ok := el[0].EncryptionKey(time.Now()); ok != c.wantValidAtNowOK {
			t.Errorf("%s: go-crypto finds an encryption key now: %v", c.name, ok)
		}
	}

	// A signing-only key cannot be a recipient: a start-up error, not a
	// failed push.
	e, _ := openpgp.NewEntity("sig", "", "sig@example.com", nil)
	e.Subkeys = nil
	var b bytes.Buffer
	e.Serialize(&b)
	if _, err := ParseRecipient("pgp:" + writeFile(t, dir, "sig.pgp", b.Bytes())); err == nil || !strings.Contains(err.Error(), "no key that can encrypt") {
		t.Errorf("signing-only key: %v", err)
	}
}

// A pkcs11 key is named by its URI's path attributes, never by its PIN;
// the public and private key files of one key pair have one id.
func TestKeyIDOfPKCS11AndProviderKeys(t *testing.T) {
	dir := t.TempDir()
	y := func(typ string) []byte {
		return []byte("pkcs11:\n  uri: pkcs11:token=shroud;object=ops;type=" + typ + "?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=s3cret-pin\n")
	}
	pubFile, privFile := writeFile(t, dir, "pub.yaml", y("public")), writeFile(t, dir, "priv.yaml", y("private"))
	r := must(ParseRecipient("pkcs11:" + pubFile))(t)
	k := must(ParseDecryptionKey(privFile))(t)
	if r.KeyID() != "pkcs11:object=ops;token=shroud" || k.KeyID() != r.KeyID() {
		t.Errorf("pkcs11 KeyIDs %s / %s, want pkcs11:object=ops;token=shroud", r.KeyID(), k.KeyID())
	}
	if strings.Contains(r.KeyID(), "s3cret") || strings.Contains(r.KeyID(), "module") {
		t.Errorf("the key id %s carries the URI's query", r.KeyID())
	}
	p := must(ParseRecipient("provider:vault:some-args"))(t)
	if p.KeyID() != "provider:vault" {
		t.Errorf("provider KeyID %s", p.KeyID())
	}
}

// With a real token: the recipient's and the decryption key's id agree,
// and the keyring describes the token's key by it.
func TestKeyIDOfPKCS11Token(t *testing.T) {
	pub, priv := softhsm.Token(t, 2048, true)
	r := must(ParseRecipient("pkcs11:" + pub))(t)
	k := must(ParseDecryptionKey(priv))(t)
	if r.KeyID() != k.KeyID() || r.KeyID() != "pkcs11:object=ops;token=shroud" {
		t.Fatalf("KeyIDs %s / %s", r.KeyID(), k.KeyID())
	}
	id, _, _ := LoadOrCreateIdentity(t.TempDir())
	kr := must(NewKeyring(id, []DecryptionKey{k}, WithPKCS11([]string{softhsm.Module}, nil)))(t)
	if info := kr.KeyInfo(); info[1].Name != priv || info[1].IDs[0] != k.KeyID() {
		t.Fatalf("KeyInfo = %+v", info)
	}
}

// Every key id shroud computes passes ValidKeyID; an id spelt otherwise
// (the way an operator mistypes one into trust revoke) is refused, since
// it would name no key.
func TestValidKeyID(t *testing.T) {
	dir := t.TempDir()
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	jwePub := writeFile(t, dir, "ec.pub.pem", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: must(x509.MarshalPKIXPublicKey(&ec.PublicKey))(t)}))
	pgpPub, _, _ := testkeys.PGPValid(t, dir, "v4", time.Now().Add(-time.Hour), 0, 0)
	v6, err := openpgp.NewEntity("v6", "", "v6@example.com", &packet.Config{V6Keys: true})
	if err != nil {
		t.Fatal(err)
	}
	var v6ring bytes.Buffer
	if err := v6.Serialize(&v6ring); err != nil {
		t.Fatal(err)
	}
	pkcs11Pub := writeFile(t, dir, "p11.yaml", []byte("pkcs11:\n  uri: pkcs11:token=my%20token;object=ops;id=%01%02;type=public?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=1234\n"))
	id, _, _ := LoadOrCreateIdentity(t.TempDir())
	computed := []string{id.KeyID(), ProviderKeyID("kms")}
	for _, spec := range []string{"jwe:" + jwePub, "pgp:" + pgpPub, "pgp:" + writeFile(t, dir, "v6.pgp", v6ring.Bytes()), "pkcs11:" + pkcs11Pub, "provider:vault:args"} {
		computed = append(computed, must(ParseRecipient(spec))(t).KeyIDs()...)
	}
	if !slices.ContainsFunc(computed, func(id string) bool { return strings.HasPrefix(id, "pgp:") && len(id) == len("pgp:")+64 }) {
		t.Errorf("no v6 fingerprint among %q", computed)
	}
	for _, id := range computed {
		if err := ValidKeyID(id); err != nil {
			t.Errorf("an id shroud computes: %v", err)
		}
	}

	sha := id.KeyID()
	for _, bad := range []string{
		"",
		strings.TrimPrefix(sha, "sha256:"), // no prefix
		"sha256:" + strings.ToUpper(strings.TrimPrefix(sha, "sha256:")), // upper case
		"SHA256:" + strings.TrimPrefix(sha, "sha256:"),
		sha[:len(sha)-1],                  // a digit short
		sha + "0",                         // one too many
		sha + " ",                         // pasted with a blank
		"sha256:unknown",                  // not hex
		"pgp:" + strings.Repeat("ab", 20), // lower case
		"pgp:" + strings.Repeat("AB", 8),  // a 64-bit key id, not a fingerprint
		"pgp:0x" + strings.Repeat("AB", 19),
		"pkcs11:",
		"pkcs11:token=shroud;object=ops", // not sorted
		"pkcs11:object=ops;token=shroud;type=public",
		"pkcs11:object=ops;token=shroud?pin-value=1234", // the query (a PIN)
		"pkcs11:object=ops;token=my token",
		"pkcs11:object",
		"provider:",
		"provider:kms:args",
		"provider:k ms",
		"spki:" + strings.TrimPrefix(sha, "sha256:"),
	} {
		if err := ValidKeyID(bad); !errors.Is(err, ErrInvalidKeyID) {
			t.Errorf("ValidKeyID(%q) = %v; want ErrInvalidKeyID", bad, err)
		}
	}
}

package testkeys

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// CertValid writes a self-signed RSA 2048 key-encipherment certificate
// (a pkcs7 recipient) for CN name, serial 1, valid from notBefore to
// notAfter, and its key (PKCS#8 PEM).
func CertValid(t testing.TB, dir, name string, notBefore, notAfter time.Time) (cert, key string) {
	t.Helper()
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: notBefore, NotAfter: notAfter, KeyUsage: x509.KeyUsageKeyEncipherment}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	p8, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	cert, key = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	write(t, cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	write(t, key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}), 0o600)
	return cert, key
}

// PGPValid writes an OpenPGP key pair for name <name@example.com> created
// at created, whose primary key expires primaryLifetime after it and
// whose encryption subkey expires subkeyLifetime after it (0: never):
// the public key armored, the private key armored. It returns the files
// and the primary key's fingerprint in upper hex.
func PGPValid(t testing.TB, dir, name string, created time.Time, primaryLifetime, subkeyLifetime time.Duration) (pub, priv, fingerprint string) {
	t.Helper()
	cfg := &packet.Config{Time: func() time.Time { return created }, KeyLifetimeSecs: uint32(primaryLifetime / time.Second)}
	e, err := openpgp.NewEntity(name, "test", name+"@example.com", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if subkeyLifetime > 0 {
		e.Subkeys = nil
		sub := &packet.Config{Time: cfg.Time, KeyLifetimeSecs: uint32(subkeyLifetime / time.Second)}
		if err := e.AddEncryptionSubkey(sub); err != nil {
			t.Fatal(err)
		}
	}
	var pb, sb bytes.Buffer
	w, _ := armor.Encode(&pb, openpgp.PublicKeyType, nil)
	if err := e.Serialize(w); err != nil {
		t.Fatal(err)
	}
	w.Close()
	w, _ = armor.Encode(&sb, openpgp.PrivateKeyType, nil)
	if err := e.SerializePrivateWithoutSigning(w, nil); err != nil {
		t.Fatal(err)
	}
	w.Close()
	pub, priv = filepath.Join(dir, name+".pub.asc"), filepath.Join(dir, name+".private.asc")
	write(t, pub, pb.Bytes(), 0o644)
	write(t, priv, sb.Bytes(), 0o600)
	return pub, priv, strings.ToUpper(hex.EncodeToString(e.PrimaryKey.Fingerprint))
}

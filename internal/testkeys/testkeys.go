// Package testkeys writes the key material the tests need, in the file
// forms shroud and skopeo read: OpenPGP key pairs and X.509 certificates
// (for pkcs7 recipients, and for TLS servers).
package testkeys

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
)

// PGP writes an OpenPGP key pair for name <name@example.com> into dir: the
// public key armored, the private key armored or binary (skopeo 1.9 reads
// only binary private keys). It returns the files and the id of the
// encryption subkey, the one a wrapped key names.
func PGP(t testing.TB, dir, name string, armoredPrivate bool) (pub, priv string, encKeyID uint64) {
	t.Helper()
	e, err := openpgp.NewEntity(name, "test", name+"@example.com", nil)
	if err != nil {
		t.Fatal(err)
	}
	var pb, sb bytes.Buffer
	w, _ := armor.Encode(&pb, openpgp.PublicKeyType, nil)
	e.Serialize(w)
	w.Close()
	if armoredPrivate {
		w, _ = armor.Encode(&sb, openpgp.PrivateKeyType, nil)
		e.SerializePrivate(w, nil)
		w.Close()
	} else {
		e.SerializePrivate(&sb, nil)
	}
	pub, priv = filepath.Join(dir, name+".pub.asc"), filepath.Join(dir, name+".private.pgp")
	write(t, pub, pb.Bytes(), 0o644)
	write(t, priv, sb.Bytes(), 0o600)
	return pub, priv, e.Subkeys[0].PublicKey.KeyId
}

// Cert writes a self-signed certificate for CN name (serial 1) and its
// key: RSA 2048 for key encipherment (pkcs7 recipients), or with tls an
// ECDSA P-256 server certificate for 127.0.0.1 and localhost that is its
// own CA (a TLS test server's certificate and the client's root).
func Cert(t testing.TB, dir, name string, tls bool) (cert, key string) {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	var priv crypto.Signer
	var err error
	if tls {
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl.DNSNames, tmpl.IPAddresses = []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")}
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	} else {
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
		tmpl.KeyUsage = x509.KeyUsageKeyEncipherment
	}
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, priv.Public(), priv)
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

func write(t testing.TB, path string, b []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, b, mode); err != nil {
		t.Fatal(err)
	}
}

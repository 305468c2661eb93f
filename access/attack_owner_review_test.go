package access

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	scrypto "github.com/shroud-oci/shroud/crypto"
)

// The owner of an encrypt-only rule is a pkcs7 recipient whose
// certificate has expired: shroud no longer wraps for it (the key's own
// validity, checked at every wrap), yet its key still approves access
// requests: OwnerMayApprove compares key ids with the rule's recipients
// and checks neither the key's validity nor (in the server) the trust
// documents' revocations. An approval needs no wrapped key at all on the
// server's side (only the CLI refuses an empty one), and an approved
// request adds the requester to every later push's recipients
// (Store.Extend): whoever holds a retired or revoked owner key grants
// itself the repository's future images.
func TestAttackExpiredOwnerKeyStillApproves(t *testing.T) {
	dir := t.TempDir()
	id, _, err := scrypto.LoadOrCreateIdentity(filepath.Join(dir, "data"))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := scrypto.NewKeyring(id, nil)
	if err != nil {
		t.Fatal(err)
	}
	ok, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "retired owner"},
		NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-24 * time.Hour), KeyUsage: x509.KeyUsageKeyEncipherment}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &ok.PublicKey, ok)
	if err != nil {
		t.Fatal(err)
	}
	certFile := filepath.Join(dir, "owner.crt")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	rec, err := scrypto.ParseRecipient("pkcs7:" + certFile)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := keys.Recipients([]scrypto.Recipient{rec})
	if err == nil {
		rs, err = rs.WithoutIdentity()
	}
	if err != nil {
		t.Fatal(err)
	}
	pol, err := scrypto.NewPolicy([]scrypto.Rule{{Pattern: "**", Action: scrypto.Encrypt, Recipients: rs, EncryptOnly: true}})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{dir: filepath.Join(dir, "access"), keys: keys, clock: &clock{t: now}, rule: pol.Match("team/app")}
	f.store, err = Open(Options{Dir: f.dir, Keyring: keys, Now: f.clock.now, Policy: pol})
	if err != nil {
		t.Fatal(err)
	}
	mallory, mpub := ecKey(t)
	r, _, err := f.store.Submit(f.signed(t, mallory, mpub, nil, "team/app"), "")
	if err != nil {
		t.Fatal(err)
	}
	// What the admin server does with an owner approval: verify (an empty
	// Wraps passes), OwnerMayApprove, AddWrappedKeys (nothing), approve.
	jws, err := SignOwnerApproval(OwnerApproval{Request: r.ID, Audience: f.store.Audience(), Created: now,
		Wraps: []OwnerWrap{{Repository: "team/app", CipherDigest: digest.FromString("c"), PlainDigest: digest.FromString("p"),
			Annotations: map[string]string{scrypto.AnnotationKeys + "jwe": "eA=="}}}}, ok)
	if err != nil {
		t.Fatal(err)
	}
	a, ownerID, err := VerifyOwnerApproval(jws, r, f.store.Audience(), now)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if err := f.store.OwnerMayApprove(r, ownerID); err != nil {
		return // held
	}
	got, err := f.store.ApproveByOwner(r.ID, "token", ownerID, a.Expires)
	if err != nil {
		return // held
	}
	ext, err := f.store.Extend("team/app", pol.Match("team/app"))
	if err != nil {
		t.Fatal(err)
	}
	t.Fatalf("an owner key whose certificate expired %s approved request %s (%s, %d wrapped keys); later pushes wrap for %d keys, mallory's among them",
		tmpl.NotAfter.Format(time.RFC3339), got.ID, got.State, len(a.Wraps), len(ext.Keys()))
}

package access

// Adversarial review of commit 8fac738 (access requests). Each test is a
// confirmed finding: it fails while the weakness is there.

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"testing"
	"time"

	scrypto "github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/testkeys"
)

// One private key (one requester, no credentials needed) fills the whole
// MaxPending quota by naming a different repository in each request; every
// other requester is then refused (429) for PendingFor (7 days), and the
// owners' list is 1000 entries of spam. §10: resource use is bounded per
// client, not globally by the first client to come.
func TestReviewOneKeyFillsThePendingQuotaForEveryone(t *testing.T) {
	f := newFixture(t)
	spammer, spub := ecKey(t)
	var err error
	n := 0
	for ; n < MaxPending; n++ {
		if _, _, err = f.store.Submit(f.signed(t, spammer, spub, nil, fmt.Sprintf("spam/r%d", n)), "192.0.2.1"); err != nil {
			break
		}
	}
	if !errors.Is(err, ErrTooMany) || n != MaxPendingPerKey {
		t.Fatalf("one key got %d requests waiting (then %v), want %d", n, err, MaxPendingPerKey)
	}
	// Many keys from one address are bounded too.
	for n = 0; n < MaxPending; n++ {
		k, pub := ecKey(t)
		if _, _, err = f.store.Submit(f.signed(t, k, pub, nil, "spam/x"), "192.0.2.1"); err != nil {
			break
		}
	}
	if !errors.Is(err, ErrTooMany) || n+MaxPendingPerKey != MaxPendingPerRemote {
		t.Fatalf("one address got %d more requests waiting (then %v), want %d in all", n, err, MaxPendingPerRemote)
	}
	victim, vpub := ecKey(t)
	if _, _, err := f.store.Submit(f.signed(t, victim, vpub, nil, "team/app"), "198.51.100.7"); err != nil {
		t.Fatalf("another requester, after one address's requests: %v", err)
	}
}

// A pkcs7 request whose certificate holds an EC key passes every check
// (it is signed ES256 by the certificate's key) and can be approved, but
// ocicrypt's pkcs7 wrapper only wraps for RSA keys: once approved, every
// wrap for the repository's recipients fails, so every manifest push to
// the repositories it named fails (and the approval's rewrap job too).
// Static pkcs7 recipients fail at the first push the operator makes; this
// one is chosen by an unauthenticated requester.
func TestReviewApprovedECCertificateBreaksEveryWrap(t *testing.T) {
	f := newFixture(t)
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := f.clock.now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "mallory"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour), KeyUsage: x509.KeyUsageKeyAgreement}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	cert := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	r, _, err := f.store.Submit(f.signed(t, k, cert, func(p *Payload) { p.Scheme = "pkcs7" }, "team/app"), "")
	if err != nil {
		return // refused at submission: fixed
	}
	if _, err := f.store.Approve(r.ID, "owner", time.Time{}); err != nil {
		t.Fatal(err)
	}
	rs, err := f.store.Extend("team/app", f.rule)
	if err != nil {
		t.Fatalf("extend: %v", err)
	}
	opts := scrypto.PrivateOptions{Key: scrypto.LayerKey{Key: make([]byte, scrypto.KeySize), Nonce: make([]byte, scrypto.NonceSize)},
		PlainDigest: "sha256:0000000000000000000000000000000000000000000000000000000000000000"}
	if _, err := f.keys.Wrap(opts, scrypto.PublicOptions{}, rs); err != nil {
		t.Fatalf("an approved EC certificate (accepted at submit) makes every wrap for team/app fail: %v", err)
	}
}

// A pkcs7 request whose certificate expired (or is not valid yet) is
// accepted and can be approved. At wrap time the key is refused
// ("expired"); on a rule whose only other recipient is the identity (the
// default policy: encrypt ** for the identity) "every recipient refused"
// then refuses every push to the approved repositories with 403 DENIED.
// The same happens with trust documents for any granted key the allow
// list does not name yet, which the package doc says is merely "refused
// at wrap time like any recipient".
func TestReviewExpiredCertificateRequestIsAccepted(t *testing.T) {
	f := newFixture(t)
	now := f.clock.now()
	for name, nb := range map[string][2]time.Time{
		"expired":       {now.Add(-48 * time.Hour), now.Add(-24 * time.Hour)},
		"not yet valid": {now.Add(24 * time.Hour), now.Add(48 * time.Hour)},
	} {
		dir := t.TempDir()
		certFile, keyFile := testkeys.CertValid(t, dir, "carol", nb[0], nb[1])
		cb, _ := os.ReadFile(certFile)
		kb, _ := os.ReadFile(keyFile)
		blk, _ := pem.Decode(kb)
		priv, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := f.store.Submit(f.signed(t, priv.(crypto.Signer), string(cb), func(p *Payload) { p.Scheme = "pkcs7" }, "team/app"), ""); err == nil {
			t.Errorf("a pkcs7 request with a certificate %s is accepted: approving it refuses every push to team/app (403)", name)
		}
	}
}

// Requests that are no longer pending (denied, expired) are never
// dropped: a requester whose requests are denied or let expire submits
// MaxPending more, again and again; the directory and the map grow
// without bound, and Extend (every manifest push) scans them all under
// the store's lock.
func TestReviewDecidedRequestsAreNeverPruned(t *testing.T) {
	f := newFixture(t)
	const rounds, per = 3, 15
	for round := range rounds {
		for i := range per {
			spammer, spub := ecKey(t)
			if _, _, err := f.store.Submit(f.signed(t, spammer, spub, nil, fmt.Sprintf("spam/r%d-%d", round, i)), ""); err != nil {
				t.Fatal(err)
			}
		}
		f.clock.add(PendingFor + time.Hour) // they expire; the quota is free again
	}
	if n := len(f.store.List()); n > per {
		t.Fatalf("the store keeps %d expired requests for %d pending at most: nothing prunes them", n, per)
	}
}

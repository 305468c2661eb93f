package crypto

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"

	"github.com/shroud-oci/shroud/internal/testkeys"
)

// opensWith says whether a keyring holding only the given key files opens
// a layer's annotations.
func opensWith(t *testing.T, ann map[string]string, files ...string) bool {
	t.Helper()
	var dks []DecryptionKey
	for _, f := range files {
		dks = append(dks, must(ParseDecryptionKey(f))(t))
	}
	id, _, _ := LoadOrCreateIdentity(t.TempDir())
	kr := must(NewKeyring(id, dks))(t)
	_, err := kr.Unwrap(ann)
	if err != nil && !errors.Is(err, ErrNoKey) {
		t.Fatal(err)
	}
	return err == nil
}

// A subset of a compiled set wraps for the keys it keeps and for no
// other, down to one key of an OpenPGP keyring whose keys share an
// address; it is compiled once.
func TestRecipientsSubset(t *testing.T) {
	dir := t.TempDir()
	kr, _ := testKeyring(t)
	files := jweKeyFiles(t, dir)
	ec := files["ec-P-256"]
	certFile, certKey := testkeys.Cert(t, dir, "bob", false)
	// A ring of two keys with one address: ocicrypt picks keys by address.
	var ring bytes.Buffer
	var privs []string
	for _, n := range []string{"c1", "c2"} {
		e := must(openpgp.NewEntity("carol", n, "carol@example.com", nil))(t)
		e.Serialize(&ring)
		var sb bytes.Buffer
		w, _ := armor.Encode(&sb, openpgp.PrivateKeyType, nil)
		e.SerializePrivate(w, nil)
		w.Close()
		privs = append(privs, writeFile(t, dir, n+".asc", sb.Bytes()))
	}
	ringFile := filepath.Join(dir, "carol.pgp")
	os.WriteFile(ringFile, ring.Bytes(), 0o644)

	var rs []Recipient
	for _, spec := range []string{"jwe:" + ec[0], "pkcs7:" + certFile, "pgp:" + ringFile} {
		rs = append(rs, must(ParseRecipient(spec))(t))
	}
	if ids := rs[2].KeyIDs(); len(ids) != 2 || ids[0] == ids[1] {
		t.Fatalf("a ring of two keys has key ids %v", ids)
	}
	set := must(kr.Recipients(rs))(t)
	keys := set.Keys()
	if len(keys) != 4 || keys[0].ID != rs[0].KeyID() || keys[1].ID != rs[1].KeyID() || keys[2].ID != rs[2].KeyIDs()[0] || keys[3].Spec != rs[2].Spec {
		t.Fatalf("Keys = %+v", keys)
	}
	openers := [][]string{{ec[1]}, {certKey, certFile}, {privs[0]}, {privs[1]}}

	wrap := func(rs *Recipients) map[string]string {
		_, desc := shroudEncrypt(t, kr, []byte("layer"))
		opts, _ := kr.Unwrap(desc.Annotations)
		pub, _ := ParsePublicOptions(desc.Annotations)
		ann, err := kr.Wrap(opts, pub, rs)
		if err != nil {
			t.Fatal(err)
		}
		return ann
	}
	if set.Subset([]bool{true, true, true, true}) != set {
		t.Fatal("a subset keeping every key is not the set itself")
	}
	for _, keep := range [][]bool{{true, true, true, true}, {true, false, false, true}, {false, true, true, false}, {false, false, false, false}} {
		sub := set.Subset(keep)
		if set.Subset(keep) != sub {
			t.Fatalf("%v: the subset is compiled again", keep)
		}
		ann := wrap(sub)
		if _, err := kr.Unwrap(ann); err != nil {
			t.Fatalf("%v: the identity cannot open: %v", keep, err)
		}
		for i, files := range openers {
			if got := opensWith(t, ann, files...); got != keep[i] {
				t.Errorf("keep %v: key %d (%s) opens = %v", keep, i, keys[i].ID, got)
			}
		}
		if len(sub.Keys()) != countTrue(keep) {
			t.Errorf("keep %v: subset has keys %v", keep, sub.Keys())
		}
	}
	if specs := set.Subset([]bool{false, false, true, true}).Specs(); len(specs) != 1 || specs[0] != rs[2].Spec {
		t.Errorf("Specs of the ring's keys alone = %v", specs)
	}
}

func countTrue(b []bool) int {
	n := 0
	for _, v := range b {
		if v {
			n++
		}
	}
	return n
}

// An expired OpenPGP recipient parses (so that the proxy can leave it
// out), and what ocicrypt would do with it is fail the whole wrap: the
// reason shroud filters before it wraps.
func TestExpiredOpenPGPRecipientFailsOcicryptsWrap(t *testing.T) {
	dir := t.TempDir()
	kr, _ := testKeyring(t)
	pub, _, _ := testkeys.PGPValid(t, dir, "gone", time.Now().Add(-2*time.Hour), time.Hour, 0)
	r := must(ParseRecipient("pgp:" + pub))(t)
	nb, na := r.Validity()
	if err := CheckValidity(r.KeyID(), nb, na, time.Now()); !isReason(err, ReasonExpired) {
		t.Fatalf("CheckValidity = %v", err)
	}
	set := must(kr.Recipients([]Recipient{r}))(t)
	_, desc := shroudEncrypt(t, kr, []byte("layer"))
	opts, _ := kr.Unwrap(desc.Annotations)
	pubOpts, _ := ParsePublicOptions(desc.Annotations)
	if _, err := kr.Wrap(opts, pubOpts, set); err == nil {
		t.Fatal("ocicrypt wrapped for an expired OpenPGP key")
	}
	if _, err := kr.Wrap(opts, pubOpts, set.Subset([]bool{false})); err != nil {
		t.Fatalf("the subset without it: %v", err)
	}
}

// BenchmarkRecipientsSubset is what a push pays for a subset once it is
// compiled: a lookup.
func BenchmarkRecipientsSubset(b *testing.B) {
	dir := b.TempDir()
	id, _, _ := LoadOrCreateIdentity(dir)
	kr, _ := NewKeyring(id, nil)
	_, pub, _ := GenerateKeyPair("ec")
	os.WriteFile(filepath.Join(dir, "k.pub"), pub, 0o644)
	cert, _ := testkeys.Cert(b, dir, "bob", false)
	pgpPub, _, _ := testkeys.PGP(b, dir, "alice", true)
	var rs []Recipient
	for _, spec := range []string{"jwe:" + filepath.Join(dir, "k.pub"), "pkcs7:" + cert, "pgp:" + pgpPub} {
		r, err := ParseRecipient(spec)
		if err != nil {
			b.Fatal(err)
		}
		rs = append(rs, r)
	}
	set, _ := kr.Recipients(rs)
	keep := []bool{true, false, true}
	b.ReportAllocs()
	for b.Loop() {
		set.Subset(keep)
	}
}

// A pgp recipient file that holds no key (empty, or a lone OpenPGP
// marker packet) was taken as a recipient: one that wraps a layer key for
// nobody. It is refused at start-up with the reason.
func TestParseRecipientRefusesAnOpenPGPFileWithNoKey(t *testing.T) {
	for name, data := range map[string][]byte{
		"empty":         {},
		"marker packet": {0xca, 0x03, 'P', 'G', 'P'},
	} {
		f := filepath.Join(t.TempDir(), "key.gpg")
		if err := os.WriteFile(f, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if r, err := ParseRecipient("pgp:" + f); err == nil {
			t.Errorf("%s: ParseRecipient took it: %+v", name, r)
		} else if !strings.Contains(err.Error(), "holds no key") {
			t.Errorf("%s: %v; want it to say the file holds no key", name, err)
		}
	}
}

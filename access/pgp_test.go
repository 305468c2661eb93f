package access

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/opencontainers/go-digest"

	scrypto "github.com/shroud-oci/shroud/crypto"
)

// An OpenPGP key asks for access with a detached OpenPGP signature of its
// request; once approved, the layer keys shroud wraps for the repository
// open with its private key. A request signed by another OpenPGP key, or
// whose payload changed after signing, is refused and kept nowhere.
func TestPGPRequestApprovedWrapsForThePGPKey(t *testing.T) {
	f := newFixture(t)
	e, err := openpgp.NewEntity("dave", "", "dave@example.com", nil)
	if err != nil {
		t.Fatal(err)
	}
	mallory, _ := openpgp.NewEntity("mallory", "", "mallory@example.com", nil)
	base := Payload{Audience: f.store.Audience(), Name: "dave", Repositories: []string{"team/app"}, Created: f.clock.now()}

	// mallory's signature over a payload carrying dave's key
	good, _ := SignPGP(base, e)
	var genv pgpEnvelope
	json.Unmarshal(good, &genv)
	raw, _ := base64.StdEncoding.DecodeString(genv.Payload)
	var sig bytes.Buffer
	openpgp.ArmoredDetachSign(&sig, mallory, bytes.NewReader(raw), nil)
	misSigned, _ := json.Marshal(pgpEnvelope{Payload: genv.Payload, PGPSignature: sig.String()})
	changed := bytes.Replace(raw, []byte("team/app"), []byte("team/all"), 1)
	tampered, _ := json.Marshal(pgpEnvelope{Payload: base64.StdEncoding.EncodeToString(changed), PGPSignature: genv.PGPSignature})
	for name, body := range map[string][]byte{"signed by another key": misSigned, "changed after signing": tampered} {
		if _, _, err := f.store.Submit(body, "10.0.0.1"); err == nil {
			t.Errorf("a pgp request %s was taken", name)
		} else {
			t.Logf("a pgp request %s: %v", name, err)
		}
	}
	if n := len(f.store.List()); n != 0 {
		t.Fatalf("%d requests kept, want none", n)
	}

	req, created, err := f.store.Submit(good, "10.0.0.1")
	if err != nil || !created || req.Scheme != "pgp" {
		t.Fatalf("dave's request: %+v %v %v", req, created, err)
	}
	if _, err := f.store.Approve(req.ID, "owner", time.Time{}); err != nil {
		t.Fatal(err)
	}
	rs, err := f.store.Extend("team/app", f.rule)
	if err != nil {
		t.Fatal(err)
	}
	key, err := scrypto.NewLayerKey()
	if err != nil {
		t.Fatal(err)
	}
	ann, err := f.keys.Wrap(scrypto.PrivateOptions{Key: key, PlainDigest: digest.FromString("layer")}, scrypto.PublicOptions{HMAC: []byte("h")}, rs)
	if err != nil {
		t.Fatal(err)
	}
	if ann[scrypto.AnnotationKeys+"pgp"] == "" {
		t.Fatalf("no pgp wrapped key for the approved OpenPGP key: %v", ann)
	}
	// dave's private key opens it.
	var priv bytes.Buffer
	w, _ := armor.Encode(&priv, openpgp.PrivateKeyType, nil)
	e.SerializePrivate(w, nil)
	w.Close()
	path := filepath.Join(t.TempDir(), "dave.asc")
	os.WriteFile(path, priv.Bytes(), 0o600)
	dk, err := scrypto.ParseDecryptionKey(path)
	if err != nil {
		t.Fatal(err)
	}
	id, _, _ := scrypto.LoadOrCreateIdentity(t.TempDir())
	kr, err := scrypto.NewKeyring(id, []scrypto.DecryptionKey{dk})
	if err != nil {
		t.Fatal(err)
	}
	got, err := kr.Unwrap(ann)
	if err != nil || !bytes.Equal(got.Key.Key, key.Key) {
		t.Fatalf("dave's private key does not open the wrapped key: %v", err)
	}
}

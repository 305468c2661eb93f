package crypto

import (
	"errors"
	"testing"

	"github.com/opencontainers/go-digest"
)

// A keyring with a previous identity opens what either identity sealed,
// says which, unwraps layer keys wrapped for the previous one under a
// name IsIdentityKey knows, and seals and wraps for the new one alone.
func TestPreviousIdentityOpensNothingIsMadeForIt(t *testing.T) {
	old, _, err := LoadOrCreateIdentity(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	next, _, err := LoadOrCreateIdentity(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	oldRing, err := NewKeyring(old, nil)
	if err != nil {
		t.Fatal(err)
	}
	k, err := NewKeyring(next, nil, WithPreviousIdentities(old))
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := old.Seal(Seal{Repository: "r", Manifest: []byte("{}")})
	if err != nil {
		t.Fatal(err)
	}
	s, by, err := k.OpenSeal(sealed)
	if err != nil || by != old || s.Repository != "r" {
		t.Fatalf("OpenSeal of the old identity's seal: %v by %v", err, by)
	}
	if _, by, err := oldRing.OpenSeal(mustSeal(t, next)); !errors.Is(err, ErrForeignSeal) || by != nil {
		t.Fatalf("a keyring without the new identity opened its seal: %v %v", by, err)
	}
	key, err := NewLayerKey()
	if err != nil {
		t.Fatal(err)
	}
	opts := PrivateOptions{Key: key, PlainDigest: digest.FromString("layer")}
	ann, err := oldRing.WrapForIdentity(opts, PublicOptions{HMAC: make([]byte, 32)})
	if err != nil {
		t.Fatal(err)
	}
	_, name, err := k.UnwrapWith(ann, IsIdentityKey)
	if err != nil || name != PreviousIdentityKey(old) || !IsIdentityKey(name) {
		t.Fatalf("unwrap of a key wrapped for the previous identity: %q %v", name, err)
	}
	if _, _, err := oldRing.UnwrapWith(mustWrap(t, k, opts), nil); err == nil {
		t.Fatal("the keyring wraps for its previous identity too")
	}
	if _, err := NewKeyring(next, nil, WithPreviousIdentities(next)); err == nil {
		t.Fatal("the identity as its own previous identity was accepted")
	}
	var ids []string
	for _, i := range k.KeyInfo() {
		ids = append(ids, i.IDs...)
	}
	if len(ids) != 2 || ids[1] != old.KeyID() {
		t.Fatalf("KeyInfo ids %v: want the identity's and the previous one's", ids)
	}
}

func mustSeal(t *testing.T, id *Identity) string {
	t.Helper()
	s, err := id.Seal(Seal{Repository: "r", Manifest: []byte("{}")})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustWrap(t *testing.T, k *Keyring, opts PrivateOptions) map[string]string {
	t.Helper()
	ann, err := k.WrapForIdentity(opts, PublicOptions{HMAC: make([]byte, 32)})
	if err != nil {
		t.Fatal(err)
	}
	return ann
}

package crypto

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

// TestWrapOptionsBindsScope: the options come back with their scope and
// the identity's key id; a wrap whose scope header was changed (to move it
// from a denied repository to an allowed one) or that is for another
// identity does not open.
func TestWrapOptionsBindsScope(t *testing.T) {
	id, _, err := LoadOrCreateIdentity(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	opts := []byte(`{"symkey":"c2VjcmV0"}`)
	w, err := id.WrapOptions(opts, "team-a/secret")
	if err != nil {
		t.Fatal(err)
	}
	got, scope, kid, err := id.OpenOptions(w)
	if err != nil || !bytes.Equal(got, opts) || scope != "team-a/secret" || kid != id.KeyID() {
		t.Fatalf("open: %q %q %q %v", got, scope, kid, err)
	}
	parts := strings.Split(w, ".")
	hdr, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		t.Fatal(err)
	}
	moved := bytes.Replace(hdr, []byte("team-a/secret"), []byte("team-a/public"), 1)
	if bytes.Equal(moved, hdr) {
		t.Fatalf("no scope in the header %s", hdr)
	}
	parts[0] = base64.RawURLEncoding.EncodeToString(moved)
	if _, _, _, err := id.OpenOptions(strings.Join(parts, ".")); !errors.Is(err, ErrNotWrappedForIdentity) {
		t.Fatalf("a wrap with a changed scope: %v", err)
	}
	other, _, err := LoadOrCreateIdentity(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := other.OpenOptions(w); !errors.Is(err, ErrNotWrappedForIdentity) {
		t.Fatalf("another identity: %v", err)
	}
	if _, err := id.WrapOptions(make([]byte, MaxProviderOptions+1), ""); err == nil {
		t.Fatal("wrapped oversized options")
	}
}

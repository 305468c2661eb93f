package crypto

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/shroud-oci/shroud/internal/softhsm"
)

var testModules = TokenModules{AllowedModulePaths: []string{softhsmModule}}

// tokenIdentity loads the identity of a new SoftHSM2 token and returns it
// with its private key file.
func tokenIdentity(t *testing.T) (*Identity, string) {
	t.Helper()
	_, priv := softhsm.Token(t, 2048, true)
	id, err := LoadTokenIdentity(context.Background(), "pkcs11:"+priv, testModules)
	if err != nil {
		t.Fatal(err)
	}
	return id, priv
}

// An identity in a token wraps layer keys for itself and unwraps them
// through the token, and seals and opens manifests; another identity
// opens neither.
func TestTokenIdentityRoundTrip(t *testing.T) {
	id, _ := tokenIdentity(t)
	if !id.InToken() {
		t.Fatal("InToken = false")
	}
	if _, err := id.privatePEM(); err == nil {
		t.Fatal("a token identity exported its private key")
	}
	kr, err := NewKeyring(id, nil, WithPKCS11([]string{softhsmModule}, nil))
	if err != nil {
		t.Fatal(err)
	}
	plain := randomBytes(t, 20_000)
	_, desc := shroudEncrypt(t, kr, plain)
	if desc.Annotations[AnnotationKeys+"jwe"] == "" {
		t.Fatalf("no jwe wrapped key for the identity: %v", desc.Annotations)
	}
	opts, by, err := kr.UnwrapWith(desc.Annotations, nil)
	if err != nil || by != IdentityKey || opts.PlainDigest != digest.FromBytes(plain) {
		t.Fatalf("UnwrapWith = %v, %q, %v; want the identity to open it", opts.PlainDigest, by, err)
	}
	other, _ := testKeyring(t)
	if _, err := other.Unwrap(desc.Annotations); !errors.Is(err, ErrNoKey) {
		t.Fatalf("another identity unwrapped the token identity's layer: %v", err)
	}

	s := Seal{Repository: "team/app", ContentType: "application/vnd.oci.image.manifest.v1+json", Manifest: []byte(`{"schemaVersion":2}`)}
	sealed, err := id.Seal(s)
	if err != nil {
		t.Fatal(err)
	}
	got, err := id.Open(sealed)
	if err != nil || got.Repository != s.Repository || !bytes.Equal(got.Manifest, s.Manifest) {
		t.Fatalf("Open = %+v, %v", got, err)
	}
	if _, err := other.Identity().Open(sealed); !errors.Is(err, ErrForeignSeal) {
		t.Fatalf("another identity opened the token identity's seal: %v", err)
	}
	theirs, _ := other.Identity().Seal(s)
	if _, err := id.Open(theirs); !errors.Is(err, ErrForeignSeal) {
		t.Fatalf("the token identity opened another's seal: %v", err)
	}
}

// DeriveKey gives the same keys on every load of the same token key (the
// replicas' case), a key per purpose, and keys another identity does not
// derive.
func TestTokenIdentityDeriveStable(t *testing.T) {
	id, priv := tokenIdentity(t)
	again, err := LoadTokenIdentity(context.Background(), priv, testModules)
	if err != nil {
		t.Fatal(err)
	}
	if id.Fingerprint() != again.Fingerprint() {
		t.Fatal("two loads of one token key have different fingerprints")
	}
	a, err := id.DeriveKey(PurposeUploadState)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := again.DeriveKey(PurposeUploadState)
	if !bytes.Equal(a, b) || len(a) != 32 {
		t.Fatalf("DeriveKey differs across loads (%x, %x)", a, b)
	}
	c, _ := id.DeriveKey(PurposeManifestPointer)
	if bytes.Equal(a, c) {
		t.Fatal("two purposes derived one key")
	}
	other, _ := testKeyring(t)
	o, _ := other.Identity().DeriveKey(PurposeUploadState)
	if bytes.Equal(a, o) {
		t.Fatal("another identity derived the token identity's key")
	}
}

// A wrong PIN, a token or key pair that is not there, a module that is
// not allowed or not there: the load fails naming what is wrong, never
// the PIN.
func TestTokenIdentityStartupErrors(t *testing.T) {
	_, priv := softhsm.Token(t, 2048, true)
	orig, err := os.ReadFile(priv)
	if err != nil {
		t.Fatal(err)
	}
	variant := func(old, new string) string {
		p := filepath.Join(t.TempDir(), "key.yaml")
		if err := os.WriteFile(p, []byte(strings.Replace(string(orig), old, new, 1)), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, c := range []struct {
		name, file string
		mods       TokenModules
		want       []string
		pin        string
	}{
		{"wrong PIN", variant("pin-value=1234", "pin-value=9876"), testModules, []string{"PIN_INCORRECT", `token "shroud"`}, "9876"},
		{"no such token", variant("token=shroud", "token=absent"), testModules, []string{`token "absent"`}, "1234"},
		{"no such object", variant("object=ops", "object=absent"), testModules, []string{`object="absent"`, `token "shroud"`}, "1234"},
		{"module not allowed", priv, TokenModules{}, []string{"module", "allowed-module-paths"}, "1234"},
		{"no such module", variant(softhsmModule, "/nonexistent/libp11.so"), TokenModules{AllowedModulePaths: []string{"/nonexistent/libp11.so"}}, []string{"/nonexistent/libp11.so"}, "1234"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := LoadTokenIdentity(context.Background(), "pkcs11:"+c.file, c.mods)
			if err == nil {
				t.Fatal("loaded")
			}
			msg := err.Error()
			for _, w := range append(c.want, c.file) {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not name %q", msg, w)
				}
			}
			if strings.Contains(msg, c.pin) {
				t.Errorf("error %q holds the PIN", msg)
			}
		})
	}
}

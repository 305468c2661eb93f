package crypto

import (
	"bytes"
	"compress/flate"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"
	"github.com/opencontainers/go-digest"
)

func TestSealOpen(t *testing.T) {
	kr, _ := testKeyring(t)
	body := []byte(`{"schemaVersion":2}` + "\n")
	in := Seal{Repository: "team/app", ContentType: "application/vnd.oci.image.manifest.v1+json", Manifest: body,
		Layers: []SealedLayer{{PlainDigest: digest.FromString("p"), CipherDigest: digest.FromString("c"), Size: 1, HMAC: bytes.Repeat([]byte{7}, 32)}}}
	s, err := kr.Identity().Seal(in)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(s, "schemaVersion") || strings.Contains(s, "team/app") {
		t.Fatal("sealed manifest contains plaintext")
	}
	got, err := kr.Identity().Open(s)
	if err != nil || !bytes.Equal(got.Manifest, body) || got.ContentType != in.ContentType || got.Repository != "team/app" {
		t.Fatalf("Open = %+v %v", got, err)
	}
	if l, ok := got.Layer(digest.FromString("c")); !ok || l.PlainDigest != digest.FromString("p") || !bytes.Equal(l.HMAC, in.Layers[0].HMAC) {
		t.Fatalf("sealed layer pairing = %+v %v", l, ok)
	}
	other, _ := testKeyring(t)
	if _, err := other.Identity().Open(s); !errors.Is(err, ErrForeignSeal) {
		t.Fatalf("another identity opened the sealed manifest: %v", err)
	}
	// A 3.9 MB manifest of repetitive annotations seals small and opens
	// whole (go-jose's own zip would refuse to inflate it).
	large := append([]byte(`{"annotations":{"a":"`), bytes.Repeat([]byte("A"), 3_900_000)...)
	large = append(large, `"}}`...)
	s, err = kr.Identity().Seal(Seal{ContentType: "application/json", Manifest: large})
	if err != nil || len(s) > 100_000 {
		t.Fatalf("Seal(3.9 MB) = %d chars, %v", len(s), err)
	}
	if got, err := kr.Identity().Open(s); err != nil || !bytes.Equal(got.Manifest, large) {
		t.Fatalf("Open(large) = %d bytes, %v", len(got.Manifest), err)
	}
}

// The first seal format was only encrypted to the identity's public key:
// anyone could write one, claiming any original manifest. Such a seal, and
// one signed by another key but encrypted to shroud's, are foreign.
func TestForgedSealToThePublicIdentityIsForeign(t *testing.T) {
	kr, _ := testKeyring(t)
	id := kr.Identity()
	forged := Seal{Repository: "victim/app", ContentType: "application/vnd.oci.image.manifest.v1+json", Manifest: []byte(`{"schemaVersion":2,"forged":true}`)}
	raw, _ := json.Marshal(forged)
	encryptToPublic := func(payload []byte, headers map[jose.HeaderKey]any) string {
		opts := &jose.EncrypterOptions{ExtraHeaders: headers}
		enc, err := jose.NewEncrypter(jose.A256GCM, jose.Recipient{Algorithm: jose.ECDH_ES_A256KW, Key: id.private.Public()}, opts)
		if err != nil {
			t.Fatal(err)
		}
		obj, err := enc.Encrypt(payload)
		if err != nil {
			t.Fatal(err)
		}
		s, _ := obj.CompactSerialize()
		return s
	}
	// Format 1: the manifest itself, encrypted to the public key.
	v1 := encryptToPublic(raw, map[jose.HeaderKey]any{"cty": "application/vnd.oci.image.manifest.v1+json"})
	if _, err := id.Open(v1); !errors.Is(err, ErrForeignSeal) {
		t.Fatalf("an unsigned (format 1) seal opened: %v", err)
	}
	// Format 2 with the attacker's own signature.
	attacker, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	var z bytes.Buffer
	zw, _ := flate.NewWriter(&z, flate.BestCompression)
	zw.Write(raw)
	zw.Close()
	signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: attacker}, nil)
	jws, _ := signer.Sign(z.Bytes())
	signed, _ := jws.CompactSerialize()
	v2 := encryptToPublic([]byte(signed), map[jose.HeaderKey]any{"cty": "JWT", headerSeal: sealVersion})
	if s, err := id.Open(v2); !errors.Is(err, ErrForeignSeal) {
		t.Fatalf("a seal signed by another key opened as %+v, %v", s, err)
	}
}

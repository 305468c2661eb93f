package crypto

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/containers/ocicrypt"
	"github.com/containers/ocicrypt/blockcipher"
	"github.com/containers/ocicrypt/config"
	"github.com/containers/ocicrypt/keywrap/jwe"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// testKeyring returns a keyring with a fresh identity in a temp dir.
func testKeyring(t *testing.T) (*Keyring, string) {
	t.Helper()
	dir := t.TempDir()
	id, created, err := LoadOrCreateIdentity(dir)
	if err != nil || !created {
		t.Fatalf("LoadOrCreateIdentity: created=%v err=%v", created, err)
	}
	kr, err := NewKeyring(id, nil)
	if err != nil {
		t.Fatal(err)
	}
	return kr, dir
}

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// shroudEncrypt encrypts plain the way the push path does, in uneven chunks.
func shroudEncrypt(t *testing.T, kr *Keyring, plain []byte) ([]byte, ocispec.Descriptor) {
	t.Helper()
	key, err := NewLayerKey()
	if err != nil {
		t.Fatal(err)
	}
	enc, err := NewEncrypter(key)
	if err != nil {
		t.Fatal(err)
	}
	ct := bytes.Clone(plain)
	for off := 0; off < len(ct); off += 7777 {
		enc.XOR(ct[off:min(off+7777, len(ct))])
	}
	s := enc.Seal()
	if s.PlainDigest != digest.FromBytes(plain) || s.CipherDigest != digest.FromBytes(ct) || s.Size != int64(len(plain)) {
		t.Fatalf("Seal = %+v, want digests of plaintext and ciphertext", s)
	}
	ann, err := kr.WrapForIdentity(PrivateOptions{Key: key, PlainDigest: s.PlainDigest}, PublicOptions{HMAC: s.HMAC})
	if err != nil {
		t.Fatal(err)
	}
	return ct, ocispec.Descriptor{
		MediaType:   EncryptedMediaType(ocispec.MediaTypeImageLayerGzip),
		Digest:      s.CipherDigest,
		Size:        s.Size,
		Annotations: ann,
	}
}

func ocicryptDecryptConfig(t *testing.T, dir string) *config.DecryptConfig {
	t.Helper()
	priv, err := os.ReadFile(filepath.Join(dir, IdentityFile))
	if err != nil {
		t.Fatal(err)
	}
	cc, err := config.DecryptWithPrivKeys([][]byte{priv}, [][]byte{{}})
	if err != nil {
		t.Fatal(err)
	}
	return cc.DecryptConfig
}

// What shroud encrypts, ocicrypt (skopeo, containerd imgcrypt) decrypts.
func TestShroudToOcicrypt(t *testing.T) {
	kr, dir := testKeyring(t)
	for _, n := range []int{0, 1, 15, 16, 17, 100_000, 1 << 20} {
		plain := randomBytes(t, n)
		ct, desc := shroudEncrypt(t, kr, plain)
		dc := ocicryptDecryptConfig(t, dir)
		r, _, err := ocicrypt.DecryptLayer(dc, bytes.NewReader(ct), desc, false)
		if err != nil {
			t.Fatalf("n=%d: ocicrypt.DecryptLayer: %v", n, err)
		}
		got, err := io.ReadAll(r)
		if err != nil {
			t.Fatalf("n=%d: ocicrypt read: %v", n, err)
		}
		if !bytes.Equal(got, plain) {
			t.Fatalf("n=%d: ocicrypt decrypted %d bytes, want the %d plaintext bytes", n, len(got), n)
		}
		// ocicrypt's DecryptLayer does not return the digest it unwraps;
		// read the private options with its JWE key wrapper instead.
		wrapped, _ := base64.StdEncoding.DecodeString(desc.Annotations["org.opencontainers.image.enc.keys.jwe"])
		optsJSON, err := jwe.NewKeyWrapper().UnwrapKey(dc, wrapped)
		if err != nil {
			t.Fatal(err)
		}
		var priv blockcipher.PrivateLayerBlockCipherOptions
		if err := json.Unmarshal(optsJSON, &priv); err != nil || priv.Digest != digest.FromBytes(plain) {
			t.Fatalf("n=%d: private options digest %q (err %v), want the plaintext digest", n, priv.Digest, err)
		}
	}
}

// What ocicrypt (skopeo --encryption-key) encrypts, shroud decrypts.
func TestOcicryptToShroud(t *testing.T) {
	kr, _ := testKeyring(t)
	for _, n := range []int{0, 1, 4095, 4096, 4097, 300_000} {
		plain := randomBytes(t, n)
		cc, err := config.EncryptWithJwe([][]byte{kr.Identity().PublicPEM()})
		if err != nil {
			t.Fatal(err)
		}
		r, fin, err := ocicrypt.EncryptLayer(cc.EncryptConfig, bytes.NewReader(plain),
			ocispec.Descriptor{Digest: digest.FromBytes(plain), Size: int64(n)})
		if err != nil {
			t.Fatal(err)
		}
		ct, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		ann, err := fin()
		if err != nil {
			t.Fatal(err)
		}
		opts, err := kr.Unwrap(ann)
		if err != nil {
			t.Fatalf("Unwrap: %v", err)
		}
		pub, err := ParsePublicOptions(ann)
		if err != nil {
			t.Fatal(err)
		}
		dr, err := DecryptReader(bytes.NewReader(ct), opts.Key, pub.HMAC, opts.PlainDigest)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(dr)
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("n=%d: decrypted %d bytes, err %v; want the plaintext", n, len(got), err)
		}
	}
}

// A flipped ciphertext byte fails with ErrIntegrity, and the reader never
// hands out the whole blob.
func TestDecryptTamperedHoldsBackTail(t *testing.T) {
	kr, _ := testKeyring(t)
	plain := randomBytes(t, 200_000)
	ct, desc := shroudEncrypt(t, kr, plain)
	opts, err := kr.Unwrap(desc.Annotations)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ParsePublicOptions(desc.Annotations)
	if err != nil {
		t.Fatal(err)
	}
	for _, pos := range []int{0, 100_000, len(ct) - 1} {
		bad := bytes.Clone(ct)
		bad[pos] ^= 1
		dr, err := DecryptReader(bytes.NewReader(bad), opts.Key, pub.HMAC, opts.PlainDigest)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(dr)
		if !errors.Is(err, ErrIntegrity) {
			t.Fatalf("flip at %d: err = %v, want ErrIntegrity", pos, err)
		}
		if len(got) >= len(plain) {
			t.Fatalf("flip at %d: reader released %d of %d bytes before failing", pos, len(got), len(plain))
		}
	}
	// Right HMAC, wrong promised plaintext digest.
	dr, _ := DecryptReader(bytes.NewReader(ct), opts.Key, pub.HMAC, digest.FromString("other"))
	if _, err := io.ReadAll(dr); !errors.Is(err, ErrIntegrity) {
		t.Fatalf("wrong plaintext digest: err = %v, want ErrIntegrity", err)
	}
}

// The chunked WriteTo paths (io.Copy) give the same bytes as Read, and a
// tampered stream fails without its last bytes written.
func TestWriteToPaths(t *testing.T) {
	kr, _ := testKeyring(t)
	for _, n := range []int{0, 1, 4095, 4096, 4097, chunkSize - 1, chunkSize, chunkSize + 1, 3*chunkSize + 12345} {
		plain := randomBytes(t, n)
		key, _ := NewLayerKey()
		enc, _ := NewEncrypter(key)
		var ct bytes.Buffer
		if _, err := io.Copy(&ct, enc.Reader(bytes.NewReader(plain))); err != nil {
			t.Fatal(err)
		}
		s := enc.Seal()
		// Same as the in-place path.
		want, _ := NewEncrypter(key)
		cp := bytes.Clone(plain)
		want.XOR(cp)
		ws := want.Seal()
		if !bytes.Equal(ct.Bytes(), cp) || s.PlainDigest != ws.PlainDigest || s.CipherDigest != ws.CipherDigest || !bytes.Equal(s.HMAC, ws.HMAC) {
			t.Fatalf("n=%d: WriteTo encryption differs from XOR", n)
		}
		dr, _ := DecryptReader(bytes.NewReader(ct.Bytes()), key, s.HMAC, s.PlainDigest)
		var out bytes.Buffer
		if _, err := io.Copy(&out, dr); err != nil || !bytes.Equal(out.Bytes(), plain) {
			t.Fatalf("n=%d: WriteTo decryption: %v", n, err)
		}
		if n == 0 {
			continue
		}
		bad := bytes.Clone(ct.Bytes())
		bad[n/2] ^= 1
		dr, _ = DecryptReader(bytes.NewReader(bad), key, s.HMAC, s.PlainDigest)
		out.Reset()
		if _, err := io.Copy(&out, dr); !errors.Is(err, ErrIntegrity) || out.Len() >= n {
			t.Fatalf("n=%d: tampered WriteTo: err %v after %d of %d bytes", n, err, out.Len(), n)
		}
	}
	_ = kr
}

// Small reads (smaller than the held-back tail) still return every byte.
func TestDecryptSmallReads(t *testing.T) {
	kr, _ := testKeyring(t)
	plain := randomBytes(t, 50_001)
	ct, desc := shroudEncrypt(t, kr, plain)
	opts, _ := kr.Unwrap(desc.Annotations)
	pub, _ := ParsePublicOptions(desc.Annotations)
	dr, err := DecryptReader(bytes.NewReader(ct), opts.Key, pub.HMAC, opts.PlainDigest)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(io.LimitReader(&oneByteReader{dr}, 1<<30))
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("byte-at-a-time read: %d bytes, err %v", len(got), err)
	}
}

type oneByteReader struct{ r io.Reader }

func (o *oneByteReader) Read(p []byte) (int, error) { return o.r.Read(p[:min(len(p), 100)]) }

// A range decrypts from any offset, block-aligned or not.
func TestRangeReader(t *testing.T) {
	kr, _ := testKeyring(t)
	plain := randomBytes(t, 70_000)
	ct, desc := shroudEncrypt(t, kr, plain)
	opts, _ := kr.Unwrap(desc.Annotations)
	for _, off := range []int64{0, 1, 15, 16, 17, 4096, 69_999} {
		r, err := RangeReader(bytes.NewReader(ct[off:]), opts.Key, off)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(r)
		if !bytes.Equal(got, plain[off:]) {
			t.Fatalf("offset %d: wrong plaintext", off)
		}
	}
}

func TestCounterCarry(t *testing.T) {
	iv := []byte{0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	addCounter(iv, 2)
	want := []byte{0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1}
	if !bytes.Equal(iv, want) {
		t.Fatalf("addCounter carry: %x, want %x", iv, want)
	}
}

func TestUnwrapWithoutKeyNamesRecipients(t *testing.T) {
	kr, _ := testKeyring(t)
	other, _ := testKeyring(t)
	_, desc := shroudEncrypt(t, other, []byte("secret layer"))
	_, err := kr.Unwrap(desc.Annotations)
	if !errors.Is(err, ErrNoKey) {
		t.Fatalf("err = %v, want ErrNoKey", err)
	}
	want := "jwe recipients [ECDH-ES+A256KW kid " + other.Identity().Fingerprint() + "]"
	if !bytes.Contains([]byte(err.Error()), []byte(want)) {
		t.Fatalf("error does not name the recipient key: %v, want %q", err, want)
	}
}

func TestParseRecipientErrors(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	os.WriteFile(garbage, []byte("not a key"), 0o600)
	for _, spec := range []string{"jwe:" + garbage, "jwe:" + filepath.Join(dir, "missing"), "nope:x", "jwe", "pgp:" + garbage, "pkcs7:" + garbage, "pkcs11:x"} {
		if _, err := ParseRecipient(spec); err == nil {
			t.Errorf("ParseRecipient(%q) succeeded", spec)
		}
	}
	if _, err := ParseDecryptionKey(garbage); err == nil {
		t.Error("ParseDecryptionKey(garbage) succeeded")
	}
}

func TestMediaTypes(t *testing.T) {
	for in, want := range map[string]string{
		"application/vnd.oci.image.layer.v1.tar":                "application/vnd.oci.image.layer.v1.tar+encrypted",
		"application/vnd.oci.image.layer.v1.tar+gzip":           "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
		"application/vnd.oci.image.layer.v1.tar+zstd":           "application/vnd.oci.image.layer.v1.tar+zstd+encrypted",
		"application/vnd.docker.image.rootfs.diff.tar.gzip":     "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
		"application/x-custom":                                  "application/x-custom+encrypted",
		"application/vnd.oci.image.layer.v1.tar+gzip+encrypted": "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
	} {
		if got := EncryptedMediaType(in); got != want {
			t.Errorf("EncryptedMediaType(%s) = %s, want %s", in, got, want)
		}
	}
}

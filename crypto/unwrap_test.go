package crypto

import (
	"bytes"
	"compress/flate"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/containers/ocicrypt/config"
	keyproviderconfig "github.com/containers/ocicrypt/config/keyprovider-config"
	"github.com/containers/ocicrypt/crypto/pkcs11"
	"github.com/containers/ocicrypt/keywrap"
	"github.com/containers/ocicrypt/keywrap/keyprovider"
	pb "github.com/containers/ocicrypt/utils/keyprovider"
	"github.com/go-jose/go-jose/v4"
	"google.golang.org/grpc"

	"github.com/shroud-oci/shroud/internal/keyprovidertest"
	"github.com/shroud-oci/shroud/internal/softhsm"
	"github.com/shroud-oci/shroud/internal/testkeys"
)

// pubOpts is a valid pubopts annotation (any 32-byte HMAC).
func pubOpts(t *testing.T) string {
	t.Helper()
	a, err := PublicOptions{HMAC: make([]byte, 32)}.Annotation()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// countingProvider is the test key provider over gRPC (no TLS), counting
// the unwraps it is asked for and the connections it accepts; hang makes
// every unwrap wait until the caller gives up.
type countingProvider struct {
	keyprovidertest.Server
	unwraps, wraps atomic.Int32
	accepted       atomic.Int32
	hang           bool
}

func (p *countingProvider) WrapKey(ctx context.Context, in *pb.KeyProviderKeyWrapProtocolInput) (*pb.KeyProviderKeyWrapProtocolOutput, error) {
	p.wraps.Add(1)
	return p.Server.WrapKey(ctx, in)
}

func (p *countingProvider) UnWrapKey(ctx context.Context, in *pb.KeyProviderKeyWrapProtocolInput) (*pb.KeyProviderKeyWrapProtocolOutput, error) {
	p.unwraps.Add(1)
	if p.hang {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return p.Server.UnWrapKey(ctx, in)
}

type countingListener struct {
	net.Listener
	p *countingProvider
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.p.accepted.Add(1)
	}
	return c, err
}

func startCountingProvider(t *testing.T, hang bool) (keyproviderconfig.KeyProviderAttrs, *countingProvider) {
	t.Helper()
	p := &countingProvider{hang: hang}
	s := grpc.NewServer()
	pb.RegisterKeyProviderServiceServer(s, p)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(countingListener{ln, p})
	t.Cleanup(s.Stop)
	return keyproviderconfig.KeyProviderAttrs{Grpc: ln.Addr().String()}, p
}

func providerKeyring(t *testing.T, attrs keyproviderconfig.KeyProviderAttrs, opts ...KeyringOption) *Keyring {
	t.Helper()
	base, _ := testKeyring(t)
	kr, err := NewKeyring(base.Identity(), nil, append([]KeyringOption{WithKeyProviders(map[string]keyproviderconfig.KeyProviderAttrs{"kms": attrs})}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kr.Close() })
	return kr
}

// bogusProviderPart is a wrapped key the test provider fails to open.
func bogusProviderPart(i int) string {
	b, _ := json.Marshal(map[string]any{"kid": fmt.Sprint("k", i), "nonce": make([]byte, 12), "data": make([]byte, 32)})
	return b64(b)
}

// pgpBomb is an OpenPGP message to the entity's encryption key, as the
// registry can write it: its compressed data packet inflates to a literal
// data packet of the options followed by mib MiB of zeros. The raw deflate
// stream is built from one sync-flushed chunk of 1 MiB of zeros repeated,
// so 2 GiB take about 2 MiB and no time to make.
func pgpBomb(t *testing.T, to *openpgp.Entity, opts []byte, mib int) []byte {
	t.Helper()
	var lit bytes.Buffer
	lit.Write([]byte{0xC0 | 11, 0xFF}) // new-format literal data packet, 4-byte length
	binary.Write(&lit, binary.BigEndian, uint32(6+len(opts)+mib<<20))
	lit.Write([]byte{'b', 0, 0, 0, 0, 0}) // binary, no file name, no date
	lit.Write(opts)
	var z bytes.Buffer
	fw, _ := flate.NewWriter(&z, flate.BestCompression)
	zeros := make([]byte, 1<<20)
	chunk := func() []byte {
		fw.Write(zeros)
		fw.Flush()
		b := bytes.Clone(z.Bytes())
		z.Reset()
		return b
	}
	fw.Write(lit.Bytes())
	first, again := chunk(), chunk()
	if next := chunk(); !bytes.Equal(next, again) {
		t.Fatal("deflate does not repeat its chunks of zeros")
	}
	body := append([]byte{byte(packet.CompressionZIP)}, first...)
	for range mib - 1 {
		body = append(body, again...)
	}
	body = append(body, 0x01, 0x00, 0x00, 0xFF, 0xFF) // final empty stored block
	var compressed bytes.Buffer
	compressed.Write([]byte{0xC0 | 8, 0xFF}) // new-format compressed data packet
	binary.Write(&compressed, binary.BigEndian, uint32(len(body)))
	compressed.Write(body)

	enc, ok := to.EncryptionKey(time.Now())
	if !ok {
		t.Fatal("no encryption key")
	}
	key := make([]byte, 32)
	rand.Read(key)
	var msg bytes.Buffer
	if err := packet.SerializeEncryptedKey(&msg, enc.PublicKey, packet.CipherAES256, key, nil); err != nil {
		t.Fatal(err)
	}
	w, err := packet.SerializeSymmetricallyEncrypted(&msg, packet.CipherAES256, false, packet.CipherSuite{}, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(compressed.Bytes())
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return msg.Bytes()
}

// A PGP wrapped key the registry wrote to the configured PGP key: the
// options followed by 2 GiB of zeros, compressed to 2 MiB. Unwrapping it
// fails without inflating it.
func TestPGPWrappedKeyDecompressionBombIsBounded(t *testing.T) {
	dir := t.TempDir()
	pubFile, privFile, _ := testkeys.PGP(t, dir, "erin", true)
	dk, err := ParseDecryptionKey(privFile)
	if err != nil {
		t.Fatal(err)
	}
	base, _ := testKeyring(t)
	kr, err := NewKeyring(base.Identity(), []DecryptionKey{dk})
	if err != nil {
		t.Fatal(err)
	}
	armored, _ := os.ReadFile(pubFile)
	el, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(armored))
	if err != nil {
		t.Fatal(err)
	}
	const bomb = 2048 // MiB
	msg := pgpBomb(t, el[0], trialOptions(), bomb)
	ann := map[string]string{AnnotationKeys + "pgp": b64(msg), AnnotationPubOpts: pubOpts(t)}

	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	_, err = kr.Unwrap(ann)
	took := time.Since(start)
	runtime.ReadMemStats(&after)
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("%d MiB compressed into %d KiB: unwrap failed in %v (%v), allocating %.2f MiB, heap in use %+.2f MiB",
		bomb, len(msg)>>10, took, err, float64(allocated)/(1<<20), (float64(after.HeapInuse)-float64(before.HeapInuse))/(1<<20))
	if err == nil {
		t.Fatal("the bomb unwrapped")
	}
	// What it may allocate: the annotation decoded (2 MiB here), and little
	// more; nothing in proportion to the 2 GiB it inflates to.
	if allocated > 4<<20 {
		t.Fatalf("one unwrap allocated %d MiB: the wrapped key was inflated", allocated>>20)
	}
	if !strings.Contains(err.Error(), "pgp") {
		t.Errorf("err = %v, want one naming the pgp wrapped key", err)
	}
}

// The same message inflating to options of a normal size opens: the
// bomb's construction is sound, and compressed PGP keys still work.
func TestPGPWrappedKeyCompressedButSmallOpens(t *testing.T) {
	dir := t.TempDir()
	pubFile, privFile, _ := testkeys.PGP(t, dir, "erin", true)
	dk, _ := ParseDecryptionKey(privFile)
	base, _ := testKeyring(t)
	kr, err := NewKeyring(base.Identity(), []DecryptionKey{dk})
	if err != nil {
		t.Fatal(err)
	}
	armored, _ := os.ReadFile(pubFile)
	el, _ := openpgp.ReadArmoredKeyRing(bytes.NewReader(armored))
	// 1 MiB of zeros would still be too much: a message of the options
	// alone, compressed by go-crypto, is what a normal writer produces.
	sig, _ := el[0].PrimarySelfSignature()
	sig.PreferredCompression = []uint8{uint8(packet.CompressionZLIB)}
	var msg bytes.Buffer
	w, err := openpgp.Encrypt(&msg, el, nil, nil, &packet.Config{DefaultCompressionAlgo: packet.CompressionZLIB})
	if err != nil {
		t.Fatal(err)
	}
	w.Write(trialOptions())
	w.Close()
	ann := map[string]string{AnnotationKeys + "pgp": b64(msg.Bytes()), AnnotationPubOpts: pubOpts(t)}
	if _, err := kr.Unwrap(ann); err != nil {
		t.Fatalf("a compressed PGP wrapped key of normal size: %v", err)
	}
}

// The options an unwrap yields are bounded whatever the scheme: a JWE
// (plain, or deflated with "zip") or a key provider handing back more
// than MaxPrivateOptionsSize is refused, although the JSON is valid.
func TestOversizedUnwrappedOptionsAreRefused(t *testing.T) {
	kr, _ := testKeyring(t)
	big := append(trialOptions(), bytes.Repeat([]byte(" "), 200_000)...)
	idPub, err := withKeyID(kr.Identity().PublicPEM())
	if err != nil {
		t.Fatal(err)
	}
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(idPub); err != nil {
		t.Fatal(err)
	}
	for name, opts := range map[string]*jose.EncrypterOptions{"plain": nil, "zip": {Compression: jose.DEFLATE}} {
		t.Run("jwe "+name, func(t *testing.T) {
			enc, err := jose.NewMultiEncrypter(jose.A256GCM, []jose.Recipient{{Algorithm: jose.KeyAlgorithm(jwk.Algorithm), Key: jwk.Key}}, opts)
			if err != nil {
				t.Fatal(err)
			}
			obj, err := enc.Encrypt(big)
			if err != nil {
				t.Fatal(err)
			}
			ann := map[string]string{AnnotationKeys + "jwe": b64([]byte(obj.FullSerialize())), AnnotationPubOpts: pubOpts(t)}
			if _, err := kr.Unwrap(ann); err == nil {
				t.Fatalf("%d bytes of private options were accepted", len(big))
			}
		})
	}
	t.Run("provider", func(t *testing.T) {
		attrs, _ := startCountingProvider(t, false)
		pk := providerKeyring(t, attrs)
		b, err := keyprovider.NewKeyWrapper("kms", attrs).WrapKeys(&config.EncryptConfig{Parameters: map[string][][]byte{"kms": {[]byte("team")}}}, big)
		if err != nil {
			t.Fatal(err)
		}
		ann := map[string]string{AnnotationKeys + "provider.kms": b64(b), AnnotationPubOpts: pubOpts(t)}
		if _, err := pk.Unwrap(ann); err == nil {
			t.Fatalf("%d bytes of private options were accepted from a provider", len(big))
		}
	})
}

// 2,000 wrapped keys in one annotation: refused before any is tried, so
// the key provider is never called.
func TestThousandsOfWrappedKeysAreRefusedBeforeAnyIsTried(t *testing.T) {
	attrs, p := startCountingProvider(t, false)
	kr := providerKeyring(t, attrs)
	parts := make([]string, 2000)
	for i := range parts {
		parts[i] = bogusProviderPart(i)
	}
	ann := map[string]string{AnnotationKeys + "provider.kms": strings.Join(parts, ","), AnnotationPubOpts: pubOpts(t)}
	_, err := kr.Unwrap(ann)
	if n := p.unwraps.Load(); n != 0 {
		t.Fatalf("one unwrap called the key provider %d times", n)
	}
	if err == nil || !strings.Contains(err.Error(), fmt.Sprint(MaxWrappedKeys)) {
		t.Fatalf("err = %v, want one giving the limit of %d", err, MaxWrappedKeys)
	}
	// Spread over schemes, the parts count together.
	ann = map[string]string{AnnotationKeys + "provider.kms": strings.Join(parts[:MaxWrappedKeys/2+1], ","),
		AnnotationKeys + "jwe": strings.Repeat("eA==,", MaxWrappedKeys/2) + "eA==", AnnotationPubOpts: pubOpts(t)}
	if _, err := kr.Unwrap(ann); err == nil || p.unwraps.Load() != 0 {
		t.Fatalf("%d keys over two schemes: err = %v, %d provider calls", MaxWrappedKeys+2, err, p.unwraps.Load())
	}
}

// The same hostile annotation on every GET costs one provider call per
// minute, not one per GET.
func TestHostileProviderAnnotationIsTriedOncePerMinute(t *testing.T) {
	attrs, p := startCountingProvider(t, false)
	kr := providerKeyring(t, attrs)
	now := time.Now()
	kr.failed.now = func() time.Time { return now }
	ann := map[string]string{AnnotationKeys + "provider.kms": bogusProviderPart(1), AnnotationPubOpts: pubOpts(t)}
	for range 10 {
		if _, err := kr.Unwrap(ann); !errors.Is(err, ErrNoKey) {
			t.Fatalf("err = %v, want ErrNoKey", err)
		}
	}
	if n := p.unwraps.Load(); n != 1 {
		t.Fatalf("10 unwraps of one hostile annotation called the provider %d times, want 1", n)
	}
	now = now.Add(61 * time.Second)
	kr.Unwrap(ann)
	if n := p.unwraps.Load(); n != 2 {
		t.Fatalf("a minute later the provider was called %d times in all, want 2", n)
	}
}

// A key provider that never answers: the unwrap gives up after the
// provider timeout, for a command and for a gRPC service.
func TestHangingKeyProviderTimesOut(t *testing.T) {
	script := filepath.Join(t.TempDir(), "hang.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nexec sleep 60\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	grpcAttrs, _ := startCountingProvider(t, true)
	for name, attrs := range map[string]keyproviderconfig.KeyProviderAttrs{
		"cmd":  {Command: &keyproviderconfig.Command{Path: script}},
		"grpc": grpcAttrs,
	} {
		t.Run(name, func(t *testing.T) {
			kr := providerKeyring(t, attrs, WithProviderTimeout(300*time.Millisecond))
			ann := map[string]string{AnnotationKeys + "provider.kms": bogusProviderPart(1), AnnotationPubOpts: pubOpts(t)}
			done := make(chan error, 1)
			start := time.Now()
			go func() { _, err := kr.Unwrap(ann); done <- err }()
			select {
			case err := <-done:
				t.Logf("gave up after %v: %v", time.Since(start), err)
				if err == nil {
					t.Fatal("a hanging provider unwrapped")
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the unwrap still waits for the provider after 10s")
			}
		})
	}
}

// Every call to a gRPC key provider goes over one connection, kept.
func TestGRPCKeyProviderKeepsOneConnection(t *testing.T) {
	attrs, p := startCountingProvider(t, false)
	kr := providerKeyring(t, attrs)
	// The start-up check dials once; the server counts that connection
	// when its accept loop gets to it, which may be after NewKeyring
	// returned: wait for it, so that it is not counted as the calls'.
	for deadline := time.Now().Add(5 * time.Second); p.accepted.Load() < 1 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	before := p.accepted.Load() // the start-up check's
	rec, err := ParseRecipient("provider:kms:team-a")
	if err != nil {
		t.Fatal(err)
	}
	rs, err := kr.Recipients([]Recipient{rec})
	if err != nil {
		t.Fatal(err)
	}
	pub := PublicOptions{HMAC: make([]byte, 32)}
	for i := range 5 {
		opts := PrivateOptions{Key: LayerKey{Key: bytes.Repeat([]byte{byte(i)}, KeySize), Nonce: make([]byte, NonceSize)}}
		ann, err := kr.Wrap(opts, pub, rs)
		if err != nil {
			t.Fatal(err)
		}
		only := map[string]string{AnnotationKeys + "provider.kms": ann[AnnotationKeys+"provider.kms"], AnnotationPubOpts: ann[AnnotationPubOpts]}
		got, err := kr.Unwrap(only)
		if err != nil || !bytes.Equal(got.Key.Key, opts.Key.Key) {
			t.Fatalf("unwrap %d: %v", i, err)
		}
	}
	if n := p.accepted.Load() - before; n != 1 {
		t.Fatalf("11 provider calls opened %d connections, want 1", n)
	}
}

// blockingWrapper stands in for ocicrypt's PKCS#11 wrapper: its unwrap
// blocks (as a token's login would) until released, and counts its calls.
type blockingWrapper struct {
	keywrap.KeyWrapper
	entered chan struct{}
	release chan struct{}
	calls   atomic.Int32
}

func (w *blockingWrapper) UnwrapKey(dc *config.DecryptConfig, b []byte) ([]byte, error) {
	if w.calls.Add(1) == 1 {
		close(w.entered)
	}
	<-w.release
	return nil, errors.New("no such key in the token")
}

func replaceWrapper(t *testing.T, k *Keyring, id string, w keywrap.KeyWrapper) {
	t.Helper()
	for i := range k.wrappers {
		if k.wrappers[i].GetAnnotationID() == id {
			k.wrappers[i] = w
			return
		}
	}
	t.Fatalf("no %s wrapper", id)
}

// pkcs11Keyring is a keyring with a SoftHSM token's key as decryption key
// whose PKCS#11 wrapper is a blockingWrapper.
func pkcs11Keyring(t *testing.T) (*Keyring, *blockingWrapper) {
	t.Helper()
	_, priv := softhsm.Token(t, 2048, true)
	dk, err := ParseDecryptionKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	base, _ := testKeyring(t)
	kr, err := NewKeyring(base.Identity(), []DecryptionKey{dk}, WithPKCS11([]string{softhsmModule}, nil))
	if err != nil {
		t.Fatal(err)
	}
	w := &blockingWrapper{entered: make(chan struct{}), release: make(chan struct{})}
	for _, x := range kr.wrappers {
		if x.GetAnnotationID() == AnnotationKeys+"pkcs11" {
			w.KeyWrapper = x
		}
	}
	replaceWrapper(t, kr, AnnotationKeys+"pkcs11", w)
	return kr, w
}

func pkcs11Blob(n int) []byte {
	blob := pkcs11.Pkcs11Blob{}
	for range n {
		blob.Recipients = append(blob.Recipients, pkcs11.Pkcs11Recipient{Blob: b64(make([]byte, 256)), Hash: "sha1"})
	}
	b, _ := json.Marshal(blob)
	return b
}

// A hostile PKCS#11 annotation is being unwrapped (the token is slow, or
// the annotation lists many recipients): wrapping a layer key for the
// identity, which every blob commit does, does not wait for it, nor does
// wrapping for other schemes' recipients.
func TestPKCS11UnwrapDoesNotDelayWrapForIdentity(t *testing.T) {
	kr, w := pkcs11Keyring(t)
	released := false
	release := func() {
		if !released {
			released = true
			close(w.release)
		}
	}
	t.Cleanup(release)
	ann := map[string]string{AnnotationKeys + "pkcs11": b64(pkcs11Blob(1)), AnnotationPubOpts: pubOpts(t)}
	unwrapped := make(chan error, 1)
	go func() { _, err := kr.Unwrap(ann); unwrapped <- err }()
	select {
	case <-w.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the PKCS#11 unwrap was never reached")
	}

	dir := t.TempDir()
	pgpPub, _, _ := testkeys.PGP(t, dir, "frank", true)
	cert, _ := testkeys.Cert(t, dir, "grace", false)
	var recs []Recipient
	for _, spec := range []string{"pgp:" + pgpPub, "pkcs7:" + cert} {
		r, err := ParseRecipient(spec)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	rs, err := kr.Recipients(recs)
	if err != nil {
		t.Fatal(err)
	}
	opts := PrivateOptions{Key: LayerKey{Key: make([]byte, KeySize), Nonce: make([]byte, NonceSize)}}
	pub := PublicOptions{HMAC: make([]byte, 32)}
	for name, wrap := range map[string]func() (map[string]string, error){
		"identity":          func() (map[string]string, error) { return kr.WrapForIdentity(opts, pub) },
		"pgp and pkcs7 too": func() (map[string]string, error) { return kr.Wrap(opts, pub, rs) },
	} {
		done := make(chan error, 1)
		start := time.Now()
		go func() { _, err := wrap(); done <- err }()
		select {
		case err := <-done:
			t.Logf("wrap for %s took %v while a PKCS#11 unwrap was blocked", name, time.Since(start))
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("wrap for %s waited 3s for a PKCS#11 unwrap", name)
		}
	}
	release()
	if err := <-unwrapped; err == nil {
		t.Fatal("the blocked PKCS#11 unwrap succeeded")
	}
}

// One PKCS#11 wrapped key listing 60,000 recipients (each would be a
// module load and a login): refused without reaching the token.
func TestPKCS11AnnotationListingThousandsOfRecipientsIsRefused(t *testing.T) {
	kr, w := pkcs11Keyring(t)
	close(w.release)
	ann := map[string]string{AnnotationKeys + "pkcs11": b64(pkcs11Blob(60_000)), AnnotationPubOpts: pubOpts(t)}
	_, err := kr.Unwrap(ann)
	if n := w.calls.Load(); n != 0 {
		t.Fatalf("the PKCS#11 wrapper was called %d times for an annotation over the limit", n)
	}
	if err == nil || !strings.Contains(err.Error(), fmt.Sprint(MaxWrappedKeys)) {
		t.Fatalf("err = %v, want one giving the limit of %d", err, MaxWrappedKeys)
	}
}

// The confused deputy: the proxy opens a layer only with the keys a
// request may use. UnwrapWith tries those alone (a key provider nobody
// allowed is never called) and names the key that opened the layer.
func TestLayerOpensOnlyWithKeysTheCallerAllows(t *testing.T) {
	dir := t.TempDir()
	files := jweKeyFiles(t, dir)
	jwePub, jwePriv := files["rsa2-pem"][0], files["rsa2-pem"][1]
	pgpPub, pgpPriv, _ := testkeys.PGP(t, dir, "heidi", true)
	var dks []DecryptionKey
	for _, f := range []string{jwePriv, pgpPriv} {
		dk, err := ParseDecryptionKey(f)
		if err != nil {
			t.Fatal(err)
		}
		dks = append(dks, dk)
	}
	attrs, p := startCountingProvider(t, false)
	base, _ := testKeyring(t)
	kr, err := NewKeyring(base.Identity(), dks, WithKeyProviders(map[string]keyproviderconfig.KeyProviderAttrs{"kms": attrs}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kr.Close() })
	if got, want := kr.KeyNames(), []string{IdentityKey, jwePriv, pgpPriv, "provider:kms"}; !slices.Equal(got, want) {
		t.Fatalf("KeyNames = %q, want %q", got, want)
	}
	var recs []Recipient
	for _, spec := range []string{"jwe:" + jwePub, "pgp:" + pgpPub, "provider:kms:team"} {
		r, err := ParseRecipient(spec)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	rs, err := kr.Recipients(recs)
	if err != nil {
		t.Fatal(err)
	}
	opts := PrivateOptions{Key: LayerKey{Key: bytes.Repeat([]byte{7}, KeySize), Nonce: make([]byte, NonceSize)}}
	ann, err := kr.Wrap(opts, PublicOptions{HMAC: make([]byte, 32)}, rs)
	if err != nil {
		t.Fatal(err)
	}
	only := func(names ...string) func(string) bool {
		return func(n string) bool { return slices.Contains(names, n) }
	}
	calls := p.unwraps.Load()
	for _, c := range []struct {
		allow func(string) bool
		want  string
	}{
		{nil, IdentityKey},
		{only(IdentityKey), IdentityKey},
		{only(jwePriv), jwePriv},
		{only(pgpPriv), pgpPriv},
		{only("provider:kms"), "provider:kms"},
		{only(pgpPriv, "provider:kms"), pgpPriv},
	} {
		got, by, err := kr.UnwrapWith(ann, c.allow)
		if err != nil || by != c.want || !bytes.Equal(got.Key.Key, opts.Key.Key) {
			t.Errorf("UnwrapWith(allow %s) = %q, %v; want it opened by %s", c.want, by, err, c.want)
		}
	}
	if n := p.unwraps.Load() - calls; n != 1 {
		t.Errorf("the key provider was called %d times; only the one allow naming it should call it", n)
	}
	calls = p.unwraps.Load()
	if _, by, err := kr.UnwrapWith(ann, only("someone else")); !errors.Is(err, ErrNoKey) || by != "" {
		t.Errorf("with no key allowed: %q, %v; want ErrNoKey", by, err)
	}
	if _, err := kr.Rewrap(ann, rs, only("someone else")); !errors.Is(err, ErrNoKey) {
		t.Errorf("Rewrap with no key allowed: %v; want ErrNoKey", err)
	}
	if n := p.unwraps.Load() - calls; n != 0 {
		t.Errorf("a key provider no allow named was called %d times", n)
	}
	if by := kr.OpenedBy(ann); by != "shroud identity "+kr.Identity().Fingerprint() {
		t.Errorf("OpenedBy = %q", by)
	}
}

package proxy_test

import (
	"bytes"
	"encoding/json"
	"io"
	"io/fs"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/shroud-oci/shroud/cache"
	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/shroudtest"
	"github.com/shroud-oci/shroud/proxy"
)

// putUpstream stores body as repo:tag straight in the upstream (what a
// hostile registry does to its own storage).
func putUpstream(t *testing.T, up shroudtest.Upstream, repo, tag, mediaType string, body []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, up.URL+"/v2/"+repo+"/manifests/"+tag, bytes.NewReader(body))
	req.Header.Set("Content-Type", mediaType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("upstream PUT %s:%s: %d %s", repo, tag, resp.StatusCode, b)
	}
}

// ownerKeyring is what `shroud access approve --key` builds: the owner's
// key and a throwaway identity.
func ownerKeyring(t *testing.T, dk crypto.DecryptionKey) *crypto.Keyring {
	t.Helper()
	id, _, _ := crypto.LoadOrCreateIdentity(t.TempDir())
	return must[*crypto.Keyring](t)(crypto.NewKeyring(id, []crypto.DecryptionKey{dk}))
}

// The binding (dev.shroud.encrypt-only.binding) covers the repository and
// the layers' digests, not the layers' wrapped keys. A hostile upstream
// keeps team/app's bound manifest (same digests, same binding) but swaps
// the wrapped keys of its first layer for those of secret/db's first
// layer (same owner). The owner's `shroud access approve --key` for a
// request naming team/app alone unwraps what it is shown (secret/db's
// layer key), wraps it for the requester, and shroud appends it to
// team/app's manifest: the requester now holds secret/db's layer key, a
// repository it never asked for and no one approved.
func TestAttackUpstreamSwapsWrappedKeysUnderBinding(t *testing.T) {
	up := shroudtest.Distribution(t)
	owner, ownerDK := keyPair(t, "ec")
	requester, requesterDK := keyPair(t, "ec")
	s := shroudtest.Start(t, up, shroudtest.WithPolicy(
		shroudtest.Rule{Pattern: "team/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{owner}, EncryptOnly: true},
		shroudtest.Rule{Pattern: "secret/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{owner}, EncryptOnly: true},
	))
	secretImg := must[v1.Image](t)(random.Image(10_000, 1))
	for repo, img := range map[string]v1.Image{"team/app": must[v1.Image](t)(random.Image(10_000, 1)), "secret/db": secretImg} {
		if err := remote.Write(ref(t, s.Host(), repo+":1"), img); err != nil {
			t.Fatal(err)
		}
	}
	secretPlain := digest.Digest(must[v1.Hash](t)(must[[]v1.Layer](t)(secretImg.Layers())[0].Digest()).String())
	secret := upstreamManifest(t, up, "secret/db:1")

	// The hostile upstream: every tag of team/app that names the bound
	// manifest now names a copy with secret/db's wrapped keys.
	teamDesc := must[*remote.Descriptor](t)(remote.Get(ref(t, up.Host(), "team/app:1")))
	var m ocispec.Manifest
	json.Unmarshal(teamDesc.Manifest, &m)
	m.Layers[0].Annotations = maps.Clone(m.Layers[0].Annotations)
	maps.DeleteFunc(m.Layers[0].Annotations, func(k, _ string) bool { return strings.HasPrefix(k, "org.opencontainers.image.enc.") })
	maps.Copy(m.Layers[0].Annotations, crypto.EncAnnotations(secret.Layers[0].Annotations))
	evil := must[[]byte](t)(json.Marshal(m))
	for _, tag := range upstreamTags(t, up, "team/app") {
		d := must[*remote.Descriptor](t)(remote.Get(ref(t, up.Host(), "team/app:"+tag)))
		if d.Digest == teamDesc.Digest {
			putUpstream(t, up, "team/app", tag, string(teamDesc.MediaType), evil)
		}
	}

	// The owner's side of `shroud access approve --key`.
	layers := must[[]proxy.EncryptedLayer](t)(s.Handler.EncryptedLayers(t.Context(), "team/app"))
	kr := ownerKeyring(t, ownerDK)
	set := must[*crypto.Recipients](t)(must[*crypto.Recipients](t)(kr.Recipients([]crypto.Recipient{requester})).WithoutIdentity())
	var wraps []proxy.LayerWraps
	for _, l := range layers {
		opts, _, err := kr.UnwrapWith(l.Annotations, func(k string) bool { return k != crypto.IdentityKey })
		if err != nil {
			continue
		}
		pub := must[crypto.PublicOptions](t)(crypto.ParsePublicOptions(l.Annotations))
		ann := must[map[string]string](t)(kr.Wrap(opts, pub, set))
		w := map[string]string{}
		for k, v := range ann {
			if strings.HasPrefix(k, crypto.AnnotationKeys) {
				w[k] = v
			}
		}
		wraps = append(wraps, proxy.LayerWraps{CipherDigest: l.CipherDigest, PlainDigest: opts.PlainDigest, Annotations: w})
	}
	if _, err := s.Handler.AddWrappedKeys(t.Context(), "team/app", requester.KeyID(), wraps); err != nil {
		t.Fatal(err)
	}

	// The requester reads team/app (which it was granted) from the upstream.
	got := upstreamManifest(t, up, "team/app:1")
	rkr := ownerKeyring(t, requesterDK)
	for _, l := range got.Layers {
		opts, err := rkr.Unwrap(l.Annotations)
		if err != nil {
			continue
		}
		if opts.PlainDigest == secretPlain {
			t.Fatalf("an approval for team/app gave the requester the layer key of secret/db's layer %s (its ciphertext %s)", secretPlain, secret.Layers[0].Digest)
		}
	}
}

// putThrough PUTs a manifest through shroud, wanting 201; as mallory
// (her own credentials, which the upstream takes) when as says so.
func putThrough(t *testing.T, s shroudtest.Shroud, repo, tag, mediaType string, body []byte, as ...string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, s.URL+"/v2/"+repo+"/manifests/"+tag, bytes.NewReader(body))
	req.Header.Set("Content-Type", mediaType)
	if len(as) > 0 {
		req.SetBasicAuth(as[0], "pw")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Logf("PUT %s:%s through shroud: %d %s", repo, tag, resp.StatusCode, b)
	}
}

// getStatus GETs a blob and returns its status and body.
func getStatus(t *testing.T, base, repo string, d digest.Digest) (int, []byte) {
	t.Helper()
	resp, err := http.Get(base + "/v2/" + repo + "/blobs/" + d.String())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// Between a blob's upload and the manifest naming it, shroud keeps its
// layer key (pending), and opened it for any client's manifest of the
// repository that named the blob (now: only the uploader's): not only as a config (guarded by Layer and
// checkConfig), but as an "already encrypted" layer (storeAsPushed
// decrypts shroud's ciphertext and stores the plaintext upstream) and as
// a config larger than maxConfig (stored as pushed, never checked for a
// layer archive). Another client with push access to the encrypt-only
// repository names the victim's pending layer so, and the plaintext of a
// layer no recipient approved it for lands upstream, under its plaintext
// digest, where a pull through shroud (passthrough) serves it.
func TestAttackPendingLayerStoredInPlaintextByAnotherManifest(t *testing.T) {
	up := shroudtest.Distribution(t)
	owner, _ := keyPair(t, "ec")
	attacker, _ := keyPair(t, "ec")
	s := shroudtest.Start(t, up, shroudtest.WithPolicy(
		shroudtest.Rule{Pattern: "edge/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{owner}, EncryptOnly: true},
	))
	// The victim uploads two layers; its manifest has not come yet.
	small := must[v1.Layer](t)(random.Layer(20_000, "application/vnd.oci.image.layer.v1.tar+gzip"))
	big := must[v1.Layer](t)(random.Layer(5<<20, "application/vnd.oci.image.layer.v1.tar+gzip"))
	r := ref(t, s.Host(), "edge/app:1").Context()
	for _, l := range []v1.Layer{small, big} {
		if err := remote.WriteLayer(r, l); err != nil {
			t.Fatal(err)
		}
	}
	dSmall := digest.Digest(must[v1.Hash](t)(small.Digest()).String())
	dBig := digest.Digest(must[v1.Hash](t)(big.Digest()).String())
	sizeSmall := must[int64](t)(small.Size())
	sizeBig := must[int64](t)(big.Size())

	// The attacker, with push access, knows the digests (not the bytes).
	empty := static.NewLayer([]byte("{}"), "application/vnd.oci.empty.v1+json")
	if err := remote.WriteLayer(r, empty); err != nil {
		t.Fatal(err)
	}
	id, _, _ := crypto.LoadOrCreateIdentity(t.TempDir())
	akr := must[*crypto.Keyring](t)(crypto.NewKeyring(id, nil))
	aset := must[*crypto.Recipients](t)(must[*crypto.Recipients](t)(akr.Recipients([]crypto.Recipient{attacker})).WithoutIdentity())
	fake := must[map[string]string](t)(akr.Wrap(crypto.PrivateOptions{Key: must[crypto.LayerKey](t)(crypto.NewLayerKey()), PlainDigest: dSmall},
		crypto.PublicOptions{HMAC: bytes.Repeat([]byte{1}, 32)}, aset))
	cfg := ocispec.Descriptor{MediaType: "application/vnd.oci.empty.v1+json", Digest: digest.FromBytes([]byte("{}")), Size: 2}
	m1 := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: cfg, Layers: []ocispec.Descriptor{
		{MediaType: "application/vnd.oci.image.layer.v1.tar+gzip+encrypted", Digest: dSmall, Size: sizeSmall, Annotations: fake}}}
	m1.SchemaVersion = 2
	putThrough(t, s, "edge/app", "evil1", ocispec.MediaTypeImageManifest, must[[]byte](t)(json.Marshal(m1)), "mallory")
	m2 := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest,
		Config: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: dBig, Size: sizeBig}, Layers: []ocispec.Descriptor{}}
	m2.SchemaVersion = 2
	putThrough(t, s, "edge/app", "evil2", ocispec.MediaTypeImageManifest, must[[]byte](t)(json.Marshal(m2)), "mallory")

	for name, d := range map[string]digest.Digest{"as an encrypted layer": dSmall, "as a config over 4 MiB": dBig} {
		if code, b := getStatus(t, s.URL, "edge/app", d); code == http.StatusOK && digest.FromBytes(b) == d {
			t.Errorf("another client's pending layer %s, named %s, is served in plaintext through shroud (and stored so upstream)", d, name)
		}
	}
}

// Under an ordinary encrypt rule the "already encrypted" path has no
// Layer guard at all: a pusher names a layer of an image already stored
// (its digest is in every pull's manifest) with an encrypted media type
// and wrapped keys of its own, and shroud decrypts its ciphertext and
// stores the plaintext upstream. prepareConfig refuses exactly this for a
// config ("a layer is never stored in plaintext"), storeAsPushed does not.
func TestAttackStoredLayerUploadedInPlaintextAsPreEncrypted(t *testing.T) {
	up := shroudtest.Distribution(t)
	attacker, _ := keyPair(t, "ec")
	s := shroudtest.Start(t, up)
	img := must[v1.Image](t)(random.Image(20_000, 1))
	if err := remote.Write(ref(t, s.Host(), "team/app:1"), img); err != nil {
		t.Fatal(err)
	}
	l := must[[]v1.Layer](t)(img.Layers())[0]
	d := digest.Digest(must[v1.Hash](t)(l.Digest()).String())
	if code, _ := getStatus(t, up.URL, "team/app", d); code == http.StatusOK {
		t.Fatal("setup: the upstream holds the plaintext already")
	}
	id, _, _ := crypto.LoadOrCreateIdentity(t.TempDir())
	akr := must[*crypto.Keyring](t)(crypto.NewKeyring(id, nil))
	aset := must[*crypto.Recipients](t)(must[*crypto.Recipients](t)(akr.Recipients([]crypto.Recipient{attacker})).WithoutIdentity())
	fake := must[map[string]string](t)(akr.Wrap(crypto.PrivateOptions{Key: must[crypto.LayerKey](t)(crypto.NewLayerKey()), PlainDigest: d},
		crypto.PublicOptions{HMAC: bytes.Repeat([]byte{1}, 32)}, aset))
	m := must[*ocispec.Manifest](t)(func() (*ocispec.Manifest, error) {
		var m ocispec.Manifest
		return &m, json.Unmarshal(must[[]byte](t)(img.RawManifest()), &m)
	}())
	m.Layers[0].MediaType += "+encrypted"
	m.Layers[0].Annotations = fake
	putThrough(t, s, "team/app", "evil", string(m.MediaType), must[[]byte](t)(json.Marshal(m)))
	if code, b := getStatus(t, up.URL, "team/app", d); code == http.StatusOK && digest.FromBytes(b) == d {
		t.Fatalf("the upstream now holds layer %s in plaintext", d)
	}
}

// A cross-repository mount between repositories shroud lets share layers
// (?mount=&from=, as skopeo and docker send when copying from one
// repository to another) takes mount()'s first branch, which copies the
// source's mapping with forIdentity: for an encrypt-only source (or
// destination) that is wrong both ways. From an encrypt-only repository
// the identity opens nothing, so the mount fails with a 403 (DENIED, "no configured key can open this layer") instead of
// answering "upload it" (the ciphertext is mounted upstream already);
// into an encrypt-only repository from an ordinary one the mapping keeps
// a key wrapped for the identity (and a blob pointer is written for it),
// so the manifest then fails with MANIFEST_BLOB_UNKNOWN and the client
// must push again. mountOrigin (no from=) has encryptOnlyOrigin; this
// branch does not.
func TestAttackMountFromBreaksEncryptOnlyCopies(t *testing.T) {
	up := shroudtest.Distribution(t)
	owner, _ := keyPair(t, "ec")
	s := shroudtest.Start(t, up, shroudtest.WithPolicy(
		shroudtest.Rule{Pattern: "edge/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{owner}, EncryptOnly: true, DedupScope: crypto.DedupGlobal},
		shroudtest.Rule{Pattern: "plain/**", Action: crypto.Encrypt, DedupScope: crypto.DedupGlobal},
	))
	img := must[v1.Image](t)(random.Image(20_000, 1))
	for _, repo := range []string{"edge/a", "plain/n"} {
		if err := remote.Write(ref(t, s.Host(), repo+":1"), img); err != nil {
			t.Fatal(err)
		}
	}
	d := must[v1.Hash](t)(must[[]v1.Layer](t)(img.Layers())[0].Digest()).String()
	mount := func(to, from string) int {
		resp, err := http.Post(s.URL+"/v2/"+to+"/blobs/uploads/?mount="+d+"&from="+from, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := mount("edge/b", "edge/a"); code != http.StatusCreated && code != http.StatusAccepted {
		t.Errorf("mount from encrypt-only edge/a into edge/b: %d, want 201 or 202", code)
	}
	if code := mount("edge/c", "plain/n"); code == http.StatusCreated {
		// skopeo now pushes the manifest naming the mounted layer.
		if err := remote.Write(ref(t, s.Host(), "edge/c:1"), img); err != nil {
			t.Errorf("an image whose layer was mounted from plain/n into encrypt-only edge/c: %v", err)
		}
	}
}

// ownerWraps is the owner's side of `shroud access approve --key` for one
// repository: every listed layer's key wrapped anew for rec.
func ownerWraps(t *testing.T, s shroudtest.Shroud, repo string, ownerDK crypto.DecryptionKey, rec crypto.Recipient) ([]proxy.LayerWraps, error) {
	t.Helper()
	layers := must[[]proxy.EncryptedLayer](t)(s.Handler.EncryptedLayers(t.Context(), repo))
	kr := ownerKeyring(t, ownerDK)
	set := must[*crypto.Recipients](t)(must[*crypto.Recipients](t)(kr.Recipients([]crypto.Recipient{rec})).WithoutIdentity())
	var wraps []proxy.LayerWraps
	for _, l := range layers {
		opts, _, err := kr.UnwrapWith(l.Annotations, func(k string) bool { return k != crypto.IdentityKey })
		if err != nil {
			return nil, err
		}
		pub := must[crypto.PublicOptions](t)(crypto.ParsePublicOptions(l.Annotations))
		ann := must[map[string]string](t)(kr.Wrap(opts, pub, set))
		w := map[string]string{}
		for k, v := range ann {
			if strings.HasPrefix(k, crypto.AnnotationKeys) {
				w[k] = v
			}
		}
		wraps = append(wraps, proxy.LayerWraps{CipherDigest: l.CipherDigest, PlainDigest: opts.PlainDigest, Annotations: w})
	}
	return wraps, nil
}

// AddWrappedKeys skips a wrapped key only when the very same base64 value
// is there; ocicrypt's wraps are randomized, so every submission of an
// approval (the documented retry after a partial failure: "submit the
// approval again") appends another copy for the same key id. Past
// crypto.MaxWrappedKeys (64) wrapped keys shroud's keyring refuses the
// layer: the owner's `shroud access approve --key` then fails on it for
// every later request (and shroud inspect with the owner's key too).
func TestAttackRepeatedOwnerApprovalsLockOutOwner(t *testing.T) {
	up := shroudtest.Distribution(t)
	owner, ownerDK := keyPair(t, "ec")
	requester, _ := keyPair(t, "ec")
	s := shroudtest.Start(t, up, shroudtest.WithPolicy(
		shroudtest.Rule{Pattern: "team/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{owner}, EncryptOnly: true},
	))
	if err := remote.Write(ref(t, s.Host(), "team/app:1"), must[v1.Image](t)(random.Image(1000, 1))); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < crypto.MaxWrappedKeys+1; i++ {
		wraps, err := ownerWraps(t, s, "team/app", ownerDK, requester)
		if err != nil {
			t.Fatalf("after %d submissions of one approval for one key, the owner no longer opens team/app's layers: %v", i, err)
		}
		if _, err := s.Handler.AddWrappedKeys(t.Context(), "team/app", requester.KeyID(), wraps); err != nil {
			t.Fatal(err)
		}
	}
}

// The same theft needs no hostile upstream: a client that may push to
// team/app and read secret/db's ciphertext (what encrypt-only pulls serve)
// pushes through shroud a manifest whose one layer is secret/db's layer,
// "already encrypted": its ciphertext (uploaded as a blob, which shroud
// decrypts from its own encryption and stores as it came) and secret/db's
// wrapped keys. shroud stores it with a valid binding to team/app, since
// the binding covers whatever layers shroud stored, not whose keys they
// carry. The owner's next approval of a request for team/app (the
// pusher's own, say) wraps secret/db's layer key for the requester.
func TestAttackPusherSmugglesForeignLayerIntoBoundManifest(t *testing.T) {
	up := shroudtest.Distribution(t)
	owner, ownerDK := keyPair(t, "ec")
	mallory, malloryDK := keyPair(t, "ec")
	s := shroudtest.Start(t, up, shroudtest.WithPolicy(
		shroudtest.Rule{Pattern: "team/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{owner}, EncryptOnly: true},
		shroudtest.Rule{Pattern: "secret/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{owner}, EncryptOnly: true},
	))
	secretImg := must[v1.Image](t)(random.Image(10_000, 1))
	if err := remote.Write(ref(t, s.Host(), "secret/db:1"), secretImg); err != nil {
		t.Fatal(err)
	}
	secretPlain := digest.Digest(must[v1.Hash](t)(must[[]v1.Layer](t)(secretImg.Layers())[0].Digest()).String())

	// Mallory reads secret/db through shroud: the encrypted manifest and
	// the ciphertext.
	d := must[*remote.Descriptor](t)(remote.Get(ref(t, s.Host(), "secret/db:1")))
	var sm ocispec.Manifest
	json.Unmarshal(d.Manifest, &sm)
	sl := sm.Layers[0]
	cipher := fetchBlob(t, s.URL, "secret/db", sl.Digest, http.StatusOK)

	// ...and pushes it into team/app through shroud.
	r := ref(t, s.Host(), "team/app:1").Context()
	for _, l := range []v1.Layer{static.NewLayer(cipher, "application/octet-stream"), static.NewLayer([]byte("{}"), "application/vnd.oci.empty.v1+json")} {
		if err := remote.WriteLayer(r, l); err != nil {
			t.Fatal(err)
		}
	}
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest,
		Config: ocispec.Descriptor{MediaType: "application/vnd.oci.empty.v1+json", Digest: digest.FromBytes([]byte("{}")), Size: 2},
		Layers: []ocispec.Descriptor{{MediaType: sl.MediaType, Digest: sl.Digest, Size: sl.Size, Annotations: crypto.EncAnnotations(sl.Annotations)}}}
	m.SchemaVersion = 2
	putThrough(t, s, "team/app", "1", ocispec.MediaTypeImageManifest, must[[]byte](t)(json.Marshal(m)))

	// The owner approves mallory's request for team/app.
	wraps, err := ownerWraps(t, s, "team/app", ownerDK, mallory)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Handler.AddWrappedKeys(t.Context(), "team/app", mallory.KeyID(), wraps); err != nil {
		t.Fatal(err)
	}
	got := upstreamManifest(t, up, "team/app:1")
	mkr := ownerKeyring(t, malloryDK)
	for _, l := range got.Layers {
		if opts, err := mkr.Unwrap(l.Annotations); err == nil && opts.PlainDigest == secretPlain {
			t.Fatalf("an approval for team/app gave mallory the key of secret/db's layer %s", secretPlain)
		}
	}
}

// A pending layer key's expiry was a number inside the sealed value,
// compared with the clock its caller passed, under a key derived from
// identity.pem alone: a stolen data dir and a copy of the cache opened the
// key of every blob whose manifest never came, long after its expiry, with
// the thief's clock set back. The key of each window now also needs that
// window's random secret, which never reaches the data dir (the process
// keeps it, or the shared ledger for two windows) and is thrown away.
func TestAttackStolenDataDirOpensExpiredPendingKeys(t *testing.T) {
	up := shroudtest.Distribution(t)
	owner, _ := keyPair(t, "ec")
	store := must[*cache.LRU](t)(cache.NewLRU(0))
	s := shroudtest.Start(t, up, shroudtest.WithCache(store), shroudtest.WithPolicy(
		shroudtest.Rule{Pattern: "edge/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{owner}, EncryptOnly: true},
	))
	l := must[v1.Layer](t)(random.Layer(20_000, "application/vnd.oci.image.layer.v1.tar+gzip"))
	if err := remote.WriteLayer(ref(t, s.Host(), "edge/app:1").Context(), l); err != nil {
		t.Fatal(err)
	}
	d := digest.Digest(must[v1.Hash](t)(l.Digest()).String())
	b, ok, _ := store.Blob(t.Context(), "edge/app", d)
	if !ok || b.Pending == nil {
		t.Fatal("setup: no pending mapping")
	}
	// The thief: identity.pem, the cache entry, and the clock of the
	// upload.
	id := must[*crypto.Identity](t)(crypto.LoadIdentity(s.IdentityFile()))
	pk := must[*crypto.PendingKeys](t)(crypto.NewPendingKeys(must[[]byte](t)(id.DeriveKey(crypto.PurposePendingKey))))
	for _, guess := range [][]byte{nil, must[[]byte](t)(id.DeriveKey(crypto.PurposePendingKey)), must[[]byte](t)(id.DeriveKey(crypto.PurposeUploadState))} {
		for _, who := range []string{"", b.Repository} {
			if _, err := pk.Open(b.Pending, "edge/app", who, d, b.CipherDigest, time.Unix(0, 0), guess); err == nil {
				t.Fatal("identity.pem and the cache entry open a pending layer key")
			}
		}
	}
	walkData(t, s.DataDir, func(p string, data []byte) {
		for i := 0; i+32 <= len(data); i++ {
			if _, err := pk.Open(b.Pending, "edge/app", "", d, b.CipherDigest, time.Unix(0, 0), data[i:i+32]); err == nil {
				t.Fatalf("a secret in the data dir (%s) opens a pending layer key", p)
			}
		}
	})
}

func walkData(t *testing.T, dir string, f func(path string, data []byte)) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			if b, err := os.ReadFile(p); err == nil && len(b) < 1<<20 {
				f(p, b)
			}
		}
		return nil
	})
}

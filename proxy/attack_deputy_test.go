package proxy_test

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"

	"github.com/go-jose/go-jose/v4"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/shroudtest"
)

// atkDeputySetup pushes a two-layer image to private/app:1 through s and
// returns it with its layers' plaintext.
func atkDeputySetup(t *testing.T, s shroudtest.Shroud) (v1.Image, [][]byte) {
	t.Helper()
	l1, l2 := atkRandBytes(t, 30_000), atkRandBytes(t, 30_000)
	img := atkStaticImage(t, l1, l2)
	if err := remote.Write(ref(t, s.Host(), "private/app:1"), img); err != nil {
		t.Fatal(err)
	}
	return img, [][]byte{l1, l2}
}

// atkCopyUpstream copies an image straight at the upstream, as `crane copy`
// against the registry does: the encrypted manifest byte for byte, and its
// blobs.
func atkCopyUpstream(t *testing.T, up shroudtest.Upstream, from, to string) {
	t.Helper()
	src := must[*remote.Descriptor](t)(remote.Get(ref(t, up.Host(), from)))
	if err := remote.Write(ref(t, up.Host(), to), must[v1.Image](t)(src.Image())); err != nil {
		t.Fatal(err)
	}
	if got := atkUpstreamRaw(t, up, to); !bytes.Equal(got, src.Manifest) {
		t.Fatal("the upstream copy changed the manifest")
	}
}

// atkCheckDeniedPull asserts that neither the manifest nor any layer of img
// comes out of shroud for repo (with query q, e.g. "?ns=...").
func atkCheckDeniedPull(t *testing.T, c call, repo, tag, q string, img v1.Image, plains [][]byte) {
	t.Helper()
	raw := must[[]byte](t)(img.RawManifest())
	atkWantDenied(t, "GET "+repo+":"+tag, c.do("GET", "/v2/"+repo+"/manifests/"+tag+q, nil), raw)
	// By digest, "unknown here" is as good an answer as DENIED.
	if a := c.do("GET", "/v2/"+repo+"/manifests/"+must[v1.Hash](t)(img.Digest()).String()+q, nil); a.status != 404 {
		atkWantDenied(t, "GET "+repo+"@digest", a, raw)
	}
	for i, p := range plains {
		atkNoPlaintextBlob(t, "GET layer "+string(rune('0'+i))+" of "+repo, c.do("GET", "/v2/"+repo+"/blobs/"+digest.FromBytes(p).String()+q, nil), p)
	}
}

// atkCheckPull asserts img pulls back through s from repoRef as pushed.
func atkCheckPull(t *testing.T, s shroudtest.Shroud, repoRef string, img v1.Image, plains [][]byte) {
	t.Helper()
	desc, err := remote.Get(ref(t, s.Host(), repoRef))
	if err != nil {
		t.Fatalf("pull %s: %v", repoRef, err)
	}
	if desc.Digest != must[v1.Hash](t)(img.Digest()) || !bytes.Equal(desc.Manifest, must[[]byte](t)(img.RawManifest())) {
		t.Fatalf("pull %s: digest %s, want the original %s", repoRef, desc.Digest, must[v1.Hash](t)(img.Digest()))
	}
	got, err := atkReadLayers(must[v1.Image](t)(desc.Image()))
	if err != nil {
		t.Fatalf("pull %s: %v", repoRef, err)
	}
	for _, p := range plains {
		if !bytes.Equal(got[v1.Hash{Algorithm: "sha256", Hex: sha256Hex(p)}], p) {
			t.Fatalf("pull %s: a layer differs", repoRef)
		}
	}
}

// Attack: confused deputy by copy. An image shroud encrypted for
// private/app is copied straight at the upstream to public/app (by anyone
// who may write public/app there, or by the registry itself); a pull of
// public/app through shroud decrypts it, handing private/app's plaintext
// to whoever may read public/app. A user checks that the copy is DENIED
// and that no layer comes out in plaintext, unless public/app's rule
// accepts private/** (AcceptFrom), when the pull returns the original
// manifest digest.
func TestConfusedDeputyCopiedRepository(t *testing.T) {
	t.Run("copied", func(t *testing.T) {
		up := shroudtest.Distribution(t)
		s := shroudtest.Start(t, up)
		img, plains := atkDeputySetup(t, s)
		atkCheckPull(t, s, "private/app:1", img, plains)
		atkCopyUpstream(t, up, "private/app:1", "public/app:1")
		atkCheckDeniedPull(t, call{t, s.URL}, "public/app", "1", "", img, plains)
	})
	// Not an attack: promotion a rule accepts works.
	t.Run("accept-from", func(t *testing.T) {
		up := shroudtest.Distribution(t)
		s := shroudtest.Start(t, up, shroudtest.WithPolicy(
			shroudtest.Rule{Pattern: "public/**", Action: crypto.Encrypt, AcceptFrom: []string{"private/**"}},
			shroudtest.Rule{Pattern: "**", Action: crypto.Encrypt},
		))
		img, plains := atkDeputySetup(t, s)
		atkCopyUpstream(t, up, "private/app:1", "public/app:1")
		atkCheckPull(t, s, "public/app:1", img, plains)
	})
}

// Attack: confused deputy past a deny. public/** accepts images sealed
// for private/**, but private/** is now covered by a deny rule (shroud
// restarted with that policy, same identity): a copy to public/app must
// not launder the denied repository's images. A user checks the pull of
// the copy is DENIED and no layer comes out.
func TestConfusedDeputyAcceptFromDeniedSource(t *testing.T) {
	up := shroudtest.Distribution(t)
	s1 := shroudtest.Start(t, up)
	img, plains := atkDeputySetup(t, s1)
	atkCheckPull(t, s1, "private/app:1", img, plains)
	atkCopyUpstream(t, up, "private/app:1", "public/app:1")
	s2 := shroudtest.StartWithIdentity(t, up, s1.Keyring, s1.DataDir, shroudtest.WithPolicy(
		shroudtest.Rule{Pattern: "private/**", Action: crypto.Deny},
		shroudtest.Rule{Pattern: "public/**", Action: crypto.Encrypt, AcceptFrom: []string{"private/**"}},
		shroudtest.Rule{Pattern: "**", Action: crypto.Encrypt},
	))
	call{t, s2.URL}.do("GET", "/v2/private/app/manifests/1", nil).want(t, 403, "DENIED")
	atkCheckDeniedPull(t, call{t, s2.URL}, "public/app", "1", "", img, plains)
}

// Attack: confused deputy across origins. shroud mirrors other.example
// (?ns=other.example) from the same upstream registry as its default; an
// image sealed for the default registry's private/app is served when
// asked for other.example's private/app, although the two are different
// registries to the client. A user checks the mirror pull is DENIED and no
// layer comes out through the mirror.
func TestConfusedDeputyMirrorOrigin(t *testing.T) {
	up := shroudtest.Distribution(t)
	s := shroudtest.Start(t, up, shroudtest.WithMirror("other.example", up))
	img, plains := atkDeputySetup(t, s)
	atkCheckPull(t, s, "private/app:1", img, plains)
	atkCheckDeniedPull(t, call{t, s.URL}, "private/app", "1", "?ns=other.example", img, plains)
}

// Attack: a forged sealed original. The sealed original manifest is
// encrypted to shroud's PUBLIC key, which anyone may hold: straight at the
// upstream, the attacker replaces the dev.shroud.manifest.original
// annotation of a manifest shroud wrote with a JWE of their own
// (ECDH-ES+A256KW, A256GCM, no deflate), whose plaintext is a manifest of
// their choosing, and tags it. A user checks that a pull through shroud
// never returns the attacker's bytes (DENIED: the seal is not shroud's).
func TestForgedSealedOriginal(t *testing.T) {
	up := shroudtest.Distribution(t)
	s := shroudtest.Start(t, up)
	img, plains := atkDeputySetup(t, s)
	atkCheckPull(t, s, "private/app:1", img, plains)

	pubPEM := must[[]byte](t)(os.ReadFile(filepath.Join(s.DataDir, crypto.IdentityPublicFile)))
	blk, _ := pem.Decode(pubPEM)
	if blk == nil {
		t.Fatal("identity.pub.pem is not PEM")
	}
	pub := must[any](t)(x509.ParsePKIXPublicKey(blk.Bytes))

	// The attacker's manifest: the image's own, with a layer of theirs
	// announced and an annotation saying so.
	var m ocispec.Manifest
	if err := json.Unmarshal(must[[]byte](t)(img.RawManifest()), &m); err != nil {
		t.Fatal(err)
	}
	m.Annotations = map[string]string{"org.example.attacker": "this manifest was never pushed through shroud"}
	m.Layers = append(m.Layers, atkLayerDesc(atkRandBytes(t, 100)))
	attackerBytes := must[[]byte](t)(json.Marshal(m))

	for i, deflate := range []any{nil, false} {
		opts := (&jose.EncrypterOptions{}).WithContentType(jose.ContentType(ocispec.MediaTypeImageManifest))
		if deflate != nil {
			opts = opts.WithHeader("dev.shroud.deflate", deflate)
		}
		enc := must[jose.Encrypter](t)(jose.NewEncrypter(jose.A256GCM, jose.Recipient{Algorithm: jose.ECDH_ES_A256KW, Key: pub}, opts))
		obj := must[*jose.JSONWebEncryption](t)(enc.Encrypt(attackerBytes))
		forged := must[string](t)(obj.CompactSerialize())

		raw := atkRawJSON(t, atkUpstreamRaw(t, up, "private/app:1"))
		var ann map[string]string
		if err := json.Unmarshal(raw["annotations"], &ann); err != nil || ann[crypto.AnnotationOriginal] == "" {
			t.Fatalf("upstream manifest has no sealed original: %v", err)
		}
		ann[crypto.AnnotationOriginal] = forged
		raw["annotations"] = must[[]byte](t)(json.Marshal(ann))
		tag := "forged" + string(rune('0'+i))
		atkPutUpstream(t, up, "private/app", tag, ocispec.MediaTypeImageManifest, must[[]byte](t)(json.Marshal(raw)))

		c := call{t, s.URL}
		atkWantDenied(t, "GET private/app:"+tag+" (deflate header "+atkJsonString(deflate)+")", c.do("GET", "/v2/private/app/manifests/"+tag, nil), attackerBytes)
		byDigest := c.do("GET", "/v2/private/app/manifests/"+digest.FromBytes(attackerBytes).String(), nil)
		if bytes.Equal(byDigest.body, attackerBytes) {
			t.Errorf("GET by the attacker's digest returns the attacker's manifest (%d)", byDigest.status)
		}
	}
}

func atkJsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

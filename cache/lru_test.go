package cache

import (
	"context"
	"testing"

	"github.com/opencontainers/go-digest"
)

func TestLRUBoundAndCopies(t *testing.T) {
	ctx := context.Background()
	l, err := NewLRU(2)
	if err != nil {
		t.Fatal(err)
	}
	d := func(s string) digest.Digest { return digest.FromString(s) }
	ann := map[string]string{"k": "v"}
	l.PutBlob(ctx, Blob{Repository: "r", PlainDigest: d("a"), CipherDigest: d("A"), Annotations: ann})
	ann["k"] = "changed"
	b, ok, _ := l.Blob(ctx, "r", d("a"))
	if !ok || b.CipherDigest != d("A") || b.Annotations["k"] != "v" {
		t.Fatalf("Blob(a) = %+v %v, want the stored mapping unaffected by the caller's map", b, ok)
	}
	b.Annotations["k"] = "mutated"
	if b2, _, _ := l.Blob(ctx, "r", d("a")); b2.Annotations["k"] != "v" {
		t.Fatal("a returned mapping shares its annotations with the cache")
	}
	l.PutBlob(ctx, Blob{Repository: "r", PlainDigest: d("b")})
	l.PutBlob(ctx, Blob{Repository: "r", PlainDigest: d("c")})
	if _, ok, _ := l.Blob(ctx, "r", d("a")); ok {
		t.Fatal("LRU of 2 still holds the least recently used of 3 blobs")
	}

	m := Manifest{Repository: "r", PlainDigest: d("p"), UpstreamDigest: d("u")}
	l.PutManifest(ctx, m)
	if got, ok, _ := l.ManifestByUpstream(ctx, "r", d("u")); !ok || got != m {
		t.Fatalf("ManifestByUpstream = %+v %v", got, ok)
	}
	if _, ok, _ := l.Manifest(ctx, "other", d("p")); ok {
		t.Fatal("manifest mapping leaked across repositories")
	}
	l.DeleteManifest(ctx, "r", d("p"))
	if _, ok, _ := l.ManifestByUpstream(ctx, "r", d("u")); ok {
		t.Fatal("DeleteManifest left the upstream mapping")
	}
}

// A mapping answers for its own repository only, and only a bound one is
// an origin for mounts: an upstream that poisons one repository's mapping
// (by a crafted manifest shroud restored) reaches no other repository.
func TestBlobMappingsAreScopedByRepository(t *testing.T) {
	ctx := context.Background()
	l, err := NewLRU(0)
	if err != nil {
		t.Fatal(err)
	}
	p := digest.FromString("plain")
	l.PutBlob(ctx, Blob{Repository: "victim", PlainDigest: p, CipherDigest: digest.FromString("good"), Bound: true})
	l.PutBlob(ctx, Blob{Repository: "attacker", PlainDigest: p, CipherDigest: digest.FromString("evil")})
	if b, ok, _ := l.Blob(ctx, "victim", p); !ok || b.CipherDigest != digest.FromString("good") {
		t.Fatalf("victim's mapping = %+v %v: another repository's mapping replaced it", b, ok)
	}
	if b, ok, _ := l.Origin(ctx, p); !ok || b.CipherDigest != digest.FromString("good") || b.Repository != "victim" {
		t.Fatalf("Origin = %+v %v, want the bound mapping, never an unbound one", b, ok)
	}
	if _, ok, _ := l.Blob(ctx, "third", p); ok {
		t.Fatal("a repository without a mapping got another's")
	}
}

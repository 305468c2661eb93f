package cache

import (
	"context"
	"fmt"
	"strings"
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
	if b, ok, _ := l.Origin(ctx, "", p, nil); !ok || b.CipherDigest != digest.FromString("good") || b.Repository != "victim" {
		t.Fatalf("Origin = %+v %v, want the bound mapping, never an unbound one", b, ok)
	}
	if _, ok, _ := l.Blob(ctx, "third", p); ok {
		t.Fatal("a repository without a mapping got another's")
	}
}

// An origin is looked for within a scope: the most recent repository the
// filter accepts, among the last OriginsPerDigest that recorded one.
func TestOriginWithinScope(t *testing.T) {
	ctx := context.Background()
	l, err := NewLRU(0)
	if err != nil {
		t.Fatal(err)
	}
	p := digest.FromString("plain")
	l.PutBlob(ctx, Blob{Repository: "team-a/app", PlainDigest: p, CipherDigest: digest.FromString("a"), Bound: true})
	l.PutBlob(ctx, Blob{Repository: "team-b/app", PlainDigest: p, CipherDigest: digest.FromString("b"), Bound: true})
	inA := func(repo string) bool { return strings.HasPrefix(repo, "team-a/") }
	if b, ok, _ := l.Origin(ctx, "", p, inA); !ok || b.Repository != "team-a/app" {
		t.Fatalf("Origin within team-a = %+v %v, want team-a/app's though team-b/app's is newer", b, ok)
	}
	if b, ok, _ := l.Origin(ctx, "", p, nil); !ok || b.Repository != "team-b/app" {
		t.Fatalf("Origin anywhere = %+v %v, want the newest", b, ok)
	}
	if _, ok, _ := l.Origin(ctx, "", p, func(string) bool { return false }); ok {
		t.Fatal("Origin outside every scope found one")
	}
	for i := range OriginsPerDigest {
		l.PutBlob(ctx, Blob{Repository: fmt.Sprintf("other/%d", i), PlainDigest: p, CipherDigest: digest.FromString("o"), Bound: true})
	}
	if _, ok, _ := l.Origin(ctx, "", p, inA); ok {
		t.Fatalf("more than %d origins remembered for one digest", OriginsPerDigest)
	}
}

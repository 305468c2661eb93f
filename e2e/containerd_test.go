package e2e

import (
	"fmt"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/shroud-oci/shroud/internal/testkeys"
)

// pushThrough pushes img through shroud at addr as repo:tag and returns
// its (plaintext) digest.
func pushThrough(t *testing.T, addr, repo, tag string, img v1.Image) v1.Hash {
	t.Helper()
	ref, err := name.ParseReference(addr+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatalf("push %s through shroud: %v", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// containerd as a node runs it, with shroud as its mirror through
// hosts.toml: the node pulls, by tag and by digest, images whose layers
// the registry holds only encrypted, and unpacks the files that were
// pushed; the digests are the pushed ones. The origin's own server is a
// dead port, so containerd's fallback to it cannot pass the test: every
// byte came through shroud, which containerd asked with ?ns=<origin>.
func TestContainerdPullsThroughShroudAsItsMirror(t *testing.T) {
	bin := buildShroud(t)
	up := distributionV3(t)
	addr, _, _ := startShroud(t, bin, "--data-dir", t.TempDir(), "--upstream", up.URL)
	ctd := startContainerd(t)
	const origin = "registry.example.test"
	dead := "http://" + freeAddr(t)
	ctd.mirror(origin, dead, "http://"+addr, "")
	linux := v1.Platform{OS: "linux", Architecture: "amd64"}

	// By tag.
	img, content := fileImage(t, "srv/hello.txt", linux)
	pushed := pushThrough(t, addr, "team/app", "1", img)
	upstreamLayersEncrypted(t, up.Host()+"/team/app:1", img)
	ref := origin + "/team/app:1"
	ctd.pull(ref)
	if got := ctd.imageDigest(ref); got != pushed.String() {
		t.Errorf("containerd recorded %s for %s; shroud was pushed %s", got, ref, pushed)
	}
	if got := ctd.unpacked("srv/hello.txt"); got != content {
		t.Errorf("unpacked srv/hello.txt %q; pushed %q", got, content)
	}

	// By digest, an image no tag names any more through this origin.
	img2, content2 := fileImage(t, "srv/by-digest.txt", linux)
	d2 := pushThrough(t, addr, "team/app", "2", img2)
	ref2 := origin + "/team/app@" + d2.String()
	ctd.pull(ref2)
	if got := ctd.imageDigest(ref2); got != d2.String() {
		t.Errorf("containerd recorded %s for %s", got, ref2)
	}
	if got := ctd.unpacked("srv/by-digest.txt"); got != content2 {
		t.Errorf("unpacked srv/by-digest.txt %q; pushed %q", got, content2)
	}
}

// A multi-platform index through shroud: containerd pulls the index by
// tag and unpacks the image of the platform it asks for, each with its
// own files; the index digest is the pushed one.
func TestContainerdPullsAMultiPlatformIndexThroughShroud(t *testing.T) {
	bin := buildShroud(t)
	up := distributionV3(t)
	addr, _, _ := startShroud(t, bin, "--data-dir", t.TempDir(), "--upstream", up.URL)
	ctd := startContainerd(t)
	const origin = "registry.example.test"
	ctd.mirror(origin, "http://"+freeAddr(t), "http://"+addr, "")

	contents := map[string]string{}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	var images []v1.Image
	for _, p := range []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64"}} {
		img, content := fileImage(t, "srv/"+p.Architecture+".txt", p)
		images = append(images, img)
		contents[p.Architecture] = content
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
	}
	r, err := name.ParseReference(addr+"/team/multi:1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(r, idx); err != nil {
		t.Fatalf("push the index through shroud: %v", err)
	}
	want, _ := idx.Digest()
	for i, img := range images {
		d, _ := img.Digest()
		upstreamLayersEncrypted(t, fmt.Sprintf("%s/team/multi@%s", up.Host(), upstreamChild(t, up.Host()+"/team/multi:1", i, d)), img)
	}

	ref := origin + "/team/multi:1"
	for _, arch := range []string{"arm64", "amd64"} {
		ctd.pull(ref, "--platform", "linux/"+arch)
		if got := ctd.unpacked("srv/" + arch + ".txt"); got != contents[arch] {
			t.Errorf("unpacked srv/%s.txt %q; pushed %q", arch, got, contents[arch])
		}
	}
	if got := ctd.imageDigest(ref); got != want.String() {
		t.Errorf("containerd recorded %s for the index; pushed %s", got, want)
	}
}

// upstreamChild is the upstream digest of child i of the upstream's index
// at ref (shroud stores each child encrypted, under a digest of its own).
func upstreamChild(t *testing.T, ref string, i int, plain v1.Hash) string {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	ix, err := remote.Index(r)
	if err != nil {
		t.Fatalf("the upstream's index %s: %v", ref, err)
	}
	m, err := ix.IndexManifest()
	if err != nil || len(m.Manifests) <= i {
		t.Fatalf("the upstream's index %s: %v %+v", ref, err, m)
	}
	if m.Manifests[i].Digest == plain {
		t.Fatalf("the upstream's index names child %d by its plaintext digest %s", i, plain)
	}
	return m.Manifests[i].Digest.String()
}

// containerd with shroud as an HTTPS mirror, trusting shroud's CA by
// hosts.toml's ca: the pull works and unpacks; without the ca, it fails
// (containerd verifies the mirror like any registry).
func TestContainerdPullsThroughAnHTTPSMirror(t *testing.T) {
	bin := buildShroud(t)
	up := distributionV3(t)
	cert, key := testkeys.Cert(t, t.TempDir(), "shroud", true)
	addr, _, _ := startShroudWith(t, bin, "https", clientTrusting(t, cert),
		"--data-dir", t.TempDir(), "--upstream", up.URL, "--tls-cert", cert, "--tls-key", key)
	ctd := startContainerd(t)
	img, content := fileImage(t, "srv/tls.txt", v1.Platform{OS: "linux", Architecture: "amd64"})
	pushTLS(t, addr, cert, "team/secure", "1", img)
	upstreamLayersEncrypted(t, up.Host()+"/team/secure:1", img)

	const origin = "secure.example.test"
	ctd.mirror(origin, "http://"+freeAddr(t), "https://"+addr, "")
	if out, err := ctd.ctr("images", "pull", "--hosts-dir", ctd.hostsDir, "--snapshotter", "native", origin+"/team/secure:1"); err == nil {
		t.Fatalf("containerd pulled from an HTTPS mirror it has no CA for:\n%s", out)
	}
	ctd.mirror(origin, "http://"+freeAddr(t), "https://"+addr, cert)
	ctd.pull(origin + "/team/secure:1")
	if got := ctd.unpacked("srv/tls.txt"); got != content {
		t.Errorf("unpacked srv/tls.txt %q; pushed %q", got, content)
	}
	if d, _ := img.Digest(); ctd.imageDigest(origin+"/team/secure:1") != d.String() {
		t.Errorf("containerd recorded another digest than the pushed %s", d)
	}
}

// pushTLS pushes img as repo:tag to shroud serving HTTPS at addr, trusting
// cert.
func pushTLS(t *testing.T, addr, cert, repo, tag string, img v1.Image) {
	t.Helper()
	ref, err := name.ParseReference(addr + "/" + repo + ":" + tag)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, remote.WithTransport(clientTrusting(t, cert).Transport)); err != nil {
		t.Fatalf("push %s through shroud over HTTPS: %v", ref, err)
	}
}

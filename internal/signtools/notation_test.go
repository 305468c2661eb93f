package signtools

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/notaryproject/notation-core-go/signature/cose"
	"github.com/notaryproject/notation-core-go/signature/jws"
	"github.com/notaryproject/notation-core-go/testhelper"
	"github.com/notaryproject/notation-go"
	"github.com/notaryproject/notation-go/dir"
	notationregistry "github.com/notaryproject/notation-go/registry"
	"github.com/notaryproject/notation-go/signer"
	"github.com/notaryproject/notation-go/verifier"
	"github.com/notaryproject/notation-go/verifier/trustpolicy"
	"github.com/notaryproject/notation-go/verifier/truststore"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	orasremote "oras.land/oras-go/v2/registry/remote"

	"github.com/shroud-oci/shroud/internal/shroudtest"
)

// upstreams are the registries the notation test runs shroud in front
// of: distribution v3 (embedded, from its module), Debian's
// docker-registry 2.8 and go-containerregistry's registry with the
// referrers API.
var upstreams = []struct {
	name  string
	start func(*testing.T) shroudtest.Upstream
}{
	{"distribution-v3", func(t *testing.T) shroudtest.Upstream { return shroudtest.Distribution(t) }},
	{"docker-registry-2.8", debianRegistry},
	{"ggcr-referrers", func(t *testing.T) shroudtest.Upstream { return shroudtest.GGCR(t) }},
}

// notation-go signs an image's manifest by digest through shroud with a
// self-signed certificate (COSE and JWS envelopes), and verifies it
// through shroud, by digest, by its tag and by a second tag the same
// image was pushed under later, with a trust policy whose trust store
// holds that certificate; a trust store holding another certificate
// verifies nothing. The upstream's tags never name the plaintext digest.
func TestNotationThroughShroud(t *testing.T) {
	for _, kind := range upstreams {
		t.Run(kind.name, func(t *testing.T) {
			ctx := context.Background()
			up := kind.start(t)
			s := shroudtest.Start(t, up)

			img, err := random.Image(200_000, 2)
			if err != nil {
				t.Fatal(err)
			}
			d, err := img.Digest()
			if err != nil {
				t.Fatal(err)
			}
			digest := d.String()
			base := s.Host() + "/notation/app"
			push := func(tag string) {
				t.Helper()
				ref, err := name.ParseReference(base+":"+tag, name.Insecure)
				if err != nil {
					t.Fatal(err)
				}
				if err := remote.Write(ref, img); err != nil {
					t.Fatalf("pushing the image through shroud as %s: %v", tag, err)
				}
			}
			push("1")
			byDigest := base + "@" + digest

			cert := testhelper.GetRSASelfSignedSigningCertTuple("shroud notation test")
			sgn, err := signer.NewGenericSigner(cert.PrivateKey, []*x509.Certificate{cert.Cert})
			if err != nil {
				t.Fatal(err)
			}
			for _, mt := range []string{cose.MediaTypeEnvelope, jws.MediaTypeEnvelope} {
				desc, err := notation.Sign(ctx, sgn, repository(t, byDigest), notation.SignOptions{
					SignerSignOptions: notation.SignerSignOptions{SignatureMediaType: mt},
					ArtifactReference: byDigest,
				})
				if err != nil {
					t.Fatalf("notation sign (%s) through shroud: %v", mt, err)
				}
				if desc.Digest.String() != digest {
					t.Fatalf("notation signed %s, want the pushed digest %s", desc.Digest, digest)
				}
			}

			trusted := newVerifier(t, cert.Cert)
			// verify resolves ref through shroud (as the notation
			// command does: notation verifies digests, not tags) and
			// verifies what it names.
			verify := func(ref string) {
				t.Helper()
				if !strings.Contains(ref, "@") {
					resolved := ocispecDescriptor(t, ref).Digest.String()
					if resolved != digest {
						t.Fatalf("%s resolves through shroud to %s, want %s", ref, resolved, digest)
					}
					ref = base + "@" + resolved
				}
				desc, outcomes, err := notation.Verify(ctx, trusted, repository(t, ref), notation.VerifyOptions{ArtifactReference: ref, MaxSignatureAttempts: 10})
				if err != nil {
					t.Fatalf("notation verify %s through shroud: %v", ref, err)
				}
				if desc.Digest.String() != digest {
					t.Fatalf("notation verified %s for %s, want %s", desc.Digest, ref, digest)
				}
				if len(outcomes) == 0 || outcomes[0].Error != nil {
					t.Fatalf("notation verify %s: outcomes %+v", ref, outcomes)
				}
			}
			verify(byDigest)
			verify(base + ":1")

			// Every signature is listed, with its envelope type.
			var sigs []string
			err = repository(t, byDigest).ListSignatures(ctx, ocispecDescriptor(t, byDigest), func(ds []ocispec.Descriptor) error {
				for _, x := range ds {
					sigs = append(sigs, x.ArtifactType+" "+x.Digest.String())
				}
				return nil
			})
			if err != nil || len(sigs) != 2 {
				t.Fatalf("signatures of %s through shroud: %v, err %v; want the 2 pushed", digest, sigs, err)
			}

			// The same image pushed again under another tag: its
			// signatures still verify, by the new tag and the old one.
			push("2")
			verify(base + ":2")
			verify(base + ":1")

			// A trust store holding an unrelated certificate verifies
			// nothing.
			other := testhelper.GetRSASelfSignedSigningCertTuple("shroud notation test")
			_, outcomes, err := notation.Verify(ctx, newVerifier(t, other.Cert), repository(t, byDigest), notation.VerifyOptions{ArtifactReference: byDigest, MaxSignatureAttempts: 10})
			if err == nil {
				t.Fatalf("notation verify with an unrelated certificate passed: %+v", outcomes)
			}
			t.Logf("with an unrelated certificate, as expected: %v", err)

			noPlaintextDigestTags(t, up, "notation/app", digest)
		})
	}
}

// repository is notation's view of ref's repository through shroud, in
// plain HTTP.
func repository(t *testing.T, ref string) notationregistry.Repository {
	t.Helper()
	r, err := orasremote.NewRepository(ref)
	if err != nil {
		t.Fatal(err)
	}
	r.PlainHTTP = true
	return notationregistry.NewRepository(r)
}

// ocispecDescriptor resolves ref through shroud.
func ocispecDescriptor(t *testing.T, ref string) ocispec.Descriptor {
	t.Helper()
	desc, err := repository(t, ref).Resolve(context.Background(), ref)
	if err != nil {
		t.Fatalf("resolving %s through shroud: %v", ref, err)
	}
	return desc
}

// newVerifier is a notation verifier whose one trust policy (strict, any
// registry, any identity) trusts cert alone, from a trust store of its
// own.
func newVerifier(t *testing.T, cert *x509.Certificate) notation.Verifier {
	t.Helper()
	root := t.TempDir()
	store := filepath.Join(root, dir.X509TrustStoreDir("ca", "shroud-test"))
	if err := os.MkdirAll(store, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(store, "cert.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	policy := trustpolicy.Document{
		Version: "1.0",
		TrustPolicies: []trustpolicy.TrustPolicy{{
			Name:                  "shroud-test",
			RegistryScopes:        []string{"*"},
			SignatureVerification: trustpolicy.SignatureVerification{VerificationLevel: trustpolicy.LevelStrict.Name},
			TrustStores:           []string{"ca:shroud-test"},
			TrustedIdentities:     []string{"*"},
		}},
	}
	v, err := verifier.New(&policy, truststore.NewX509TrustStore(dir.NewSysFS(root)), nil)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

var digestTag = regexp.MustCompile(`sha256-[0-9a-f]{64}`)

// noPlaintextDigestTags fails the test if any tag of repo, read straight
// from the upstream, has the form sha256-<hex> or holds the hex of the
// plaintext digest: the registry must not learn what was signed.
func noPlaintextDigestTags(t *testing.T, up shroudtest.Upstream, repo string, digests ...string) {
	t.Helper()
	r, err := name.NewRepository(up.Host()+"/"+repo, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	tags, err := remote.List(r)
	if err != nil {
		t.Fatalf("listing the upstream's tags of %s: %v", repo, err)
	}
	for _, tag := range tags {
		if digestTag.MatchString(tag) {
			t.Errorf("upstream tag %s:%s names a digest", repo, tag)
		}
		for _, d := range digests {
			if hex := strings.TrimPrefix(d, "sha256:"); strings.Contains(tag, hex) {
				t.Errorf("upstream tag %s:%s holds the plaintext digest %s", repo, tag, d)
			}
		}
	}
}

// debianRegistry runs Debian's docker-registry (distribution 2.8) on a
// free port, storing in a temporary dir.
func debianRegistry(t *testing.T) shroudtest.Upstream {
	t.Helper()
	const bin = "/usr/bin/docker-registry"
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s is not installed (apt-get install docker-registry; .ci/run does): %v", bin, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
  secret: signtools-secret
`, filepath.Join(dir, "storage"), addr)), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	cmd := exec.Command(bin, "serve", cfg)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get("http://" + addr + "/v2/"); err == nil {
			resp.Body.Close()
			return shroudtest.Upstream{Name: "docker-registry-2.8", URL: "http://" + addr, Dir: filepath.Join(dir, "storage")}
		}
	}
	t.Fatalf("docker-registry did not start:\n%s", logs.String())
	return shroudtest.Upstream{}
}

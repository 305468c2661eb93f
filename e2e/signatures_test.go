package e2e

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/shroud-oci/shroud/internal/shroudtest"
)

// oras through shroud, in front of each upstream (distribution v3 and
// docker-registry 2.8 without the referrers API, go-containerregistry's
// registry with it): an artifact pushed with its artifact type, two
// referrers of other types attached to it; discover lists both, filters
// by type, pull gets a referrer's bytes back; after a second tag and a
// recursive copy to a third, all three list the same referrers, by the
// same digests; pushing and copying the same artifact again changes
// nothing. The upstream's tags never name a plaintext digest.
func TestOrasReferrersThroughShroud(t *testing.T) {
	const (
		artifactType = "application/vnd.shroud.test.artifact"
		sbomType     = "application/vnd.shroud.test.sbom"
		sigType      = "application/vnd.shroud.test.signature"
		created      = "org.opencontainers.image.created=2026-01-01T00:00:00Z"
	)
	for _, kind := range upstreamKinds {
		t.Run(kind.name, func(t *testing.T) {
			up := kind.start(t)
			s := shroudtest.Start(t, up)
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, "artifact.txt"), "the artifact shroud encrypts\n")
			writeFile(t, filepath.Join(dir, "sbom.json"), `{"sbom":"of the artifact"}`+"\n")
			writeFile(t, filepath.Join(dir, "sig.txt"), "a signature of the artifact\n")
			base := s.Host() + "/oras/art"

			push := func() orasDescriptor {
				return orasJSON(t, dir, "push", "--artifact-type", artifactType, "-a", created, base+":1", "artifact.txt:text/plain")
			}
			pushed := push()
			subject := pushed.Digest
			if pushed.ArtifactType != artifactType {
				t.Fatalf("oras push printed artifact type %q, want %q", pushed.ArtifactType, artifactType)
			}
			sbom := orasJSON(t, dir, "attach", "--artifact-type", sbomType, "-a", created, base+":1", "sbom.json:application/json")
			sig := orasJSON(t, dir, "attach", "--artifact-type", sigType, "-a", created, base+":1", "sig.txt:text/plain")
			want := []string{sbom.Digest + " " + sbomType, sig.Digest + " " + sigType}
			slices.Sort(want)

			check := func(ref string) {
				t.Helper()
				got, refs := discover(t, dir, ref)
				if got != subject {
					t.Errorf("oras discover %s: subject %s, want %s", ref, got, subject)
				}
				if !slices.Equal(refs, want) {
					t.Errorf("oras discover %s lists %v, want %v", ref, refs, want)
				}
			}
			check(base + ":1")
			check(base + "@" + subject)

			// Filtered by artifact type: one each.
			for _, f := range []struct{ typ, line string }{{sbomType, sbom.Digest + " " + sbomType}, {sigType, sig.Digest + " " + sigType}} {
				if _, refs := discover(t, dir, base+":1", "--artifact-type", f.typ); !slices.Equal(refs, []string{f.line}) {
					t.Errorf("oras discover --artifact-type %s lists %v, want [%s]", f.typ, refs, f.line)
				}
			}

			// A referrer pulled by digest, and the artifact by tag: the
			// bytes pushed.
			for _, p := range []struct{ ref, file string }{{base + "@" + sbom.Digest, "sbom.json"}, {base + ":1", "artifact.txt"}} {
				out := t.TempDir()
				oras(t, dir, "pull", "-o", out, p.ref)
				got, err := os.ReadFile(filepath.Join(out, p.file))
				if err != nil {
					t.Fatalf("oras pull %s wrote no %s: %v", p.ref, p.file, err)
				}
				if wantb, _ := os.ReadFile(filepath.Join(dir, p.file)); string(got) != string(wantb) {
					t.Errorf("oras pull %s: %s holds %q, want %q", p.ref, p.file, got, wantb)
				}
			}

			// A second tag, and a recursive copy to a third: the same
			// subject and the same referrers through each.
			oras(t, dir, "tag", base+":1", "second")
			oras(t, dir, "cp", "-r", base+":1", base+":copied")
			for _, tag := range []string{"1", "second", "copied"} {
				check(base + ":" + tag)
			}

			// The same artifact pushed again, and copied again: nothing
			// changes.
			if again := push(); again.Digest != subject {
				t.Errorf("pushing the same artifact again gave %s, first %s", again.Digest, subject)
			}
			oras(t, dir, "cp", "-r", base+":1", base+":copied")
			for _, tag := range []string{"1", "second", "copied"} {
				check(base + ":" + tag)
			}

			noDigestTagsUpstream(t, up, "oras/art", subject, sbom.Digest, sig.Digest)
		})
	}
}

// cosign (key-based, offline: no transparency log) through shroud in
// front of each upstream, with each of its ways of storing signatures:
// the default tag scheme (sha256-<hex>.sig and .att tags, which shroud
// stores under keyed names) and the OCI 1.1 referrers (experimental in
// cosign v2, and for signatures only: its attest always uses tags). An image pushed with crane is signed and attested; both
// verify, by tag and by digest; after the same image is pushed again
// under another tag, both verify through the new tag and the old one; a
// key that did not sign verifies nothing. The upstream's tags never name
// the image's digest.
func TestCosignThroughShroud(t *testing.T) {
	keys := t.TempDir()
	const password = "shroud-e2e"
	keyEnv := signToolEnv(t, "COSIGN_PASSWORD="+password)
	cosignRun(t, keys, keyEnv, "generate-key-pair")
	cosignRun(t, keys, keyEnv, "generate-key-pair", "--output-key-prefix", "other")
	for _, f := range []string{"cosign.key", "cosign.pub", "other.key", "other.pub"} {
		if _, err := os.Stat(filepath.Join(keys, f)); err != nil {
			t.Fatalf("cosign generate-key-pair wrote no %s: %v", f, err)
		}
	}
	// An empty trusted root: key-based verification needs none, and
	// without one cosign asks sigstore's TUF repository for it (there is
	// no network here).
	trustedRoot := filepath.Join(keys, "trusted_root.json")
	writeFile(t, trustedRoot, `{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1"}`)
	predicate := filepath.Join(keys, "predicate.json")
	writeFile(t, predicate, `{"shroud":"e2e attestation","n":1}`)

	img, err := random.Image(300_000, 2)
	if err != nil {
		t.Fatal(err)
	}
	tarPath := filepath.Join(t.TempDir(), "img.tar")
	if err := tarball.WriteToFile(tarPath, name.MustParseReference("example/signed:1"), img); err != nil {
		t.Fatal(err)
	}
	digest := digestOf(t, img)

	modes := []struct {
		name        string
		env         []string
		signFlags   []string
		verifyFlags []string
	}{
		{"tag-scheme", nil, nil, nil},
		{"oci-1-1", []string{"COSIGN_EXPERIMENTAL=1"}, []string{"--registry-referrers-mode=oci-1-1"}, []string{"--experimental-oci11"}},
	}
	for _, kind := range upstreamKinds {
		t.Run(kind.name, func(t *testing.T) {
			up := kind.start(t)
			s := shroudtest.Start(t, up)
			for _, mode := range modes {
				t.Run(mode.name, func(t *testing.T) {
					env := signToolEnv(t, append([]string{"COSIGN_PASSWORD=" + password}, mode.env...)...)
					repo := "cosign/" + mode.name
					base := s.Host() + "/" + repo
					crane(t, "push", tarPath, base+":1")
					if got := crane(t, "digest", base+":1"); got != digest {
						t.Fatalf("crane push through shroud: digest %s, want %s", got, digest)
					}
					registryFlags := []string{"--allow-insecure-registry", "--allow-http-registry"}
					sign := append(append([]string{"sign", "--key", filepath.Join(keys, "cosign.key"), "--tlog-upload=false", "--yes"}, registryFlags...), mode.signFlags...)
					cosignRun(t, keys, env, append(sign, base+"@"+digest)...)
					// cosign v2's attest has no referrers mode: its
					// attestations take the tag scheme in both modes.
					attest := append([]string{"attest", "--key", filepath.Join(keys, "cosign.key"), "--tlog-upload=false", "--yes",
						"--predicate", predicate, "--type", "custom"}, registryFlags...)
					cosignRun(t, keys, env, append(attest, base+"@"+digest)...)

					if mode.name == "oci-1-1" {
						// The signature is a referrer of the image,
						// through shroud's referrers API.
						var sigs []string
						for _, r := range orasJSON(t, keys, "discover", base+"@"+digest).Referrers {
							if r.ArtifactType == cosignSigArtifactType {
								sigs = append(sigs, r.Digest)
							}
						}
						if len(sigs) != 1 {
							t.Errorf("oras discover %s@%s: cosign signatures %v, want one", base, digest, sigs)
						}
					}

					verifyFlags := append(append([]string{"--insecure-ignore-tlog=true", "--trusted-root", trustedRoot}, registryFlags...), mode.verifyFlags...)
					verify := func(ref, key string) error {
						t.Helper()
						out, errb, err := runTool(t, keys, env, tool("cosign"), append(append([]string{"verify", "--key", key}, verifyFlags...), ref)...)
						if err != nil {
							return &toolError{err, out + errb}
						}
						if !strings.Contains(out, `"docker-manifest-digest":"`+digest+`"`) {
							t.Fatalf("cosign verify %s: its payload names no %s:\n%s", ref, digest, out)
						}
						return nil
					}
					verifyAttestation := func(ref string) {
						t.Helper()
						out := cosignRun(t, keys, env, append(append([]string{"verify-attestation", "--key", filepath.Join(keys, "cosign.pub"), "--type", "custom"}, verifyFlags...), ref)...)
						checkAttestation(t, ref, out, digest)
					}
					pub := filepath.Join(keys, "cosign.pub")
					for _, ref := range []string{base + ":1", base + "@" + digest} {
						if err := verify(ref, pub); err != nil {
							t.Fatalf("cosign verify %s: %v", ref, err)
						}
						verifyAttestation(ref)
					}

					// The same image pushed again under another tag.
					crane(t, "push", tarPath, base+":2")
					if got := crane(t, "digest", base+":2"); got != digest {
						t.Fatalf("pushing the same image again: digest %s, want %s", got, digest)
					}
					for _, ref := range []string{base + ":2", base + ":1"} {
						if err := verify(ref, pub); err != nil {
							t.Errorf("after the second push, cosign verify %s: %v", ref, err)
						}
						verifyAttestation(ref)
					}

					// A key that signed nothing verifies nothing.
					if err := verify(base+":1", filepath.Join(keys, "other.pub")); err == nil {
						t.Errorf("cosign verify with an unrelated key passed")
					} else {
						t.Logf("cosign verify with an unrelated key fails, as it must: %v", err)
					}

					noDigestTagsUpstream(t, up, repo, digest)
				})
			}
		})
	}
}

// cosignSigArtifactType is the artifact type of cosign's signatures
// stored as OCI 1.1 referrers.
const cosignSigArtifactType = "application/vnd.dev.cosign.artifact.sig.v1+json"

// checkAttestation reads what cosign verify-attestation printed for ref:
// one DSSE envelope a line, whose in-toto statement names the image's
// digest and carries the predicate attested.
func checkAttestation(t *testing.T, ref, out, digest string) {
	t.Helper()
	var found bool
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var env struct {
			PayloadType string `json:"payloadType"`
			Payload     string `json:"payload"`
		}
		if err := json.Unmarshal([]byte(line), &env); err != nil {
			continue
		}
		b, err := base64.StdEncoding.DecodeString(env.Payload)
		if err != nil {
			t.Fatalf("cosign verify-attestation %s: payload is not base64: %v", ref, err)
		}
		var st struct {
			PredicateType string `json:"predicateType"`
			Subject       []struct {
				Digest map[string]string `json:"digest"`
			} `json:"subject"`
			Predicate map[string]any `json:"predicate"`
		}
		if err := json.Unmarshal(b, &st); err != nil {
			t.Fatalf("cosign verify-attestation %s: statement: %v\n%s", ref, err, b)
		}
		_, hex, _ := strings.Cut(digest, ":")
		// cosign's custom type wraps the predicate file's text as
		// the predicate's Data.
		pred, _ := json.Marshal(st.Predicate)
		if len(st.Subject) == 1 && st.Subject[0].Digest["sha256"] == hex && strings.Contains(string(pred), "e2e attestation") {
			found = true
		}
	}
	if !found {
		t.Fatalf("cosign verify-attestation %s printed no statement about %s with the predicate:\n%s", ref, digest, out)
	}
}

// toolError is a tool's failure with its output.
type toolError struct {
	err error
	out string
}

func (e *toolError) Error() string { return e.err.Error() + "\n" + e.out }

// notation-go signs and verifies through shroud in the module
// internal/signtools (a module of its own, so that the Notary and
// sigstore libraries stay out of shroud's go.mod): run from here so that
// the README's one test command covers it.
func TestNotationSignTools(t *testing.T) {
	for _, args := range [][]string{{"vet", "./..."}, {"test", "-count=1", "./..."}} {
		cmd := exec.Command("go", args...)
		cmd.Dir = "../internal/signtools"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %v in internal/signtools: %v\n%s", args, err, out)
		}
	}
}

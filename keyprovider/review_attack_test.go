package keyprovider_test

// Adversarial review of shroud keyprovider. Each test is an attack that
// should be refused; a failing test is a confirmed finding.

import (
	"bytes"
	"compress/flate"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containers/ocicrypt/config"
	ockp "github.com/containers/ocicrypt/keywrap/keyprovider"
	pb "github.com/containers/ocicrypt/utils/keyprovider"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/keyprovider"
)

// rawUnwrap sends annotation to UnWrapKey over gRPC (no ocicrypt client
// in between: the attacker speaks the protocol directly) and returns the
// OptsData shroud answers with.
func rawUnwrap(t *testing.T, addr string, annotation []byte) ([]byte, error) {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	var in ockp.KeyProviderKeyWrapProtocolInput
	in.Operation = ockp.OpKeyUnwrap
	in.KeyUnwrapParams.Annotation = annotation
	in.KeyUnwrapParams.Dc = &config.DecryptConfig{}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pb.NewKeyProviderServiceClient(cc).UnWrapKey(context.Background(), &pb.KeyProviderKeyWrapProtocolInput{KeyProviderKeyWrapProtocolInput: b})
	if err != nil {
		return nil, err
	}
	var res ockp.KeyProviderKeyWrapProtocolOutput
	if err := json.Unmarshal(out.KeyProviderKeyWrapProtocolOutput, &res); err != nil {
		t.Fatal(err)
	}
	return res.KeyUnwrapResults.OptsData, nil
}

// encryptOnlyPolicy is the README's example: encrypt rules, no deny rule.
func encryptOnlyPolicy(t *testing.T) *keyprovider.Policy {
	t.Helper()
	p, err := keyprovider.NewPolicy([]keyprovider.Rule{{Pattern: "team-a/**"}, {Pattern: "team-b/**"}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestAttackUnwrapKeyDecryptsSealedManifest: the keyprovider runs with
// shroud serve's identity (its default --data-dir is serve's, and its
// start-up message offers sharing the identity). The hostile registry
// holds every manifest's dev.shroud.manifest.original annotation: a
// compact JWE to the identity (A256GCM, the identity's key algorithm)
// without a scope header. UnWrapKey must not open it; today it answers
// with the decrypted seal (the signed JWS over the deflated original
// manifest, the layer pairings and their HMACs).
func TestAttackUnwrapKeyDecryptsSealedManifest(t *testing.T) {
	id := identity(t)
	manifest := []byte(`{"schemaVersion":2,"annotations":{"secret":"the plaintext manifest the registry must not read"}}`)
	sealed, err := id.Seal(crypto.Seal{Repository: "team-a/app", ContentType: "application/vnd.oci.image.manifest.v1+json", Manifest: manifest})
	if err != nil {
		t.Fatal(err)
	}
	for name, pol := range map[string]*keyprovider.Policy{"no --config": nil, "encrypt rules only": encryptOnlyPolicy(t)} {
		addr := serve(t, newServer(t, keyprovider.Options{Identity: id, Policy: pol}), nil)
		got, err := rawUnwrap(t, addr, []byte(sealed))
		if err == nil {
			// got is the compact JWS the seal wraps: its payload is the
			// raw-deflated Seal JSON anyone can read.
			t.Errorf("%s: UnWrapKey opened a sealed original manifest: %q", name, inflateJWSPayload(t, got))
		}
	}
}

// TestAttackUnwrapKeyDecryptsIdentityJWELayerKey: shroud serve wraps
// every layer key for its identity as an ordinary jwe: recipient
// (org.opencontainers.image.enc.keys.jwe). With a single jwe recipient
// (a rule whose recipients are all provider:/pkcs11:/pgp:..., or the
// key kept between upload and manifest), go-jose puts every header in
// the protected header, so the JSON serialization converts to a compact
// JWE byte for byte. The hostile registry (or any caller) sends it to
// UnWrapKey and gets the layer key: no scope header, so "unbound", which
// a policy without deny rules allows.
func TestAttackUnwrapKeyDecryptsIdentityJWELayerKey(t *testing.T) {
	id := identity(t)
	keys, err := crypto.NewKeyring(id, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer keys.Close()
	lk, err := crypto.NewLayerKey()
	if err != nil {
		t.Fatal(err)
	}
	ann, err := keys.WrapForIdentity(crypto.PrivateOptions{Key: lk}, crypto.PublicOptions{HMAC: []byte("hmac")})
	if err != nil {
		t.Fatal(err)
	}
	jwe, err := base64.StdEncoding.DecodeString(ann[crypto.AnnotationKeys+"jwe"])
	if err != nil {
		t.Fatal(err)
	}
	compact := jsonJWEToCompact(t, jwe)
	for name, pol := range map[string]*keyprovider.Policy{"no --config": nil, "encrypt rules only": encryptOnlyPolicy(t)} {
		addr := serve(t, newServer(t, keyprovider.Options{Identity: id, Policy: pol}), nil)
		got, err := rawUnwrap(t, addr, []byte(compact))
		if err == nil {
			leaked := bytes.Contains(got, []byte(base64.StdEncoding.EncodeToString(lk.Key)))
			t.Errorf("%s: UnWrapKey opened the identity's jwe: layer-key wrap (layer key in the answer: %v)", name, leaked)
		}
	}
}

// TestAttackUnwrapKeyOpensUnmarkedIdentityJWE: the root cause of the two
// above: OpenOptions accepts any compact JWE to the identity, with no
// marker that it is a key-provider wrap (typ/cty, a required scope or
// version header). A JWE made with go-jose alone to the identity's
// public key, scope-less and with another cty, is opened as an unbound
// wrap.
func TestAttackUnwrapKeyOpensUnmarkedIdentityJWE(t *testing.T) {
	id := identity(t)
	// Seal is the identity's other compact-JWE format; its cty is "JWT"
	// and it has a dev.shroud.seal header. Neither is looked at.
	sealed, err := id.Seal(crypto.Seal{Repository: "x", Manifest: []byte("{}")})
	if err != nil {
		t.Fatal(err)
	}
	_, scope, _, err := id.OpenOptions(sealed)
	if err == nil {
		t.Errorf("OpenOptions opened a seal (cty JWT, dev.shroud.seal header) as a key-provider wrap bound to %q", scope)
	}
}

// inflateJWSPayload reads a seal's inner compact JWS as anyone can: its
// payload is raw-DEFLATE'd JSON.
func inflateJWSPayload(t *testing.T, jws []byte) string {
	t.Helper()
	parts := strings.Split(string(jws), ".")
	if len(parts) != 3 {
		return string(jws)
	}
	z, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(flate.NewReader(bytes.NewReader(z)))
	if err != nil {
		t.Fatal(err)
	}
	return string(plain)
}

// jsonJWEToCompact converts a flattened-or-general JSON JWE with one
// recipient and only a protected header into the compact serialization.
func jsonJWEToCompact(t *testing.T, b []byte) string {
	t.Helper()
	var j struct {
		Protected    string `json:"protected"`
		Unprotected  any    `json:"unprotected"`
		EncryptedKey string `json:"encrypted_key"`
		Recipients   []struct {
			Header       any    `json:"header"`
			EncryptedKey string `json:"encrypted_key"`
		} `json:"recipients"`
		IV         string `json:"iv"`
		Ciphertext string `json:"ciphertext"`
		Tag        string `json:"tag"`
		AAD        string `json:"aad"`
	}
	if err := json.Unmarshal(b, &j); err != nil {
		t.Fatal(err)
	}
	ek := j.EncryptedKey
	if len(j.Recipients) == 1 {
		if j.Recipients[0].Header != nil {
			t.Fatalf("a per-recipient header: not convertible: %s", b)
		}
		ek = j.Recipients[0].EncryptedKey
	} else if len(j.Recipients) > 1 {
		t.Fatalf("%d recipients", len(j.Recipients))
	}
	if j.Unprotected != nil || j.AAD != "" {
		t.Fatalf("unprotected header or aad: not convertible: %s", b)
	}
	return strings.Join([]string{j.Protected, ek, j.IV, j.Ciphertext, j.Tag}, ".")
}

// shroudBinary builds cmd/shroud once for the tests that run it.
func shroudBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "shroud")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/shroud").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func mustWrap(t *testing.T, w interface {
	WrapKeys(*config.EncryptConfig, []byte) ([]byte, error)
}, scope string) []byte {
	t.Helper()
	ec := &config.EncryptConfig{Parameters: map[string][][]byte{"shroud": {[]byte(scope)}}}
	if scope == "" {
		ec.Parameters["shroud"] = [][]byte{}
	}
	ann, err := w.WrapKeys(ec, opts)
	if err != nil {
		t.Fatalf("wrap %q: %v", scope, err)
	}
	return ann
}

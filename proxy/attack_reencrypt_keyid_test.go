package proxy_test

import (
	"context"
	"strings"
	"testing"

	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/shroudtest"
	"github.com/shroud-oci/shroud/proxy"
)

// Review: `shroud rotate reencrypt --key-id ID` refuses while the key is
// still a recipient (review F3), by comparing ID with each recipient's
// key id as a string. The CLI does not check or normalize ID: an operator
// who pastes the id without its "sha256:" prefix, or in upper case (as
// some tools print fingerprints), is not refused; the job re-encrypts
// every layer and wraps each new layer key for the compromised key,
// still on the rule, and the old ciphertext is deleted: the job gave the
// thief the new keys and took nothing away.
func TestAttackReencryptKeyIDWrittenOtherwiseWrapsForTheCompromisedKey(t *testing.T) {
	for name, spell := range map[string]func(string) string{
		"without sha256: prefix": func(id string) string { return strings.TrimPrefix(id, "sha256:") },
		"upper case hex":         func(id string) string { return "sha256:" + strings.ToUpper(strings.TrimPrefix(id, "sha256:")) },
	} {
		t.Run(name, func(t *testing.T) {
			up := shroudtest.Distribution(t)
			f := newRewrapFixture(t, up)
			recA := must[crypto.Recipient](t)(crypto.ParseRecipient("jwe:" + strings.TrimSuffix(f.keyA.Path, ".pem") + ".pub.pem"))
			recB := must[crypto.Recipient](t)(crypto.ParseRecipient("jwe:" + strings.TrimSuffix(f.keyB.Path, ".pem") + ".pub.pem"))
			job := shroudtest.StartWithIdentity(t, up, f.first.Keyring, f.first.DataDir,
				shroudtest.WithPolicy(shroudtest.Rule{Pattern: "team/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{recA, recB}}))
			re := proxy.NewReencryption(proxy.Revocation{KeyID: spell(recA.KeyID()), Reason: "keyCompromise"})
			rep, err := job.Handler.Rewrap(context.Background(), rewrapRepo, proxy.RewrapOptions{Reencrypt: re})
			if err != nil {
				t.Logf("refused: %v", err)
				if after := f.upstreamTags(t); after["1"] != f.before["1"] {
					t.Error("the refused job moved tags")
				}
				return
			}
			opened := 0
			for _, l := range f.encryptedLayers(t, "1") {
				if opens(t, f.keyA, l) {
					opened++
				}
			}
			t.Errorf("re-encrypt --key-id %q (the key %s, still on the rule): ran (%d rewritten), and %d new layers of team/app:1 open with the compromised key", spell(recA.KeyID()), recA.KeyID(), rep.Rewritten, opened)
		})
	}
}

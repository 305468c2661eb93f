package proxy_test

import (
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/shroudtest"
	"github.com/shroud-oci/shroud/proxy"
)

// grantsFor adds rec to every rule's recipients, as an approved access
// request does (access.Store).
type grantsFor struct {
	mu   sync.Mutex
	keys *crypto.Keyring
	rec  crypto.Recipient
}

func (g *grantsFor) Extend(_ string, rule *crypto.Rule) (*crypto.Recipients, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.keys.Extend(rule.Recipients, []crypto.Recipient{g.rec})
}

// A key an owner granted that the key checks refuse (the trust documents'
// allow list does not name it yet) under a rule with no recipient of its
// own but the identity: every push to the repository used to be refused
// (403 "no recipient its layer keys may be wrapped for"), the granted key
// counted as the rule's. It is left out instead, and pushes go on; once
// the checks pass it, it is wrapped for.
func TestAttackGrantedKeyTheChecksRefuseBlocksEveryPush(t *testing.T) {
	up := shroudtest.Distribution(t)
	rec, dk := keyPair(t, "ec")
	granted := &grantsFor{rec: must[crypto.Recipient](t)(crypto.ParseRecipientData("access:alice", "jwe", must[[]byte](t)(os.ReadFile(strings.TrimSuffix(dk.Path, ".pem")+".pub.pem"))))}
	c := newChecker()
	c.set(proxy.OpWrap, rec.KeyID(), "not-allowed")
	s := shroudtest.Start(t, up, shroudtest.WithKeyCheck(c), shroudtest.WithGrants(granted),
		shroudtest.WithPolicy(shroudtest.Rule{Pattern: "team/**", Action: crypto.Encrypt}))
	granted.mu.Lock()
	granted.keys = s.Keyring
	granted.mu.Unlock()

	man := pushPulls(t, s, up, "team/app")
	for i, l := range man.Layers {
		if opensAll(t, l, dk.Path) {
			t.Fatalf("layer %d opens with the granted key the checks refuse", i)
		}
	}
	c.set(proxy.OpWrap, rec.KeyID(), "")
	man = pushPulls(t, s, up, "team/app2")
	for i, l := range man.Layers {
		if !opensAll(t, l, dk.Path) {
			t.Fatalf("layer %d does not open with the granted key the checks pass", i)
		}
	}
}

package trust

// Review of shroud keyprovider: its UnWrapKey asks Check about the scope
// the wrap is bound to, which is a repository glob ("team-*", "**") or
// nothing at all (a recipient provider:shroud without a scope), not a
// repository name.

import (
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// TestAttackNamespaceRevocationSkippedForGlobAndUnboundScopes: team-a's
// deny list revokes the key (keyCompromise) for team-a's repositories.
// The attacker holds a layer key wrapped for it with a glob scope that
// covers team-a's repositories but does not begin with "team-a/"
// ("team-*/app", "**", "*/app"), or with no scope at all, and asks the
// key provider to unwrap it: Check only looked at the namespaces that
// cover the scope read as a repository name, so it allowed them all.
func TestAttackNamespaceRevocationSkippedForGlobAndUnboundScopes(t *testing.T) {
	tr := newTestRepo(t)
	tr.delegate("team-a", newSigner(t), "team-a/*")
	k := newRecipientKey(t)
	tr.revoke("team-a", "team-a", k.revocation(ReasonKeyCompromise))
	tr.bumpSign("team-a")
	tr.publish(metadata.TARGETS)
	env := newChecker(t, tr, "")
	env.refresh(t)
	// Control: the revocation holds for team-a's repositories and for a
	// glob under team-a/.
	env.refused(t, OpUnwrap, "team-a/app", k.id, t0, RefusedRevoked)
	env.refused(t, OpUnwrap, "team-a/*", k.id, t0, RefusedRevoked)
	for _, scope := range []string{"team-*/app", "team-?/app", "t*", "**", "*/app", "**/app", ""} {
		env.refused(t, OpUnwrap, scope, k.id, t0, RefusedRevoked)
	}
	// Scopes that cannot reach team-a stay allowed, and the key is
	// revoked nowhere else.
	for _, scope := range []string{"team-b/app", "team-b/*", "other/**", "team-ab/*"} {
		env.allowed(t, OpUnwrap, scope, k.id, t0)
	}
}

// TestAttackNamespaceFreezeSkippedForGlobAndUnboundScopes: the same hole
// for freshness. team-a's delegated role has expired (a registry
// withholding team-a's new deny list keeps serving it); unwraps for
// team-a's repositories are frozen, but a glob scope that covers them
// without beginning with "team-a/", or no scope, was not.
func TestAttackNamespaceFreezeSkippedForGlobAndUnboundScopes(t *testing.T) {
	tr := newTestRepo(t)
	tr.delegate("team-a", newSigner(t), "team-a/*")
	k := newRecipientKey(t)
	tr.allow("team-a", "team-a", newRecipientKey(t).entry("team-a/**"))
	roleExpires := t0.Add(2 * time.Hour)
	tr.repo.Bump("team-a", roleExpires)
	tr.sign("team-a")
	tr.publish(metadata.TARGETS)
	env := newChecker(t, tr, "")
	env.refresh(t)
	late := roleExpires.Add(time.Minute)
	env.refused(t, OpUnwrap, "team-a/app", k.id, late, RefusedFrozen)
	for _, scope := range []string{"team-*/app", "**", ""} {
		env.refused(t, OpUnwrap, scope, k.id, late, RefusedFrozen)
	}
	env.allowed(t, OpUnwrap, "team-b/*", k.id, late)
}

package trust

// Review: the shared rollback floor (floor_shared.go) lives in the shared
// tier under a key, and sealed with a box, both derived from shroud's
// identity (cmd/shroud/shared.go: PurposeSharedKey, PurposeSharedValue,
// the prefix a keyed hash of the upstream under the same key). Identity
// rotation (README step 1) restarts every replica with a new identity:
// the record every replica raised is a miss under the new one.

import (
	"errors"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/shroud-oci/shroud/cache"
	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/redistest"
)

// reviewSharedFloor is the shared tier as `shroud serve` builds it for
// identity id (newSharedTier + store("")).
func reviewSharedFloor(t *testing.T, c redis.UniversalClient, id *crypto.Identity) *cache.Shared {
	t.Helper()
	kk, err := id.DeriveKey(crypto.PurposeSharedKey)
	if err != nil {
		t.Fatal(err)
	}
	vk, err := id.DeriveKey(crypto.PurposeSharedValue)
	if err != nil {
		t.Fatal(err)
	}
	names, err := crypto.NewKeyedHash(kk)
	if err != nil {
		t.Fatal(err)
	}
	box, err := crypto.NewBox(vk)
	if err != nil {
		t.Fatal(err)
	}
	prefix := cache.DefaultPrefix + names.Sum("upstream", "")[:12] + ":"
	s, err := cache.NewShared(c, names, box, cache.SharedOptions{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The replicas (data dirs on emptyDir: the case the shared floor is for)
// share Redis and have trusted the documents of after a revocation. The
// operator rotates shroud's identity: every replica restarts (step 1)
// with the new identity and an empty data dir. The registry serves the
// timestamp of before the revocation (signed, not yet expired). Under
// the old identity the shared floor refuses it (control); under the new
// one the floor is gone, the first replica to refresh trusts the
// rolled-back documents, and raises the new floor to them.
func TestAttackIdentityRotationResetsTheSharedRollbackFloor(t *testing.T) {
	rs := redistest.Start(t)
	oldID, _, err := crypto.LoadOrCreateIdentity(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	newID, _, err := crypto.LoadOrCreateIdentity(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	underOld := func(o *Options) { o.SharedFloor = reviewSharedFloor(t, rs.Client(), oldID) }
	// As shroud serve wires it with --previous-identity: the floor of
	// the new identity, and the old one's read too.
	underNew := func(o *Options) {
		o.SharedFloor = reviewSharedFloor(t, rs.Client(), newID)
		o.PreviousFloors = []SharedFloor{reviewSharedFloor(t, rs.Client(), oldID)}
	}

	tr := newTestRepo(t)
	k := newRecipientKey(t)
	tr.allow(metadata.TARGETS, "", k.entry("**"))
	tr.publish(metadata.TARGETS)
	first := newChecker(t, tr, "", underOld)
	first.refreshed(t)
	oldTimestamp := tr.readFile("metadata/timestamp.json")
	tr.revoke(metadata.TARGETS, "", k.revocation(ReasonKeyCompromise))
	tr.publish(metadata.TARGETS)
	first.refreshed(t)
	first.refused(t, OpWrap, "a/b", k.id, t0, RefusedRevoked)

	tr.writeFile("metadata/timestamp.json", oldTimestamp)
	control := newChecker(t, tr, "", underOld)
	control.refreshFails(t, ErrSharedFloor)

	// Step 1 of the identity rotation: a new pod, the new identity.
	rotated := newChecker(t, tr, "", underNew)
	if err := rotated.Refresh(t.Context()); err != nil {
		t.Logf("refresh under the new identity refused: %v", err)
		if !errors.Is(err, ErrSharedFloor) {
			t.Fatalf("refused, but not by the floor: %v", err)
		}
		return
	}
	if rotated.Check(t.Context(), OpWrap, "a/b", k.id, t0) == nil {
		t.Errorf("after the identity rotation, a new replica sharing the same Redis trusts the timestamp of before the revocation: the revoked key %s is wrapped for again", k.id)
	}
	// And it raised the new identity's floor to the rolled-back
	// versions: the next new replica takes them too.
	next := newChecker(t, tr, "", underNew)
	if err := next.Refresh(t.Context()); err == nil {
		t.Logf("a second new replica trusts the rolled-back documents as well")
	}
}

// The floor record is keyed by the identity (and upstream) alone, not by
// the trust repository: an operator who starts a new trust repository
// (a new root: `trust init` again, after losing the offline root keys,
// say) and wipes the replicas' data dirs as the new --trust-root needs,
// finds every replica refusing the new documents for ever ("older than
// what another replica trusted"), since the old repository's root
// version is higher. Nothing but deleting a Redis key whose name is a
// keyed hash (README: nothing) recovers.
func TestANewTrustRepositoryIsNotFrozenByTheOldOnesFloor(t *testing.T) {
	rs := redistest.Start(t)
	id, _, err := crypto.LoadOrCreateIdentity(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	shared := func(o *Options) { o.SharedFloor = reviewSharedFloor(t, rs.Client(), id) }
	old := newTestRepo(t)
	old.publishRoot()
	old.publishRoot()
	old.publish(metadata.TARGETS)
	newChecker(t, old, "", shared).refreshed(t)

	fresh := newTestRepo(t)
	fresh.publish(metadata.TARGETS)
	r := newChecker(t, fresh, "", shared)
	if err := r.Refresh(t.Context()); err != nil {
		t.Errorf("a replica given a new trust repository (root v1) refuses it for ever: %v", err)
	}
}

package trust

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// memFloor is a SharedFloor in memory, as the shared tier holds it.
type memFloor struct {
	mu  sync.Mutex
	rec []byte
	err error // what every call fails with, if set
}

func (m *memFloor) LoadFloor(context.Context) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rec, m.err
}

func (m *memFloor) UpdateFloor(_ context.Context, update func([]byte) ([]byte, error)) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return m.err
	}
	rec, err := update(m.rec)
	if err == nil {
		m.rec = rec
	}
	return err
}

// A key is revoked; one replica has refreshed since. A new replica (a new
// pod, its data dir empty) is served the timestamp of before the
// revocation, signed and not yet expired: alone it has no floor and takes
// it (the control), so the revoked key would unwrap there. Sharing the
// floor with the first replica, it refuses the refresh, naming the
// versions, and wraps and unwraps nothing until the source serves what
// the floor vouches for.
func TestAttackNewReplicaServedTheTimestampOfBeforeARevocation(t *testing.T) {
	tr := newTestRepo(t)
	floor := &memFloor{}
	withFloor := func(o *Options) { o.SharedFloor = floor }
	first := newChecker(t, tr, "", withFloor)
	k := newRecipientKey(t)
	tr.allow(metadata.TARGETS, "", k.entry("**"))
	tr.publish(metadata.TARGETS)
	first.refreshed(t)
	first.allowed(t, OpUnwrap, "a/b", k.id, t0)
	oldTimestamp := tr.readFile("metadata/timestamp.json")
	tr.revoke(metadata.TARGETS, "", k.revocation(ReasonKeyCompromise))
	tr.publish(metadata.TARGETS)
	first.refreshed(t)
	first.refused(t, OpUnwrap, "a/b", k.id, t0, RefusedRevoked)

	// The registry now serves the old timestamp (the old snapshot and
	// targets are still there by version: consistent snapshots).
	newTimestamp := tr.readFile("metadata/timestamp.json")
	tr.writeFile("metadata/timestamp.json", oldTimestamp)

	alone := newChecker(t, tr, "")
	alone.refreshed(t) // the attack, without the shared floor: it works
	alone.allowed(t, OpUnwrap, "a/b", k.id, t0)

	fresh := newChecker(t, tr, "", withFloor)
	err := fresh.refreshFails(t, ErrSharedFloor)
	t.Logf("refused: %v", err)
	fresh.refused(t, OpUnwrap, "a/b", k.id, t0, RefusedFrozen)

	// Once the source serves the current timestamp again, it refreshes.
	tr.writeFile("metadata/timestamp.json", newTimestamp)
	fresh.refreshed(t)
	fresh.refused(t, OpUnwrap, "a/b", k.id, t0, RefusedRevoked)
}

// A root that rotates the timestamp key resets the timestamp's floor
// (TUF's fast-forward recovery: the leaked key had pushed the version up),
// and a store that cannot be reached leaves each replica its own floor.
func TestSharedFloorFollowsKeyRotationAndOutages(t *testing.T) {
	tr := newTestRepo(t)
	floor := &memFloor{}
	withFloor := func(o *Options) { o.SharedFloor = floor }
	tr.repo.Timestamp.Signed.Version = 99998 // the leaked key's doing
	tr.publish()
	first := newChecker(t, tr, "", withFloor)
	first.refreshed(t)

	newTS := newSigner(t)
	if err := tr.repo.SetRoleKeys(metadata.TIMESTAMP, []*metadata.Key{keyOfSigner(t, newTS)}, 1); err != nil {
		t.Fatal(err)
	}
	tr.signers[metadata.TIMESTAMP] = tr.signersFor(newTS)
	tr.publishRoot()
	tr.repo.Timestamp.Signed.Version = 2
	tr.publish()
	fresh := newChecker(t, tr, "", withFloor)
	fresh.refreshed(t)
	first.refreshed(t)

	floor.mu.Lock()
	floor.err = errors.New("connection refused")
	floor.mu.Unlock()
	down := newChecker(t, tr, "", withFloor)
	down.refreshed(t)
}

package trust

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// The tests model the attacks of go-tuf's updater_top_level_update_test.go
// and tuf-conformance, each asserted through what shroud decides (Check),
// not through go-tuf's internals. The source is a directory the test
// writes to as the repository, or as an attacker serving files.

func TestDecisionsFromAllowAndDenyLists(t *testing.T) {
	tr := newTestRepo(t)
	ops, gone, later := newRecipientKey(t), newRecipientKey(t), newRecipientKey(t)
	e := later.entry("team-a/**")
	e.NotBefore = t0.Add(time.Hour)
	g := gone.entry("**")
	g.NotAfter = t0.Add(-time.Hour)
	tr.allow(metadata.TARGETS, "", ops.entry("team-a/**"), g, e)
	tr.publish(metadata.TARGETS)

	env := newChecker(t, tr, "")
	env.refreshed(t)
	env.allowed(t, OpWrap, "team-a/app", ops.id, t0)
	env.allowed(t, OpWrap, "team-a/x/y", ops.id, t0)
	r := env.refused(t, OpWrap, "team-b/app", ops.id, t0, RefusedNotAllowed)
	if r.Document != "recipients.json" {
		t.Errorf("refusal names %q; want recipients.json", r.Document)
	}
	// Unwrap of a key no allow entry names for the repository: allowed
	// (decryption keys are configured locally).
	env.allowed(t, OpUnwrap, "team-b/app", ops.id, t0)
	r = env.refused(t, OpWrap, "team-a/app", gone.id, t0, RefusedExpired)
	if !r.Expires.Equal(g.NotAfter) {
		t.Errorf("expired refusal at %s; want %s", r.Expires, g.NotAfter)
	}
	env.refused(t, OpUnwrap, "team-a/app", gone.id, t0, RefusedExpired)
	r = env.refused(t, OpWrap, "team-a/app", later.id, t0, RefusedNotYetValid)
	if !r.NotBefore.Equal(e.NotBefore) || !strings.Contains(r.Error(), "not valid before") {
		t.Errorf("refusal %v", r)
	}
	env.allowed(t, OpWrap, "team-a/app", later.id, t0.Add(2*time.Hour))
	if err := env.Check(context.Background(), "sign", "team-a/app", ops.id, t0); err == nil {
		t.Error("Check accepted an unknown operation")
	}
	st := env.Status()
	if st.Allow != 3 || st.Deny != 0 || len(st.Roles) != 4 || st.LastOutcome != OutcomeOK {
		t.Errorf("status %+v", st)
	}
}

// refreshed refreshes and asserts that everything offered was accepted.
func (env *checkerEnv) refreshed(t *testing.T) {
	t.Helper()
	env.refresh(t)
}

func TestBeforeAnyRefreshEverythingIsFrozen(t *testing.T) {
	tr := newTestRepo(t)
	k := newRecipientKey(t)
	tr.allow(metadata.TARGETS, "", k.entry("**"))
	tr.publish(metadata.TARGETS)
	env := newChecker(t, tr, "", func(o *Options) { o.Grace = func(string) time.Duration { return time.Hour } })
	r := env.refused(t, OpWrap, "a/b", k.id, t0, RefusedFrozen)
	if !strings.Contains(r.Error(), "no trusted timestamp.json yet") {
		t.Errorf("refusal %v", r)
	}
	env.refused(t, OpUnwrap, "a/b", k.id, t0, RefusedFrozen)
}

func TestDenyEntryOverridesAllowEntry(t *testing.T) {
	tr := newTestRepo(t)
	k, other := newRecipientKey(t), newRecipientKey(t)
	tr.allow(metadata.TARGETS, "", k.entry("**"), other.entry("**"))
	tr.revoke(metadata.TARGETS, "", k.revocation(ReasonKeyCompromise))
	tr.publish(metadata.TARGETS)
	env := newChecker(t, tr, "")
	env.refreshed(t)
	for _, op := range []string{OpWrap, OpUnwrap} {
		r := env.refused(t, op, "team-a/app", k.id, t0, RefusedRevoked)
		if r.RevocationReason != ReasonKeyCompromise || r.Document != "revocations.json" {
			t.Errorf("refusal %+v", r)
		}
		if !strings.Contains(r.Error(), "keyCompromise") || !strings.Contains(r.Error(), k.id) {
			t.Errorf("refusal message %q does not name the key and reason", r.Error())
		}
	}
	env.allowed(t, OpWrap, "team-a/app", other.id, t0)
}

func TestBadSignatureOnTargetsCannotForgeDenyList(t *testing.T) {
	tr := newTestRepo(t)
	k := newRecipientKey(t)
	tr.allow(metadata.TARGETS, "", k.entry("**"))
	tr.revoke(metadata.TARGETS, "", k.revocation(ReasonKeyCompromise))
	tr.publish(metadata.TARGETS)
	env := newChecker(t, tr, "")
	env.refreshed(t)
	env.refused(t, OpWrap, "a/b", k.id, t0, RefusedRevoked)

	t.Run("targets signed by a key root does not list", func(t *testing.T) {
		// The attacker drops the deny list from a new targets it signs
		// with its own key; snapshot and timestamp (online keys) follow.
		delete(tr.repo.Roles[metadata.TARGETS].Signed.Targets, RevocationsFile)
		if err := tr.repo.Bump(metadata.TARGETS, t0.Add(time.Hour*24)); err != nil {
			t.Fatal(err)
		}
		if err := signAll(tr.repo.Roles[metadata.TARGETS], tr.signersFor(newSigner(t))); err != nil {
			t.Fatal(err)
		}
		v := tr.repo.Roles[metadata.TARGETS].Signed.Version
		tr.writeUnchecked(metadata.TARGETS, "targets.json", itoa(v)+".targets.json")
		tr.publish()
		env.refreshFails(t, &metadata.ErrUnsignedMetadata{})
		env.refused(t, OpWrap, "a/b", k.id, t0, RefusedRevoked)
		env.refused(t, OpUnwrap, "a/b", k.id, t0, RefusedRevoked)
	})

	t.Run("deny list swapped under a valid targets", func(t *testing.T) {
		tr := newTestRepo(t)
		tr.allow(metadata.TARGETS, "", k.entry("**"))
		tr.revoke(metadata.TARGETS, "", k.revocation(ReasonKeyCompromise))
		tr.publish(metadata.TARGETS)
		env := newChecker(t, tr, "")
		env.refreshed(t)
		// A legitimate new targets; the registry serves a deny list
		// without the entry in place of the one it signs.
		other, retired := newRecipientKey(t), newRecipientKey(t)
		tr.allow(metadata.TARGETS, "", other.entry("**"))
		tr.revoke(metadata.TARGETS, "", retired.revocation(ReasonRetired))
		tr.publish(metadata.TARGETS)
		tr.repo.Timestamp.Signed.Expires = t0.Add(72 * time.Hour)
		tr.sign(metadata.TIMESTAMP)
		tr.write()
		tf := tr.repo.Roles[metadata.TARGETS].Signed.Targets[RevocationsFile]
		tr.writeFile(targetsDir+"/"+hexHash(tf)+"."+RevocationsFile, []byte(`{"revocations":[]}`))
		if err := env.Refresh(context.Background()); err != nil {
			t.Fatal(err)
		}
		st := env.Status()
		if st.LastOutcome != OutcomeRefused || !strings.Contains(strings.Join(st.Refusals, "\n"), "revocations.json") {
			t.Fatalf("status %+v; want the top-level lists refused", st)
		}
		env.refused(t, OpWrap, "a/b", k.id, t0, RefusedRevoked)
		// The lists trusted before stay, bounded by the timestamp that
		// vouched for them: the new allow entry is not in force.
		env.refused(t, OpWrap, "a/b", other.id, t0, RefusedNotAllowed)
		// Bounded by the timestamp that vouched for them.
		r := env.refused(t, OpUnwrap, "a/b", other.id, t0.Add(25*time.Hour), RefusedFrozen)
		if !strings.Contains(r.Error(), "kept from timestamp.json") {
			t.Errorf("refusal %v; want the kept lists named", r)
		}
	})
}

func TestThresholdOneKeyUnderTwoIDsCountsOnce(t *testing.T) {
	tr := newTestRepo(t)
	k1, k2 := newECDSASigner(t), newECDSASigner(t)
	a := keyOfSigner(t, k1)
	b := *a
	b.Type = metadata.KeyTypeECDSA_SHA2_P256_COMPAT // the same key under a second id
	idA, _ := a.ID()
	idB, _ := (&b).ID()
	if idA == idB {
		t.Fatal("the two key records have one id")
	}
	if err := tr.repo.SetRoleKeys(metadata.TARGETS, []*metadata.Key{a, &b, keyOfSigner(t, k2)}, 2); err != nil {
		t.Fatal(err)
	}
	tr.repo.Bump(metadata.ROOT, t0.Add(Expiry(metadata.ROOT)))
	tr.sign(metadata.ROOT)
	tr.signers[metadata.TARGETS] = tr.signersFor(k1, k2)
	tr.publish(metadata.TARGETS)
	env := newChecker(t, tr, "")
	env.refreshed(t)

	// Holding k1 alone, the attacker signs a targets allowing its key
	// under both of k1's ids.
	evil := newRecipientKey(t)
	tr.allow(metadata.TARGETS, "", evil.entry("**"))
	tr.repo.Bump(metadata.TARGETS, t0.Add(24*time.Hour))
	md := tr.repo.Roles[metadata.TARGETS]
	if err := signAll(md, tr.signersFor(k1)); err != nil {
		t.Fatal(err)
	}
	md.Signatures = append(md.Signatures, metadata.Signature{KeyID: idB, Signature: md.Signatures[0].Signature})
	if md.Signatures[0].KeyID != idA {
		t.Fatalf("signed under %s; want %s", md.Signatures[0].KeyID, idA)
	}
	v := md.Signed.Version
	tr.writeUnchecked(metadata.TARGETS, "targets.json", itoa(v)+".targets.json")
	tr.publish()
	err := env.refreshFails(t, &metadata.ErrUnsignedMetadata{})
	if !strings.Contains(err.Error(), "not enough signatures, got 1, want 2") {
		t.Errorf("refresh error %v; want the threshold named", err)
	}
	env.refused(t, OpWrap, "a/b", evil.id, t0, RefusedNotAllowed)
}

func TestRootRotation(t *testing.T) {
	t.Run("N to N+1 replaces the targets key", func(t *testing.T) {
		tr := newTestRepo(t)
		env := newChecker(t, tr, "")
		env.refreshed(t)
		oldTargets := tr.signers[metadata.TARGETS]
		newTargets := newSigner(t)
		if err := tr.repo.SetRoleKeys(metadata.TARGETS, []*metadata.Key{keyOfSigner(t, newTargets)}, 1); err != nil {
			t.Fatal(err)
		}
		tr.signers[metadata.TARGETS] = tr.signersFor(newTargets)
		tr.publishRoot()
		k := newRecipientKey(t)
		tr.allow(metadata.TARGETS, "", k.entry("**"))
		tr.publish(metadata.TARGETS)
		env.refreshed(t)
		env.allowed(t, OpWrap, "a/b", k.id, t0)
		if st := env.Status(); st.Roles[0].Name != "root.json" || st.Roles[0].Version != 2 {
			t.Fatalf("roles %+v; want root v2", st.Roles)
		}

		// The old targets key no longer signs anything shroud trusts.
		evil := newRecipientKey(t)
		tr.signers[metadata.TARGETS] = oldTargets
		tr.allow(metadata.TARGETS, "", evil.entry("**"))
		tr.repo.Bump(metadata.TARGETS, t0.Add(24*time.Hour))
		if err := signAll(tr.repo.Roles[metadata.TARGETS], oldTargets); err != nil {
			t.Fatal(err)
		}
		v := tr.repo.Roles[metadata.TARGETS].Signed.Version
		tr.writeUnchecked(metadata.TARGETS, "targets.json", itoa(v)+".targets.json")
		tr.publish()
		env.refreshFails(t, &metadata.ErrUnsignedMetadata{})
		env.refused(t, OpWrap, "a/b", evil.id, t0, RefusedNotAllowed)
		env.allowed(t, OpWrap, "a/b", k.id, t0)

		// A restarted Checker starts from the rotated root, not from the
		// operator's version 1.
		env2 := newChecker(t, tr, env.dataDir)
		if st := env2.Status(); len(st.Roles) == 0 || st.Roles[0].Version != 2 {
			t.Fatalf("restored roles %+v; want root v2", st.Roles)
		}
	})

	t.Run("N to N+2 without N+1 is refused", func(t *testing.T) {
		tr := newTestRepo(t)
		env := newChecker(t, tr, "")
		env.refreshed(t)
		newTargets := newSigner(t)
		if err := tr.repo.SetRoleKeys(metadata.TARGETS, []*metadata.Key{keyOfSigner(t, newTargets)}, 1); err != nil {
			t.Fatal(err)
		}
		// Version 3, served where version 2 belongs.
		tr.repo.Root.Signed.Version = 2
		tr.repo.Bump(metadata.ROOT, t0.Add(Expiry(metadata.ROOT)))
		if err := signAll(tr.repo.Root, tr.signers[metadata.ROOT]); err != nil {
			t.Fatal(err)
		}
		tr.writeUnchecked(metadata.ROOT, "2.root.json")
		tr.signers[metadata.TARGETS] = tr.signersFor(newTargets)
		k := newRecipientKey(t)
		tr.allow(metadata.TARGETS, "", k.entry("**"))
		tr.publish(metadata.TARGETS)
		env.refreshFails(t, &metadata.ErrBadVersionNumber{})
		env.refused(t, OpWrap, "a/b", k.id, t0, RefusedNotAllowed)

		// Version 3 alone (no 2.root.json): the client stays on version
		// 1, whose targets key no longer signs.
		tr.writeUnchecked(metadata.ROOT, "3.root.json")
		if err := removeFile(tr, "metadata/2.root.json"); err != nil {
			t.Fatal(err)
		}
		env.refreshFails(t, &metadata.ErrUnsignedMetadata{})
		env.refused(t, OpWrap, "a/b", k.id, t0, RefusedNotAllowed)
	})
}

func TestTimestampRollbackRefused(t *testing.T) {
	tr := newTestRepo(t)
	env := newChecker(t, tr, "")
	env.refreshed(t)
	oldTimestamp := tr.readFile("metadata/timestamp.json")
	k := newRecipientKey(t)
	tr.revoke(metadata.TARGETS, "", k.revocation(ReasonKeyCompromise))
	tr.publish(metadata.TARGETS)
	env.refreshed(t)
	env.refused(t, OpUnwrap, "a/b", k.id, t0, RefusedRevoked)

	// The registry serves the old timestamp (and with it the old
	// snapshot and targets, which held no deny entry).
	tr.writeFile("metadata/timestamp.json", oldTimestamp)
	env.refreshFails(t, &metadata.ErrBadVersionNumber{})
	env.refused(t, OpUnwrap, "a/b", k.id, t0, RefusedRevoked)

	// The floor is in the data dir: a restarted Checker refuses it too.
	env2 := newChecker(t, tr, env.dataDir)
	env2.refused(t, OpUnwrap, "a/b", k.id, t0, RefusedRevoked)
	env2.refreshFails(t, &metadata.ErrBadVersionNumber{})
	env2.refused(t, OpUnwrap, "a/b", k.id, t0, RefusedRevoked)
}

func TestSnapshotRollbackRefused(t *testing.T) {
	tr := newTestRepo(t)
	env := newChecker(t, tr, "")
	env.refreshed(t)
	k := newRecipientKey(t)
	tr.revoke(metadata.TARGETS, "", k.revocation(ReasonKeyCompromise))
	tr.publish(metadata.TARGETS) // snapshot v2
	env.refreshed(t)

	// A newer timestamp naming the old snapshot (version 1).
	tr.repo.Snapshot.Signed.Version = 1
	tr.repo.Bump(metadata.TIMESTAMP, t0.Add(24*time.Hour))
	tr.sign(metadata.TIMESTAMP)
	tr.write()
	env.refreshFails(t, &metadata.ErrBadVersionNumber{})
	env.refused(t, OpWrap, "a/b", k.id, t0, RefusedRevoked)

	env2 := newChecker(t, tr, env.dataDir)
	env2.refreshFails(t, &metadata.ErrBadVersionNumber{})
	env2.refused(t, OpWrap, "a/b", k.id, t0, RefusedRevoked)
}

func TestEquivocationSecondTimestampOfSameVersionRefused(t *testing.T) {
	tr := newTestRepo(t)
	env := newChecker(t, tr, "")
	env.refreshed(t)
	// The repository's timestamp key signs a second version 1 naming a
	// newer snapshot that allows a key: a different view of version 1.
	k := newRecipientKey(t)
	tr.allow(metadata.TARGETS, "", k.entry("**"))
	tr.publish(metadata.TARGETS)
	tr.repo.Timestamp.Signed.Version = 1
	tr.sign(metadata.TIMESTAMP)
	tr.write()

	if err := env.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := env.Status()
	if st.LastOutcome != OutcomeRefused || !strings.Contains(strings.Join(st.Refusals, " "), "equivocation") {
		t.Fatalf("status %+v; want the equivocation refused", st)
	}
	ev := env.events.last()
	if ev.Outcome != OutcomeRefused || !strings.Contains(strings.Join(ev.Refusals, " "), "equivocation") {
		t.Fatalf("event %+v", ev)
	}
	// The first version 1 stays: the key it did not allow is not allowed.
	env.refused(t, OpWrap, "a/b", k.id, t0, RefusedNotAllowed)
}

func TestFastForwardRecoveryAfterTimestampKeyRotation(t *testing.T) {
	tr := newTestRepo(t)
	env := newChecker(t, tr, "")
	env.refreshed(t)
	// The timestamp key leaked: the attacker publishes version 99999.
	tr.repo.Timestamp.Signed.Version = 99998
	tr.publish()
	env.refreshed(t)
	// The repository's next timestamps are "rollbacks" now.
	k := newRecipientKey(t)
	tr.revoke(metadata.TARGETS, "", k.revocation(ReasonKeyCompromise))
	tr.repo.Timestamp.Signed.Version = 2
	tr.publish(metadata.TARGETS)
	env.refreshFails(t, &metadata.ErrBadVersionNumber{})
	env.allowed(t, OpUnwrap, "a/b", k.id, t0)

	// Root rotates the timestamp key: the fast-forwarded timestamp no
	// longer verifies and is dropped; version 3 with the new key is taken.
	newTS := newSigner(t)
	if err := tr.repo.SetRoleKeys(metadata.TIMESTAMP, []*metadata.Key{keyOfSigner(t, newTS)}, 1); err != nil {
		t.Fatal(err)
	}
	tr.signers[metadata.TIMESTAMP] = tr.signersFor(newTS)
	tr.publishRoot()
	tr.publish()
	env.refreshed(t)
	env.refused(t, OpUnwrap, "a/b", k.id, t0, RefusedRevoked)
}

func TestFastForwardRecoveryAfterSnapshotKeyRotation(t *testing.T) {
	tr := newTestRepo(t)
	env := newChecker(t, tr, "")
	env.refreshed(t)
	tr.repo.Snapshot.Signed.Version = 99998
	tr.publish()
	env.refreshed(t)
	k := newRecipientKey(t)
	tr.revoke(metadata.TARGETS, "", k.revocation(ReasonKeyCompromise))
	tr.repo.Snapshot.Signed.Version = 2
	tr.publish(metadata.TARGETS)
	env.refreshFails(t, &metadata.ErrBadVersionNumber{})

	// Recovery rotates snapshot and timestamp keys (the timestamp names
	// the fast-forwarded snapshot version, so it must go too).
	newSnap, newTS := newSigner(t), newSigner(t)
	if err := tr.repo.SetRoleKeys(metadata.SNAPSHOT, []*metadata.Key{keyOfSigner(t, newSnap)}, 1); err != nil {
		t.Fatal(err)
	}
	if err := tr.repo.SetRoleKeys(metadata.TIMESTAMP, []*metadata.Key{keyOfSigner(t, newTS)}, 1); err != nil {
		t.Fatal(err)
	}
	tr.signers[metadata.SNAPSHOT] = tr.signersFor(newSnap)
	tr.signers[metadata.TIMESTAMP] = tr.signersFor(newTS)
	tr.publishRoot()
	tr.publish()
	env.refreshed(t)
	env.refused(t, OpUnwrap, "a/b", k.id, t0, RefusedRevoked)
}

func TestOversizedDocumentRefused(t *testing.T) {
	t.Run("timestamp beyond its maximum length", func(t *testing.T) {
		tr := newTestRepo(t)
		k := newRecipientKey(t)
		tr.revoke(metadata.TARGETS, "", k.revocation(ReasonRetired))
		tr.publish(metadata.TARGETS)
		env := newChecker(t, tr, "")
		env.refreshed(t)
		tr.repo.Timestamp.Signed.UnrecognizedFields = map[string]any{"padding": strings.Repeat("x", 20000)}
		tr.publish()
		err := env.refreshFails(t, &metadata.ErrDownloadLengthMismatch{})
		if !strings.Contains(err.Error(), "exceed") {
			t.Errorf("error %v", err)
		}
		env.refused(t, OpWrap, "a/b", k.id, t0, RefusedRevoked)
	})
	t.Run("allow list beyond the list limit", func(t *testing.T) {
		tr := newTestRepo(t)
		var entries []Recipient
		for range 40 {
			entries = append(entries, newRecipientKey(t).entry("**"))
		}
		tr.allow(metadata.TARGETS, "", entries...)
		tr.publish(metadata.TARGETS)
		env := newChecker(t, tr, "", func(o *Options) { o.Limits.List = 1024 })
		if err := env.Refresh(context.Background()); err != nil {
			t.Fatal(err)
		}
		st := env.Status()
		if st.LastOutcome != OutcomeRefused || !strings.Contains(strings.Join(st.Refusals, " "), "exceed") {
			t.Fatalf("status %+v", st)
		}
		// Nothing trusted before: the namespace is frozen, wrap and unwrap.
		env.refused(t, OpWrap, "a/b", entries[0].KeyID, t0, RefusedFrozen)
		env.refused(t, OpUnwrap, "a/b", entries[0].KeyID, t0, RefusedFrozen)
	})
}

func TestDelegatedRoleTeamACannotAllowKeysForTeamB(t *testing.T) {
	tr := newTestRepo(t)
	teamA, teamB := newSigner(t), newSigner(t)
	tr.delegate("team-a", teamA, "team-a/*")
	tr.delegate("team-b", teamB, "team-b/*")
	k := newRecipientKey(t)
	// team-a lists its key for team-b too, and for everything.
	tr.allow("team-a", "team-a", k.entry("team-a/**", "team-b/**", "**"))
	// team-a also signs a list in team-b's namespace.
	data := []byte(`{"recipients":[{"key_id":"` + k.id + `","scheme":"jwe","scopes":["team-b/**"]}]}`)
	tf, err := metadata.TargetFile().FromBytes("team-b/recipients.json", data, "sha256")
	if err != nil {
		t.Fatal(err)
	}
	tr.repo.Roles["team-a"].Signed.Targets["team-b/recipients.json"] = tf
	tr.writeFileAll("team-b", tf, data)
	tr.bumpSign("team-a")
	tr.bumpSign("team-b")
	tr.publish(metadata.TARGETS)

	env := newChecker(t, tr, "")
	env.refreshed(t)
	env.allowed(t, OpWrap, "team-a/app", k.id, t0)
	env.allowed(t, OpWrap, "team-a/x/y", k.id, t0)
	env.refused(t, OpWrap, "team-b/app", k.id, t0, RefusedNotAllowed)
	env.refused(t, OpWrap, "other/app", k.id, t0, RefusedNotAllowed)
	ev := env.events.last()
	if !strings.Contains(strings.Join(ev.Warnings, " "), `scope "team-b/**" reaches beyond team-a/**`) {
		t.Fatalf("warnings %q; want the excess scope reported", ev.Warnings)
	}
}

func TestDenyListDroppedEntryRefused(t *testing.T) {
	tr := newTestRepo(t)
	k, other := newRecipientKey(t), newRecipientKey(t)
	tr.allow(metadata.TARGETS, "", k.entry("**"), other.entry("**"))
	tr.revoke(metadata.TARGETS, "", k.revocation(ReasonSuperseded))
	tr.publish(metadata.TARGETS)
	env := newChecker(t, tr, "")
	env.refreshed(t)

	// A validly signed new deny list without the entry.
	if err := tr.repo.SetRevocations(metadata.TARGETS, "", RevocationList{}); err != nil {
		t.Fatal(err)
	}
	tr.publish(metadata.TARGETS)
	if err := env.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	ev := env.events.last()
	if ev.Outcome != OutcomeRefused || !strings.Contains(strings.Join(ev.Refusals, " "), "lacks "+k.id) {
		t.Fatalf("event %+v; want the dropped entry refused, by key id", ev)
	}
	env.refused(t, OpWrap, "a/b", k.id, t0, RefusedRevoked)
	env.allowed(t, OpWrap, "a/b", other.id, t0)

	// After a restart the entry still holds (the floor is persisted),
	// though go-tuf's persisted targets is the one that dropped it.
	env2 := newChecker(t, tr, env.dataDir)
	env2.refused(t, OpUnwrap, "a/b", k.id, t0, RefusedRevoked)
	if err := env2.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	env2.refused(t, OpUnwrap, "a/b", k.id, t0, RefusedRevoked)

	// Putting the entry back (with any other) is accepted.
	tr.revoke(metadata.TARGETS, "", k.revocation(ReasonKeyCompromise))
	tr.publish(metadata.TARGETS)
	env2.refreshed(t)
	r := env2.refused(t, OpUnwrap, "a/b", k.id, t0, RefusedRevoked)
	if r.RevocationReason != ReasonKeyCompromise {
		t.Errorf("reason %s; want the new one", r.RevocationReason)
	}
}

func TestRestartRestoresTheLastGoodState(t *testing.T) {
	tr := newTestRepo(t)
	k := newRecipientKey(t)
	tr.allow(metadata.TARGETS, "", k.entry("**"))
	tr.publish(metadata.TARGETS)
	env := newChecker(t, tr, "")
	env.refreshed(t)

	// The source is gone when the Checker restarts.
	if err := removeAll(tr.repo.Dir() + "/metadata"); err != nil {
		t.Fatal(err)
	}
	env2 := newChecker(t, tr, env.dataDir, func(o *Options) { o.Root = nil })
	env2.allowed(t, OpWrap, "a/b", k.id, t0)
	env2.refreshFails(t, nil)
	env2.allowed(t, OpWrap, "a/b", k.id, t0)
	ts := tr.repo.Timestamp.Signed.Expires
	env2.refused(t, OpWrap, "a/b", k.id, ts.Add(time.Second), RefusedFrozen)
}

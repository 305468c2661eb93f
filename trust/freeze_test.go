package trust

import (
	"strings"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

func TestFreezeWithInjectedClock(t *testing.T) {
	tr := newTestRepo(t)
	k := newRecipientKey(t)
	tr.allow(metadata.TARGETS, "", k.entry("**"))
	tr.publish(metadata.TARGETS)
	tsExpires := tr.repo.Timestamp.Signed.Expires
	grace := map[string]time.Duration{"team-a/app": 30 * time.Minute}
	env := newChecker(t, tr, "", func(o *Options) {
		o.Grace = func(repo string) time.Duration { return grace[repo] }
	})
	env.refreshed(t)
	env.allowed(t, OpWrap, "team-a/app", k.id, tsExpires)

	after := tsExpires.Add(time.Minute)
	// The repository stopped re-signing: the refresh fails, the last good
	// documents stay, and they are expired.
	env.clock.Set(after)
	env.refreshFails(t, &metadata.ErrExpiredMetadata{})
	r := env.refused(t, OpWrap, "team-a/app", k.id, after, RefusedFrozen)
	if r.Document != "timestamp.json" || !r.Expires.Equal(tsExpires) || !strings.Contains(r.Error(), "timestamp.json expired at "+tsExpires.Format(time.RFC3339)) {
		t.Fatalf("refusal %v; want timestamp.json and its expiry named", r)
	}
	// Unwrapping goes on during the grace, then stops.
	env.allowed(t, OpUnwrap, "team-a/app", k.id, after)
	env.allowed(t, OpUnwrap, "team-a/app", k.id, tsExpires.Add(30*time.Minute))
	r = env.refused(t, OpUnwrap, "team-a/app", k.id, tsExpires.Add(31*time.Minute), RefusedFrozen)
	if r.Grace != 30*time.Minute || !strings.Contains(r.Error(), "grace 30m") {
		t.Fatalf("refusal %v; want the grace named", r)
	}
	// No grace elsewhere (default 0).
	env.refused(t, OpUnwrap, "team-b/app", k.id, after, RefusedFrozen)

	freezes := env.events.kind(EventFreeze)
	if len(freezes) != 1 || freezes[0].Document != "timestamp.json" || !freezes[0].Expires.Equal(tsExpires) {
		t.Fatalf("freeze events %+v; want one naming timestamp.json", freezes)
	}

	// Re-signing thaws it.
	tr.repo.Bump(metadata.TIMESTAMP, after.Add(24*time.Hour))
	tr.sign(metadata.TIMESTAMP)
	tr.write()
	env.refreshed(t)
	env.allowed(t, OpWrap, "team-a/app", k.id, after)
}

func TestFreezeOfDelegatedRoleOnlyForItsRepositories(t *testing.T) {
	tr := newTestRepo(t)
	teamA := newSigner(t)
	tr.delegate("team-a", teamA, "team-a/*")
	ka, kb := newRecipientKey(t), newRecipientKey(t)
	tr.allow("team-a", "team-a", ka.entry("team-a/**"))
	tr.allow(metadata.TARGETS, "", kb.entry("team-b/**"), ka.entry("team-b/**"))
	roleExpires := t0.Add(2 * time.Hour)
	tr.repo.Bump("team-a", roleExpires)
	tr.sign("team-a")
	tr.publish(metadata.TARGETS)
	env := newChecker(t, tr, "")
	env.refreshed(t)
	env.allowed(t, OpWrap, "team-a/app", ka.id, t0)

	late := roleExpires.Add(time.Minute)
	r := env.refused(t, OpWrap, "team-a/app", ka.id, late, RefusedFrozen)
	if r.Document != "team-a.json" || !r.Expires.Equal(roleExpires) {
		t.Fatalf("refusal %v; want team-a.json named", r)
	}
	env.allowed(t, OpWrap, "team-b/app", kb.id, late)
	env.allowed(t, OpWrap, "team-b/app", ka.id, late)
}

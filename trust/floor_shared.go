package trust

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/trustedmetadata"
)

// The shared rollback floor. A TUF client's defence against an old
// timestamp replayed (and with it the snapshot and the lists of before a
// revocation) is the metadata it trusted before: a replica starting with
// a new data dir (a new pod, an emptyDir) has none, and takes any
// timestamp that is signed and not yet expired, up to a day old with
// `shroud trust`'s defaults. Replicas that share a tier share the floor
// too: each one that accepts a refresh raises the highest root, timestamp
// and snapshot versions recorded there, and each refresh, a new replica's
// first among them, is refused below it.
//
// The floor only ever refuses: a store that lies can hold a replica to an
// older floor (what it had alone) or freeze it with one too high (it
// fails closed, loudly), never make it trust a document TUF would not.
// A timestamp or snapshot version is compared only while the role's keys
// are those the floor recorded it under: a root that rotates them (TUF's
// fast-forward recovery after a leaked key pushed the version up) resets
// that role's floor.

// SharedFloor stores the floor's record for every replica: the shared
// tier (cache.Shared's TrustFloor). The record is opaque to the store.
type SharedFloor interface {
	// LoadFloor returns the record, nil if there is none.
	LoadFloor(ctx context.Context) ([]byte, error)
	// UpdateFloor replaces the record by what update makes of the current
	// one (nil if none), atomically against other replicas' updates.
	UpdateFloor(ctx context.Context, update func(cur []byte) ([]byte, error)) error
}

// ErrSharedFloor is why a refresh below the shared floor is refused.
var ErrSharedFloor = errors.New("older than what another replica trusted (the shared rollback floor)")

// versionFloor is the record. Repository names the trust repository it
// is of (the SHA-256 of the initial root.json shroud is given): a floor
// of another repository (the operator started a new one) does not apply,
// and is replaced.
type versionFloor struct {
	Repository string               `json:"repository"`
	Root       int64                `json:"root"`
	Roles      map[string]roleFloor `json:"roles"`
}

// roleFloor is a role's highest version trusted, under its key ids then.
type roleFloor struct {
	Version int64  `json:"version"`
	Keys    string `json:"keys"`
}

// floorRoles are the roles the floor holds: the timestamp names the
// snapshot, which names every targets role's version.
func floorRoles() []string { return []string{metadata.TIMESTAMP, metadata.SNAPSHOT} }

// floorOf is the record of what tm, of the repository whose initial root
// is root, trusts.
func floorOf(root []byte, tm trustedmetadata.TrustedMetadata) versionFloor {
	sum := sha256.Sum256(root)
	f := versionFloor{Repository: hex.EncodeToString(sum[:]), Root: tm.Root.Signed.Version, Roles: map[string]roleFloor{}}
	versions := map[string]int64{metadata.TIMESTAMP: tm.Timestamp.Signed.Version, metadata.SNAPSHOT: tm.Snapshot.Signed.Version}
	for _, role := range floorRoles() {
		var ids []string
		if r, ok := tm.Root.Signed.Roles[role]; ok {
			ids = slices.Sorted(slices.Values(r.KeyIDs))
		}
		f.Roles[role] = roleFloor{Version: versions[role], Keys: strings.Join(ids, ",")}
	}
	return f
}

// below says why cur is older than the floor f, "" if it is not.
func (f versionFloor) below(cur versionFloor) string {
	if f.Repository != cur.Repository {
		return "" // another trust repository's
	}
	if cur.Root < f.Root {
		return fmt.Sprintf("root.json version %d, another replica trusted version %d", cur.Root, f.Root)
	}
	for _, role := range floorRoles() {
		fr, ok := f.Roles[role]
		cr := cur.Roles[role]
		if ok && fr.Keys == cr.Keys && cr.Version < fr.Version {
			return fmt.Sprintf("%s.json version %d, another replica trusted version %d", role, cr.Version, fr.Version)
		}
	}
	return ""
}

// raised is the floor once cur is trusted too (cur is not below f).
func (f versionFloor) raised(cur versionFloor) versionFloor {
	if f.Repository != cur.Repository {
		return cur
	}
	out := versionFloor{Repository: cur.Repository, Root: max(f.Root, cur.Root), Roles: map[string]roleFloor{}}
	for _, role := range floorRoles() {
		fr, ok := f.Roles[role]
		cr := cur.Roles[role]
		if !ok || fr.Keys != cr.Keys || cr.Version > fr.Version {
			fr = cr
		}
		out.Roles[role] = fr
	}
	return out
}

// checkSharedFloor refuses tm when it is below the shared floor, or
// below a previous identity's (identity rotation: the record a replica
// of the old identity raised is sealed under the old identity's keys).
// A store that cannot be read leaves the others, and the local floor,
// in force (logged).
func (c *Checker) checkSharedFloor(ctx context.Context, tm trustedmetadata.TrustedMetadata) error {
	cur := floorOf(c.root, tm)
	for i, store := range append([]SharedFloor{c.shared}, c.previousFloors...) {
		if store == nil {
			continue
		}
		raw, err := store.LoadFloor(ctx)
		if err != nil {
			c.log.WarnContext(ctx, "trust: a shared rollback floor could not be read; the others and this replica's own apply", "previous_identity", i > 0, "err", err)
			continue
		}
		if raw == nil {
			continue
		}
		var f versionFloor
		if err := json.Unmarshal(raw, &f); err != nil {
			c.log.WarnContext(ctx, "trust: a shared rollback floor does not parse; the others and this replica's own apply", "previous_identity", i > 0, "err", err)
			continue
		}
		if why := f.below(cur); why != "" {
			return fmt.Errorf("%w: %s", ErrSharedFloor, why)
		}
	}
	return nil
}

// raiseSharedFloor records what tm trusts in the shared floor.
func (c *Checker) raiseSharedFloor(ctx context.Context, tm trustedmetadata.TrustedMetadata) {
	if c.shared == nil {
		return
	}
	cur := floorOf(c.root, tm)
	err := c.shared.UpdateFloor(ctx, func(raw []byte) ([]byte, error) {
		var f versionFloor
		if raw != nil {
			if err := json.Unmarshal(raw, &f); err != nil {
				f = versionFloor{} // replaced by a record that parses
			}
		}
		if f.below(cur) != "" {
			return raw, nil // another replica went further meanwhile
		}
		return json.Marshal(f.raised(cur))
	})
	if err != nil {
		c.log.WarnContext(ctx, "trust: the shared rollback floor was not raised", "err", err)
	}
}

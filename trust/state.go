package trust

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"time"
)

// document is one signed document whose expiry freezes decisions.
type document struct {
	Name    string
	Version int64
	Expires time.Time
	// bound marks the expiry that bounds lists kept after a refused
	// update (the timestamp that vouched for them), detail says so.
	bound  bool
	detail string
}

// allowEntry is an allow entry as decisions use it.
type allowEntry struct {
	Recipient
	ns     string
	scopes []*regexp.Regexp
}

// namespaceState is what one namespace's lists say, and the documents it
// rests on.
type namespaceState struct {
	ns string
	// role signed the lists ("targets" for the top-level ones).
	role string
	// docs are the delegated roles the lists rest on (the signing role and
	// its delegators below targets); top-level documents are the state's.
	docs  []document
	allow []allowEntry
	deny  []Revocation
	// kept is set when this refresh refused the namespace's new lists and
	// kept the ones trusted before: why.
	kept string
}

// state is one successfully refreshed view of the trust documents.
type state struct {
	refreshedAt time.Time
	// top are root, timestamp, snapshot and targets.
	top        []document
	namespaces map[string]*namespaceState
	allowByKey map[string][]*allowEntry
	denyByKey  map[string][]denied
}

type denied struct {
	ns string
	Revocation
}

func (s *state) index(floor denyFloor) {
	s.allowByKey = map[string][]*allowEntry{}
	s.denyByKey = map[string][]denied{}
	for _, n := range s.namespaces {
		for i := range n.allow {
			e := &n.allow[i]
			s.allowByKey[e.KeyID] = append(s.allowByKey[e.KeyID], e)
		}
	}
	// Every deny entry ever trusted stays in force: those of the
	// namespaces as well as the persisted floor.
	for ns, entries := range floor.Lists {
		for _, r := range entries {
			s.denyByKey[r.KeyID] = append(s.denyByKey[r.KeyID], denied{ns: ns, Revocation: r})
		}
	}
}

func (s *state) document(name string) (document, bool) {
	for _, d := range s.top {
		if d.Name == name {
			return d, true
		}
	}
	return document{}, false
}

// denyFloor is every deny entry shroud has trusted, by namespace: a newer
// deny list lacking one of them is refused. It is persisted in the data
// dir next to go-tuf's metadata, the rollback floor of the lists.
type denyFloor struct {
	// RefreshedAt is the reference time of the last refresh that was
	// accepted: the persisted metadata are loaded as of then on start-up.
	RefreshedAt time.Time `json:"refreshed_at,omitzero"`
	// Lists are the trusted deny entries by namespace ("" top level).
	Lists map[string][]Revocation `json:"revocations"`
}

const floorFile = "revocations-floor.json"

func loadFloor(dir string) (denyFloor, error) {
	f := denyFloor{Lists: map[string][]Revocation{}}
	data, err := os.ReadFile(filepath.Join(dir, floorFile))
	if os.IsNotExist(err) {
		return f, nil
	}
	if err != nil {
		return f, fmt.Errorf("trust: deny floor: %w", err)
	}
	if err := json.Unmarshal(data, &f); err != nil {
		return f, fmt.Errorf("trust: deny floor %s: %w", filepath.Join(dir, floorFile), err)
	}
	if f.Lists == nil {
		f.Lists = map[string][]Revocation{}
	}
	return f, nil
}

func (f denyFloor) save(dir string) error {
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, floorFile), data, 0o600)
}

// missing lists the key ids of floor entries of ns that entries lacks.
func (f denyFloor) missing(ns string, entries []Revocation) []string {
	var out []string
	for _, old := range f.Lists[ns] {
		if !slices.ContainsFunc(entries, func(r Revocation) bool { return r.KeyID == old.KeyID }) {
			out = append(out, old.KeyID)
		}
	}
	return out
}

func (f denyFloor) clone() denyFloor {
	c := denyFloor{RefreshedAt: f.RefreshedAt, Lists: make(map[string][]Revocation, len(f.Lists))}
	for ns, l := range f.Lists {
		c.Lists[ns] = slices.Clone(l)
	}
	return c
}

// writeFileAtomic writes data to name through a temporary file renamed
// over it, so a crash leaves the old file or the new one.
func writeFileAtomic(name string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(name), ".tmp-"+filepath.Base(name))
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), name)
}

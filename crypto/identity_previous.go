package crypto

import (
	"errors"
	"fmt"
	"strings"
)

// Identity rotation. A new identity takes over: it seals what shroud
// writes from now on, names the pointer tags, and every layer key is
// wrapped for it. The identities it replaces stay in the keyring as
// previous identities until the rotation job has re-wrapped and re-sealed
// every image for the new one: they unwrap layer keys (as the identity
// does) and open seals, and nothing is wrapped or sealed for them again.
// Once the job is done they are dropped from the configuration and
// retired like any key (the deny list).

// previousIdentityPrefix starts the name a previous identity unwraps by.
const previousIdentityPrefix = "identity:"

// PreviousIdentityKey is the name UnwrapWith gives a previous identity.
func PreviousIdentityKey(id *Identity) string { return previousIdentityPrefix + id.Fingerprint() }

// IsIdentityKey says whether a key name (UnwrapWith's) is shroud's
// identity or one of its previous identities.
func IsIdentityKey(name string) bool {
	return name == IdentityKey || strings.HasPrefix(name, previousIdentityPrefix)
}

// WithPreviousIdentities gives the keyring the identities the current one
// replaces (identity rotation).
func WithPreviousIdentities(ids ...*Identity) KeyringOption {
	return func(o *keyringOptions) { o.previous = append(o.previous, ids...) }
}

// Previous lists the previous identities.
func (k *Keyring) Previous() []*Identity { return append([]*Identity(nil), k.previous...) }

// OpenSeal opens a seal with the identity, else with a previous identity,
// and says which one opened it. A seal none of them opens is
// ErrForeignSeal (the identity's error).
func (k *Keyring) OpenSeal(sealed string) (Seal, *Identity, error) {
	s, err := k.identity.Open(sealed)
	if err == nil || !errors.Is(err, ErrForeignSeal) {
		return s, k.identity, err
	}
	for _, p := range k.previous {
		if s, perr := p.Open(sealed); perr == nil {
			return s, p, nil
		} else if !errors.Is(perr, ErrForeignSeal) {
			return Seal{}, p, perr
		}
	}
	return Seal{}, nil, err
}

// checkPrevious refuses a previous identity that is the identity itself
// or is given twice.
func checkPrevious(id *Identity, previous []*Identity) error {
	seen := map[string]bool{id.Fingerprint(): true}
	for _, p := range previous {
		if p == nil {
			return errors.New("keyring: a previous identity is nil")
		}
		if seen[p.Fingerprint()] {
			return fmt.Errorf("keyring: identity %s is given twice (as the identity or a previous one)", p.Fingerprint())
		}
		seen[p.Fingerprint()] = true
	}
	return nil
}

//go:build cgo

package crypto

import (
	"crypto"
	"fmt"

	"github.com/ThalesGroup/crypto11"
)

// do runs f with the token's key pair in a session of its own, holding the
// token lock and the key file's module environment.
func (t *token) do(f func(crypto.Signer) error) (err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	restore := setEnv(t.env)
	defer restore()
	c, err := crypto11.Configure(&crypto11.Config{Path: t.module, TokenLabel: t.label, Pin: t.pin})
	if err != nil {
		return fmt.Errorf("identity %s: open token %q with module %s: %w", t.keyFile, t.label, t.module, scrubPIN(err, t.pin))
	}
	defer func() {
		if cerr := c.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("identity %s: close token %q: %w", t.keyFile, t.label, cerr)
		}
	}()
	s, err := c.FindKeyPair(t.id, t.object)
	if err != nil {
		return fmt.Errorf("identity %s: find key pair %s in token %q: %w", t.keyFile, t.name(), t.label, err)
	}
	if s == nil {
		return fmt.Errorf("identity %s: token %q holds no key pair %s", t.keyFile, t.label, t.name())
	}
	return f(s)
}

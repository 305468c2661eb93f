//go:build !cgo

package crypto

import (
	"crypto"
	"fmt"
)

// do fails: crypto11 (through miekg/pkcs11) loads a PKCS#11 module with
// cgo, and this build has none.
func (t *token) do(func(crypto.Signer) error) error {
	return fmt.Errorf("identity %s: %w", t.keyFile, ErrNoPKCS11)
}

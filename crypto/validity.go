package crypto

import (
	"fmt"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// The reasons a key is not valid by its own material (InvalidKeyError).
const (
	ReasonExpired     = "expired"
	ReasonNotYetValid = "not-yet-valid"
)

// InvalidKeyError is a key used outside the validity its own material
// gives it (an X.509 certificate's NotBefore and NotAfter, an OpenPGP
// key's creation and expiry).
type InvalidKeyError struct {
	KeyID               string
	Reason              string // ReasonExpired or ReasonNotYetValid
	NotBefore, NotAfter time.Time
}

func (e *InvalidKeyError) Error() string {
	if e.Reason == ReasonExpired {
		return fmt.Sprintf("key %s expired at %s", e.KeyID, e.NotAfter.UTC().Format(time.RFC3339))
	}
	return fmt.Sprintf("key %s is not valid before %s", e.KeyID, e.NotBefore.UTC().Format(time.RFC3339))
}

// CheckValidity says whether key id, valid from notBefore to notAfter
// (inclusive; zero: unbounded), may be used at now: nil, or an
// *InvalidKeyError.
func CheckValidity(id string, notBefore, notAfter, now time.Time) error {
	switch {
	case !notAfter.IsZero() && now.After(notAfter):
		return &InvalidKeyError{KeyID: id, Reason: ReasonExpired, NotBefore: notBefore, NotAfter: notAfter}
	case !notBefore.IsZero() && now.Before(notBefore):
		return &InvalidKeyError{KeyID: id, Reason: ReasonNotYetValid, NotBefore: notBefore, NotAfter: notAfter}
	}
	return nil
}

// earliest is the earlier of two ends of validity, zero being none.
func earliest(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero() || a.Before(b):
		return a
	}
	return b
}

// latest is the later of two starts of validity, zero being none.
func latest(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// lifetimeEnd is when a lifetime of secs (nil or 0: none) that starts at
// from ends, zero for none.
func lifetimeEnd(from time.Time, secs *uint32) time.Time {
	if secs == nil || *secs == 0 {
		return time.Time{}
	}
	return from.Add(time.Duration(*secs) * time.Second)
}

// window is a span of validity, zero ends unbounded.
type window struct{ notBefore, notAfter time.Time }

// sigWindow is when a key is valid by one of its self-signatures: from
// the key's and the signature's creation, to the end of the key's
// lifetime the signature gives and of the signature's own, and to the
// first of its revocations.
func sigWindow(pk *packet.PublicKey, sig *packet.Signature, revocations []*packet.Signature) window {
	w := window{notBefore: latest(pk.CreationTime, sig.CreationTime),
		notAfter: earliest(lifetimeEnd(pk.CreationTime, sig.KeyLifetimeSecs), lifetimeEnd(sig.CreationTime, sig.SigLifetimeSecs))}
	for _, r := range revocations {
		w.notAfter = earliest(w.notAfter, r.CreationTime)
	}
	return w
}

// encryptionWindow is when an OpenPGP key has a key to encrypt to, as
// go-crypto's Entity.EncryptionKey picks one: any encryption subkey (the
// span from the first one valid to the last), else the primary key if
// its self-signature lets it encrypt; false when it has none.
func encryptionWindow(e *openpgp.Entity) (window, bool) {
	var w window
	found, open := false, false
	for _, sk := range e.Subkeys {
		if sk.Sig == nil || !sk.Sig.FlagsValid || !sk.Sig.FlagEncryptCommunications || !sk.PublicKey.PubKeyAlgo.CanEncrypt() {
			continue
		}
		s := sigWindow(sk.PublicKey, sk.Sig, sk.Revocations)
		if !found || s.notBefore.Before(w.notBefore) {
			w.notBefore = s.notBefore
		}
		if s.notAfter.IsZero() {
			open = true
		} else if s.notAfter.After(w.notAfter) {
			w.notAfter = s.notAfter
		}
		found = true
	}
	if found {
		if open {
			w.notAfter = time.Time{}
		}
		return w, true
	}
	sig, _ := e.PrimarySelfSignature()
	if sig != nil && sig.FlagsValid && sig.FlagEncryptCommunications && e.PrimaryKey.PubKeyAlgo.CanEncrypt() {
		return window{}, true // bounded by the primary key's own window
	}
	return window{}, false
}

// pgpValidity is when an OpenPGP key can be encrypted to (and so when its
// private key may unwrap): within its primary key's validity (creation,
// the key lifetime of its primary self-signature, its revocation) and
// within that of its encryption subkeys (encryptionWindow).
func pgpValidity(e *openpgp.Entity) (notBefore, notAfter time.Time) {
	w := window{notBefore: e.PrimaryKey.CreationTime}
	if sig, _ := e.PrimarySelfSignature(); sig != nil {
		w = sigWindow(e.PrimaryKey, sig, e.Revocations)
	}
	if enc, ok := encryptionWindow(e); ok {
		w.notBefore, w.notAfter = latest(w.notBefore, enc.notBefore), earliest(w.notAfter, enc.notAfter)
	}
	return w.notBefore, w.notAfter
}

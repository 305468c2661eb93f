package crypto

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"errors"
	"fmt"
	"io"

	"github.com/ProtonMail/go-crypto/openpgp"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/containers/ocicrypt/config"
	"github.com/containers/ocicrypt/keywrap"
	"github.com/containers/ocicrypt/keywrap/pgp"
)

// pgpWrapper is ocicrypt's PGP key wrapper with an unwrap of its own:
// ocicrypt's reads the whole literal data of the message, which the
// registry writes, so a compressed message of 2 GiB of zeros takes 2 GiB
// (and more) of memory. This one does what ocicrypt's does (the same
// keys, passphrases and packet configuration) but reads the literal data
// through MaxPrivateOptionsSize and fails beyond it, without inflating the
// rest; a compressed packet inflates to no more than that either.
type pgpWrapper struct {
	keywrap.KeyWrapper
}

func newPGPWrapper() pgpWrapper { return pgpWrapper{pgp.NewKeyWrapper()} }

// errTooLarge is the error of an unwrap that would yield more than
// MaxPrivateOptionsSize.
func errTooLarge(scheme string) error {
	return fmt.Errorf("%w: the %s wrapped key holds more than the %d bytes of private options shroud reads", ErrInvalidEncryption, scheme, MaxPrivateOptionsSize)
}

// pgpReadConfig is ocicrypt's pgp.GPGDefaultEncryptConfig with a bound on
// what a compressed packet may inflate to (the literal data packet's
// header and the options).
func pgpReadConfig() *packet.Config {
	limit := int64(MaxPrivateOptionsSize + 4096)
	return &packet.Config{
		Rand:                       rand.Reader,
		DefaultHash:                crypto.SHA256,
		DefaultCipher:              packet.CipherAES256,
		CompressionConfig:          &packet.CompressionConfig{Level: 0},
		RSABits:                    2048,
		MaxDecompressedMessageSize: &limit,
	}
}

// UnwrapKey tries each OpenPGP private key in dc (with its passphrase, as
// ocicrypt's prompt gives it) on the message.
func (w pgpWrapper) UnwrapKey(dc *config.DecryptConfig, msg []byte) ([]byte, error) {
	keys, passwords := dc.Parameters["gpg-privatekeys"], dc.Parameters["gpg-privatekeys-passwords"]
	if len(keys) == 0 {
		return nil, errors.New("GPG: Missing private key parameter")
	}
	for idx, key := range keys {
		// Read afresh each time, as ocicrypt does: the prompt decrypts the
		// private keys in place.
		el, err := openpgp.ReadKeyRing(bytes.NewReader(key))
		if err != nil {
			return nil, fmt.Errorf("unable to parse private keys: %w", err)
		}
		var prompt openpgp.PromptFunction
		if len(passwords) > idx {
			responded := false
			prompt = func(keys []openpgp.Key, symmetric bool) ([]byte, error) {
				if responded {
					return nil, errors.New("don't seem to have the right password")
				}
				responded = true
				for _, k := range keys {
					if k.PrivateKey != nil {
						_ = k.PrivateKey.Decrypt(passwords[idx])
					}
				}
				return passwords[idx], nil
			}
		}
		md, err := openpgp.ReadMessage(bytes.NewReader(msg), el, prompt, pgpReadConfig())
		if errors.Is(err, pgperrors.ErrMessageTooLarge) {
			return nil, errTooLarge("pgp")
		}
		if err != nil {
			continue
		}
		// Reading to the end checks the message's integrity (MDC or AEAD).
		opts, err := io.ReadAll(io.LimitReader(md.UnverifiedBody, MaxPrivateOptionsSize+1))
		switch {
		case len(opts) > MaxPrivateOptionsSize, errors.Is(err, pgperrors.ErrMessageTooLarge):
			return nil, errTooLarge("pgp")
		case err != nil:
			continue
		}
		return opts, nil
	}
	return nil, errors.New("PGP: No suitable key found to unwrap key")
}

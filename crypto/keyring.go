package crypto

import (
	"crypto/ecdsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containers/ocicrypt/config"
	keyproviderconfig "github.com/containers/ocicrypt/config/keyprovider-config"
	"github.com/containers/ocicrypt/crypto/pkcs11"
	"github.com/containers/ocicrypt/keywrap"
	p11wrap "github.com/containers/ocicrypt/keywrap/pkcs11"
	"github.com/containers/ocicrypt/keywrap/pkcs7"
	"github.com/containers/ocicrypt/utils"
	"github.com/go-jose/go-jose/v4"
	"gopkg.in/yaml.v3"
)

// ErrNoKey is returned when none of the configured keys can unwrap a layer.
var ErrNoKey = errors.New("no configured key can open this layer")

// IdentityKey is the name UnwrapWith gives shroud's identity (the other
// keys go by DecryptionKey.Path and "provider:"+name).
const IdentityKey = "identity"

// Keyring unwraps layer keys with shroud's keys and wraps them for sets of
// recipients, through ocicrypt's key wrappers (guarded where they are
// unsafe as they are: see the package doc). It is safe for concurrent use.
type Keyring struct {
	identity *Identity
	previous []*Identity // identity rotation: identity_previous.go
	// wrappers are the key wrappers, one per annotation: ocicrypt's jwe,
	// pgp (with shroud's bounded unwrap), pkcs7 and pkcs11 ones, and one
	// per key provider.
	wrappers []keywrap.KeyWrapper
	// keys are the keys layers are unwrapped with, in the order they are
	// tried: the identity, the decryption keys, the key providers.
	keys []keySlot
	self *Recipients // identity only
	// pkcs7 is held around ocicrypt's PKCS#7 wrapping, which sets a
	// package variable of the pkcs7 library (its unwrap sets none).
	pkcs7 sync.Mutex
	// pkcs11 is held around every PKCS#11 wrap and unwrap: ocicrypt sets
	// the module's process environment variables around each, and
	// finalizes the module after. It is a token identity's token lock,
	// which its own operations hold.
	pkcs11 *sync.Mutex
	// p11 is the PKCS#11 configuration (allowed module paths) as yaml.
	p11 []byte
	// providers are the configured key providers by name.
	providers map[string]keyproviderconfig.KeyProviderAttrs
	// info describes keys, for KeyInfo (keyid.go).
	info []KeyInfo
	// failed remembers, for a minute, the (wrapped key, key) pairs that
	// did not open: a hostile annotation on every GET costs one attempt a
	// minute.
	failed *failureCache
}

// keySlot is one key the keyring unwraps with.
type keySlot struct {
	name    string   // what UnwrapWith returns and allow is asked about
	label   string   // what OpenedBy says
	schemes []string // the annotations it can open
	dc      *config.DecryptConfig
	// open, when set, unwraps instead of the scheme's key wrapper with
	// dc: a token identity's JWE unwrap (identity_token.go).
	open func([]byte) ([]byte, error)
}

// KeyringOption configures NewKeyring.
type KeyringOption func(*keyringOptions)

type keyringOptions struct {
	p11             *pkcs11.Pkcs11Config
	providers       map[string]keyproviderconfig.KeyProviderAttrs
	providerTimeout time.Duration
	previous        []*Identity
}

// WithKeyProviders configures ocicrypt key providers (a command or a gRPC
// service, TLS optional) by name: provider:<name> recipients wrap through
// them, and layers wrapped by them are unwrapped through them. A command
// that is not there or a gRPC service that does not answer is an error.
// Each call has a deadline (WithProviderTimeout); a gRPC provider is
// reached over one connection, which Close closes.
func WithKeyProviders(p map[string]keyproviderconfig.KeyProviderAttrs) KeyringOption {
	return func(o *keyringOptions) { o.providers = p }
}

// WithPKCS11 allows PKCS#11 modules: the modules a pkcs11 key file may
// name (absolute paths), and the directories a bare module name is looked
// up in. Without it, no PKCS#11 module is loaded.
func WithPKCS11(allowedModulePaths, moduleDirectories []string) KeyringOption {
	return func(o *keyringOptions) {
		o.p11 = &pkcs11.Pkcs11Config{AllowedModulePaths: allowedModulePaths, ModuleDirectories: moduleDirectories}
	}
}

// NewKeyring returns a keyring that unwraps with the identity and keys.
// A PKCS#11 key is checked against the allowed modules here, so that a
// module outside them fails at start-up.
func NewKeyring(id *Identity, keys []DecryptionKey, opts ...KeyringOption) (*Keyring, error) {
	if id == nil {
		return nil, errors.New("keyring: no identity")
	}
	var o keyringOptions
	for _, f := range opts {
		f(&o)
	}
	if o.p11 == nil {
		o.p11 = &pkcs11.Pkcs11Config{}
	}
	p11, err := yaml.Marshal(o.p11)
	if err != nil {
		return nil, fmt.Errorf("keyring: %w", err)
	}
	const (
		jweID, pgpID, pkcs7ID, pkcs11ID = AnnotationKeys + "jwe", AnnotationKeys + "pgp", AnnotationKeys + "pkcs7", AnnotationKeys + "pkcs11"
	)
	// pkcs7 opens with a private key and its certificate: every private
	// key is given every certificate.
	var x509s [][]byte
	for _, k := range keys {
		if k.kind == "x509" {
			x509s = append(x509s, k.data)
		}
	}
	private := func(name, label string, key, password []byte) keySlot {
		s := keySlot{name: name, label: label, schemes: []string{jweID},
			dc: &config.DecryptConfig{Parameters: map[string][][]byte{"privkeys": {key}, "privkeys-passwords": {password}}}}
		if len(x509s) > 0 {
			s.schemes = append(s.schemes, pkcs7ID)
			s.dc.Parameters["x509s"] = x509s
		}
		return s
	}
	if err := checkPrevious(id, o.previous); err != nil {
		return nil, err
	}
	var slots []keySlot
	lock := new(sync.Mutex)
	if id.tok != nil {
		slots = append(slots, keySlot{name: IdentityKey, label: "shroud identity " + id.Fingerprint() + " (PKCS#11 token)",
			schemes: []string{jweID}, open: id.unwrapJWE})
		lock = id.tok.mu
	} else {
		idPriv, err := id.privatePEM()
		if err != nil {
			return nil, err
		}
		slots = append(slots, private(IdentityKey, "shroud identity "+id.Fingerprint(), idPriv, []byte{}))
	}
	for _, p := range o.previous {
		if p.tok != nil {
			return nil, fmt.Errorf("keyring: previous identity %s is in a PKCS#11 token: a previous identity must be a key file (rotate to a token identity, not from one)", p.Path())
		}
		pem, err := p.privatePEM()
		if err != nil {
			return nil, err
		}
		slots = append(slots, private(PreviousIdentityKey(p), "previous shroud identity "+p.Fingerprint(), pem, []byte{}))
	}
	for _, k := range keys {
		switch k.kind {
		case "private":
			slots = append(slots, private(k.Path, k.Path, k.data, k.password))
		case "pgp":
			slots = append(slots, keySlot{name: k.Path, label: k.Path, schemes: []string{pgpID},
				dc: &config.DecryptConfig{Parameters: map[string][][]byte{"gpg-privatekeys": {k.data}, "gpg-privatekeys-passwords": {k.password}}}})
		case "pkcs11":
			if err := checkPKCS11Module(k.data, o.p11); err != nil {
				return nil, fmt.Errorf("decryption key %s: %w", k.Path, err)
			}
			slots = append(slots, keySlot{name: k.Path, label: k.Path, schemes: []string{pkcs11ID},
				dc: &config.DecryptConfig{Parameters: map[string][][]byte{"pkcs11-yamls": {k.data}, "pkcs11-config": {p11}}}})
		}
	}
	k := &Keyring{
		identity:  id,
		previous:  o.previous,
		wrappers:  []keywrap.KeyWrapper{newJWEWrapper(), newPGPWrapper(), pkcs7.NewKeyWrapper(), p11wrap.NewKeyWrapper()},
		keys:      slots,
		pkcs11:    lock,
		p11:       p11,
		providers: o.providers,
		failed:    newFailureCache(),
	}
	for _, name := range slices.Sorted(maps.Keys(o.providers)) {
		if err := checkProvider(name, o.providers[name]); err != nil {
			k.Close()
			return nil, err
		}
		w, err := newProviderWrapper(name, o.providers[name], o.providerTimeout)
		if err != nil {
			k.Close()
			return nil, err
		}
		k.wrappers = append(k.wrappers, w)
		k.keys = append(k.keys, keySlot{name: "provider:" + name, label: "key provider " + name, schemes: []string{w.GetAnnotationID()},
			dc: &config.DecryptConfig{Parameters: map[string][][]byte{name: {[]byte("Enabled")}}}})
	}
	if k.self, err = k.Recipients(nil); err != nil {
		k.Close()
		return nil, err
	}
	k.info = keyInfos(id, o.previous, keys, k.keys)
	return k, nil
}

// KeyNames lists the names of the keys the keyring unwraps with, in the
// order it tries them: IdentityKey, each decryption key's Path (PKCS#7
// certificates are not keys), "provider:"+name for each key provider.
func (k *Keyring) KeyNames() []string {
	names := make([]string, len(k.keys))
	for i, s := range k.keys {
		names[i] = s.name
	}
	return names
}

// Close releases the connections to gRPC key providers. The keyring is
// not to be used after.
func (k *Keyring) Close() error {
	var errs []error
	for _, w := range k.wrappers {
		if p, ok := w.(*providerWrapper); ok {
			errs = append(errs, p.Close())
		}
	}
	return errors.Join(errs...)
}

// wrapper returns the key wrapper of an annotation, or nil.
func (k *Keyring) wrapper(annotation string) keywrap.KeyWrapper {
	for _, w := range k.wrappers {
		if w.GetAnnotationID() == annotation {
			return w
		}
	}
	return nil
}

// withKeyID returns a JWE recipient's public key as a JWK carrying its
// thumbprint as "kid" (and the algorithm ocicrypt would pick), so that
// every JWE recipient header names its key: what `shroud inspect` and
// DENIED messages show. Other tools ignore the kid.
func withKeyID(pub []byte) ([]byte, error) {
	k, err := utils.ParsePublicKey(pub, "JWE")
	if err != nil {
		return nil, err
	}
	jwk, ok := k.(*jose.JSONWebKey)
	if !ok {
		jwk = &jose.JSONWebKey{Key: k}
	}
	if jwk.Algorithm == "" {
		jwk.Algorithm = string(jose.RSA_OAEP)
		if _, ec := jwk.Key.(*ecdsa.PublicKey); ec {
			jwk.Algorithm = string(jose.ECDH_ES_A256KW)
		}
	}
	if jwk.KeyID == "" {
		jwk.KeyID = Fingerprint(jwk.Key)
	}
	return json.Marshal(jwk)
}

// trialOptions are private options of the size real ones have, for a
// trial wrap: an RSA key too small for them (RSA-OAEP-SHA256 on 2048 bits
// carries 190 bytes, ocicrypt's options are 193) must fail at start-up.
func trialOptions() []byte {
	b, _ := PrivateOptions{
		Key:         LayerKey{Key: make([]byte, KeySize), Nonce: make([]byte, NonceSize)},
		PlainDigest: "sha256:0000000000000000000000000000000000000000000000000000000000000000",
	}.Marshal()
	return b
}

// checkPKCS11Module fails when a PKCS#11 key file names a module outside
// the allowed ones.
func checkPKCS11Module(keyFile []byte, conf *pkcs11.Pkcs11Config) error {
	obj, err := pkcs11.ParsePkcs11KeyFile(keyFile)
	if err != nil {
		return err
	}
	obj.Uri.SetModuleDirectories(conf.ModuleDirectories)
	obj.Uri.SetAllowedModulePaths(conf.AllowedModulePaths)
	if _, err := obj.Uri.GetModule(); err != nil {
		return fmt.Errorf("PKCS#11 module: %w (allow it with pkcs11 allowed-module-paths)", err)
	}
	return nil
}

// Identity returns shroud's identity.
func (k *Keyring) Identity() *Identity { return k.identity }

// Wrap wraps opts for a set of recipients and returns the layer
// annotations (keys.<scheme> and pubopts).
func (k *Keyring) Wrap(opts PrivateOptions, pub PublicOptions, rs *Recipients) (map[string]string, error) {
	return k.wrap(rs.ec, opts, pub)
}

// WrapForIdentity wraps opts for shroud's identity alone: the form a layer's
// key is kept in between its upload and the manifest that names it. It
// runs the JWE wrapper alone and waits for no other scheme's lock.
func (k *Keyring) WrapForIdentity(opts PrivateOptions, pub PublicOptions) (map[string]string, error) {
	return k.wrap(k.self.ec, opts, pub)
}

func (k *Keyring) wrap(ec *config.EncryptConfig, opts PrivateOptions, pub PublicOptions) (map[string]string, error) {
	data, err := opts.Marshal()
	if err != nil {
		return nil, fmt.Errorf("wrap layer key: %w", err)
	}
	out := map[string]string{}
	for _, w := range k.wrappers {
		id := w.GetAnnotationID()
		own := scopedEncrypt(id, ec)
		if own == nil {
			continue // no recipient of this scheme: not called, nor its lock taken
		}
		b, err := k.wrapWith(w, own, data)
		if err != nil {
			return nil, fmt.Errorf("wrap layer key (%s): %w", id, err)
		}
		if len(b) > 0 {
			out[id] = base64.StdEncoding.EncodeToString(b)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("wrap layer key: no recipient")
	}
	pubAnn, err := pub.Annotation()
	if err != nil {
		return nil, err
	}
	out[AnnotationPubOpts] = pubAnn
	return out, nil
}

// scopedEncrypt returns the part of ec the wrapper of annotation wraps
// with, or nil when ec has no recipient of its scheme. A key provider
// gets its own parameters alone: ocicrypt sends the whole config to the
// provider, which must never see another scheme's keys.
func scopedEncrypt(annotation string, ec *config.EncryptConfig) *config.EncryptConfig {
	has := func(names ...string) bool {
		return slices.ContainsFunc(names, func(n string) bool { return len(ec.Parameters[n]) > 0 })
	}
	switch annotation {
	case AnnotationKeys + "jwe":
		if has("pubkeys") {
			return ec
		}
	case AnnotationKeys + "pgp":
		if has("gpg-recipients") && has("gpg-pubkeyringfile") {
			return ec
		}
	case AnnotationKeys + "pkcs7":
		if has("x509s") {
			return ec
		}
	case AnnotationKeys + "pkcs11":
		if has("pkcs11-pubkeys", "pkcs11-yamls") {
			return ec
		}
	default:
		name, ok := strings.CutPrefix(annotation, AnnotationKeys+"provider.")
		if v, has := ec.Parameters[name]; ok && has {
			return &config.EncryptConfig{Parameters: map[string][][]byte{name: v}}
		}
	}
	return nil
}

// lock returns the lock an operation of the wrapper of annotation must
// hold, or nil.
func (k *Keyring) lock(annotation string, wrapping bool) *sync.Mutex {
	switch annotation {
	case AnnotationKeys + "pkcs11":
		return k.pkcs11
	case AnnotationKeys + "pkcs7":
		if wrapping {
			return &k.pkcs7
		}
	}
	return nil
}

func (k *Keyring) wrapWith(w keywrap.KeyWrapper, ec *config.EncryptConfig, data []byte) ([]byte, error) {
	if mu := k.lock(w.GetAnnotationID(), true); mu != nil {
		mu.Lock()
		defer mu.Unlock()
	}
	return w.WrapKeys(ec, data)
}

// Rewrap adds a set of recipients to a layer encrypted elsewhere, without
// re-encrypting it: the layer key is unwrapped with the keys allow accepts
// (nil: every key, as UnwrapWith) and wrapped for the set, whose wrapped
// keys are added to those the layer already has. It fails (wrapping
// ErrNoKey) when no such key can open it.
func (k *Keyring) Rewrap(annotations map[string]string, rs *Recipients, allow func(key string) bool) (map[string]string, error) {
	opts, _, err := k.UnwrapWith(annotations, allow)
	if err != nil {
		return nil, err
	}
	pub, err := ParsePublicOptions(annotations)
	if err != nil {
		return nil, err
	}
	added, err := k.Wrap(opts, pub, rs)
	if err != nil {
		return nil, err
	}
	out := maps.Clone(annotations)
	for key, v := range added {
		if key == AnnotationPubOpts {
			continue
		}
		if old := out[key]; old != "" {
			v = old + "," + v
		}
		out[key] = v
	}
	return out, nil
}

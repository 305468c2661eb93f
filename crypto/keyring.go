package crypto

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/big"
	"net"
	"net/mail"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"

	"github.com/containers/ocicrypt/config"
	keyproviderconfig "github.com/containers/ocicrypt/config/keyprovider-config"
	"github.com/containers/ocicrypt/crypto/pkcs11"
	"github.com/containers/ocicrypt/keywrap"
	"github.com/containers/ocicrypt/keywrap/jwe"
	"github.com/containers/ocicrypt/keywrap/keyprovider"
	"github.com/containers/ocicrypt/keywrap/pgp"
	p11wrap "github.com/containers/ocicrypt/keywrap/pkcs11"
	"github.com/containers/ocicrypt/keywrap/pkcs7"
	"github.com/containers/ocicrypt/utils"
	"github.com/go-jose/go-jose/v4"
	"gopkg.in/yaml.v3"
)

// ErrNoKey is returned when none of the configured keys can unwrap a layer.
var ErrNoKey = errors.New("no configured key can open this layer")

// Recipient is one parsed recipient spec, in the form skopeo's
// --encryption-key and ctr-enc take: jwe:<public key file> (PEM, DER or
// JWK; RSA or EC), pgp:<OpenPGP public key file> (armored or binary),
// pkcs7:<X.509 certificate file> (PEM or DER), pkcs11:<key file>,
// provider:<name>[:<args>] (a key provider the keyring is configured with).
type Recipient struct {
	Spec     string
	scheme   string
	data     []byte   // the key or certificate; for pgp a binary keyring; for a provider its arguments
	pgpIDs   [][]byte // for pgp: the address ocicrypt selects each key by
	provider string   // for provider: its name
}

// ParseRecipient reads a recipient spec. A file that does not parse is an
// error naming it.
func ParseRecipient(spec string) (Recipient, error) {
	scheme, arg, ok := strings.Cut(spec, ":")
	if !ok || arg == "" {
		return Recipient{}, fmt.Errorf("recipient %q: want <scheme>:<argument>, e.g. jwe:/path/to/key.pub.pem", spec)
	}
	fail := func(format string, args ...any) (Recipient, error) {
		return Recipient{}, fmt.Errorf("recipient %q: "+format, append([]any{spec}, args...)...)
	}
	switch scheme {
	case "jwe", "pgp", "pkcs7", "pkcs11":
	case "provider":
		// provider:<name>[:<args>], as ocicrypt passes it to the provider.
		name, args, _ := strings.Cut(arg, ":")
		if args == "" {
			args = "Enabled"
		}
		return Recipient{Spec: spec, scheme: scheme, provider: name, data: []byte(args)}, nil
	default:
		return fail("unknown scheme %q (want jwe, pgp, pkcs7, pkcs11 or provider)", scheme)
	}
	b, err := os.ReadFile(arg)
	if err != nil {
		return fail("%w", err)
	}
	r := Recipient{Spec: spec, scheme: scheme, data: b}
	switch scheme {
	case "jwe":
		if _, err := utils.ParsePublicKey(b, "JWE"); err != nil {
			return fail("%s is not a public key (PEM, DER or JWK): %w", arg, err)
		}
		// A trial wrap: a JWK whose "alg" does not suit its key only
		// fails here, and must fail at start-up, not at the first push.
		ec := &config.EncryptConfig{Parameters: map[string][][]byte{"pubkeys": {b}}}
		if _, err := jwe.NewKeyWrapper().WrapKeys(ec, trialOptions()); err != nil {
			return fail("%s cannot wrap keys (a JWK needs an \"alg\" that suits its key): %w", arg, err)
		}
	case "pkcs7":
		if _, err := utils.ParseCertificate(b, "PKCS7"); err != nil {
			return fail("%s is not an X.509 certificate: %w", arg, err)
		}
	case "pkcs11":
		if _, err := pkcs11.ParsePkcs11KeyFile(b); err != nil {
			return fail("%s is not a PKCS#11 key file (yaml with a pkcs11: uri): %w", arg, err)
		}
	case "pgp":
		ring, ids, err := parsePGPPublic(b)
		if err != nil {
			return fail("%s: %w", arg, err)
		}
		r.data, r.pgpIDs = ring, ids
	}
	return r, nil
}

// parsePGPPublic reads OpenPGP public keys (armored or binary) and returns
// them as a binary keyring with the address of each key's first identity,
// which is how ocicrypt's PGP key wrapper picks recipients out of a ring.
func parsePGPPublic(b []byte) (ring []byte, ids [][]byte, err error) {
	if blk, err := armor.Decode(bytes.NewReader(b)); err == nil {
		if b, err = io.ReadAll(blk.Body); err != nil {
			return nil, nil, fmt.Errorf("dearmor: %w", err)
		}
	}
	el, err := openpgp.ReadKeyRing(bytes.NewReader(b))
	if err != nil {
		return nil, nil, fmt.Errorf("not an OpenPGP public key: %w", err)
	}
	for _, e := range el {
		var id []byte
		for name := range e.Identities {
			addr, err := mail.ParseAddress(name)
			if err != nil {
				return nil, nil, fmt.Errorf("OpenPGP identity %q has no address ocicrypt can select the key by: %w", name, err)
			}
			if id == nil {
				id = []byte(addr.Address)
			}
		}
		if id == nil {
			return nil, nil, fmt.Errorf("OpenPGP key %X has no identity", e.PrimaryKey.KeyId)
		}
		ids = append(ids, id)
	}
	return b, ids, nil
}

// DecryptionKey is one key shroud may unwrap layers with: a private key
// (jwe, pkcs7), an OpenPGP private key, a PKCS#11 key file (yaml naming a
// key in a token), or the X.509 certificate pkcs7 decryption needs beside
// its private key.
type DecryptionKey struct {
	Path     string
	kind     string // "private", "pgp", "pkcs11" or "x509"
	data     []byte
	password []byte
}

// ParseDecryptionKey reads a key file in the form skopeo's
// --decryption-key takes: "file" or "file:password".
func ParseDecryptionKey(spec string) (DecryptionKey, error) {
	path, password := spec, ""
	if _, err := os.Stat(spec); err != nil {
		if i := strings.LastIndex(spec, ":"); i > 0 {
			path, password = spec[:i], spec[i+1:]
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return DecryptionKey{}, fmt.Errorf("decryption key: %w", err)
	}
	k := DecryptionKey{Path: path, data: b, password: []byte(password)}
	switch {
	case utils.IsPkcs11PrivateKey(b):
		k.kind = "pkcs11"
	case utils.IsCertificate(b):
		k.kind = "x509"
	case isPGPPrivate(b):
		k.kind = "pgp"
		if blk, err := armor.Decode(bytes.NewReader(b)); err == nil {
			if k.data, err = io.ReadAll(blk.Body); err != nil {
				return DecryptionKey{}, fmt.Errorf("decryption key %s: %w", path, err)
			}
		}
	default:
		if _, err := utils.ParsePrivateKey(b, k.password, "JWE"); err != nil {
			return DecryptionKey{}, fmt.Errorf("decryption key %s: not a private key, OpenPGP private key or certificate shroud can use: %w", path, err)
		}
		k.kind = "private"
	}
	return k, nil
}

func isPGPPrivate(b []byte) bool {
	if blk, err := armor.Decode(bytes.NewReader(b)); err == nil {
		return blk.Type == "PGP PRIVATE KEY BLOCK"
	}
	el, err := openpgp.ReadKeyRing(bytes.NewReader(b))
	return err == nil && len(el) > 0 && el[0].PrivateKey != nil
}

// Keyring unwraps layer keys with shroud's keys and wraps them for sets of
// recipients, through ocicrypt's key wrappers.
type Keyring struct {
	identity *Identity
	wrappers []keywrap.KeyWrapper
	self     *Recipients           // identity only
	decrypt  *config.DecryptConfig // identity + decryption keys
	each     []namedConfig         // one per key, to tell which opens a layer
	// serial serializes the key wrappers that are not safe to run
	// concurrently: ocicrypt's PKCS#7 wrapping sets a package variable of
	// the pkcs7 library, its PKCS#11 one sets process environment
	// variables for the module around every call.
	serial sync.Mutex
	// p11 is the PKCS#11 configuration (allowed module paths) as yaml.
	p11 []byte
	// providers are the configured key providers by name.
	providers map[string]keyproviderconfig.KeyProviderAttrs
}

// KeyringOption configures NewKeyring.
type KeyringOption func(*keyringOptions)

type keyringOptions struct {
	p11       *pkcs11.Pkcs11Config
	providers map[string]keyproviderconfig.KeyProviderAttrs
}

// WithKeyProviders configures ocicrypt key providers (a command or a gRPC
// service, TLS optional) by name: provider:<name> recipients wrap through
// them, and layers wrapped by them are unwrapped through them. A command
// that is not there or a gRPC service that does not answer is an error.
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

type namedConfig struct {
	name string
	dc   *config.DecryptConfig
}

// Recipients is a compiled set of recipients; shroud's identity is always
// one of them.
type Recipients struct {
	specs []string
	ec    *config.EncryptConfig
}

// Specs lists the recipients besides the identity.
func (r *Recipients) Specs() []string { return r.specs }

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
	idPriv, err := id.privatePEM()
	if err != nil {
		return nil, err
	}
	p := map[string][][]byte{"privkeys": {idPriv}, "privkeys-passwords": {{}}, "pkcs11-config": {p11}}
	each := []namedConfig{{"shroud identity " + id.Fingerprint(), &config.DecryptConfig{Parameters: map[string][][]byte{"privkeys": {idPriv}, "privkeys-passwords": {{}}}}}}
	var x509s [][]byte
	for _, k := range keys {
		one := map[string][][]byte{}
		switch k.kind {
		case "private":
			p["privkeys"] = append(p["privkeys"], k.data)
			p["privkeys-passwords"] = append(p["privkeys-passwords"], k.password)
			one["privkeys"], one["privkeys-passwords"] = [][]byte{k.data}, [][]byte{k.password}
		case "pgp":
			p["gpg-privatekeys"] = append(p["gpg-privatekeys"], k.data)
			p["gpg-privatekeys-passwords"] = append(p["gpg-privatekeys-passwords"], k.password)
			one["gpg-privatekeys"], one["gpg-privatekeys-passwords"] = [][]byte{k.data}, [][]byte{k.password}
		case "pkcs11":
			if err := checkPKCS11Module(k.data, o.p11); err != nil {
				return nil, fmt.Errorf("decryption key %s: %w", k.Path, err)
			}
			p["pkcs11-yamls"] = append(p["pkcs11-yamls"], k.data)
			one["pkcs11-yamls"], one["pkcs11-config"] = [][]byte{k.data}, [][]byte{p11}
		case "x509":
			p["x509s"] = append(p["x509s"], k.data)
			x509s = append(x509s, k.data)
			continue
		}
		each = append(each, namedConfig{k.Path, &config.DecryptConfig{Parameters: one}})
	}
	for _, n := range each {
		n.dc.Parameters["x509s"] = x509s // pkcs7 opens with a private key and its certificate
	}
	k := &Keyring{
		identity:  id,
		wrappers:  []keywrap.KeyWrapper{jwe.NewKeyWrapper(), pgp.NewKeyWrapper(), pkcs7.NewKeyWrapper(), p11wrap.NewKeyWrapper()},
		decrypt:   &config.DecryptConfig{Parameters: p},
		each:      each,
		p11:       p11,
		providers: o.providers,
	}
	names := slices.Sorted(maps.Keys(o.providers))
	for _, name := range names {
		if err := checkProvider(name, o.providers[name]); err != nil {
			return nil, err
		}
		k.wrappers = append(k.wrappers, keyprovider.NewKeyWrapper(name, o.providers[name]))
		p[name] = [][]byte{[]byte("Enabled")}
		k.each = append(k.each, namedConfig{"key provider " + name, &config.DecryptConfig{Parameters: map[string][][]byte{name: {[]byte("Enabled")}}}})
	}
	if k.self, err = k.Recipients(nil); err != nil {
		return nil, err
	}
	return k, nil
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

// Recipients compiles a set of recipients (plus the identity).
func (k *Keyring) Recipients(rs []Recipient) (*Recipients, error) {
	idJWK, err := withKeyID(k.identity.PublicPEM())
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	p := map[string][][]byte{"pubkeys": {idJWK}}
	var ring []byte
	set := &Recipients{}
	for _, r := range rs {
		set.specs = append(set.specs, r.Spec)
		switch r.scheme {
		case "jwe":
			jwk, err := withKeyID(r.data)
			if err != nil {
				return nil, fmt.Errorf("recipient %q: %w", r.Spec, err)
			}
			p["pubkeys"] = append(p["pubkeys"], jwk)
		case "pkcs7":
			p["x509s"] = append(p["x509s"], r.data)
		case "pgp":
			ring = append(ring, r.data...)
			p["gpg-recipients"] = append(p["gpg-recipients"], r.pgpIDs...)
		case "pkcs11":
			p["pkcs11-pubkeys"] = append(p["pkcs11-pubkeys"], r.data)
		case "provider":
			if _, ok := k.providers[r.provider]; !ok {
				return nil, fmt.Errorf("recipient %q: no key provider %q is configured", r.Spec, r.provider)
			}
			p[r.provider] = append(p[r.provider], r.data)
		default:
			return nil, fmt.Errorf("recipient %q: scheme %q cannot wrap keys", r.Spec, r.scheme)
		}
	}
	if ring != nil {
		p["gpg-pubkeyringfile"] = [][]byte{ring}
	}
	set.ec = &config.EncryptConfig{Parameters: p, DecryptConfig: config.DecryptConfig{Parameters: map[string][][]byte{"pkcs11-config": {k.p11}}}}
	// A trial wrap reaches every PKCS#11 token and key provider now: a
	// module outside the allowed paths, a missing token or key, a provider
	// that does not answer fails here, naming the recipient.
	for _, r := range rs {
		var w keywrap.KeyWrapper
		one := &config.EncryptConfig{DecryptConfig: set.ec.DecryptConfig}
		switch r.scheme {
		case "pkcs11":
			w, one.Parameters = p11wrap.NewKeyWrapper(), map[string][][]byte{"pkcs11-pubkeys": {r.data}}
		case "provider":
			w, one.Parameters = keyprovider.NewKeyWrapper(r.provider, k.providers[r.provider]), map[string][][]byte{r.provider: {r.data}}
		default:
			continue
		}
		if b, err := k.wrapWith(w, one, trialOptions()); err != nil || len(b) == 0 {
			return nil, fmt.Errorf("recipient %q: the trial wrap failed: %w", r.Spec, errors.Join(err, errors.New("no wrapped key")))
		}
	}
	return set, nil
}

// checkProvider fails when a key provider cannot be reached: its command
// is not there, or its gRPC address does not accept a connection (and a
// TLS handshake, where configured).
func checkProvider(name string, a keyproviderconfig.KeyProviderAttrs) error {
	switch {
	case a.Command != nil:
		if _, err := exec.LookPath(a.Command.Path); err != nil {
			return fmt.Errorf("key provider %q: command: %w", name, err)
		}
	case a.Grpc != "":
		conn, err := net.DialTimeout("tcp", a.Grpc, 5*time.Second)
		if err != nil {
			return fmt.Errorf("key provider %q: gRPC %s does not answer: %w", name, a.Grpc, err)
		}
		defer conn.Close()
		if a.GrpcTLS != nil {
			host, _, _ := net.SplitHostPort(a.Grpc)
			cfg := &tls.Config{ServerName: host, InsecureSkipVerify: a.GrpcTLS.InsecureSkipVerify}
			if a.GrpcTLS.ServerName != "" {
				cfg.ServerName = a.GrpcTLS.ServerName
			}
			if a.GrpcTLS.RootCAFile != "" {
				pemBytes, err := os.ReadFile(a.GrpcTLS.RootCAFile)
				if err != nil {
					return fmt.Errorf("key provider %q: %w", name, err)
				}
				cfg.RootCAs = x509.NewCertPool()
				if !cfg.RootCAs.AppendCertsFromPEM(pemBytes) {
					return fmt.Errorf("key provider %q: no certificate in %s", name, a.GrpcTLS.RootCAFile)
				}
			}
			if a.GrpcTLS.CertFile != "" {
				c, err := tls.LoadX509KeyPair(a.GrpcTLS.CertFile, a.GrpcTLS.KeyFile)
				if err != nil {
					return fmt.Errorf("key provider %q: client certificate: %w", name, err)
				}
				cfg.Certificates = []tls.Certificate{c}
			}
			tc := tls.Client(conn, cfg)
			tc.SetDeadline(time.Now().Add(5 * time.Second))
			if err := tc.Handshake(); err != nil {
				return fmt.Errorf("key provider %q: TLS with %s: %w", name, a.Grpc, err)
			}
		}
	default:
		return fmt.Errorf("key provider %q: neither cmd nor grpc is set", name)
	}
	return nil
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
// key is kept in between its upload and the manifest that names it.
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
		b, err := k.wrapWith(w, k.scoped(w, ec), data)
		if err != nil {
			return nil, fmt.Errorf("wrap layer key (%s): %w", w.GetAnnotationID(), err)
		}
		if len(b) > 0 {
			out[w.GetAnnotationID()] = base64.StdEncoding.EncodeToString(b)
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

// scoped gives a key provider only its own parameters: ocicrypt sends the
// whole config to the provider, which must never see another scheme's keys.
func (k *Keyring) scoped(w keywrap.KeyWrapper, ec *config.EncryptConfig) *config.EncryptConfig {
	name, ok := strings.CutPrefix(w.GetAnnotationID(), AnnotationKeys+"provider.")
	if !ok {
		return ec
	}
	own := map[string][][]byte{}
	if v, ok := ec.Parameters[name]; ok {
		own[name] = v
	}
	return &config.EncryptConfig{Parameters: own}
}

func (k *Keyring) scopedDecrypt(w keywrap.KeyWrapper, dc *config.DecryptConfig) *config.DecryptConfig {
	name, ok := strings.CutPrefix(w.GetAnnotationID(), AnnotationKeys+"provider.")
	if !ok {
		return dc
	}
	if _, ok := dc.Parameters[name]; !ok {
		return nil // this set of keys does not include the provider
	}
	return &config.DecryptConfig{Parameters: map[string][][]byte{name: dc.Parameters[name]}}
}

func (k *Keyring) wrapWith(w keywrap.KeyWrapper, ec *config.EncryptConfig, data []byte) ([]byte, error) {
	if serialized(w) {
		k.serial.Lock()
		defer k.serial.Unlock()
	}
	return w.WrapKeys(ec, data)
}

func (k *Keyring) unwrapWith(w keywrap.KeyWrapper, dc *config.DecryptConfig, b []byte) ([]byte, error) {
	if serialized(w) {
		k.serial.Lock()
		defer k.serial.Unlock()
	}
	if dc = k.scopedDecrypt(w, dc); dc == nil {
		return nil, errors.New("not a key of this provider")
	}
	return w.UnwrapKey(dc, b)
}

func serialized(w keywrap.KeyWrapper) bool {
	id := w.GetAnnotationID()
	return id == AnnotationKeys+"pkcs7" || id == AnnotationKeys+"pkcs11"
}

// Rewrap adds a set of recipients to a layer encrypted elsewhere, without
// re-encrypting it: the layer key is unwrapped with shroud's keys and
// wrapped for the set, whose wrapped keys are added to those the layer
// already has. It fails (wrapping ErrNoKey) when shroud cannot open it.
func (k *Keyring) Rewrap(annotations map[string]string, rs *Recipients) (map[string]string, error) {
	opts, err := k.Unwrap(annotations)
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

// Unwrap returns the private options of an encrypted layer from its
// annotations, trying every key wrapper with shroud's keys. The error, which
// wraps ErrNoKey, says which recipients the layer has.
func (k *Keyring) Unwrap(annotations map[string]string) (PrivateOptions, error) {
	var tried []string
	for _, w := range k.wrappers {
		v := annotations[w.GetAnnotationID()]
		if v == "" {
			continue
		}
		for _, part := range strings.Split(v, ",") {
			b, err := base64.StdEncoding.DecodeString(part)
			if err != nil {
				return PrivateOptions{}, fmt.Errorf("decode %s: %w", w.GetAnnotationID(), err)
			}
			data, err := k.unwrapWith(w, k.decrypt, b)
			if err != nil {
				tried = append(tried, describeWrapped(w, part, b))
				continue
			}
			return ParsePrivateOptions(data)
		}
	}
	for a := range annotations {
		if strings.HasPrefix(a, AnnotationKeys) && !k.knows(a) {
			tried = append(tried, strings.TrimPrefix(a, AnnotationKeys)+" (scheme not configured)")
		}
	}
	if len(tried) == 0 {
		return PrivateOptions{}, fmt.Errorf("%w: the layer has no wrapped keys", ErrNoKey)
	}
	sort.Strings(tried)
	return PrivateOptions{}, fmt.Errorf("%w: it is wrapped for %s", ErrNoKey, strings.Join(tried, "; "))
}

// OpenedBy names the first of shroud's keys that can open a layer ("" if
// none can).
func (k *Keyring) OpenedBy(annotations map[string]string) string {
	for _, n := range k.each {
		for _, w := range k.wrappers {
			for _, part := range strings.Split(annotations[w.GetAnnotationID()], ",") {
				b, err := base64.StdEncoding.DecodeString(part)
				if err != nil || len(b) == 0 {
					continue
				}
				if _, err := k.unwrapWith(w, n.dc, b); err == nil {
					return n.name
				}
			}
		}
	}
	return ""
}

// Describe names the recipients a layer's keys are wrapped for, per
// scheme: JWE key algorithms (and key ids), OpenPGP key ids, the number
// of PKCS#7 recipients.
func (k *Keyring) Describe(annotations map[string]string) []string {
	var out []string
	for _, w := range k.wrappers {
		for _, part := range strings.Split(annotations[w.GetAnnotationID()], ",") {
			if b, err := base64.StdEncoding.DecodeString(part); err == nil && len(b) > 0 {
				out = append(out, describeWrapped(w, part, b))
			}
		}
	}
	return out
}

// describePKCS7 names the recipients of a CMS EnvelopedData by the issuer
// and serial number of their certificates (what CMS records of them).
func describePKCS7(b []byte) string {
	type issuerAndSerial struct {
		Issuer asn1.RawValue
		Serial *big.Int
	}
	type recipientInfo struct {
		Version                int
		Recipient              issuerAndSerial
		KeyEncryptionAlgorithm pkix.AlgorithmIdentifier
		EncryptedKey           []byte
	}
	var ci struct {
		ContentType asn1.ObjectIdentifier
		Content     asn1.RawValue `asn1:"explicit,tag:0"`
	}
	var ed struct {
		Version        int
		RecipientInfos []recipientInfo `asn1:"set"`
		Rest           asn1.RawValue
	}
	if _, err := asn1.Unmarshal(b, &ci); err != nil {
		return "pkcs7"
	}
	if _, err := asn1.Unmarshal(ci.Content.Bytes, &ed); err != nil {
		return "pkcs7"
	}
	var out []string
	for _, ri := range ed.RecipientInfos {
		var rdn pkix.RDNSequence
		var name pkix.Name
		if _, err := asn1.Unmarshal(ri.Recipient.Issuer.FullBytes, &rdn); err == nil {
			name.FillFromRDNSequence(&rdn)
		}
		out = append(out, fmt.Sprintf("issuer %q serial %s", name.String(), ri.Recipient.Serial))
	}
	return "pkcs7 recipients [" + strings.Join(out, ", ") + "]"
}

func (k *Keyring) knows(annotation string) bool {
	for _, w := range k.wrappers {
		if w.GetAnnotationID() == annotation {
			return true
		}
	}
	return false
}

// describeWrapped names the recipients of one wrapped key for an error:
// the JWE key algorithms (and key ids, where set), the OpenPGP key ids.
func describeWrapped(w keywrap.KeyWrapper, b64 string, b []byte) string {
	scheme := strings.TrimPrefix(w.GetAnnotationID(), AnnotationKeys)
	switch scheme {
	case "jwe":
	case "pkcs7":
		return describePKCS7(b)
	case "pgp":
		ids, err := w.GetKeyIdsFromPacket(b64)
		if err != nil || len(ids) == 0 {
			return "pgp"
		}
		var s []string
		for _, id := range ids {
			s = append(s, fmt.Sprintf("%016X", id))
		}
		return "pgp key ids [" + strings.Join(s, ", ") + "]"
	default:
		return scheme
	}
	var j struct {
		Recipients []struct {
			Header map[string]any `json:"header"`
		} `json:"recipients"`
		Header    map[string]any `json:"header"`
		Protected string         `json:"protected"`
	}
	if json.Unmarshal(b, &j) != nil {
		return "jwe (unreadable)"
	}
	var protected map[string]any
	if p, err := base64.RawURLEncoding.DecodeString(j.Protected); err == nil {
		_ = json.Unmarshal(p, &protected)
	}
	hdrs := []map[string]any{j.Header}
	if len(j.Recipients) > 0 {
		hdrs = hdrs[:0]
		for _, r := range j.Recipients {
			hdrs = append(hdrs, r.Header)
		}
	}
	var keys []string
	for _, h := range hdrs {
		alg, ok := h["alg"]
		if !ok {
			alg = protected["alg"]
		}
		d := fmt.Sprint(alg)
		kid, ok := h["kid"].(string)
		if !ok {
			kid, ok = protected["kid"].(string)
		}
		if ok {
			d += " kid " + kid
		}
		keys = append(keys, d)
	}
	return fmt.Sprintf("jwe recipients [%s]", strings.Join(keys, ", "))
}

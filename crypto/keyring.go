package crypto

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/containers/ocicrypt/config"
	"github.com/containers/ocicrypt/keywrap"
	"github.com/containers/ocicrypt/keywrap/jwe"
	"github.com/containers/ocicrypt/utils"
)

// ErrNoKey is returned when none of the configured keys can unwrap a layer.
var ErrNoKey = errors.New("no configured key can open this layer")

// Recipient is one parsed recipient spec ("jwe:<public key file>").
type Recipient struct {
	Spec   string
	scheme string
	data   []byte
}

// ParseRecipient reads a recipient spec in the form skopeo's
// --encryption-key takes. A file that does not parse is an error naming it.
func ParseRecipient(spec string) (Recipient, error) {
	scheme, arg, ok := strings.Cut(spec, ":")
	if !ok || arg == "" {
		return Recipient{}, fmt.Errorf("recipient %q: want <scheme>:<argument>, e.g. jwe:/path/to/key.pub.pem", spec)
	}
	switch scheme {
	case "jwe":
		b, err := os.ReadFile(arg)
		if err != nil {
			return Recipient{}, fmt.Errorf("recipient %q: %w", spec, err)
		}
		if _, err := utils.ParsePublicKey(b, "JWE"); err != nil {
			return Recipient{}, fmt.Errorf("recipient %q: %s is not a public key (PEM, DER or JWK): %w", spec, arg, err)
		}
		return Recipient{Spec: spec, scheme: scheme, data: b}, nil
	case "pgp", "pkcs7", "pkcs11", "provider":
		return Recipient{}, fmt.Errorf("recipient %q: scheme %q is not supported yet (jwe is)", spec, scheme)
	default:
		return Recipient{}, fmt.Errorf("recipient %q: unknown scheme %q (want jwe)", spec, scheme)
	}
}

// DecryptionKey is one private key shroud may unwrap layers with.
type DecryptionKey struct {
	Path     string
	data     []byte
	password []byte
}

// ParseDecryptionKey reads a private key file in the form skopeo's
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
	if _, err := utils.ParsePrivateKey(b, []byte(password), "JWE"); err != nil {
		return DecryptionKey{}, fmt.Errorf("decryption key %s: not a private key shroud can use: %w", path, err)
	}
	return DecryptionKey{Path: path, data: b, password: []byte(password)}, nil
}

// Keyring wraps layer options for recipients and unwraps them with shroud's
// keys, through ocicrypt's key wrappers.
type Keyring struct {
	identity   *Identity
	wrappers   []keywrap.KeyWrapper
	recipients []Recipient
	encrypt    *config.EncryptConfig // identity + recipients
	self       *config.EncryptConfig // identity only
	decrypt    *config.DecryptConfig // identity + decryption keys
}

// NewKeyring returns a keyring whose layers are wrapped for the identity and
// the recipients, and that unwraps with the identity and the keys.
func NewKeyring(id *Identity, recipients []Recipient, keys []DecryptionKey) (*Keyring, error) {
	if id == nil {
		return nil, errors.New("keyring: no identity")
	}
	idPriv, err := id.privatePEM()
	if err != nil {
		return nil, err
	}
	pubs := [][]byte{id.PublicPEM()}
	for _, r := range recipients {
		pubs = append(pubs, r.data)
	}
	privs, pws := [][]byte{idPriv}, [][]byte{{}}
	for _, k := range keys {
		privs = append(privs, k.data)
		pws = append(pws, k.password)
	}
	enc, err := config.EncryptWithJwe(pubs)
	if err != nil {
		return nil, fmt.Errorf("keyring: %w", err)
	}
	self, err := config.EncryptWithJwe([][]byte{id.PublicPEM()})
	if err != nil {
		return nil, fmt.Errorf("keyring: %w", err)
	}
	dec, err := config.DecryptWithPrivKeys(privs, pws)
	if err != nil {
		return nil, fmt.Errorf("keyring: %w", err)
	}
	return &Keyring{
		identity:   id,
		wrappers:   []keywrap.KeyWrapper{jwe.NewKeyWrapper()},
		recipients: recipients,
		encrypt:    enc.EncryptConfig,
		self:       self.EncryptConfig,
		decrypt:    dec.DecryptConfig,
	}, nil
}

// Identity returns shroud's identity.
func (k *Keyring) Identity() *Identity { return k.identity }

// Wrap wraps opts for the identity and every recipient and returns the
// layer annotations (keys.<scheme> and pubopts).
func (k *Keyring) Wrap(opts PrivateOptions, pub PublicOptions) (map[string]string, error) {
	return k.wrap(k.encrypt, opts, pub)
}

// WrapForIdentity wraps opts for shroud's identity alone: the form a layer's
// key is kept in between its upload and the manifest that names it.
func (k *Keyring) WrapForIdentity(opts PrivateOptions, pub PublicOptions) (map[string]string, error) {
	return k.wrap(k.self, opts, pub)
}

func (k *Keyring) wrap(ec *config.EncryptConfig, opts PrivateOptions, pub PublicOptions) (map[string]string, error) {
	data, err := opts.Marshal()
	if err != nil {
		return nil, fmt.Errorf("wrap layer key: %w", err)
	}
	out := map[string]string{}
	for _, w := range k.wrappers {
		b, err := w.WrapKeys(ec, data)
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
			data, err := w.UnwrapKey(k.decrypt, b)
			if err != nil {
				tried = append(tried, describeWrapped(w.GetAnnotationID(), b))
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

func (k *Keyring) knows(annotation string) bool {
	for _, w := range k.wrappers {
		if w.GetAnnotationID() == annotation {
			return true
		}
	}
	return false
}

// describeWrapped names the recipients of one wrapped key for an error.
func describeWrapped(annotation string, b []byte) string {
	scheme := strings.TrimPrefix(annotation, AnnotationKeys)
	if scheme != "jwe" {
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
		if kid, ok := h["kid"].(string); ok {
			d += " kid " + kid
		}
		keys = append(keys, d)
	}
	return fmt.Sprintf("jwe recipients [%s]", strings.Join(keys, ", "))
}

package crypto

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containers/ocicrypt/config"
	"github.com/containers/ocicrypt/keywrap"
	"github.com/containers/ocicrypt/keywrap/jwe"
	"github.com/hashicorp/golang-lru/v2/expirable"
)

// Unwrap returns the private options of an encrypted layer from its
// annotations, trying every key: UnwrapWith(annotations, nil) without the
// name of the key.
func (k *Keyring) Unwrap(annotations map[string]string) (PrivateOptions, error) {
	opts, _, err := k.UnwrapWith(annotations, nil)
	return opts, err
}

// UnwrapWith returns the private options of an encrypted layer from its
// annotations and the name of the key that opened it, trying only the
// keys allow accepts (nil allow: every key): IdentityKey for shroud's
// identity, DecryptionKey.Path for a decryption key, "provider:"+name for
// a key provider. A key allow refuses is never used: a key provider it
// does not name is not called. The identity is tried first. allow is
// asked about the keys in the order they are tried, only those of a
// scheme the layer has a wrapped key of, and none after the one that
// opened it.
//
// The work is bounded whatever the annotations hold (the registry writes
// them): a layer with more than MaxWrappedKeys wrapped keys is refused
// before any is tried (wrapping ErrInvalidEncryption); an unwrap yields at
// most MaxPrivateOptionsSize bytes; a key provider call has a deadline;
// and a wrapped key a key failed to open is not tried with it again for a
// minute. The error when no key opens the layer wraps ErrNoKey and says
// which recipients the layer has.
func (k *Keyring) UnwrapWith(annotations map[string]string, allow func(key string) bool) (PrivateOptions, string, error) {
	return k.UnwrapWithin(annotations, allow, nil)
}

// UnwrapWithin is UnwrapWith drawing on a budget (nil: none) shared by
// several unwraps: each wrapped key tried with a key costs the recipients
// it lists (see UnwrapBudget), taken before the attempt; a wrapped key a
// key failed to open within the minute costs nothing. When the budget
// cannot pay for the next attempt the unwrap stops there, untried, with
// an *UnwrapBudgetError (wrapping ErrUnwrapBudget).
func (k *Keyring) UnwrapWithin(annotations map[string]string, allow func(key string) bool, budget *UnwrapBudget) (PrivateOptions, string, error) {
	parts, err := wrappedKeys(annotations, func(a string) bool { return k.wrapper(a) != nil })
	if err != nil {
		return PrivateOptions{}, "", err
	}
	var refused []string
	var badOptions error
	for i := range k.keys {
		s := &k.keys[i]
		// allow is asked about a key only when the layer has a wrapped key
		// of its scheme, and only until a key opened it: a refusal it
		// reports (the proxy audits them) is one of a key that was in
		// the running.
		if !slices.ContainsFunc(parts, func(p wrappedKey) bool { return slices.Contains(s.schemes, p.annotation) }) {
			continue
		}
		if allow != nil && !allow(s.name) {
			continue
		}
		for _, p := range parts {
			if !slices.Contains(s.schemes, p.annotation) {
				continue
			}
			opts, err := k.tryUnwrap(s, p, budget)
			var spent *UnwrapBudgetError
			switch {
			case err == nil:
				return opts, s.name, nil
			case errors.As(err, &spent):
				return PrivateOptions{}, "", err
			case errors.Is(err, errBadOptions):
				badOptions = err
			case errors.Is(err, ErrInvalidEncryption):
				refused = append(refused, err.Error())
			}
		}
	}
	if badOptions != nil {
		return PrivateOptions{}, "", badOptions
	}
	var wrapped []string
	for _, p := range parts {
		if w := k.wrapper(p.annotation); w != nil {
			wrapped = append(wrapped, describeWrapped(w, p.raw))
		}
	}
	for a := range annotations {
		if strings.HasPrefix(a, AnnotationKeys) && !k.knows(a) {
			wrapped = append(wrapped, strings.TrimPrefix(a, AnnotationKeys)+" (scheme not configured)")
		}
	}
	if len(wrapped) == 0 {
		return PrivateOptions{}, "", fmt.Errorf("%w: the layer has no wrapped keys", ErrNoKey)
	}
	slices.Sort(wrapped)
	err = fmt.Errorf("%w: it is wrapped for %s", ErrNoKey, strings.Join(slices.Compact(wrapped), "; "))
	if len(refused) > 0 {
		slices.Sort(refused)
		err = fmt.Errorf("%w (refused: %s)", err, strings.Join(slices.Compact(refused), "; "))
	}
	return PrivateOptions{}, "", err
}

// OpenedBy names the first of shroud's keys that can open a layer ("" if
// none can), as a person reads it: "shroud identity <fingerprint>", a
// decryption key's path, "key provider <name>".
func (k *Keyring) OpenedBy(annotations map[string]string) string {
	_, name, err := k.UnwrapWith(annotations, nil)
	if err != nil {
		return ""
	}
	for _, s := range k.keys {
		if s.name == name {
			return s.label
		}
	}
	return name
}

// wrappedKey is one comma-separated part of a keys.<scheme> annotation.
type wrappedKey struct {
	annotation string
	raw        []byte
	recipients int // as recipientsIn counts them: what one attempt costs
}

// wrappedKeys splits and decodes the wrapped keys of the schemes known
// says shroud reads, refusing a layer with more than MaxWrappedKeys
// wrapped keys (the parts of every scheme, and the recipients each part
// of a known scheme lists) or with a known scheme's part that is not
// base64 (as ocicrypt does), before any is tried. Empty parts are
// skipped.
func wrappedKeys(annotations map[string]string, known func(annotation string) bool) ([]wrappedKey, error) {
	if n := countParts(annotations); n > MaxWrappedKeys {
		return nil, fmt.Errorf("%w: the layer has %d wrapped keys, more than the %d shroud tries", ErrInvalidEncryption, n, MaxWrappedKeys)
	}
	var names []string
	for a := range annotations {
		if strings.HasPrefix(a, AnnotationKeys) {
			names = append(names, a)
		}
	}
	slices.Sort(names)
	var out []wrappedKey
	total := 0
	for _, a := range names {
		v := annotations[a]
		if v == "" {
			continue
		}
		if !known(a) {
			total += strings.Count(v, ",") + 1
			continue
		}
		scheme := strings.TrimPrefix(a, AnnotationKeys)
		for _, part := range strings.Split(v, ",") {
			if part == "" {
				continue
			}
			b, err := base64.StdEncoding.DecodeString(part)
			if err != nil {
				return nil, fmt.Errorf("%w: decode %s: %w", ErrInvalidEncryption, a, err)
			}
			if len(b) == 0 {
				continue
			}
			n := recipientsIn(scheme, b)
			if total += n; total > MaxWrappedKeys {
				return nil, fmt.Errorf("%w: the layer's wrapped keys list more than the %d recipients shroud tries (%s)", ErrInvalidEncryption, MaxWrappedKeys, a)
			}
			out = append(out, wrappedKey{annotation: a, raw: b, recipients: n})
		}
	}
	return out, nil
}

// errBadOptions is wrapped by the error of an unwrap whose key opened a
// wrapped key holding something else than private options.
var errBadOptions = errors.New("the unwrapped layer key is not ocicrypt's private options")

// tryUnwrap opens one wrapped key with one key, unless that failed less
// than a minute ago or the budget cannot pay for it (a refusal of the
// budget is not a failure of the key, and is not remembered).
func (k *Keyring) tryUnwrap(s *keySlot, p wrappedKey, budget *UnwrapBudget) (PrivateOptions, error) {
	key := failureKey(p.annotation, p.raw, s.name)
	if err := k.failed.recent(key); err != nil {
		return PrivateOptions{}, err
	}
	if err := budget.take(p.recipients); err != nil {
		return PrivateOptions{}, err
	}
	opts, err := k.unwrapOne(s, p)
	if err != nil {
		k.failed.add(key, err)
	}
	return opts, err
}

func (k *Keyring) unwrapOne(s *keySlot, p wrappedKey) (PrivateOptions, error) {
	w := k.wrapper(p.annotation)
	if w == nil {
		return PrivateOptions{}, fmt.Errorf("no key wrapper for %s", p.annotation)
	}
	var data []byte
	var err error
	if s.open != nil {
		data, err = s.open(p.raw)
	} else {
		data, err = k.unwrapWith(w, s.dc, p.raw)
	}
	if err != nil {
		return PrivateOptions{}, err
	}
	if len(data) > MaxPrivateOptionsSize {
		return PrivateOptions{}, errTooLarge(strings.TrimPrefix(p.annotation, AnnotationKeys))
	}
	opts, err := ParsePrivateOptions(data)
	if err != nil {
		return PrivateOptions{}, fmt.Errorf("%w: %w", errBadOptions, err)
	}
	return opts, nil
}

// unwrapWith runs one unwrap, holding the lock of its scheme (if any) for
// that unwrap alone.
func (k *Keyring) unwrapWith(w keywrap.KeyWrapper, dc *config.DecryptConfig, b []byte) ([]byte, error) {
	if mu := k.lock(w.GetAnnotationID(), false); mu != nil {
		mu.Lock()
		defer mu.Unlock()
	}
	return w.UnwrapKey(dc, b)
}

// jweWrapper is ocicrypt's JWE key wrapper refusing, before it decrypts,
// a JWE ocicrypt's would read but never writes: a compressed one ("zip"),
// which go-jose inflates to ten times its size.
type jweWrapper struct {
	keywrap.KeyWrapper
}

func newJWEWrapper() jweWrapper { return jweWrapper{jwe.NewKeyWrapper()} }

// UnwrapKey implements keywrap.KeyWrapper.
func (w jweWrapper) UnwrapKey(dc *config.DecryptConfig, b []byte) ([]byte, error) {
	if _, err := parseJWE(b, false); err != nil {
		return nil, fmt.Errorf("%w: jwe: %w", ErrInvalidEncryption, err)
	}
	return w.KeyWrapper.UnwrapKey(dc, b)
}

// Failed unwraps are remembered for failureTTL, failureEntries at most.
const (
	failureTTL     = time.Minute
	failureEntries = 4096
)

// failureCache remembers which wrapped keys a key failed to open, and
// how, by a hash of the scheme, the wrapped key and the key's name. It
// uses the expirable LRU for its bound on entries but keeps each entry's
// expiry itself: the LRU's own TTL runs a goroutine per cache that never
// ends.
type failureCache struct {
	lru *expirable.LRU[[sha256.Size]byte, failure]
	now func() time.Time
}

type failure struct {
	until time.Time
	err   error
}

func newFailureCache() *failureCache {
	return &failureCache{lru: expirable.NewLRU[[sha256.Size]byte, failure](failureEntries, nil, 0), now: time.Now}
}

func failureKey(annotation string, wrapped []byte, key string) [sha256.Size]byte {
	h := sha256.New()
	for _, b := range [][]byte{[]byte(annotation), wrapped, []byte(key)} {
		binary.Write(h, binary.BigEndian, uint64(len(b)))
		h.Write(b)
	}
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out
}

// recent returns the error of a failure less than failureTTL old, or nil.
func (c *failureCache) recent(key [sha256.Size]byte) error {
	f, ok := c.lru.Get(key)
	if !ok {
		return nil
	}
	if !c.now().Before(f.until) {
		c.lru.Remove(key)
		return nil
	}
	return f.err
}

func (c *failureCache) add(key [sha256.Size]byte, err error) {
	c.lru.Add(key, failure{until: c.now().Add(failureTTL), err: err})
}

// ErrUnwrapBudget is wrapped by the error of an unwrap its budget could
// not pay for (an *UnwrapBudgetError).
var ErrUnwrapBudget = errors.New("the unwrap budget is spent")

// UnwrapBudget bounds the work of several unwraps (UnwrapWithin), whatever
// the annotations they read hold: every attempt of a key on a wrapped key
// costs the recipients the wrapped key lists (each is a private-key
// operation, a token login or a provider call at worst), paid before the
// attempt. A budget made by Sub also draws on its parent: a manifest's
// budget within a request's. It is safe for concurrent use.
type UnwrapBudget struct {
	mu     *sync.Mutex // the root's, shared by the whole tree
	limit  int
	spent  int
	parent *UnwrapBudget
}

// NewUnwrapBudget is a budget of limit attempts.
func NewUnwrapBudget(limit int) *UnwrapBudget {
	return &UnwrapBudget{mu: new(sync.Mutex), limit: limit}
}

// Sub is a budget of at most limit attempts that also draws on b (on
// nothing else when b is nil).
func (b *UnwrapBudget) Sub(limit int) *UnwrapBudget {
	if b == nil {
		return NewUnwrapBudget(limit)
	}
	return &UnwrapBudget{mu: b.mu, limit: limit, parent: b}
}

// Limit is the attempts the budget allows.
func (b *UnwrapBudget) Limit() int { return b.limit }

// Spent is the attempts paid for so far.
func (b *UnwrapBudget) Spent() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.spent
}

// take pays n attempts from b and its ancestors, or from none of them
// when one cannot pay (nil b: nothing to pay).
func (b *UnwrapBudget) take(n int) error {
	if b == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for c := b; c != nil; c = c.parent {
		if c.spent+n > c.limit {
			return &UnwrapBudgetError{Budget: c, Spent: c.spent, Need: n}
		}
	}
	for c := b; c != nil; c = c.parent {
		c.spent += n
	}
	return nil
}

// UnwrapBudgetError is an unwrap refused because Budget (the one that
// could not pay: the one given or an ancestor) had Spent of its attempts
// when the next one cost Need.
type UnwrapBudgetError struct {
	Budget      *UnwrapBudget
	Spent, Need int
}

func (e *UnwrapBudgetError) Error() string {
	return fmt.Sprintf("%v: %d of %d unwrap attempts spent, the next costs %d", ErrUnwrapBudget, e.Spent, e.Budget.limit, e.Need)
}

// Is makes the error match ErrUnwrapBudget.
func (e *UnwrapBudgetError) Is(target error) bool { return target == ErrUnwrapBudget }

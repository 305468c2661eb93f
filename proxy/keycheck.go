package proxy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/shroud-oci/shroud/audit"
	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/proxy/upstream"
)

// Key decisions. Before a manifest push wraps layer keys, and before a
// pull unwraps one, each key is checked: against the validity its own
// material gives it (an X.509 certificate's NotBefore and NotAfter, an
// OpenPGP key's expiry: crypto.CheckValidity), then against the
// KeyChecker (trust documents: allow and deny lists, freshness), at the
// Handler's clock. A refused key is logged (warn), audited and counted
// (shroud.keys.refused {shroud.op, shroud.reason}).
//
//   - Push: the layer keys of a manifest are wrapped for the recipients of
//     the repository's rule that pass, and shroud's identity must pass
//     (what it cannot open could not be pulled back). A rule whose
//     recipients all fail refuses the push (403 DENIED naming the rule
//     and each key with its reason); a rule with no recipient besides the
//     identity needs only the identity. The decision is made once per
//     manifest PUT, after the client is authorized and before anything
//     is written upstream; the compiled set of the keys that passed is
//     kept (crypto.Recipients.Subset), so a push parses nothing again.
//   - Pull: a key (the identity, a decryption key, a key provider) that
//     fails is not used to unwrap (UnwrapWith's allow). When no key
//     opens a layer and one was passed over, the pull is 403 DENIED
//     naming that key and why. Such a refusal is not remembered as the
//     manifest's own failure: it depends on the time and the trust
//     documents, not on the manifest. Blob pulls check at every GET; a
//     manifest restored before a key was refused may still be served
//     from memory (restoredTTL), its layers not.
//   - On push, the layer keys shroud itself wrapped to its identity at
//     upload are opened by the identity unchecked (it has just passed the
//     wrap check); a layer pushed already encrypted is opened with the
//     decryption keys that pass only.

// KeyChecker decides whether a key may be used: op is "wrap" (a layer key
// wrapped for it on push) or "unwrap" (a layer key opened with it on
// pull), repo the repository, keyID a crypto key id (sha256:…, pgp:…,
// pkcs11:…, provider:…). A nil error accepts the key; an error refuses
// it, and its message goes into the client's error and the log; a
// KeyRefusal in its chain says why, for the audit log and the metric.
// Check must be safe for concurrent use and quick: it is asked for every
// key of every push and pull.
type KeyChecker interface {
	Check(ctx context.Context, op, repo, keyID string, now time.Time) error
}

// KeyRefusal is what a KeyChecker's refusal says of itself (trust.Refusal
// is one): its reason ("revoked", "not-allowed", "expired",
// "not-yet-valid", "frozen"), the document the decision rests on, and
// that document's (or entry's) expiry, zero if none.
type KeyRefusal interface {
	error
	RefusalReason() string
	RefusalDocument() string
	RefusalExpires() time.Time
}

// The ops a KeyChecker is asked about.
const (
	OpWrap   = "wrap"
	OpUnwrap = "unwrap"
)

// knownReasons are the reasons the metric names; any other is "other".
var knownReasons = map[string]bool{"revoked": true, "not-allowed": true, "expired": true, "not-yet-valid": true, "frozen": true}

// keyGate is what the Handler decides keys with.
type keyGate struct {
	check KeyChecker
	now   func() time.Time
	audit *audit.Logger
	// unwrap describes the keyring's keys by name; identityID is the
	// identity's key id.
	unwrap     map[string]crypto.KeyInfo
	identityID string
}

func newKeyGate(o Options) keyGate {
	g := keyGate{check: o.KeyCheck, now: o.Now, audit: o.Audit, unwrap: map[string]crypto.KeyInfo{}, identityID: o.Keyring.Identity().KeyID()}
	if g.now == nil {
		g.now = time.Now
	}
	for _, ki := range o.Keyring.KeyInfo() {
		g.unwrap[ki.Name] = ki
	}
	return g
}

// checkKey decides one key at now: its own validity, then the checker.
func (g *keyGate) checkKey(ctx context.Context, op, repo, id string, notBefore, notAfter, now time.Time) error {
	if err := crypto.CheckValidity(id, notBefore, notAfter, now); err != nil {
		return err
	}
	if g.check == nil {
		return nil
	}
	return g.check.Check(ctx, op, repo, id, now)
}

// refusalInfo is what a refusal says beyond its message.
type refusalInfo struct {
	reason, document string
	expires          time.Time
}

// refusalOf reads a refusal's reason, document and expiry (KeyChecker).
func refusalOf(err error) refusalInfo {
	var ik *crypto.InvalidKeyError
	if errors.As(err, &ik) {
		return refusalInfo{reason: ik.Reason}
	}
	var kr KeyRefusal
	if errors.As(err, &kr) && kr.RefusalReason() != "" {
		return refusalInfo{reason: kr.RefusalReason(), document: kr.RefusalDocument(), expires: kr.RefusalExpires()}
	}
	return refusalInfo{reason: "refused"}
}

// why says, for people, why key id was refused: "key <id> expired at
// <time>", "key <id>: revoked (<the checker's message>)".
func why(id string, err error) string {
	var ik *crypto.InvalidKeyError
	if errors.As(err, &ik) {
		return ik.Error()
	}
	if r := refusalOf(err).reason; r != "refused" {
		return fmt.Sprintf("key %s: %s (%v)", id, r, err)
	}
	return fmt.Sprintf("key %s: %v", id, err)
}

// refused records one refused key: a warning in the log, an audit line,
// the metric. what names the key for the log (a recipient spec, a
// decryption key's path: never shown to clients).
func (h *Handler) refused(ctx context.Context, op, repo string, rule *crypto.Rule, id, what string, err error) {
	info := refusalOf(err)
	kind := audit.WrapRefused
	if op == OpUnwrap {
		kind = audit.UnwrapRefused
	}
	var ruleName string
	if rule != nil {
		ruleName = rule.String()
	}
	logger(ctx).Warn("key refused", "op", op, "repository", repo, "rule", ruleName, "key_id", id, "key", what, "reason", info.reason, "err", err)
	if aerr := h.gate.audit.Log(audit.Event{Kind: kind, Op: op, Repository: repo, Rule: ruleName, KeyID: id, Reason: info.reason,
		Document: info.document, Expires: info.expires, Actor: "shroud", Detail: why(id, err)}); aerr != nil {
		logger(ctx).Error("audit log write failed", "err", aerr)
	}
	reason := info.reason
	if !knownReasons[reason] {
		reason = "other"
	}
	h.metrics.keysRefused.Add(ctx, 1, metric.WithAttributes(attribute.String("shroud.op", op), attribute.String("shroud.reason", reason)))
}

// wrapRecipients are the keys of rule a manifest push to repo wraps its
// layer keys for now (see the top of this file): the rule's recipients
// that pass, or a DENIED error when shroud's identity does not, or when
// the rule has recipients and none passes.
func (h *Handler) wrapRecipients(ctx context.Context, repo string, rule *crypto.Rule) (*crypto.Recipients, error) {
	now := h.gate.now()
	id := h.gate.identityID
	if err := h.gate.checkKey(ctx, OpWrap, repo, id, time.Time{}, time.Time{}, now); err != nil && rule.Recipients.HasIdentity() {
		h.refused(ctx, OpWrap, repo, rule, id, "shroud identity", err)
		return nil, &apiError{status: http.StatusForbidden, code: codeDenied, cause: err,
			message: fmt.Sprintf("push to %s refused: shroud's identity may not be wrapped for (%s); an image it cannot open could not be pulled back", repo, why(id, err))}
	}
	base := rule.Recipients
	if h.grants != nil {
		var err error
		if base, err = h.grants.Extend(repo, rule); err != nil {
			return nil, fmt.Errorf("the recipients access requests added to %s: %w", rule, err)
		}
	}
	keys := base.Keys()
	if len(keys) == 0 {
		return base, nil
	}
	// The rule's own recipients come first in base; those after them
	// were granted (Grants). A granted key refused is left out, never a
	// reason to refuse the push: the rule's own recipients decide that.
	own := len(rule.Recipients.Keys())
	keep := make([]bool, len(keys))
	var refused []string
	var errs []error
	ownRefused := 0
	for i, k := range keys {
		err := h.gate.checkKey(ctx, OpWrap, repo, k.ID, k.NotBefore, k.NotAfter, now)
		if err == nil && i >= own && rule.EncryptOnly {
			// A granted key shroud holds would open what the rule
			// promises shroud never can (its own recipients are
			// refused so at start: opensItself).
			err = h.heldKey(repo, k.ID)
		}
		if err == nil {
			keep[i] = true
			continue
		}
		h.refused(ctx, OpWrap, repo, rule, k.ID, k.Spec, err)
		refused = append(refused, why(k.ID, err))
		errs = append(errs, err)
		if i < own {
			ownRefused++
		}
	}
	if own > 0 && ownRefused == own {
		return nil, &apiError{status: http.StatusForbidden, code: codeDenied, cause: errors.Join(errs...),
			message: fmt.Sprintf("push to %s refused: %s has no recipient its layer keys may be wrapped for now: %s", repo, rule, strings.Join(refused, "; "))}
	}
	if len(refused) > 0 {
		logger(ctx).Warn("layer keys not wrapped for refused recipients", "repository", repo, "rule", rule.String(), "refused", len(refused), "recipients", len(keys))
	}
	return base.Subset(keep), nil
}

// heldKey refuses, for repo, a key shroud holds when repo's rule is
// encrypt-only: what is wrapped for it shroud could open.
func (h *Handler) heldKey(repo, keyID string) error {
	rule := h.policy.Match(repo)
	if rule == nil || !rule.EncryptOnly {
		return nil
	}
	if name, ok := h.keys.HoldsKeyID(keyID); ok {
		return fmt.Errorf("%w: shroud holds this key (%s), and %s is encrypt-only: shroud holds no key that opens its layers", ErrHeldKey, name, repo)
	}
	return nil
}

// ErrHeldKey refuses a key shroud holds as a recipient of an
// encrypt-only repository.
var ErrHeldKey = errors.New("a key shroud holds")

// GrantAllowed checks a key an access request would grant for repo: an
// encrypt-only repository takes no key shroud holds (an identity, a
// decryption key), whoever approves it.
func (h *Handler) GrantAllowed(repo, keyID string) error { return h.heldKey(repo, keyID) }

// Grants adds recipients to a rule's for one repository: the keys access
// requests an owner approved for it (access.Store). Extend returns the
// rule's own set when nothing is added; it must be safe for concurrent
// use and quick (it is asked at every manifest push).
type Grants interface {
	Extend(repo string, rule *crypto.Rule) (*crypto.Recipients, error)
}

// unwrapGate is the allow of the unwraps of one pull (a manifest, a
// blob): the keys base allows (nil: every key) that pass their checks,
// each checked once; the refused ones are recorded, audited once, and
// named by explain.
type unwrapGate struct {
	h    *Handler
	ctx  context.Context
	repo string
	base func(string) bool
	now  time.Time

	mu      sync.Mutex
	decided map[string]bool
	refused []string // why, per refused key
}

func (h *Handler) unwrapGate(ctx context.Context, repo string, base func(string) bool) *unwrapGate {
	return &unwrapGate{h: h, ctx: ctx, repo: repo, base: base, now: h.gate.now(), decided: map[string]bool{}}
}

// allow is UnwrapWith's allow.
func (g *unwrapGate) allow(name string) bool {
	if g.base != nil && !g.base(name) {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if ok, seen := g.decided[name]; seen {
		return ok
	}
	info, known := g.h.gate.unwrap[name]
	ok := known
	for _, id := range info.IDs {
		if err := g.h.gate.checkKey(g.ctx, OpUnwrap, g.repo, id, info.NotBefore, info.NotAfter, g.now); err != nil {
			what := name
			if crypto.IsIdentityKey(name) {
				what = "shroud identity"
			}
			g.h.refused(g.ctx, OpUnwrap, g.repo, g.h.policy.Match(g.repo), id, what, err)
			g.refused = append(g.refused, why(id, err))
			ok = false
			break
		}
	}
	g.decided[name] = ok
	return ok
}

// explain turns the error of an unwrap no key opened, when a key was
// passed over, into the DENIED that names it and why. Its cause does not
// wrap crypto.ErrNoKey: the failure is not the manifest's own.
func (g *unwrapGate) explain(err error) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err == nil || len(g.refused) == 0 || !errors.Is(err, crypto.ErrNoKey) {
		return err
	}
	msg := fmt.Sprintf("%v; the keys shroud may not use in %s: %s", err, g.repo, strings.Join(g.refused, "; "))
	return &apiError{status: http.StatusForbidden, code: codeDenied, message: msg, cause: errors.New(msg)}
}

// openSeal opens a seal with the identity, or with a previous identity
// (identity rotation) that passes the key checks for repo: a previous
// identity revoked (its key leaked) vouches for nothing, or whoever holds
// it could sign manifests that servers of the rotation serve as shroud's.
// A seal none of them may open is crypto.ErrForeignSeal.
func (h *Handler) openSeal(ctx context.Context, repo, sealed string) (crypto.Seal, *crypto.Identity, error) {
	seal, by, err := h.keys.OpenSeal(sealed)
	if err != nil || by == h.keys.Identity() {
		return seal, by, err
	}
	if err := h.previousRefused(ctx, repo, by); err != nil {
		return crypto.Seal{}, nil, err
	}
	return seal, by, nil
}

// sealOf parses an upstream manifest and opens its seal (openSeal),
// which must be this shroud's for be and repo: ok is false for anything
// else (not a manifest, no seal, a foreign one, another repository's).
func (h *Handler) sealOf(ctx context.Context, be *backend, repo string, um upstream.Manifest) (enc *manifest, seal crypto.Seal, by *crypto.Identity, ok bool) {
	enc, err := parseManifest(um.Body, um.ContentType)
	if err != nil || enc.annotations[crypto.AnnotationOriginal] == "" {
		return nil, crypto.Seal{}, nil, false
	}
	seal, by, err = h.openSeal(ctx, repo, enc.annotations[crypto.AnnotationOriginal])
	if err != nil || seal.Upstream != be.name || seal.Repository != repo {
		return nil, crypto.Seal{}, nil, false
	}
	return enc, seal, by, true
}

// previousRefused is why the previous identity by may not vouch for a
// seal in repo (the key checks refuse it: audited, counted), nil if it
// may; the error is crypto.ErrForeignSeal.
func (h *Handler) previousRefused(ctx context.Context, repo string, by *crypto.Identity) error {
	err := h.gate.checkKey(ctx, OpUnwrap, repo, by.KeyID(), time.Time{}, time.Time{}, h.gate.now())
	if err == nil {
		return nil
	}
	h.refused(ctx, OpUnwrap, repo, h.policy.Match(repo), by.KeyID(), "previous shroud identity", err)
	return fmt.Errorf("%w: sealed by the previous identity %s, which the key checks refuse: %s", crypto.ErrForeignSeal, by.Fingerprint(), why(by.KeyID(), err))
}

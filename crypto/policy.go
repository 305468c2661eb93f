package crypto

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/shroud-oci/shroud/internal/repoglob"
)

// Action is what a policy rule does with the repositories it matches.
type Action string

// The actions of a policy rule.
const (
	// Encrypt: layers are encrypted for the rule's recipients.
	Encrypt Action = "encrypt"
	// Passthrough: shroud is a plain reverse proxy for the repository.
	Passthrough Action = "passthrough"
	// Deny: push and pull are refused.
	Deny Action = "deny"
)

// DedupScope is how far a plaintext layer pushed to one repository is
// deduplicated into others (answered on HEAD, mounted).
type DedupScope string

// The dedup scopes.
const (
	// DedupRepository: never across repositories.
	DedupRepository DedupScope = "repository"
	// DedupRule: among the repositories the same policy rule matches.
	DedupRule DedupScope = "rule"
	// DedupGlobal: across the repositories of every encrypt rule whose
	// scope is global too (a rule that keeps the default is not opened by
	// another's global).
	DedupGlobal DedupScope = "global"
)

// Rule is one policy rule: the first rule whose repository glob matches a
// repository decides for it.
type Rule struct {
	// Index is the rule's position in the policy, from 0, for messages.
	Index int
	// Pattern is a glob over repository names: "*" matches within one
	// path segment, "**" across segments, "?" one character.
	Pattern string
	Action  Action
	// Recipients of the layers an Encrypt rule encrypts (shroud's identity
	// is always one).
	Recipients *Recipients
	// Layers selects the layers an Encrypt rule encrypts by index, as
	// skopeo's --encrypt-layer does (negative counts from the end); empty
	// means every layer. Other layers are stored in plaintext.
	Layers []int
	// Platforms limits an Encrypt rule to images of these platforms
	// ("os/arch" or "os/arch/variant"); empty means every image. Images
	// of other platforms are stored in plaintext.
	Platforms []string
	// AcceptFrom lets an Encrypt rule open images shroud sealed for other
	// repositories (globs), as a promotion by a straight upstream copy
	// makes them: by default a request for repository R opens only what
	// was sealed for R. A source repository a Deny rule matches is never
	// accepted, wherever its bytes were copied.
	AcceptFrom []string
	// AcceptForeign lets an Encrypt rule open, with shroud's identity,
	// layers no valid seal of shroud's vouches for: images another tool
	// encrypted to shroud's public key, or sealed by an older shroud.
	// Anyone can encrypt to a public key, so this trusts the upstream.
	AcceptForeign bool
	// DecryptionKeys, when set, are the only configured decryption keys
	// (by path, or "provider:<name>") that open layers for the rule's
	// repositories; empty means every configured decryption key.
	DecryptionKeys []string
	// VerifyRanges answers a Range request with the whole blob, verified
	// (200), instead of an unverified decrypted range (206).
	VerifyRanges bool
	// VerifyBeforeRelease (Encrypt rules) releases no plaintext byte of a
	// blob before its HMAC and plaintext digest verified: the ciphertext
	// is fetched whole (held in memory when small, spooled to disk
	// otherwise) and checked first.
	VerifyBeforeRelease bool
	// DedupScope confines which other repositories' layers a HEAD or a
	// mount may answer with: DedupRepository, DedupRule (the default) or
	// DedupGlobal.
	DedupScope DedupScope
	// EncryptOnly (Encrypt rules): shroud holds no key for the rule's
	// repositories. Layer keys are wrapped for Recipients alone (a set
	// WithoutIdentity), no original is sealed, and pulls through shroud
	// get the ciphertext as the upstream holds it, or are refused
	// (RefusePulls).
	EncryptOnly bool
	RefusePulls bool
	// ArtifactTypes, on a Passthrough or Deny rule, narrow it to the
	// manifests pushed with one of these artifact types (a manifest's
	// artifactType, else its config's media type): signatures, SBOMs,
	// attestations kept readable upstream, or refused. Such a rule
	// decides nothing else (blobs, pulls, tag lists): Match skips it,
	// MatchArtifact finds it.
	ArtifactTypes []string

	re         *regexp.Regexp
	acceptFrom []*regexp.Regexp
}

// String names the rule in messages.
func (r *Rule) String() string {
	return fmt.Sprintf("policy rule %d (%s %q)", r.Index, r.Action, r.Pattern)
}

// Policy is an ordered list of rules.
type Policy struct {
	rules []*Rule
}

// NewPolicy checks and compiles rules, in order.
func NewPolicy(rules []Rule) (*Policy, error) {
	p := &Policy{}
	for i, r := range rules {
		r.Index = i
		switch r.Action {
		case Encrypt:
			if r.Recipients == nil {
				return nil, fmt.Errorf("%s: no recipients", &r)
			}
			if len(r.ArtifactTypes) > 0 {
				return nil, fmt.Errorf("%s: artifact-types narrow passthrough and deny rules: an encrypt rule covers every artifact of its repositories", &r)
			}
			switch r.DedupScope {
			case "":
				r.DedupScope = DedupRule
			case DedupRepository, DedupRule, DedupGlobal:
			default:
				return nil, fmt.Errorf("%s: dedup-scope %q: want repository, rule or global", &r, r.DedupScope)
			}
		case Passthrough, Deny:
			if len(r.Layers) > 0 || len(r.Platforms) > 0 || (r.Recipients != nil && len(r.Recipients.specs) > 0) ||
				len(r.AcceptFrom) > 0 || r.AcceptForeign || len(r.DecryptionKeys) > 0 || r.VerifyRanges ||
				r.VerifyBeforeRelease || r.DedupScope != "" {
				return nil, fmt.Errorf("%s: layers, platforms, recipients, accept-from, accept-foreign, decryption-keys, verify-ranges, verify-before-release and dedup-scope belong to encrypt rules", &r)
			}
			for _, t := range r.ArtifactTypes {
				if err := checkArtifactType(t); err != nil {
					return nil, fmt.Errorf("%s: artifact-types: %w", &r, err)
				}
			}
		default:
			return nil, fmt.Errorf("policy rule %d: unknown action %q (want encrypt, passthrough or deny)", i, r.Action)
		}
		re, err := globRegexp(r.Pattern)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", &r, err)
		}
		r.re = re
		for _, g := range r.AcceptFrom {
			are, err := globRegexp(g)
			if err != nil {
				return nil, fmt.Errorf("%s: accept-from: %w", &r, err)
			}
			r.acceptFrom = append(r.acceptFrom, are)
		}
		p.rules = append(p.rules, &r)
	}
	return p, nil
}

// Match returns the first rule matching repo, or nil: a repository no rule
// matches is denied. Rules narrowed to artifact types are skipped.
func (p *Policy) Match(repo string) *Rule {
	for _, r := range p.rules {
		if len(r.ArtifactTypes) == 0 && r.re.MatchString(repo) {
			return r
		}
	}
	return nil
}

// MatchArtifact returns the first rule matching a manifest of
// artifactType pushed to repo: a rule narrowed to artifact types matches
// those alone (media types compare case-insensitively), any other as
// Match does.
func (p *Policy) MatchArtifact(repo, artifactType string) *Rule {
	for _, r := range p.rules {
		if r.re.MatchString(repo) && (len(r.ArtifactTypes) == 0 || slices.ContainsFunc(r.ArtifactTypes, func(t string) bool { return strings.EqualFold(t, artifactType) })) {
			return r
		}
	}
	return nil
}

// DeniesArtifacts says whether a deny rule narrowed to artifact types
// matches repo: a push of a manifest to repo must then be checked
// against MatchArtifact, whatever Match says of the repository.
func (p *Policy) DeniesArtifacts(repo string) bool {
	for _, r := range p.rules {
		if r.Action == Deny && len(r.ArtifactTypes) > 0 && r.re.MatchString(repo) {
			return true
		}
	}
	return false
}

// ImageConfigTypes are the config media types of container images: a
// rule narrowed to one would match every image, not an artifact.
var ImageConfigTypes = []string{"application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"}

// checkArtifactType refuses what artifact-types may not name: nothing,
// or an image's config type (a passthrough rule narrowed so would store
// every image of its repositories in plaintext).
func checkArtifactType(t string) error {
	if strings.TrimSpace(t) == "" {
		return fmt.Errorf("an empty artifact type")
	}
	if slices.ContainsFunc(ImageConfigTypes, func(c string) bool { return strings.EqualFold(c, t) }) {
		return fmt.Errorf("%s is the config type of every container image, not an artifact's: a rule narrowed to it would cover every image", t)
	}
	return nil
}

// AcceptsSealedFor says whether a request for repo may open what shroud
// sealed for repository sealedFor: always for repo itself; for another
// repository only when repo's rule accepts it (AcceptFrom) and no Deny
// rule (nor the absence of a rule) covers sealedFor, so that a deny holds
// wherever the bytes are copied.
func (p *Policy) AcceptsSealedFor(repo, sealedFor string) bool {
	if repo == sealedFor {
		return true
	}
	r := p.Match(repo)
	if r == nil || r.Action != Encrypt {
		return false
	}
	src := p.Match(sealedFor)
	if src == nil || src.Action == Deny {
		return false
	}
	for _, re := range r.acceptFrom {
		if re.MatchString(sealedFor) {
			return true
		}
	}
	return false
}

// OpensWith says whether an Encrypt rule lets decryption key name (a
// crypto.DecryptionKey's Path, or "provider:<name>") open layers no seal
// of shroud's vouches for.
func (r *Rule) OpensWith(name string) bool {
	if len(r.DecryptionKeys) == 0 {
		return true
	}
	for _, k := range r.DecryptionKeys {
		if k == name {
			return true
		}
	}
	return false
}

// Rules lists the rules in order.
func (p *Policy) Rules() []*Rule { return p.rules }

// globRegexp compiles a rule's repository glob.
func globRegexp(glob string) (*regexp.Regexp, error) { return repoglob.Compile(glob) }

// Selection names which layers of which images an Encrypt rule
// encrypts (Layers and Platforms): two rules with the same selection
// encrypt the same layers of every manifest.
func (r *Rule) Selection() string {
	return fmt.Sprintf("layers=%v platforms=%v", r.Layers, r.Platforms)
}

// EncryptsLayer says whether an Encrypt rule encrypts layer i of n.
func (r *Rule) EncryptsLayer(i, n int) bool {
	if len(r.Layers) == 0 {
		return true
	}
	for _, l := range r.Layers {
		if l == i || (l < 0 && n+l == i) {
			return true
		}
	}
	return false
}

// EncryptsPlatform says whether an Encrypt rule encrypts an image of
// platform os/arch[/variant].
func (r *Rule) EncryptsPlatform(os, arch, variant string) bool {
	if len(r.Platforms) == 0 {
		return true
	}
	for _, p := range r.Platforms {
		parts := strings.Split(p, "/")
		if len(parts) < 2 || parts[0] != os || parts[1] != arch {
			continue
		}
		if len(parts) == 2 || parts[2] == variant {
			return true
		}
	}
	return false
}

package keyprovider

import (
	"errors"
	"fmt"
	"regexp"

	"github.com/shroud-oci/shroud/internal/repoglob"
)

// Rule is one rule of shroud's policy as the key provider reads it: the
// repository glob and whether it denies. The key provider does not need
// the rule's recipients (compiling them would ask this very provider for
// a trial wrap).
type Rule struct {
	Pattern string
	Deny    bool
}

// Policy is the ordered rules; the first whose glob matches decides.
type Policy struct {
	rules []rule
}

type rule struct {
	Rule
	re *regexp.Regexp
}

// NewPolicy compiles rules.
func NewPolicy(rules []Rule) (*Policy, error) {
	p := &Policy{}
	for i, r := range rules {
		re, err := repoglob.Compile(r.Pattern)
		if err != nil {
			return nil, fmt.Errorf("policy rule %d: %w", i, err)
		}
		p.rules = append(p.rules, rule{Rule: r, re: re})
	}
	return p, nil
}

// allows decides a wrap bound to scope; a nil Policy allows everything.
// It fails closed:
//
//   - an unbound wrap is refused when any rule denies;
//   - a scope (read as a repository name) no rule matches, or whose
//     first matching rule denies, is refused, as the proxy refuses that
//     repository;
//   - a glob scope is refused when it may overlap a deny rule's glob
//     (one's literal prefix, up to its first wildcard, begins the
//     other's), whatever the rules' order.
func (p *Policy) allows(scope string) error {
	if p == nil {
		return nil
	}
	if scope == "" {
		for _, r := range p.rules {
			if r.Deny {
				return fmt.Errorf("the wrap is bound to no repository and the policy denies %q", r.Pattern)
			}
		}
		return nil
	}
	var first *rule
	for i := range p.rules {
		if p.rules[i].re.MatchString(scope) {
			first = &p.rules[i]
			break
		}
	}
	switch {
	case first == nil:
		return fmt.Errorf("no policy rule matches %q", scope)
	case first.Deny:
		return fmt.Errorf("policy denies %q (rule %q)", scope, first.Pattern)
	}
	if repoglob.IsGlob(scope) {
		for _, r := range p.rules {
			if r.Deny && repoglob.MayOverlap(scope, r.Pattern) {
				return fmt.Errorf("scope %q may cover repositories the policy denies (rule %q)", scope, r.Pattern)
			}
		}
	}
	return nil
}

var errUnauthenticated = errors.New("no verified client certificate")

package auth

import (
	"fmt"
	"regexp"
	"strings"
)

// Action is what a request does to a repository.
type Action int

// The actions a rule grants.
const (
	Pull Action = iota
	Push
)

func (a Action) String() string {
	if a == Push {
		return "push"
	}
	return "pull"
}

// maxGrantLen bounds a grant's text.
const maxGrantLen = 1024

// Grant is one entry of a rule's pull or push list.
type Grant struct {
	kind string // "user", "group", "subject", "authenticated", "anonymous"
	re   *regexp.Regexp
	text string
}

// ParseGrant parses "user:<name>", "group:<name>", "subject:<certificate
// subject>", "authenticated" or "anonymous". A name may hold "*", which
// matches any run of characters (a subject's commas included).
func ParseGrant(s string) (Grant, error) {
	if len(s) > maxGrantLen {
		return Grant{}, fmt.Errorf("grant longer than %d bytes", maxGrantLen)
	}
	switch s {
	case "authenticated", "anonymous":
		return Grant{kind: s, text: s}, nil
	}
	kind, name, ok := strings.Cut(s, ":")
	if !ok || (kind != "user" && kind != "group" && kind != "subject") {
		return Grant{}, fmt.Errorf("grant %q: want user:<name>, group:<name>, subject:<certificate subject>, authenticated or anonymous", s)
	}
	if name == "" || strings.Trim(name, "*") == "" {
		return Grant{}, fmt.Errorf("grant %q: the name is empty or only wildcards (say authenticated)", s)
	}
	parts := strings.Split(name, "*")
	for i, p := range parts {
		parts[i] = regexp.QuoteMeta(p)
	}
	// "*" is any run of characters, newlines too. In a subject (RFC 2253,
	// as crypto/x509 prints it) an escape is one character: a CN holding
	// `\,O=cluster` must not pass for the O=cluster attribute.
	wildcard := ".*"
	if kind == "subject" {
		wildcard = `(?:[^\\]|\\.)*`
	}
	re, err := regexp.Compile("(?s)^" + strings.Join(parts, wildcard) + "$")
	if err != nil {
		return Grant{}, fmt.Errorf("grant %q: %w", s, err)
	}
	return Grant{kind: kind, re: re, text: s}, nil
}

// Matches says whether the grant covers p.
func (g Grant) Matches(p Principal) bool {
	switch g.kind {
	case "anonymous":
		return true // whoever asks, credentials or none
	case "authenticated":
		return !p.IsAnonymous()
	case "user":
		return (p.Method == Basic || p.Method == Token) && g.re.MatchString(p.Name)
	case "group":
		if p.Method != Token {
			return false
		}
		for _, gr := range p.Groups {
			if g.re.MatchString(gr) {
				return true
			}
		}
	case "subject":
		return p.Method == Certificate && g.re.MatchString(p.Name)
	}
	return false
}

func (g Grant) String() string { return g.text }

// RuleGrants are one policy rule's grants, as configured. A rule with
// neither list (both nil) lets every authenticated client pull and push;
// once either list is set, even to an empty one, only what the lists say
// is granted. Whoever may push may
// pull (a push reads what it checks for).
type RuleGrants struct {
	Pull []string
	Push []string
}

type compiled struct {
	pull, push []Grant
}

// Access holds the grants of every policy rule, by the rule's index.
type Access struct {
	rules []compiled
}

// NewAccess compiles the rules' grants; rules[i] is policy rule i's.
func NewAccess(rules []RuleGrants) (*Access, error) {
	a := &Access{}
	authenticated := []Grant{{kind: "authenticated", text: "authenticated"}}
	for i, r := range rules {
		var c compiled
		for _, l := range []struct {
			specs []string
			out   *[]Grant
			what  string
		}{{r.Pull, &c.pull, "pull"}, {r.Push, &c.push, "push"}} {
			for _, s := range l.specs {
				g, err := ParseGrant(s)
				if err != nil {
					return nil, fmt.Errorf("policy rule %d: %s: %w", i, l.what, err)
				}
				*l.out = append(*l.out, g)
			}
		}
		// An empty list is set (`push: []`: nobody pushes), not absent.
		if r.Pull == nil && r.Push == nil {
			c.pull, c.push = authenticated, authenticated
		}
		a.rules = append(a.rules, c)
	}
	return a, nil
}

// Allows says whether p may act under policy rule index rule. A rule the
// Access does not know grants nothing.
func (a *Access) Allows(rule int, p Principal, act Action) bool {
	if rule < 0 || rule >= len(a.rules) {
		return false
	}
	c := a.rules[rule]
	lists := [][]Grant{c.push}
	if act == Pull {
		lists = append(lists, c.pull)
	}
	for _, l := range lists {
		for _, g := range l {
			if g.Matches(p) {
				return true
			}
		}
	}
	return false
}

// AnyAnonymous says whether some rule lets anonymous clients act.
func (a *Access) AnyAnonymous() bool {
	for _, c := range a.rules {
		for _, l := range [][]Grant{c.pull, c.push} {
			for _, g := range l {
				if g.kind == "anonymous" {
					return true
				}
			}
		}
	}
	return false
}

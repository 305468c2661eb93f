// Package repoglob compiles the repository globs of shroud's policy rules
// and of the trust documents' scopes, so that both read a pattern alike:
// "*" matches within one path segment, "**" across segments ("**/" also
// matches no segment), "?" one character of a segment; anything else is
// literal.
package repoglob

import (
	"errors"
	"regexp"
	"strings"
)

// Compile compiles a repository glob into a regular expression matching
// whole repository names.
func Compile(glob string) (*regexp.Regexp, error) {
	if glob == "" {
		return nil, errors.New("empty repository pattern")
	}
	var b strings.Builder
	b.WriteString("^")
	for i := 0; i < len(glob); i++ {
		switch c := glob[i]; {
		case c == '*' && i+1 < len(glob) && glob[i+1] == '*':
			i++
			if i+1 < len(glob) && glob[i+1] == '/' {
				i++
				b.WriteString("(?:.*/)?")
			} else {
				b.WriteString(".*")
			}
		case c == '*':
			b.WriteString("[^/]*")
		case c == '?':
			b.WriteString("[^/]")
		default:
			b.WriteString(regexp.QuoteMeta(glob[i : i+1]))
		}
	}
	b.WriteString("$")
	return regexp.Compile(b.String())
}

// IsGlob says whether s has a wildcard ("*", "**" or "?").
func IsGlob(s string) bool { return strings.ContainsAny(s, "*?") }

// MayOverlap is a conservative test that globs a and b match a common
// repository name: false only when their literal prefixes (up to the
// first wildcard) differ, neither beginning the other. Deciders that
// must fail closed (a key provider's glob scope against a deny rule or a
// namespace's deny list) refuse when it is true.
func MayOverlap(a, b string) bool {
	pa, pb := literalPrefix(a), literalPrefix(b)
	return strings.HasPrefix(pa, pb) || strings.HasPrefix(pb, pa)
}

func literalPrefix(g string) string {
	if i := strings.IndexAny(g, "*?"); i >= 0 {
		return g[:i]
	}
	return g
}

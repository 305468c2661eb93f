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

package keyprovider

import (
	"errors"
	"fmt"

	"github.com/shroud-oci/shroud/internal/repoglob"
)

// scopeOf is the repository scope the recipient provider:<name>:<scope>
// binds: the argument ocicrypt sends as the provider's own parameter
// ("" for provider:<name> alone). Other schemes' parameters (ocicrypt
// sends them all) are not read.
func (s *Server) scopeOf(params map[string][][]byte) (string, error) {
	vals, ok := params[s.o.Name]
	if !ok {
		return "", fmt.Errorf("keyprovider: the encrypt config names no provider %q", s.o.Name)
	}
	if len(vals) > 1 {
		return "", fmt.Errorf("keyprovider: %d arguments for provider %q; want one", len(vals), s.o.Name)
	}
	if len(vals) == 0 {
		return "", nil
	}
	scope := string(vals[0])
	return scope, validScope(scope)
}

// validScope accepts "" (unbound) or a repository glob of at most
// MaxScope bytes made of the characters repository names and globs use.
func validScope(scope string) error {
	if scope == "" {
		return nil
	}
	if len(scope) > MaxScope {
		return fmt.Errorf("keyprovider: scope of %d bytes, more than %d", len(scope), MaxScope)
	}
	for _, c := range scope {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '.', c == '_', c == '-', c == '/', c == '*', c == '?':
		default:
			return errors.New("keyprovider: the scope is not a repository name or glob (a-z 0-9 . _ - / * ?)")
		}
	}
	if _, err := repoglob.Compile(scope); err != nil {
		return fmt.Errorf("keyprovider: scope: %w", err)
	}
	return nil
}

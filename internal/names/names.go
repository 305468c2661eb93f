// Package names checks the names and free text shroud's APIs take: a
// repository name by the distribution spec's grammar, text that is
// printable ASCII and bounded.
package names

import "regexp"

// MaxRepositoryLen bounds a repository name.
const MaxRepositoryLen = 255

// repository is the distribution spec's grammar of a repository name.
var repository = regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$`)

// Repository says whether s is a repository name (and at most
// MaxRepositoryLen long).
func Repository(s string) bool {
	return len(s) <= MaxRepositoryLen && repository.MatchString(s)
}

// Printable says whether s is at most max bytes of printable ASCII (no
// control characters, nothing a log line or a terminal would take for
// something else).
func Printable(s string, max int) bool {
	if len(s) > max {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r > 0x7e {
			return false
		}
	}
	return true
}

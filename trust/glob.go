package trust

import (
	"path"
	"regexp"
	"strings"

	"github.com/shroud-oci/shroud/internal/repoglob"
)

// compileGlob compiles a scope's repository glob as the policy's rules
// read them (repoglob).
func compileGlob(glob string) (*regexp.Regexp, error) { return repoglob.Compile(glob) }

// repoComponent is one path component of a repository name, as the
// distribution spec defines it.
var repoComponent = regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$`)

// validNamespace says whether ns is a literal repository path prefix
// ("team-a", "team-a/prod"): no glob, no "..", nothing a file path could
// escape with.
func validNamespace(ns string) bool {
	if ns == "" {
		return false
	}
	for _, c := range strings.Split(ns, "/") {
		if !repoComponent.MatchString(c) {
			return false
		}
	}
	return true
}

// covers says whether the lists of namespace ns govern repository repo:
// "" governs every repository, "team-a" those under "team-a/".
func covers(ns, repo string) bool {
	return ns == "" || strings.HasPrefix(repo, ns+"/")
}

// governs says whether the lists of namespace ns govern scope, what
// Check is asked about: a repository name (covers), a repository glob
// (a key provider's wrap bound to "team-*/app"), or "" (a wrap bound to
// no repository). Fail closed: a glob is governed by every namespace
// whose repositories it may match (repoglob.MayOverlap, as the key
// provider's deny rules read it), "" by every namespace.
func governs(ns, scope string) bool {
	switch {
	case scope == "" || ns == "":
		return true
	case repoglob.IsGlob(scope):
		return repoglob.MayOverlap(scope, ns+"/**")
	}
	return covers(ns, scope)
}

// listPath is the target path of a namespace's list file.
func listPath(ns, file string) string {
	if ns == "" {
		return file
	}
	return ns + "/" + file
}

// namespaceOfPattern maps a delegated role's TUF path pattern to the
// namespace whose lists it lets the role sign: "team-a/*" (or
// "team-a/recipients.json") gives "team-a". A pattern whose directory is
// not literal ("team-*/*") names no namespace shroud can look up.
func namespaceOfPattern(pattern string) (string, bool) {
	dir, last := path.Split(pattern)
	dir = strings.TrimSuffix(dir, "/")
	if !validNamespace(dir) {
		return "", false
	}
	for _, f := range []string{RecipientsFile, RevocationsFile} {
		if ok, _ := path.Match(last, f); ok {
			return dir, true
		}
	}
	return "", false
}

// scopeWithin says whether every repository glob could match lies under
// namespace ns; a scope that does not is counted only for the part
// under ns.
func scopeWithin(scope, ns string) bool {
	return ns == "" || strings.HasPrefix(scope, ns+"/")
}

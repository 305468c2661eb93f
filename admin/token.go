package admin

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
)

// Bounds of a token: long enough not to be guessed, short enough for a
// header.
const (
	minTokenLen = 16
	maxTokenLen = 4096
)

// LoadToken reads the bearer token from the file at path: its content,
// surrounding white space trimmed. A file that is missing, empty, shorter
// than 16 characters, holds anything but printable ASCII, or is readable
// by every user (mode o+r; chmod 0600 or 0640) is refused.
func LoadToken(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("admin token file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("admin token file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("admin token file %s: not a regular file", path)
	}
	if st.Mode().Perm()&0o004 != 0 {
		return nil, fmt.Errorf("admin token file %s: readable by every user (mode %04o): chmod o-r it", path, st.Mode().Perm())
	}
	if st.Mode().Perm()&0o022 != 0 {
		// Whoever may write it chooses the token of the next start.
		return nil, fmt.Errorf("admin token file %s: writable by its group or every user (mode %04o): chmod go-w it", path, st.Mode().Perm())
	}
	b, err := io.ReadAll(io.LimitReader(f, maxTokenLen+2))
	if err != nil {
		return nil, fmt.Errorf("admin token file: %w", err)
	}
	tok := bytes.TrimSpace(b)
	switch {
	case len(tok) == 0:
		return nil, fmt.Errorf("admin token file %s: empty", path)
	case len(tok) < minTokenLen:
		return nil, fmt.Errorf("admin token file %s: the token is shorter than %d characters (openssl rand -hex 32 makes one)", path, minTokenLen)
	case len(tok) > maxTokenLen:
		return nil, fmt.Errorf("admin token file %s: the token is longer than %d characters", path, maxTokenLen)
	}
	for _, c := range tok {
		if c <= ' ' || c > '~' {
			return nil, fmt.Errorf("admin token file %s: the token holds a character other than printable ASCII", path)
		}
	}
	return tok, nil
}

// tokenCheck holds a token's hash, so that every comparison takes the
// same time whatever the length of what is presented.
type tokenCheck [sha256.Size]byte

func newTokenCheck(token []byte) (tokenCheck, error) {
	if len(token) < minTokenLen {
		return tokenCheck{}, errors.New("admin: no token (LoadToken)")
	}
	return sha256.Sum256(token), nil
}

// allows says whether r carries the token as its bearer credentials.
func (c tokenCheck) allows(r *http.Request) bool {
	scheme, cred, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		// Hashed all the same: no answer comes sooner for a malformed
		// header than for a wrong token.
		cred = ""
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(cred)))
	return subtle.ConstantTimeCompare(sum[:], c[:]) == 1 && ok
}

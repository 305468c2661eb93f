package auth

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/crypto/bcrypt"
)

const (
	// maxHtpasswdSize bounds the htpasswd file read.
	maxHtpasswdSize = 4 << 20
	// reloadInterval is how often a file's modification time is checked.
	reloadInterval = 2 * time.Second
	// verifiedTTL is how long a verified password is remembered, so that
	// a push's hundred requests cost one bcrypt, not a hundred.
	verifiedTTL = 5 * time.Minute
	// maxDummyCost caps the dummy's cost (16: seconds per comparison).
	maxDummyCost = 16
	// verifiedEntries bounds the verified passwords remembered.
	verifiedEntries = 4096
)

// Htpasswd checks Basic credentials against an htpasswd file of bcrypt
// hashes (`htpasswd -B`, what distribution's htpasswd auth reads). The
// file is read again when it changes (a rotated Kubernetes secret); a
// change that does not parse keeps the users loaded and is reported.
type Htpasswd struct {
	path string
	// sem bounds the bcrypt comparisons run at once: each costs tens of
	// milliseconds of CPU, and wrong passwords are not remembered.
	sem chan struct{}
	// key keys the memory of verified passwords (an HMAC of user and
	// password, never the password).
	key []byte

	mu    sync.Mutex
	users map[string][]byte
	// dummy is compared against for an unknown user, so that the time
	// taken does not tell which users exist: it costs what the users'
	// costliest hash costs.
	dummy    []byte
	modTime  time.Time
	size     int64
	checked  time.Time
	verified *lru.Cache[string, time.Time]
	// gen counts loads, so that a password verified against the users of
	// one load is not remembered into the next.
	gen uint64
	// reloadErr is the last reload's failure, reported once.
	reloadErr error

	// interval overrides reloadInterval (tests); zero means reloadInterval.
	interval time.Duration
	// compare is bcrypt.CompareHashAndPassword; tests count its calls.
	compare func(hash, password []byte) error
}

// LoadHtpasswd reads an htpasswd file. Every line is `user:bcrypt-hash`;
// blank lines and lines starting with # are skipped; any other hash
// (MD5 $apr1$, {SHA}, crypt, plain) is an error naming the line.
func LoadHtpasswd(path string) (*Htpasswd, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	v, err := lru.New[string, time.Time](verifiedEntries)
	if err != nil {
		return nil, err
	}
	h := &Htpasswd{path: path, sem: make(chan struct{}, runtime.NumCPU()), key: key, verified: v,
		compare: bcrypt.CompareHashAndPassword}
	if err := h.load(time.Now()); err != nil {
		return nil, err
	}
	return h, nil
}

// ParseHtpasswd parses htpasswd content.
func ParseHtpasswd(b []byte) (map[string][]byte, error) {
	users := map[string][]byte{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 4096), 64<<10)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		user, hash, ok := strings.Cut(line, ":")
		if !ok || user == "" {
			return nil, fmt.Errorf("line %d: want user:bcrypt-hash", n)
		}
		if strings.ContainsAny(user, " \t") {
			return nil, fmt.Errorf("line %d: the user name holds blanks", n)
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			// The hash is not echoed: it is a secret of sorts too.
			return nil, fmt.Errorf("line %d (user %q): not a bcrypt hash (create it with htpasswd -B)", n, user)
		}
		if _, dup := users[user]; dup {
			return nil, fmt.Errorf("line %d: user %q appears twice", n, user)
		}
		users[user] = []byte(hash)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return users, nil
}

func (h *Htpasswd) load(now time.Time) error {
	fi, err := os.Stat(h.path)
	if err != nil {
		return fmt.Errorf("htpasswd: %w", err)
	}
	if fi.Size() > maxHtpasswdSize {
		return fmt.Errorf("htpasswd %s: larger than %d bytes", h.path, maxHtpasswdSize)
	}
	b, err := os.ReadFile(h.path)
	if err != nil {
		return fmt.Errorf("htpasswd: %w", err)
	}
	users, err := ParseHtpasswd(b)
	if err != nil {
		return fmt.Errorf("htpasswd %s: %w", h.path, err)
	}
	cost := 0
	for _, hash := range users {
		if c, _ := bcrypt.Cost(hash); c > cost {
			cost = c
		}
	}
	if len(users) == 0 {
		cost = bcrypt.DefaultCost
	}
	// Capped: a hash of absurd cost would otherwise stall the load.
	cost = min(cost, maxDummyCost)
	if c, err := bcrypt.Cost(h.dummy); err != nil || c != cost {
		dummy, err := bcrypt.GenerateFromPassword([]byte("shroud: no such user"), cost)
		if err != nil {
			return fmt.Errorf("htpasswd %s: %w", h.path, err)
		}
		h.dummy = dummy
	}
	h.users, h.modTime, h.size, h.checked = users, fi.ModTime(), fi.Size(), now
	h.verified.Purge()
	h.gen++
	return nil
}

// reload reads the file again when it changed, at most every
// reloadInterval; it reports a failed reload once and keeps the users.
func (h *Htpasswd) reload(now time.Time) error {
	interval := h.interval
	if interval == 0 {
		interval = reloadInterval
	}
	if now.Sub(h.checked) < interval {
		return nil
	}
	h.checked = now
	fi, err := os.Stat(h.path)
	if err == nil && fi.ModTime().Equal(h.modTime) && fi.Size() == h.size {
		return nil
	}
	if err == nil {
		err = h.load(now)
	}
	if err != nil && (h.reloadErr == nil || h.reloadErr.Error() != err.Error()) {
		h.reloadErr = err
		return err
	}
	if err == nil {
		h.reloadErr = nil
	}
	return nil
}

// ErrBadPassword is the answer for an unknown user or a wrong password
// alike.
var ErrBadPassword = errors.New("wrong user name or password")

// Verify checks a user's password. reloadErr reports a changed file that
// did not load (the users loaded before stay in force).
func (h *Htpasswd) Verify(user, password string) (ok bool, reloadErr error) {
	now := time.Now()
	mac := hmac.New(sha256.New, h.key)
	// The user's length first: the user is bound, whatever bytes it holds.
	mac.Write(binary.BigEndian.AppendUint64(nil, uint64(len(user))))
	mac.Write([]byte(user))
	mac.Write([]byte{0})
	mac.Write([]byte(password))
	memo := string(mac.Sum(nil))

	h.mu.Lock()
	reloadErr = h.reload(now)
	hash, known := h.users[user]
	if exp, hit := h.verified.Get(memo); hit && known && now.Before(exp) {
		h.mu.Unlock()
		return true, reloadErr
	}
	gen := h.gen
	if !known {
		hash = h.dummy
	}
	h.mu.Unlock()

	h.sem <- struct{}{}
	err := h.compare(hash, []byte(password))
	<-h.sem
	if err != nil || !known {
		return false, reloadErr
	}
	h.mu.Lock()
	if gen == h.gen { // not across a reload
		h.verified.Add(memo, now.Add(verifiedTTL))
	}
	h.mu.Unlock()
	return true, reloadErr
}

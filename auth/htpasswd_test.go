package auth

import (
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// hash is a bcrypt hash of password at MinCost (the cost is not what
// these tests are about).
func hash(t testing.TB, password string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

// writeHtpasswd writes content and gives the file a modification time of
// its own (a rotation within the file system's timestamp granularity
// would otherwise look unchanged when the size is the same too).
func writeHtpasswd(t testing.TB, path, content string, mtime time.Time) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

// countCompares makes h count its bcrypt comparisons.
func countCompares(h *Htpasswd) *atomic.Int64 {
	var n atomic.Int64
	inner := h.compare
	h.compare = func(hash, password []byte) error {
		n.Add(1)
		return inner(hash, password)
	}
	return &n
}

func TestParseHtpasswd(t *testing.T) {
	alice, bob := hash(t, "alice-pw"), hash(t, "bob-pw")
	users, err := ParseHtpasswd([]byte("# users\n\nalice:" + alice + "\r\n   \n  # indented comment\nbob:" + bob))
	if err != nil {
		t.Fatal(err)
	}
	if len(users) != 2 || string(users["alice"]) != alice || string(users["bob"]) != bob {
		t.Fatalf("users = %q", users)
	}
	// htpasswd -B writes $2y$; Go writes $2a$; both are bcrypt.
	if _, err := ParseHtpasswd([]byte("carol:" + strings.Replace(alice, "$2a$", "$2y$", 1))); err != nil {
		t.Errorf("$2y$: %v", err)
	}
	if users, err := ParseHtpasswd(nil); err != nil || len(users) != 0 {
		t.Errorf("empty file: %v %v", users, err)
	}
}

func TestParseHtpasswdErrors(t *testing.T) {
	alice := hash(t, "alice-pw")
	for _, tc := range []struct {
		name, content, line, secret string
	}{
		{"apr1", "alice:" + alice + "\nbob:$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/\n", "line 2", "$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/"},
		{"sha", "# c\nbob:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=", "line 2", "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ="},
		{"plain", "bob:hunter2-plaintext", "line 1", "hunter2-plaintext"},
		{"crypt", "bob:rl0uE2yNQ8cMU", "line 1", "rl0uE2yNQ8cMU"},
		{"truncated bcrypt", "bob:" + alice[:40], "line 1", alice[:40]},
		{"duplicate", "alice:" + alice + "\nalice:" + alice, "line 2", alice},
		{"no colon", "\n\nalice", "line 3", ""},
		{"no user", ":" + alice, "line 1", alice},
		{"blank in user", "al ice:" + alice, "line 1", alice},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseHtpasswd([]byte(tc.content))
			if err == nil {
				t.Fatal("parsed")
			}
			if !strings.Contains(err.Error(), tc.line) {
				t.Errorf("error %q does not name %s", err, tc.line)
			}
			if tc.secret != "" && strings.Contains(err.Error(), tc.secret) {
				t.Errorf("error %q holds the hash", err)
			}
		})
	}
}

func newHtpasswd(t *testing.T, content string) (*Htpasswd, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "htpasswd")
	writeHtpasswd(t, path, content, time.Now().Add(-time.Hour))
	h, err := LoadHtpasswd(path)
	if err != nil {
		t.Fatal(err)
	}
	return h, path
}

func TestLoadHtpasswdErrors(t *testing.T) {
	if _, err := LoadHtpasswd(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("a missing file loaded")
	}
	path := filepath.Join(t.TempDir(), "htpasswd")
	writeHtpasswd(t, path, "bob:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\n", time.Now())
	_, err := LoadHtpasswd(path)
	if err == nil || !strings.Contains(err.Error(), "line 1") || strings.Contains(err.Error(), "5en6G6") {
		t.Errorf("err = %v", err)
	}
}

func TestHtpasswdVerify(t *testing.T) {
	h, _ := newHtpasswd(t, "alice:"+hash(t, "alice-pw")+"\nbob:"+hash(t, "bob-pw")+"\n")
	for _, tc := range []struct {
		user, password string
		want           bool
	}{
		{"alice", "alice-pw", true},
		{"bob", "bob-pw", true},
		{"alice", "bob-pw", false},
		{"alice", "", false},
		{"alice", "alice-pw ", false},
		{"mallory", "alice-pw", false},
		{"", "", false},
	} {
		ok, reloadErr := h.Verify(tc.user, tc.password)
		if ok != tc.want || reloadErr != nil {
			t.Errorf("Verify(%q, %q) = %v, %v; want %v", tc.user, tc.password, ok, reloadErr, tc.want)
		}
	}
}

// An unknown user costs a bcrypt comparison too (against the dummy), so
// that the time taken does not tell which users exist.
func TestHtpasswdUnknownUserCompares(t *testing.T) {
	h, _ := newHtpasswd(t, "alice:"+hash(t, "alice-pw")+"\n")
	n := countCompares(h)
	if ok, _ := h.Verify("mallory", "x"); ok {
		t.Fatal("unknown user verified")
	}
	if n.Load() != 1 {
		t.Errorf("%d bcrypt comparisons for an unknown user, want 1", n.Load())
	}
}

func TestHtpasswdMemo(t *testing.T) {
	h, _ := newHtpasswd(t, "alice:"+hash(t, "alice-pw")+"\nbob:"+hash(t, "bob-pw")+"\n")
	n := countCompares(h)
	for i := range 5 {
		if ok, _ := h.Verify("alice", "alice-pw"); !ok {
			t.Fatalf("verify %d refused", i)
		}
	}
	if n.Load() != 1 {
		t.Errorf("%d bcrypt comparisons for 5 verifications of one password, want 1", n.Load())
	}
	// A wrong password is not remembered: each costs a comparison.
	for range 3 {
		if ok, _ := h.Verify("alice", "wrong"); ok {
			t.Fatal("wrong password verified")
		}
	}
	if n.Load() != 4 {
		t.Errorf("%d bcrypt comparisons after 3 wrong passwords, want 4", n.Load())
	}
	// The memo is per user and password: bob's password is not alice's.
	if ok, _ := h.Verify("bob", "alice-pw"); ok {
		t.Error("alice's remembered password verified bob")
	}
	// The memo expires.
	h.mu.Lock()
	for _, k := range h.verified.Keys() {
		h.verified.Add(k, time.Now().Add(-time.Second))
	}
	h.mu.Unlock()
	before := n.Load()
	if ok, _ := h.Verify("alice", "alice-pw"); !ok {
		t.Fatal("refused after the memo expired")
	}
	if n.Load() != before+1 {
		t.Error("an expired memo entry was used")
	}
}

// The memo binds the user name: a user whose name ends in the byte that
// separates user from password in the memo key cannot borrow another
// user's remembered password.
func TestHtpasswdMemoUserBoundary(t *testing.T) {
	h, _ := newHtpasswd(t, "a:"+hash(t, "b\x00c")+"\na\x00b:"+hash(t, "other")+"\n")
	if ok, _ := h.Verify("a", "b\x00c"); !ok {
		t.Fatal("a refused")
	}
	if ok, _ := h.Verify("a\x00b", "c"); ok {
		t.Error(`"a\x00b" verified with a password that is not its own (memo key collision)`)
	}
}

func TestHtpasswdReload(t *testing.T) {
	h, path := newHtpasswd(t, "alice:"+hash(t, "old-pw")+"\n")
	h.interval = time.Millisecond
	n := countCompares(h)
	if ok, _ := h.Verify("alice", "old-pw"); !ok {
		t.Fatal("old password refused before the rotation")
	}
	// Rotate: same user, new password (the same size of file).
	writeHtpasswd(t, path, "alice:"+hash(t, "new-pw")+"\n", time.Now())
	time.Sleep(5 * time.Millisecond)
	if ok, err := h.Verify("alice", "new-pw"); !ok || err != nil {
		t.Fatalf("new password after the rotation: %v, %v", ok, err)
	}
	if ok, _ := h.Verify("alice", "old-pw"); ok {
		t.Error("old password still verifies after the rotation (the memo survived the reload)")
	}
	if n.Load() != 3 {
		t.Errorf("%d comparisons, want 3 (the memo is purged by the reload)", n.Load())
	}
}

// Within the reload interval the file is not looked at.
func TestHtpasswdReloadInterval(t *testing.T) {
	h, path := newHtpasswd(t, "alice:"+hash(t, "old-pw")+"\n")
	h.interval = time.Hour
	writeHtpasswd(t, path, "alice:"+hash(t, "new-pw")+"\n", time.Now())
	if ok, _ := h.Verify("alice", "old-pw"); !ok {
		t.Error("reloaded before the interval")
	}
	h.mu.Lock()
	h.checked = time.Time{}
	h.mu.Unlock()
	if ok, _ := h.Verify("alice", "new-pw"); !ok {
		t.Error("not reloaded after the interval")
	}
}

func TestHtpasswdReloadBroken(t *testing.T) {
	h, path := newHtpasswd(t, "alice:"+hash(t, "alice-pw")+"\n")
	h.interval = time.Millisecond
	writeHtpasswd(t, path, "alice:$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/\n", time.Now())
	time.Sleep(5 * time.Millisecond)
	ok, err := h.Verify("alice", "alice-pw")
	if !ok {
		t.Error("the users loaded before are gone after a broken reload")
	}
	if err == nil || !strings.Contains(err.Error(), "line 1") || strings.Contains(err.Error(), "HqJZim") {
		t.Errorf("reload error = %v", err)
	}
	// Reported once: the next checks of the same broken file say nothing.
	for range 3 {
		time.Sleep(2 * time.Millisecond)
		ok, err := h.Verify("alice", "alice-pw")
		if !ok || err != nil {
			t.Errorf("after the report: %v, %v", ok, err)
		}
	}
	// A removed file is a new failure, reported once too.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Millisecond)
	if ok, err := h.Verify("alice", "alice-pw"); !ok || err == nil {
		t.Errorf("removed file: %v, %v", ok, err)
	}
	time.Sleep(2 * time.Millisecond)
	if _, err := h.Verify("alice", "alice-pw"); err != nil {
		t.Errorf("removed file reported twice: %v", err)
	}
	// Fixed: the new users load; a later breakage is reported again.
	writeHtpasswd(t, path, "bob:"+hash(t, "bob-pw")+"\n", time.Now().Add(time.Minute))
	time.Sleep(2 * time.Millisecond)
	if ok, err := h.Verify("bob", "bob-pw"); !ok || err != nil {
		t.Errorf("fixed file: %v, %v", ok, err)
	}
	if ok, _ := h.Verify("alice", "alice-pw"); ok {
		t.Error("alice survived the fixed file that drops her")
	}
	writeHtpasswd(t, path, "bob:plain\n", time.Now().Add(2*time.Minute))
	time.Sleep(2 * time.Millisecond)
	if _, err := h.Verify("bob", "bob-pw"); err == nil {
		t.Error("a second breakage after a fix was not reported")
	}
}

func TestHtpasswdConcurrent(t *testing.T) {
	h, path := newHtpasswd(t, "alice:"+hash(t, "alice-pw")+"\n")
	h.interval = time.Millisecond
	done := make(chan bool)
	for i := range 4 {
		go func() {
			for j := range 20 {
				h.Verify("alice", "alice-pw")
				if i == 0 && j%5 == 0 {
					writeHtpasswd(t, path, "alice:"+hash(t, "alice-pw")+"\n", time.Now().Add(time.Duration(j)*time.Second))
				}
			}
			done <- true
		}()
	}
	for range 4 {
		<-done
	}
}

// The dummy an unknown user is compared against costs what the users'
// hashes cost, so that an unknown user does not answer faster than a
// known one (a file of cost-12 hashes against a cost-10 dummy would tell
// which users exist by a fourfold difference in time).
func TestHtpasswdDummyCost(t *testing.T) {
	high, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost+2)
	if err != nil {
		t.Fatal(err)
	}
	h, path := newHtpasswd(t, "alice:"+hash(t, "a")+"\nbob:"+string(high)+"\n")
	if c, _ := bcrypt.Cost(h.dummy); c != bcrypt.MinCost+2 {
		t.Errorf("dummy cost %d, want the users' highest, %d", c, bcrypt.MinCost+2)
	}
	// A rotation to other costs makes a dummy of the new cost.
	h.interval = time.Millisecond
	writeHtpasswd(t, path, "alice:"+hash(t, "a")+"\n", time.Now())
	time.Sleep(5 * time.Millisecond)
	h.Verify("mallory", "x")
	h.mu.Lock()
	c, _ := bcrypt.Cost(h.dummy)
	h.mu.Unlock()
	if c != bcrypt.MinCost {
		t.Errorf("dummy cost %d after the rotation, want %d", c, bcrypt.MinCost)
	}
}

package jobs

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

// What one run records, the next reads: written manifests, what replaced
// what, and the old ones begun or replaced but not yet gone.
func TestCheckpointSurvivesAKill(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rewrap.checkpoint")
	c, err := OpenCheckpoint(path, "rewrap 1")
	if err != nil {
		t.Fatal(err)
	}
	a, a2 := digest.FromString("a"), digest.FromString("a2")
	b, b2 := digest.FromString("b"), digest.FromString("b2")
	x := digest.FromString("x")
	for _, err := range []error{
		c.Begin("r", a), c.Record("r", a, a2), c.Forget("r", a),
		c.Begin("r", b), c.Record("r", b, b2),
		c.Begin("r", x), // killed before its new form was stored
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	c.Close()
	// The kill cut the next line short.
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"op":"record","repo":"r","old":"sha2`)
	f.Close()

	c, err = OpenCheckpoint(path, "rewrap 1")
	if err != nil {
		t.Fatalf("a checkpoint whose last line a kill cut short: %v", err)
	}
	defer c.Close()
	if !c.Written("r", a2) || !c.Written("r", b2) || c.Written("r", a) || c.Written("other", a2) {
		t.Fatal("Written does not say what the earlier run wrote")
	}
	if got, ok := c.Replaced("r", b); !ok || got != b2 {
		t.Fatalf("Replaced(b) = %s %v", got, ok)
	}
	if p := c.Pending("r"); !slices.Equal(p, []digest.Digest{b, x}) {
		t.Fatalf("Pending = %v, want b (replaced, not deleted) and x (begun)", p)
	}
	// Appending after the dropped half line starts a line of its own.
	if err := c.Forget("r", b); err != nil {
		t.Fatal(err)
	}
	c.Close()
	c, err = OpenCheckpoint(path, "rewrap 1")
	if err != nil {
		t.Fatal(err)
	}
	if p := c.Pending("r"); !slices.Equal(p, []digest.Digest{x}) {
		t.Fatalf("Pending after b went = %v", p)
	}
	c.Close()
}

// A file that is not a checkpoint is refused, naming the line, never
// taken for an empty one.
func TestCheckpointRefusesAnotherFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notes")
	os.WriteFile(path, []byte("some notes\nof an operator\n"), 0o600)
	if _, err := OpenCheckpoint(path, "rewrap 1"); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("OpenCheckpoint of another file: %v", err)
	}
}

// A checkpoint belongs to its job: a run of another job (another key
// taken away, months later, with the default path) takes nothing the
// first wrote for done and starts the file over once the first left
// nothing to delete; while it did, the other job is refused, naming it.
func TestCheckpointOfAnotherJobIsNotResumed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rewrap.checkpoint")
	a, a2 := digest.FromString("a"), digest.FromString("a2")
	c, err := OpenCheckpoint(path, "rewrap A")
	if err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(c.Begin("r", a), c.Record("r", a, a2)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if _, err := OpenCheckpoint(path, "rewrap B"); err == nil || !strings.Contains(err.Error(), "rewrap A") || !strings.Contains(err.Error(), "1 old") {
		t.Fatalf("another job while the first has an old manifest to delete: %v", err)
	}
	c, err = OpenCheckpoint(path, "rewrap A")
	if err != nil {
		t.Fatal(err)
	}
	if c.Resumed() != 2 || !c.Written("r", a2) {
		t.Fatalf("the same job again resumes: Resumed %d, Written %v", c.Resumed(), c.Written("r", a2))
	}
	if err := c.Forget("r", a); err != nil {
		t.Fatal(err)
	}
	c.Close()
	c, err = OpenCheckpoint(path, "rewrap B")
	if err != nil {
		t.Fatalf("another job once the first left nothing to delete: %v", err)
	}
	if c.Resumed() != 0 || c.Written("r", a2) || c.Job() != "rewrap B" {
		t.Fatalf("another job took the first's steps: Resumed %d, Written %v, Job %q", c.Resumed(), c.Written("r", a2), c.Job())
	}
	c.Close()
}

// Finish removes the file of a job that left nothing to delete, and
// keeps (saying so) the file of one that did.
func TestCheckpointFinish(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rewrap.checkpoint")
	a, a2 := digest.FromString("a"), digest.FromString("a2")
	c, err := OpenCheckpoint(path, "rewrap A")
	if err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(c.Begin("r", a), c.Record("r", a, a2)); err != nil {
		t.Fatal(err)
	}
	if err := c.Finish(); err == nil || !strings.Contains(err.Error(), "1 old") {
		t.Fatalf("Finish with an old manifest to delete: %v", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the file of an unfinished job: %v", err)
	}
	if err := c.Forget("r", a); err != nil {
		t.Fatal(err)
	}
	if err := c.Finish(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("the file of a finished job is still there: %v", err)
	}
}

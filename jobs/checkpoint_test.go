package jobs

import (
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
	c, err := OpenCheckpoint(path)
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

	c, err = OpenCheckpoint(path)
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
	c, err = OpenCheckpoint(path)
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
	if _, err := OpenCheckpoint(path); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("OpenCheckpoint of another file: %v", err)
	}
}

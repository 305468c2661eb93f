package proxy

import (
	"bytes"
	"crypto/rand"
	"io"
	"os"
	"testing"
)

// A blob up to the memory bound is held in memory, a larger one in an
// unlinked spool file (never in memory); both read back whole.
func TestHoldCiphertextBoundsMemory(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []int64{heldInMemory, heldInMemory + 1} {
		b := make([]byte, n)
		rand.Read(b)
		hb, err := holdCiphertext(bytes.NewReader(b), n, dir)
		if err != nil {
			t.Fatal(err)
		}
		if want := n <= heldInMemory; hb.inMemory() != want {
			t.Errorf("%d bytes: in memory %v, want %v", n, hb.inMemory(), want)
		}
		got, _ := io.ReadAll(hb.reader())
		if !bytes.Equal(got, b) {
			t.Errorf("%d bytes: held blob reads back wrong", n)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Errorf("%d bytes: the spool file has a name", n)
		}
		hb.Close()
	}
	if _, err := holdCiphertext(bytes.NewReader(make([]byte, 10)), heldInMemory+10, dir); err == nil {
		t.Error("a short upstream body was held as if whole")
	}
}

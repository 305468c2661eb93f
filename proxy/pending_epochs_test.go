package proxy

import (
	"testing"
	"time"

	"github.com/shroud-oci/shroud/cache"
	"github.com/shroud-oci/shroud/crypto"
)

// upload-ttl is only refused when negative (config.Validate); a
// sub-second one (e.g. "500ms") makes the epoch window 0 whole seconds,
// and pendingEpochs.epoch divides by it: every encrypt-only upload's
// commit panics (integer divide by zero).
func TestAttackSubSecondUploadTTLPanicsEncryptOnlyCommits(t *testing.T) {
	box, err := crypto.NewBox(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	p := newPendingEpochs(cache.NewMemoryLedger(0), box, 500*time.Millisecond, time.Now)
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("pendingEpochs.current panics for upload-ttl 500ms: %v", r)
		}
	}()
	if _, _, err := p.current(t.Context()); err != nil {
		t.Fatal(err)
	}
}

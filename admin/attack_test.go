package admin_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shroud-oci/shroud/admin"
	"github.com/shroud-oci/shroud/audit"
)

// o+w/g+w: any local user can replace the token before the next start.
func TestAttackWorldWritableTokenFileAccepted(t *testing.T) {
	p := filepath.Join(t.TempDir(), "tok")
	os.WriteFile(p, []byte(token), 0o600)
	os.Chmod(p, 0o622)
	if _, err := admin.LoadToken(p); err == nil {
		t.Fatal("LoadToken accepted a world-writable token file (mode 0622)")
	}
}

// TestAttackUnauthenticatedAuditFlood: every unauthenticated request writes
// an audit line, unthrottled: anyone who reaches the port grows the audit
// log without bound (DESIGN §10: resource use bounded per client).
func TestAttackUnauthenticatedAuditFlood(t *testing.T) {
	f := newFixture(t)
	second := f.second(t, f.up)
	var buf lockedBuffer
	a := startAdmin(context.Background(), t, second.Handler, t.TempDir(), admin.Options{Audit: auditTo(&buf)})
	long := "/" + strings.Repeat("x", 300)
	for i := 0; i < 2000; i++ {
		a.do("GET", long, "", nil)
	}
	if n := len(buf.adminEvents(t)); n > 200 {
		t.Fatalf("2000 unauthenticated requests wrote %d audit lines (%d bytes): unbounded, no rate limit", n, len(buf.String()))
	}
}

func auditTo(b *lockedBuffer) *audit.Logger { return audit.New(b) }

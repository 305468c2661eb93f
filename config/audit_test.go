package config

import (
	"os"
	"path/filepath"
	"testing"
)

func TestLoadAuditLog(t *testing.T) {
	p := filepath.Join(t.TempDir(), "shroud.yaml")
	os.WriteFile(p, []byte("audit-log: /var/log/shroud/audit.jsonl\n"), 0o600)
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.AuditLog != "/var/log/shroud/audit.jsonl" || Default().AuditLog != "" {
		t.Fatalf("audit-log = %q, default %q", c.AuditLog, Default().AuditLog)
	}
}

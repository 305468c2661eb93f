package main

import (
	"io"
	"os"
	"path/filepath"
	"testing"
)

// --audit-log takes a file or "-", over the config file's audit-log.
func TestAuditLogFlag(t *testing.T) {
	cfgFile := filepath.Join(t.TempDir(), "shroud.yaml")
	os.WriteFile(cfgFile, []byte("audit-log: /from/file.jsonl\n"), 0o600)
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, ""},
		{[]string{"--audit-log", "-"}, "-"},
		{[]string{"--config", cfgFile}, "/from/file.jsonl"},
		{[]string{"--config", cfgFile, "--audit-log", "/from/flag.jsonl"}, "/from/flag.jsonl"},
	} {
		cfg, err := parseServe(c.args, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.AuditLog != c.want {
			t.Errorf("%v: audit-log %q, want %q", c.args, cfg.AuditLog, c.want)
		}
	}
}

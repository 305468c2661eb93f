package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The stream limits default to bounds, take 0 for "off" and refuse
// negative values, which would read as off by mistake.
func TestStreamLimits(t *testing.T) {
	d := Default()
	if d.StallTimeout != 2*time.Minute || d.IdleTimeout != 2*time.Minute || d.MaxStreams != 256 {
		t.Fatalf("defaults: stall-timeout %s, idle-timeout %s, max-streams %d", d.StallTimeout, d.IdleTimeout, d.MaxStreams)
	}
	p := filepath.Join(t.TempDir(), "shroud.yaml")
	os.WriteFile(p, []byte("stall-timeout: 30s\nidle-timeout: 0s\nmax-streams: 0\n"), 0o600)
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.StallTimeout != 30*time.Second || c.IdleTimeout != 0 || c.MaxStreams != 0 {
		t.Fatalf("Load = stall-timeout %s, idle-timeout %s, max-streams %d", c.StallTimeout, c.IdleTimeout, c.MaxStreams)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c.StallTimeout, c.IdleTimeout, c.MaxStreams = -time.Second, -time.Second, -1
	err = c.Validate()
	for _, key := range []string{"stall-timeout", "idle-timeout", "max-streams"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("a negative %s is accepted: %v", key, err)
		}
	}
}

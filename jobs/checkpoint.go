// Package jobs holds what shroud's jobs (rewrap, re-encrypt, rotation)
// need beyond the proxy's own code: the checkpoint file that makes a job
// killed halfway resume where it stopped, and its progress report.
package jobs

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/opencontainers/go-digest"
)

// Checkpoint is a job's record of the manifests it replaced, kept in a
// file of JSON lines that only grows (one line per step, synced before
// the step counts as done), so that a kill at any moment loses at most
// the step under way. It implements proxy.JobCheckpoint.
type Checkpoint struct {
	mu       sync.Mutex
	f        *os.File
	replaced map[string]digest.Digest // repo@old -> new
	written  map[string]bool          // repo@new
	pending  map[string][]digest.Digest
	gone     map[string]bool // repo@old
}

// step is one line of the file.
type step struct {
	Op   string        `json:"op"` // "begin", "record", "forget"
	Repo string        `json:"repo"`
	Old  digest.Digest `json:"old"`
	New  digest.Digest `json:"new,omitempty"`
}

// OpenCheckpoint opens (or creates) the checkpoint file at path and reads
// what an earlier run recorded in it. A last line cut short by a kill
// (no newline) is dropped; a whole line that does not parse is an error,
// so that a file that is not a checkpoint is never taken for one.
func OpenCheckpoint(path string) (*Checkpoint, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	c := &Checkpoint{f: f, replaced: map[string]digest.Digest{}, written: map[string]bool{}, pending: map[string][]digest.Digest{}, gone: map[string]bool{}}
	r := bufio.NewReader(f)
	var good int64 // bytes up to the end of the last whole step
	for n := 1; ; n++ {
		line, err := r.ReadBytes('\n')
		if errors.Is(err, io.EOF) {
			if len(line) > 0 {
				// Cut short by a kill: dropped, so that the next step
				// starts a line of its own.
				if err := f.Truncate(good); err != nil {
					f.Close()
					return nil, fmt.Errorf("checkpoint %s: %w", path, err)
				}
			}
			break
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("checkpoint %s: %w", path, err)
		}
		var s step
		if err := json.Unmarshal(line, &s); err != nil || s.Old.Validate() != nil || (s.New != "" && s.New.Validate() != nil) {
			f.Close()
			return nil, fmt.Errorf("checkpoint %s: line %d is not a checkpoint step", path, n)
		}
		c.apply(s)
		good += int64(len(line))
	}
	return c, nil
}

func (c *Checkpoint) apply(s step) {
	k := s.Repo + "@" + s.Old.String()
	switch s.Op {
	case "begin":
		if !c.gone[k] {
			c.addPending(s.Repo, s.Old)
		}
	case "record":
		c.replaced[k] = s.New
		c.written[s.Repo+"@"+s.New.String()] = true
		c.addPending(s.Repo, s.Old)
	case "forget":
		c.gone[k] = true
		p := c.pending[s.Repo]
		for i, d := range p {
			if d == s.Old {
				c.pending[s.Repo] = append(p[:i:i], p[i+1:]...)
				break
			}
		}
	}
}

func (c *Checkpoint) addPending(repo string, d digest.Digest) {
	for _, p := range c.pending[repo] {
		if p == d {
			return
		}
	}
	c.pending[repo] = append(c.pending[repo], d)
}

func (c *Checkpoint) write(s step) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.f == nil {
		return errors.New("checkpoint: closed")
	}
	if _, err := c.f.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	if err := c.f.Sync(); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	c.apply(s)
	return nil
}

// Begin implements proxy.JobCheckpoint.
func (c *Checkpoint) Begin(repo string, old digest.Digest) error {
	return c.write(step{Op: "begin", Repo: repo, Old: old})
}

// Record implements proxy.JobCheckpoint.
func (c *Checkpoint) Record(repo string, old, new digest.Digest) error {
	return c.write(step{Op: "record", Repo: repo, Old: old, New: new})
}

// Forget implements proxy.JobCheckpoint.
func (c *Checkpoint) Forget(repo string, old digest.Digest) error {
	return c.write(step{Op: "forget", Repo: repo, Old: old})
}

// Written implements proxy.JobCheckpoint.
func (c *Checkpoint) Written(repo string, d digest.Digest) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.written[repo+"@"+d.String()]
}

// Replaced implements proxy.JobCheckpoint.
func (c *Checkpoint) Replaced(repo string, old digest.Digest) (digest.Digest, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, ok := c.replaced[repo+"@"+old.String()]
	return d, ok
}

// Pending implements proxy.JobCheckpoint.
func (c *Checkpoint) Pending(repo string) []digest.Digest {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]digest.Digest(nil), c.pending[repo]...)
}

// Close closes the file.
func (c *Checkpoint) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.f == nil {
		return nil
	}
	err := c.f.Close()
	c.f = nil
	return err
}

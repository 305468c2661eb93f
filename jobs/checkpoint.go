// Package jobs holds what shroud's jobs (rewrap, re-encrypt, identity
// rotation) need beyond the proxy's own code: one run of a job over its
// repositories (Run, which `shroud rotate` and the admin API share), the
// checkpoint file that makes a job killed halfway resume where it
// stopped, and its progress report.
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
//
// A checkpoint belongs to one job: its first line names it (the kind,
// the key, the recipients it wraps for: proxy's JobID). A run of another
// job does not take the manifests this one wrote for done (they are
// wrapped for other recipients) and starts the file over, unless this
// one left old manifests to delete, which it refuses to drop. A job that
// ends with nothing left to delete removes its file (Finish).
type Checkpoint struct {
	mu       sync.Mutex
	path     string
	job      string
	resumed  int // steps read from an earlier run of the job
	f        *os.File
	replaced map[string]digest.Digest // repo@old -> new
	written  map[string]bool          // repo@new
	pending  map[string][]digest.Digest
	gone     map[string]bool // repo@old
}

// step is one line of the file.
type step struct {
	Op   string        `json:"op"` // "job" (the first line), "begin", "record", "forget"
	Job  string        `json:"job,omitempty"`
	Repo string        `json:"repo,omitempty"`
	Old  digest.Digest `json:"old,omitempty"`
	New  digest.Digest `json:"new,omitempty"`
}

// OpenCheckpoint opens (or creates) the checkpoint file of job at path
// and reads what an earlier run of the job recorded in it. A last line
// cut short by a kill (no newline) is dropped; a whole line that does not
// parse is an error, so that a file that is not a checkpoint is never
// taken for one. A file of another job is started over when that job
// left nothing to delete, and refused when it did.
func OpenCheckpoint(path, job string) (*Checkpoint, error) {
	if job == "" {
		return nil, errors.New("checkpoint: no job named")
	}
	c, err := readCheckpoint(path)
	if err != nil {
		return nil, err
	}
	if c.job == job {
		return c, nil
	}
	if n := c.pendingCount(); n > 0 {
		c.f.Close()
		return nil, fmt.Errorf("checkpoint %s belongs to another job (%s), which left %d old manifests and blobs to delete upstream: run that job again to finish it, or remove the file and delete them by hand", path, c.job, n)
	}
	// Another job's, finished (or an empty file): started over.
	if err := c.f.Truncate(0); err != nil {
		c.f.Close()
		return nil, fmt.Errorf("checkpoint %s: %w", path, err)
	}
	fresh := &Checkpoint{path: path, job: job, f: c.f, replaced: map[string]digest.Digest{}, written: map[string]bool{}, pending: map[string][]digest.Digest{}, gone: map[string]bool{}}
	if err := fresh.write(step{Op: "job", Job: job}); err != nil {
		c.f.Close()
		return nil, err
	}
	return fresh, nil
}

// readCheckpoint reads the file at path as it is.
func readCheckpoint(path string) (*Checkpoint, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	c := &Checkpoint{path: path, f: f, replaced: map[string]digest.Digest{}, written: map[string]bool{}, pending: map[string][]digest.Digest{}, gone: map[string]bool{}}
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
		err = json.Unmarshal(line, &s)
		switch {
		case err == nil && n == 1 && s.Op == "job" && s.Job != "":
			c.job = s.Job
		case err == nil && s.Op != "job" && s.Old.Validate() == nil && (s.New == "" || s.New.Validate() == nil):
			if n == 1 {
				c.job = "unnamed, an older shroud's" // its steps count as pending for the check
			}
			c.apply(s)
			c.resumed++
		default:
			f.Close()
			return nil, fmt.Errorf("checkpoint %s: line %d is not a checkpoint step", path, n)
		}
		good += int64(len(line))
	}
	return c, nil
}

// Job is the job the checkpoint belongs to.
func (c *Checkpoint) Job() string { return c.job }

// Resumed is how many steps an earlier, unfinished run of the job left
// in the file (0 for a job started afresh).
func (c *Checkpoint) Resumed() int { return c.resumed }

func (c *Checkpoint) pendingCount() int {
	n := 0
	for _, p := range c.pending {
		n += len(p)
	}
	return n
}

// Finish ends the job: with nothing left to delete (no Pending in any
// repository) the file is removed, so that no later job, this one run
// again months on included, takes what this run wrote for done. With
// something left it stays, for the next run to finish, and Finish says
// how much.
func (c *Checkpoint) Finish() error {
	c.mu.Lock()
	n := c.pendingCount()
	c.mu.Unlock()
	if n > 0 {
		return fmt.Errorf("checkpoint %s kept: %d old manifests and blobs are still to delete upstream; run the job again to finish", c.path, n)
	}
	if err := c.Close(); err != nil {
		return err
	}
	if err := os.Remove(c.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("checkpoint: %w", err)
	}
	return nil
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

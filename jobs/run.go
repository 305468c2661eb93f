package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/names"
	"github.com/shroud-oci/shroud/proxy"
)

// Kind is what a job does.
type Kind string

// The kinds of jobs.
const (
	// Rewrap wraps every stored manifest's layer keys again, for the
	// recipients the repository's rule names now alone (a recipient
	// superseded or retired).
	Rewrap Kind = "rewrap"
	// Reencrypt gives every layer a new key and new ciphertext (a key
	// compromised): Spec.KeyID names it.
	Reencrypt Kind = "reencrypt"
	// Identity is the rewrap run while the keyring holds a previous
	// identity: every layer key is wrapped for the identity, every
	// original re-sealed with it, every pointer renamed.
	Identity Kind = "identity"
)

// Spec says what a job does. It is what the admin API takes and what a
// server keeps on disk while the job runs, so it reads and writes as
// JSON (Pace as a Go duration, "200ms").
type Spec struct {
	Kind         Kind     `json:"kind"`
	Repositories []string `json:"repositories"`
	// KeyID and Reason (reencrypt) name the compromised key and the
	// revocation's reason, as the old digests' 410 answers give them;
	// Reason defaults to keyCompromise. At is when the key was revoked:
	// zero, when the run starts.
	KeyID  string    `json:"key_id,omitempty"`
	Reason string    `json:"reason,omitempty"`
	At     time.Time `json:"at,omitzero"`
	// Pace is the least time between two manifests' writes upstream; 0:
	// as fast as the upstream answers.
	Pace time.Duration `json:"-"`
}

// specFields are Spec's fields without its methods, for its JSON.
type specFields Spec

// MarshalJSON writes Pace as a duration string.
func (s Spec) MarshalJSON() ([]byte, error) {
	j := struct {
		specFields
		Pace string `json:"pace,omitempty"`
	}{specFields: specFields(s)}
	if s.Pace != 0 {
		j.Pace = s.Pace.String()
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads Pace as a duration string ("200ms"). A field it
// does not know is an error: a misspelt one would otherwise be dropped.
func (s *Spec) UnmarshalJSON(b []byte) error {
	var j struct {
		specFields
		Pace string `json:"pace,omitempty"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return err
	}
	*s = Spec(j.specFields)
	if j.Pace != "" {
		d, err := time.ParseDuration(j.Pace)
		if err != nil {
			return fmt.Errorf("pace: %w", err)
		}
		s.Pace = d
	}
	return nil
}

// Bounds of a Spec: what one job may ask for.
const (
	MaxRepositories = 1000
	MaxPace         = time.Hour
	maxKeyIDLen     = 512
	maxReasonLen    = 128
)

// ErrNoPreviousIdentity refuses an identity job on a keyring without a
// previous identity: there is nothing to move images away from.
var ErrNoPreviousIdentity = errors.New("an identity job needs the identity it replaces as a previous identity (--previous-identity)")

// Validate checks the spec on its own: a known kind, repositories named
// by the distribution grammar, a key id for reencrypt (and only there),
// a pace within bounds.
func (s Spec) Validate() error {
	var errs []error
	switch s.Kind {
	case Rewrap, Identity:
		if s.KeyID != "" || s.Reason != "" || !s.At.IsZero() {
			errs = append(errs, fmt.Errorf("%s: key_id, reason and at belong to reencrypt jobs", s.Kind))
		}
	case Reencrypt:
		if s.KeyID == "" {
			errs = append(errs, errors.New("reencrypt: key_id names the compromised key"))
		} else if err := crypto.ValidKeyID(s.KeyID); err != nil {
			// Spelt otherwise than shroud spells it, it would match no
			// recipient: the job would wrap the new keys for it.
			errs = append(errs, fmt.Errorf("reencrypt: key_id: %w", err))
		}
	default:
		errs = append(errs, fmt.Errorf("kind %q: want rewrap, reencrypt or identity", s.Kind))
	}
	if len(s.KeyID) > maxKeyIDLen {
		errs = append(errs, fmt.Errorf("key_id: longer than %d characters", maxKeyIDLen))
	}
	if !names.Printable(s.Reason, maxReasonLen) {
		errs = append(errs, fmt.Errorf("reason: want at most %d printable characters", maxReasonLen))
	}
	if len(s.Repositories) == 0 || len(s.Repositories) > MaxRepositories {
		errs = append(errs, fmt.Errorf("repositories: name 1 to %d", MaxRepositories))
	}
	seen := map[string]bool{}
	for _, r := range s.Repositories {
		switch {
		case !names.Repository(r):
			errs = append(errs, fmt.Errorf("repository %.80q: not a repository name", r))
		case seen[r]:
			errs = append(errs, fmt.Errorf("repository %q: named twice", r))
		}
		seen[r] = true
	}
	if s.Pace < 0 || s.Pace > MaxPace {
		errs = append(errs, fmt.Errorf("pace %s: want 0 to %s", s.Pace, MaxPace))
	}
	return errors.Join(errs...)
}

// Observer hears of a run's events, in order, on the goroutine that runs
// it.
type Observer interface {
	// Resumed: the checkpoint of job (proxy's JobID) holds steps an
	// earlier, killed run of it wrote.
	Resumed(job string, steps int)
	// Repository: the work on repo starts.
	Repository(repo string)
	// Step: one manifest of the repository handled.
	Step(p proxy.JobProgress)
	// Reported: the work on repo ended, with err if it failed.
	Reported(repo string, rep proxy.JobReport, err error)
}

// RunOptions configure Run.
type RunOptions struct {
	// Checkpoint is the path of the job's checkpoint file (its directory
	// is created); required. The same path resumes a killed run.
	Checkpoint string
	// Previous are the previous identities of the handler's keyring
	// (crypto.Keyring.Previous): an identity job refuses without one.
	Previous []*crypto.Identity
	// Observer, when set, hears of every step.
	Observer Observer
	// Logger receives a line per step; nil: none.
	Logger *slog.Logger
	// Now stamps a reencrypt job's revocation when Spec.At is zero; nil:
	// time.Now.
	Now func() time.Time
}

// Result sums a run up.
type Result struct {
	// Job is proxy's name of the job (JobID): its checkpoint's.
	Job string
	// Resumed counts the steps an earlier, killed run left.
	Resumed int
	// Reports are the repositories', in the spec's order.
	Reports []RepositoryReport
}

// RepositoryReport is one repository's report.
type RepositoryReport struct {
	Repository string
	proxy.JobReport
}

// Label is how logs and progress reports name a kind: reencrypt, or
// rewrap (the identity job is a rewrap).
func (k Kind) Label() string {
	if k == Reencrypt {
		return "reencrypt"
	}
	return "rewrap"
}

// Check refuses what Run would refuse before it writes anything: a spec
// that does not validate, an identity job with no previous identity, a
// repository no encrypt rule of h's policy matches or whose rule has no
// recipient left. It returns the job's name (proxy's JobID).
func Check(ctx context.Context, h *proxy.Handler, s Spec, o RunOptions) (string, error) {
	job, _, err := prepare(ctx, h, s, o)
	return job, err
}

func prepare(ctx context.Context, h *proxy.Handler, s Spec, o RunOptions) (string, *proxy.Reencryption, error) {
	if err := s.Validate(); err != nil {
		return "", nil, err
	}
	if s.Kind == Identity && len(o.Previous) == 0 {
		return "", nil, ErrNoPreviousIdentity
	}
	var re *proxy.Reencryption
	if s.Kind == Reencrypt {
		at, reason := s.At, s.Reason
		if at.IsZero() {
			now := o.Now
			if now == nil {
				now = time.Now
			}
			at = now()
		}
		if reason == "" {
			reason = "keyCompromise"
		}
		re = proxy.NewReencryption(proxy.Revocation{KeyID: s.KeyID, Reason: reason, At: at.UTC()})
	}
	job, err := h.JobID(ctx, s.Repositories, re)
	if err != nil {
		return "", nil, err
	}
	return job, re, nil
}

// Run runs the job s describes with h (its policy, keys, key checks,
// audit log and upstream credentials), one repository after the other,
// recording each step in the checkpoint at o.Checkpoint so that a run
// killed at any point resumes where it stopped when run again with the
// same path. A run that ends with nothing left to delete removes the
// checkpoint. A cancelled ctx stops it between two upstream requests;
// the error is then ctx's.
func Run(ctx context.Context, h *proxy.Handler, s Spec, o RunOptions) (Result, error) {
	if o.Checkpoint == "" {
		return Result{}, errors.New("jobs: no checkpoint path")
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	job, re, err := prepare(ctx, h, s, o)
	if err != nil {
		return Result{}, err
	}
	res := Result{Job: job}
	if err := os.MkdirAll(filepath.Dir(o.Checkpoint), 0o700); err != nil {
		return res, fmt.Errorf("jobs: %w", err)
	}
	cp, err := OpenCheckpoint(o.Checkpoint, job)
	if err != nil {
		return res, err
	}
	defer cp.Close()
	if res.Resumed = cp.Resumed(); res.Resumed > 0 {
		log.Warn("resuming a killed run of the job from its checkpoint", "job", job, "checkpoint", o.Checkpoint, "steps", res.Resumed)
		if o.Observer != nil {
			o.Observer.Resumed(job, res.Resumed)
		}
	}
	label := s.Kind.Label()
	for _, repo := range s.Repositories {
		if o.Observer != nil {
			o.Observer.Repository(repo)
		}
		rep, err := h.Rewrap(ctx, repo, proxy.RewrapOptions{Checkpoint: cp, Pace: s.Pace, Reencrypt: re, Sleep: sleeper(ctx), Progress: func(p proxy.JobProgress) {
			log.Info("job step", "job", label, "repository", p.Repository, "done", p.Done, "total", p.Total, "old", p.Old, "new", p.New, "tags", p.Tags, "note", p.Note)
			if o.Observer != nil {
				o.Observer.Step(p)
			}
		}})
		if o.Observer != nil {
			o.Observer.Reported(repo, rep, err)
		}
		res.Reports = append(res.Reports, RepositoryReport{Repository: repo, JobReport: rep})
		if err != nil {
			return res, err
		}
	}
	return res, cp.Finish()
}

// sleeper is the job's pace: a sleep that a cancelled ctx cuts short (the
// next upstream request then fails with ctx's error).
func sleeper(ctx context.Context) func(time.Duration) {
	return func(d time.Duration) {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
	}
}

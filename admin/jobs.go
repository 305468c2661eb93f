package admin

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/shroud-oci/shroud/audit"
	"github.com/shroud-oci/shroud/jobs"
	"github.com/shroud-oci/shroud/proxy"
)

// State is where a job stands.
type State string

// The states of a job.
const (
	Queued    State = "queued"
	Running   State = "running"
	Done      State = "done"
	Failed    State = "failed"
	Cancelled State = "cancelled"
)

// specFile is the name, in Options.Dir, of the file that holds the spec
// of the job running, for a server stopped mid-job to resume it.
const specFile = "admin-job.json"

// Why a job's context ends: a cancel through the API, or the server
// stopping (the job resumes at the next start).
var (
	errCancelled = errors.New("cancelled through the admin API")
	errStopping  = errors.New("the server stopped: the job resumes at its next start")
)

// jobIDPattern is what newJobID makes.
var jobIDPattern = regexp.MustCompile(`^[0-9a-f]{16}$`)

func newJobID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// persisted is the content of specFile.
type persisted struct {
	ID      string    `json:"id"`
	Spec    jobs.Spec `json:"spec"`
	Actor   string    `json:"actor"`
	Created time.Time `json:"created"`
}

// job is one job, with what its API answers say of it. Its fields are
// guarded by the Server's mu.
type job struct {
	persisted
	state     State
	checkJob  string // proxy's JobID: the checkpoint's
	resumed   int    // steps an earlier, killed run left
	restarted bool   // resumed from specFile at a start
	started   time.Time
	ended     time.Time
	repos     []*repoProgress
	err       string
	cancel    context.CancelCauseFunc
	stopped   chan struct{} // closed when the job's goroutine ends
}

type repoProgress struct {
	name        string
	state       State
	done, total int
	report      *proxy.JobReport
}

// over says whether j has ended.
func (j *job) over() bool { return j.state == Done || j.state == Failed || j.state == Cancelled }

// readSpecFile reads the spec a stopped server left; none is (nil, nil).
func readSpecFile(dir string) (*persisted, error) {
	path := filepath.Join(dir, specFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	var p persisted
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("admin: %s is not a job's spec (%w): remove it to start without resuming the job", path, err)
	}
	if !jobIDPattern.MatchString(p.ID) {
		return nil, fmt.Errorf("admin: %s: job id %q: remove the file to start without resuming the job", path, p.ID)
	}
	if err := p.Spec.Validate(); err != nil {
		return nil, fmt.Errorf("admin: %s: %w: remove the file to start without resuming the job", path, err)
	}
	return &p, nil
}

// writeSpecFile writes p whole or not at all (a temporary file synced,
// then renamed), mode 0600.
func writeSpecFile(dir string, p persisted) error {
	b, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	f, err := os.CreateTemp(dir, specFile+".*")
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, specFile))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("admin: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

func removeSpecFile(dir string) error {
	if err := os.Remove(filepath.Join(dir, specFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("admin: %w", err)
	}
	return nil
}

// launch starts j on a goroutine of its own. Called with s.mu held.
func (s *Server) launch(j *job) {
	ctx, cancel := context.WithCancelCause(context.Background())
	j.cancel, j.stopped = cancel, make(chan struct{})
	s.current = j
	s.jobs = append(s.jobs, j)
	if n := len(s.jobs) - s.history; n > 0 {
		s.jobs = append(s.jobs[:0:0], s.jobs[n:]...)
	}
	s.wg.Add(1)
	go s.run(ctx, j)
}

// run runs j to its end and records how it ended.
func (s *Server) run(ctx context.Context, j *job) {
	defer s.wg.Done()
	defer close(j.stopped)
	defer j.cancel(nil)
	kind := j.Spec.Kind
	log := s.log.With("admin_job", j.ID, "job", string(kind))
	s.metrics.runningAdd(ctx, kind, 1)
	defer s.metrics.runningAdd(context.WithoutCancel(ctx), kind, -1)
	s.mu.Lock()
	j.state, j.started = Running, time.Now().UTC()
	s.mu.Unlock()
	log.Info("admin: job running", "repositories", len(j.Spec.Repositories), "restarted", j.restarted)
	res, err := jobs.Run(ctx, s.o.Handler, j.Spec, jobs.RunOptions{
		Checkpoint: filepath.Join(s.o.Dir, string(kind)+".checkpoint"),
		Previous:   s.o.Previous,
		Observer:   &observer{s: s, j: j, stopped: ctx.Err},
		Logger:     log,
	})
	cause := context.Cause(ctx)
	stopping := err != nil && errors.Is(cause, errStopping)
	s.mu.Lock()
	j.checkJob = res.Job
	j.ended = time.Now().UTC()
	switch {
	case err == nil:
		j.state = Done
	case errors.Is(cause, errCancelled) || stopping:
		j.state, j.err = Cancelled, cause.Error()
	default:
		j.state, j.err = Failed, truncate(err.Error(), 2000)
	}
	for _, r := range j.repos {
		if r.state == Queued || r.state == Running {
			r.state = j.state
		}
	}
	// Stopped with the server, the job keeps its spec for the next start;
	// ended any other way, it has nothing to resume. Removed under s.mu,
	// before the job stops being current: a start that follows writes
	// its own spec, which this must not remove.
	if !stopping {
		if rerr := removeSpecFile(s.o.Dir); rerr != nil {
			log.Error("admin: the ended job's spec file stays: the next start resumes it", "err", rerr)
		}
	}
	if s.current == j {
		s.current = nil
	}
	state, msg := j.state, j.err
	s.mu.Unlock()
	log.Info("admin: job ended", "state", string(state), "err", msg)
	s.audit(audit.Event{Step: "end", Job: string(kind), JobID: j.ID, Outcome: string(state), Actor: "shroud", Detail: msg})
}

// cancelJob asks j to stop, and waits up to wait for it to. Called
// without s.mu.
func cancelJob(j *job, cause error, wait time.Duration) bool {
	j.cancel(cause)
	select {
	case <-j.stopped:
		return true
	case <-time.After(wait):
		return false
	}
}

// observer records a job's steps in its state and the metrics; stopped
// is the job context's Err.
type observer struct {
	s       *Server
	j       *job
	stopped func() error
}

func (o *observer) repo(name string) *repoProgress {
	for _, r := range o.j.repos {
		if r.name == name {
			return r
		}
	}
	return nil
}

func (o *observer) Resumed(job string, steps int) {
	o.s.mu.Lock()
	defer o.s.mu.Unlock()
	o.j.checkJob, o.j.resumed = job, steps
}

func (o *observer) Repository(repo string) {
	o.s.mu.Lock()
	defer o.s.mu.Unlock()
	if r := o.repo(repo); r != nil {
		r.state = Running
	}
}

func (o *observer) Step(p proxy.JobProgress) {
	outcome := outcomeRewritten
	if p.New == "" {
		outcome = outcomeLeft
	}
	o.s.metrics.manifest(context.Background(), o.j.Spec.Kind, outcome)
	o.s.mu.Lock()
	defer o.s.mu.Unlock()
	if r := o.repo(p.Repository); r != nil {
		r.done, r.total = p.Done, p.Total
	}
}

func (o *observer) Reported(repo string, rep proxy.JobReport, err error) {
	stopped := o.stopped() != nil
	if err != nil && !stopped {
		o.s.metrics.manifest(context.Background(), o.j.Spec.Kind, outcomeFailed)
	}
	o.s.mu.Lock()
	defer o.s.mu.Unlock()
	r := o.repo(repo)
	if r == nil {
		return
	}
	r.report = &rep
	switch {
	case err == nil:
		r.state = Done
	case stopped:
		r.state = Cancelled
	default:
		r.state = Failed
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

package admin_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/shroud-oci/shroud/internal/shroudtest"
)

// A rewrap job started through the API, watched until done: straight from
// the upstream the key taken off the rule opens no layer and the
// remaining one every layer; through shroud (the one that pushed, and the
// one the job ran on) every tag pulls back the digests pushed. The state
// says what was done per repository; the spec file and the checkpoint are
// gone; the audit log has the start and the end, by "token", and never
// the token; the metrics count the manifests rewritten and no job left
// running.
func TestJobThroughTheAPI(t *testing.T) {
	f := newFixture(t)
	second := f.second(t, f.up)
	reader := sdkmetric.NewManualReader()
	meter := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("test")
	dir := t.TempDir()
	a := startAdminAudited(context.Background(), t, second, dir, f, meter)

	v := a.start(map[string]any{"kind": "rewrap", "repositories": []string{repo}})
	if v.State != "queued" && v.State != "running" {
		t.Fatalf("a job just started is %q", v.State)
	}
	v = a.wait(v.ID)
	if v.State != "done" || v.Error != "" {
		t.Fatalf("the job ended %q: %s", v.State, v.Error)
	}
	r := v.Repositories[0]
	// The image (one copy under two tags), the index and its two children.
	if r.Repository != repo || r.State != "done" || r.Report == nil || r.Report.Rewritten != 4 || r.Done != r.Total || r.Total != r.Report.Manifests {
		t.Fatalf("the job's repository: %+v (report %+v), want 4 rewritten, every manifest done", r, r.Report)
	}
	if !strings.HasPrefix(v.Job, "rewrap ") || v.Actor != "token" {
		t.Errorf("job %q by %q: want proxy's job name and the actor token", v.Job, v.Actor)
	}
	f.checkAfter(t, f.first, second)

	for _, name := range []string{"admin-job.json", "rewrap.checkpoint"} {
		if _, err := os.Stat(filepath.Join(dir, name)); !os.IsNotExist(err) {
			t.Errorf("the finished job left %s: %v", name, err)
		}
	}
	var list struct {
		Jobs []jobView `json:"jobs"`
	}
	json.Unmarshal(a.call("GET", "/admin/v1/jobs", nil, http.StatusOK).body, &list)
	if len(list.Jobs) != 1 || list.Jobs[0].ID != v.ID || list.Jobs[0].State != "done" {
		t.Errorf("GET /admin/v1/jobs: %+v", list.Jobs)
	}

	a.stop() // the end's audit line is written once the job's goroutine is done
	var steps []string
	for _, e := range f.audit.adminEvents(t) {
		steps = append(steps, e.Step+":"+e.Outcome+":"+e.Actor)
		if e.JobID != v.ID || e.Job != "rewrap" {
			t.Errorf("admin event %+v: want job %s, rewrap", e, v.ID)
		}
	}
	if strings.Join(steps, " ") != "start:accepted:token end:done:shroud" {
		t.Errorf("admin audit events: %v, want the start by the token and the end", steps)
	}
	if n := strings.Count(f.audit.String(), `"kind":"job-step"`); n != r.Report.Manifests {
		t.Errorf("%d job-step audit lines for %d manifests", n, r.Report.Manifests)
	}
	if strings.Contains(f.audit.String(), token) {
		t.Error("the audit log holds the token")
	}
	got := metricValues(t, reader)
	// Every manifest written upstream counts, the blob pointers among them.
	if n, want := got["shroud.job.manifests{shroud.job.kind=rewrap,shroud.job.outcome=rewritten}"], r.Report.Rewritten+r.Report.Pointers; n != int64(want) || r.Report.Pointers == 0 {
		t.Errorf("shroud.job.manifests rewritten = %d, want %d, the manifests and blob pointers rewritten (%v)", n, want, got)
	}
	if n, want := got["shroud.job.manifests{shroud.job.kind=rewrap,shroud.job.outcome=left}"], r.Report.Manifests-r.Report.Rewritten-r.Report.Pointers; n != int64(want) {
		t.Errorf("shroud.job.manifests left = %d, want %d (%v)", n, want, got)
	}
	if n, ok := got["shroud.job.running{shroud.job.kind=rewrap}"]; !ok || n != 0 {
		t.Errorf("shroud.job.running = %d (recorded: %v), want 0 once the job is done", n, ok)
	}
}

// One job at a time: while one runs (held at its first manifest write
// upstream) a second start is 409 CONFLICT, audited as refused. A cancel
// stops the running one (200, cancelled), removes its spec file and
// keeps its checkpoint; a cancel of an ended job is 409, of an unknown
// one 404. The same spec started again resumes from the checkpoint and
// finishes.
func TestOneJobAtATimeAndCancel(t *testing.T) {
	f := newFixture(t)
	var held atomic.Bool
	held.Store(true)
	reached := make(chan struct{}, 1)
	gate := shroudtest.Behind(t, f.up, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if held.Load() && r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/manifests/") {
				select {
				case reached <- struct{}{}:
				default:
				}
				// Held until the job gives up on it (the server sees the
				// client go once the body is read).
				io.Copy(io.Discard, r.Body)
				<-r.Context().Done()
				return
			}
			next.ServeHTTP(w, r)
		})
	})
	second := f.second(t, gate)
	dir := t.TempDir()
	a := startAdminAudited(context.Background(), t, second, dir, f, nil)
	spec := map[string]any{"kind": "rewrap", "repositories": []string{repo}}
	first := a.start(spec)
	select {
	case <-reached:
	case <-time.After(30 * time.Second):
		t.Fatal("the job did not reach its first manifest write")
	}
	if _, err := os.Stat(filepath.Join(dir, "admin-job.json")); err != nil {
		t.Fatalf("the running job's spec is not on disk: %v", err)
	}
	ans := a.call("POST", "/admin/v1/jobs", spec, http.StatusConflict)
	if !strings.Contains(string(ans.body), `"CONFLICT"`) || !strings.Contains(string(ans.body), first.ID) {
		t.Errorf("the second start: %s, want CONFLICT naming the job running", ans.body)
	}
	if v := a.job(first.ID); v.State != "running" {
		t.Fatalf("the first job is %q while its write is held", v.State)
	}

	var v jobView
	json.Unmarshal(a.call("POST", "/admin/v1/jobs/"+first.ID+"/cancel", nil, http.StatusOK).body, &v)
	if v.State != "cancelled" || !strings.Contains(v.Error, "cancelled") {
		t.Fatalf("after the cancel: %q %q", v.State, v.Error)
	}
	if _, err := os.Stat(filepath.Join(dir, "admin-job.json")); !os.IsNotExist(err) {
		t.Errorf("the cancelled job's spec file stays: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "rewrap.checkpoint")); err != nil {
		t.Errorf("the cancelled job's checkpoint is gone: %v", err)
	}
	a.call("POST", "/admin/v1/jobs/"+first.ID+"/cancel", nil, http.StatusConflict)
	a.call("POST", "/admin/v1/jobs/0123456789abcdef/cancel", nil, http.StatusNotFound)

	held.Store(false)
	again := a.wait(a.start(spec).ID)
	if again.State != "done" || again.ResumedSteps == 0 {
		t.Fatalf("the job started again: %q %q, %d steps resumed; want done, from the checkpoint", again.State, again.Error, again.ResumedSteps)
	}
	f.checkAfter(t, second)

	a.stop()
	var got []string
	for _, e := range f.audit.adminEvents(t) {
		got = append(got, e.Step+":"+e.Outcome)
		if strings.Contains(e.Detail, token) || e.Actor != "token" && e.Actor != "shroud" {
			t.Errorf("admin event %+v", e)
		}
	}
	want := "start:accepted start:refused cancel:accepted end:cancelled cancel:refused cancel:refused start:accepted end:done"
	if strings.Join(got, " ") != want {
		t.Errorf("admin audit events:\n %s\nwant\n %s", strings.Join(got, " "), want)
	}
}

// A server killed mid-job (its Run's context cancelled as the job moves
// the index's tag, its children written) leaves the job's spec and checkpoint; a new
// server on the same directory resumes the job at its start, under the
// same id, and finishes it: nothing upstream opens with the key taken
// away, every tag pulls what was pushed, the spec file is gone.
func TestJobResumesAfterAKill(t *testing.T) {
	f := newFixture(t)
	var puts atomic.Int32
	ctx, kill := context.WithCancel(context.Background())
	defer kill()
	killer := shroudtest.Behind(t, f.up, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPut && strings.HasSuffix(r.URL.Path, "/manifests/multi") && puts.Add(1) == 1 {
				kill()
			}
			next.ServeHTTP(w, r)
		})
	})
	second := f.second(t, killer)
	dir := t.TempDir()
	a := startAdminAudited(ctx, t, second, dir, f, nil)
	id := a.start(map[string]any{"kind": "rewrap", "repositories": []string{repo}, "pace": "10ms"}).ID
	<-ctx.Done()
	a.stop() // Run returns once the job stopped
	if _, err := os.Stat(filepath.Join(dir, "admin-job.json")); err != nil {
		t.Fatalf("the killed server's job spec is gone: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "rewrap.checkpoint")); err != nil {
		t.Fatalf("the killed server's checkpoint is gone: %v", err)
	}

	b := startAdminAudited(context.Background(), t, second, dir, f, nil)
	v := b.wait(id)
	if v.State != "done" || !v.Restarted || v.ResumedSteps == 0 {
		t.Fatalf("the resumed job: %q %q, restarted %v, %d steps resumed", v.State, v.Error, v.Restarted, v.ResumedSteps)
	}
	if r := v.Repositories[0].Report; r == nil || r.Resumed == 0 {
		t.Errorf("the resumed run's report: %+v, want manifests done by the killed run", r)
	}
	f.checkAfter(t, f.first, second)
	if _, err := os.Stat(filepath.Join(dir, "admin-job.json")); !os.IsNotExist(err) {
		t.Errorf("the finished job's spec file stays: %v", err)
	}
	b.stop()
	var resumed bool
	for _, e := range f.audit.adminEvents(t) {
		resumed = resumed || e.Step == "resume" && e.JobID == id && e.Actor == "shroud"
	}
	if !resumed {
		t.Errorf("no audit line for the resume:\n%s", f.audit.String())
	}
}

// metricValues reads every int64 sum series as name{k=v,...}.
func metricValues(t *testing.T, r *sdkmetric.ManualReader) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, md := range sm.Metrics {
			if d, ok := md.Data.(metricdata.Sum[int64]); ok {
				for _, p := range d.DataPoints {
					var attrs []string
					for _, kv := range p.Attributes.ToSlice() {
						attrs = append(attrs, string(kv.Key)+"="+kv.Value.Emit())
					}
					out[md.Name+"{"+strings.Join(attrs, ",")+"}"] += p.Value
				}
			}
		}
	}
	return out
}

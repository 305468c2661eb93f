package admin

import (
	"context"
	"errors"
	"fmt"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/shroud-oci/shroud/jobs"
)

// metrics are the jobs' instruments; attributes stay few-valued (a kind,
// an outcome), never a repository or a digest.
type metrics struct {
	// manifests: upstream manifests a job handled, blob pointers among
	// them {shroud.job.kind, shroud.job.outcome = rewritten | left |
	// failed}; a repository whose run failed counts one failed.
	manifests metric.Int64Counter
	// running: jobs running {shroud.job.kind}.
	running metric.Int64UpDownCounter
}

// The outcomes of shroud.job.manifests.
const (
	outcomeRewritten = "rewritten"
	outcomeLeft      = "left"
	outcomeFailed    = "failed"
)

func newMetrics(m metric.Meter) (*metrics, error) {
	if m == nil {
		m = noop.NewMeterProvider().Meter("")
	}
	var mt metrics
	var errs [2]error
	mt.manifests, errs[0] = m.Int64Counter("shroud.job.manifests",
		metric.WithDescription("Manifests the key-rotation jobs handled: rewritten, left as they were, or failed."))
	mt.running, errs[1] = m.Int64UpDownCounter("shroud.job.running",
		metric.WithDescription("Key-rotation jobs running."))
	if err := errors.Join(errs[:]...); err != nil {
		return nil, fmt.Errorf("admin: metrics: %w", err)
	}
	return &mt, nil
}

func (m *metrics) manifest(ctx context.Context, kind jobs.Kind, outcome string) {
	m.manifests.Add(ctx, 1, metric.WithAttributes(attribute.String("shroud.job.kind", string(kind)), attribute.String("shroud.job.outcome", outcome)))
}

func (m *metrics) runningAdd(ctx context.Context, kind jobs.Kind, n int64) {
	m.running.Add(ctx, n, metric.WithAttributes(attribute.String("shroud.job.kind", string(kind))))
}

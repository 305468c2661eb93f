package trust

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// RegisterMetrics exports what an operator alerts on before the trust
// documents freeze shroud: when each document in force expires, and
// when a refresh last ran and last succeeded, all as Unix times read
// from Status at each collection. The only attribute is the document's
// name (root.json, timestamp.json, snapshot.json, targets.json and the
// delegated roles' documents: a set the trust repository's owners
// control, never a repository or key). Unregister the returned Registration to stop.
func (c *Checker) RegisterMetrics(m metric.Meter) (metric.Registration, error) {
	var errs [3]error
	var expiry, attempt, success metric.Float64ObservableGauge
	expiry, errs[0] = m.Float64ObservableGauge("shroud.trust.document.expiry", metric.WithUnit("s"),
		metric.WithDescription("When each trust document in force expires (Unix time): past it shroud is frozen for the repositories that document governs."))
	attempt, errs[1] = m.Float64ObservableGauge("shroud.trust.refresh.last_attempt", metric.WithUnit("s"),
		metric.WithDescription("When the trust documents were last refreshed, successfully or not (Unix time)."))
	success, errs[2] = m.Float64ObservableGauge("shroud.trust.refresh.last_success", metric.WithUnit("s"),
		metric.WithDescription("When a refresh of the trust documents last succeeded (Unix time; 0: never)."))
	if err := errors.Join(errs[:]...); err != nil {
		return nil, fmt.Errorf("trust: metrics: %w", err)
	}
	reg, err := m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		st := c.Status()
		for _, r := range st.Roles {
			o.ObserveFloat64(expiry, unixSeconds(r.Expires), metric.WithAttributes(attribute.String("shroud.trust.document", r.Name)))
		}
		o.ObserveFloat64(attempt, unixSeconds(st.LastRefresh))
		o.ObserveFloat64(success, unixSeconds(st.LastSuccess))
		return nil
	}, expiry, attempt, success)
	if err != nil {
		return nil, fmt.Errorf("trust: metrics: %w", err)
	}
	return reg, nil
}

// unixSeconds is t as Unix seconds, 0 for the zero time.
func unixSeconds(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixNano()) / 1e9
}

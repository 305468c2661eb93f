package trust

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// gauges collects reader's gauges: name -> document ("" without one) -> value.
func gauges(t *testing.T, reader *sdkmetric.ManualReader) map[string]map[string]float64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]float64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			g, ok := m.Data.(metricdata.Gauge[float64])
			if !ok {
				t.Fatalf("%s: %T, want a float gauge", m.Name, m.Data)
			}
			out[m.Name] = map[string]float64{}
			for _, p := range g.DataPoints {
				doc, _ := p.Attributes.Value("shroud.trust.document")
				out[m.Name][doc.AsString()] = p.Value
			}
		}
	}
	return out
}

// What an operator alerts on before shroud freezes: each document's
// expiry as the checker trusts it (a delegated role's too), and a refresh
// that keeps failing, seen as a last success that stops moving while the
// last attempt goes on.
func TestMetricsTellWhenTheDocumentsExpireAndWhetherRefreshesSucceed(t *testing.T) {
	tr := newTestRepo(t)
	teamA := newSigner(t)
	tr.delegate("team-a", teamA, "team-a/*")
	k := newRecipientKey(t)
	tr.allow("team-a", "team-a", k.entry("team-a/**"))
	roleExpires := t0.Add(90 * time.Minute)
	tr.repo.Bump("team-a", roleExpires)
	tr.sign("team-a")
	tr.publish(metadata.TARGETS)
	env := newChecker(t, tr, "")
	reader := sdkmetric.NewManualReader()
	reg, err := env.RegisterMetrics(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("test"))
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Unregister()

	if g := gauges(t, reader); g["shroud.trust.refresh.last_success"][""] != 0 || len(g["shroud.trust.document.expiry"]) != 0 {
		t.Fatalf("before any refresh: %v; want no documents and no success", g)
	}
	env.refreshed(t)
	g := gauges(t, reader)
	want := map[string]time.Time{
		"timestamp.json": tr.repo.Timestamp.Signed.Expires,
		"snapshot.json":  tr.repo.Snapshot.Signed.Expires,
		"targets.json":   tr.repo.Roles[metadata.TARGETS].Signed.Expires,
		"root.json":      tr.repo.Root.Signed.Expires,
		"team-a.json":    roleExpires,
	}
	for role, exp := range want {
		got, ok := g["shroud.trust.document.expiry"][role]
		if !ok || got != unixSeconds(exp) {
			t.Errorf("expiry of %s: %v (present %v); want %v (%s)", role, got, ok, unixSeconds(exp), exp)
		}
	}
	if got := g["shroud.trust.refresh.last_success"][""]; got != unixSeconds(t0) {
		t.Errorf("last success %v; want the refresh's time %v", got, unixSeconds(t0))
	}

	// The source stops answering: attempts go on, the success stays.
	later := t0.Add(10 * time.Minute)
	env.clock.Set(later)
	tr.writeFile(filepath.Join(metadataDir, "timestamp.json"), []byte("not json"))
	env.refreshFails(t, nil)
	g = gauges(t, reader)
	if got := g["shroud.trust.refresh.last_attempt"][""]; got != unixSeconds(later) {
		t.Errorf("last attempt %v; want %v", got, unixSeconds(later))
	}
	if got := g["shroud.trust.refresh.last_success"][""]; got != unixSeconds(t0) {
		t.Errorf("after a failed refresh, last success %v; want it still %v", got, unixSeconds(t0))
	}
	if got := g["shroud.trust.document.expiry"]["timestamp.json"]; got != unixSeconds(want["timestamp.json"]) {
		t.Errorf("after a failed refresh, the timestamp's expiry %v; want the trusted one's %v", got, unixSeconds(want["timestamp.json"]))
	}
}

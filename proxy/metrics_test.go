package proxy_test

import (
	"context"
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/shroudtest"
)

// meter is a metrics pipeline a test reads back.
type meter struct {
	reader *sdkmetric.ManualReader
	opt    shroudtest.Option
}

func newMeter() meter {
	r := sdkmetric.NewManualReader()
	return meter{reader: r, opt: shroudtest.WithMeter(sdkmetric.NewMeterProvider(sdkmetric.WithReader(r)).Meter("test"))}
}

// values reads every series: counters by `name{k=v,...}` (attributes
// sorted), histograms by their count of observations.
func (m meter) values(t *testing.T) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := m.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, md := range sm.Metrics {
			switch d := md.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					out[series(md.Name, p.Attributes.ToSlice())] += p.Value
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					out[series(md.Name, p.Attributes.ToSlice())] += int64(p.Count)
				}
			}
		}
	}
	return out
}

func series(name string, attrs []attribute.KeyValue) string {
	var parts []string
	for _, a := range attrs {
		parts = append(parts, string(a.Key)+"="+a.Value.Emit())
	}
	sort.Strings(parts)
	return name + "{" + strings.Join(parts, ",") + "}"
}

// The metrics say what happened, exactly: the plaintext bytes encrypted
// on push (every blob, config included) and decrypted on pull, the
// manifest stored under its rule, the pulls and the upstream fetches they
// took, a denied request, the upload sessions all closed again, and the
// requests by route.
func TestMetrics(t *testing.T) {
	m := newMeter()
	s := shroudtest.Start(t, shroudtest.Distribution(t), m.opt, shroudtest.WithPolicy(
		shroudtest.Rule{Pattern: "secret/**", Action: crypto.Deny},
		shroudtest.Rule{Pattern: "**", Action: crypto.Encrypt},
	))
	img := must[v1.Image](t)(random.Image(100_000, 2))
	if err := remote.Write(ref(t, s.Host(), "team/app:1"), img); err != nil {
		t.Fatal(err)
	}
	var pushed, pulled int64
	pushed = int64(len(must[[]byte](t)(img.RawConfigFile())))
	c := call{t, s.URL}
	for d, b := range layerBytes(t, img) {
		pushed += int64(len(b))
		if got := c.do("GET", "/v2/team/app/blobs/"+d.String(), nil); got.status != 200 || len(got.body) != len(b) {
			t.Fatalf("pull %s: %d", d, got.status)
		}
		pulled += int64(len(b))
	}
	c.do("GET", "/v2/secret/app/manifests/1", nil).want(t, 403, "DENIED")

	got := m.values(t)
	for k, want := range map[string]int64{
		"shroud.blob.bytes{shroud.direction=encrypt}":                       pushed,
		"shroud.blob.bytes{shroud.direction=decrypt}":                       pulled,
		`shroud.manifests.stored{shroud.rule=policy rule 1 (encrypt "**")}`: 1,
		"shroud.blob.pulls{}":                                               2,
		"shroud.blob.upstream_fetches{}":                                    2,
		"shroud.policy.denied{}":                                            1,
		"shroud.uploads.active{}":                                           0,
		"http.server.request.duration{http.request.method=GET,http.response.status_code=200,shroud.route=blobs}":     2,
		"http.server.request.duration{http.request.method=PUT,http.response.status_code=201,shroud.route=manifests}": 1,
	} {
		if got[k] != want {
			t.Errorf("%s = %d, want %d", k, got[k], want)
		}
	}
	if got["shroud.blob.integrity_failures{}"] != 0 {
		t.Errorf("integrity failures without tampering: %d", got["shroud.blob.integrity_failures{}"])
	}
	if t.Failed() {
		t.Logf("all series: %v", got)
	}
}

// A blob tampered with upstream counts as an integrity failure, the
// figure an operator alerts on.
func TestMetricsIntegrityFailure(t *testing.T) {
	m := newMeter()
	up := shroudtest.Distribution(t)
	s := shroudtest.Start(t, up, m.opt)
	img := must[v1.Image](t)(random.Image(200_000, 1))
	if err := remote.Write(ref(t, s.Host(), "tamper/app:1"), img); err != nil {
		t.Fatal(err)
	}
	tamper(t, up, "tamper/app:1")
	plainDigest := must[v1.Hash](t)(must[[]v1.Layer](t)(img.Layers())[0].Digest())
	resp, err := http.Get(s.URL + "/v2/tamper/app/blobs/" + plainDigest.String())
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if n := m.values(t)["shroud.blob.integrity_failures{}"]; n != 1 {
		t.Fatalf("integrity failures = %d, want 1", n)
	}
}

package proxy_test

import (
	"slices"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/shroud-oci/shroud/internal/shroudtest"
	"github.com/shroud-oci/shroud/proxy"
)

// A push, a pull and a rewrap job are traced: the pull's unwrap and
// decryption (its bytes), and the job's span with what it rewrote.
func TestPullAndJobAreTraced(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	up := shroudtest.Distribution(t)
	s := shroudtest.Start(t, up, shroudtest.WithTracerProvider(tp))
	img := must[v1.Image](t)(random.Image(30_000, 2))
	if err := remote.Write(ref(t, s.Host(), "team/app:1"), img); err != nil {
		t.Fatal(err)
	}
	got := must[v1.Image](t)(remote.Image(ref(t, s.Host(), "team/app:1")))
	atkReadLayers(got)
	if _, err := s.Handler.Rewrap(t.Context(), "team/app", proxy.RewrapOptions{}); err != nil {
		t.Fatal(err)
	}
	var names []string
	decrypted := int64(0)
	var job sdktrace.ReadOnlySpan
	for _, sp := range rec.Ended() {
		names = append(names, sp.Name())
		for _, a := range sp.Attributes() {
			if sp.Name() == "decrypt blob" && a.Key == "shroud.bytes" {
				decrypted += a.Value.AsInt64()
			}
		}
		if sp.Name() == "rewrap job" {
			job = sp
		}
	}
	for _, want := range []string{"GET blob", "unwrap layer key", "decrypt blob", "rewrap job", "wrap layer key"} {
		if !slices.Contains(names, want) {
			t.Errorf("no %q span; spans: %v", want, names)
		}
	}
	var size int64
	for _, l := range must[[]v1.Layer](t)(img.Layers()) {
		size += must[int64](t)(l.Size())
	}
	if decrypted != size {
		t.Errorf("the decrypt spans count %d bytes, the layers have %d", decrypted, size)
	}
	if job == nil {
		t.Fatal("no job span")
	}
	for _, a := range job.Attributes() {
		if a.Key == "shroud.rewritten" && a.Value.AsInt64() < 1 {
			t.Errorf("the job span says it rewrote %d manifests", a.Value.AsInt64())
		}
	}
}

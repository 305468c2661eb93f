package e2e

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// traceparentTransport sends every request of a client under one trace.
type traceparentTransport struct{ value string }

func (t traceparentTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("traceparent", t.value)
	return http.DefaultTransport.RoundTrip(r)
}

// One push, under the trace its client started (W3C traceparent), is one
// trace in the OTLP receiver: a server span per request of the push,
// the upstream calls as their child client spans (and the upstream got
// the trace context), the blob's encryption under the upload's request
// and the layer key's wrap under the manifest's. No span names a digest.
func TestOnePushIsOneTrace(t *testing.T) {
	bin := buildShroud(t)
	up := distributionV3(t)
	var mu sync.Mutex
	var spans []*tracepb.Span
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var req collectortrace.ExportTraceServiceRequest
		if r.URL.Path != "/v1/traces" || proto.Unmarshal(b, &req) != nil {
			http.Error(w, "not OTLP traces", http.StatusBadRequest)
			return
		}
		mu.Lock()
		for _, rs := range req.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				spans = append(spans, ss.Spans...)
			}
		}
		mu.Unlock()
		out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.Write(out)
	}))
	t.Cleanup(recv.Close)
	// The upstream, behind a proxy that records the trace context.
	upURL, _ := url.Parse(up.URL)
	var upstreamTraceparents []string
	front := httptest.NewServer(&httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		mu.Lock()
		upstreamTraceparents = append(upstreamTraceparents, pr.In.Header.Get("traceparent"))
		mu.Unlock()
		pr.SetURL(upURL)
		pr.Out.Host = pr.In.Host // the upstream's Locations name the front
	}})
	t.Cleanup(front.Close)

	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", recv.URL)
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
	addr, _, logs := startShroud(t, bin, "--upstream", front.URL, "--data-dir", t.TempDir(), "--trace")
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	ref, err := name.ParseReference(addr+"/traced/app:1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, _ := random.Image(20_000, 2)
	if err := remote.Write(ref, img, remote.WithTransport(traceparentTransport{"00-" + traceID + "-00f067aa0ba902b7-01"})); err != nil {
		t.Fatalf("push: %v\n%s", err, logs)
	}
	byID := map[string]*tracepb.Span{}
	var names []string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		mu.Lock()
		n := len(spans)
		mu.Unlock()
		if n > 0 && strings.Contains(logs.String(), "PUT") {
			time.Sleep(500 * time.Millisecond) // the last batch
			break
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, s := range spans {
		if got := httpHex(s.TraceId); got != traceID {
			t.Errorf("span %q is in trace %s, not the client's %s", s.Name, got, traceID)
		}
		byID[httpHex(s.SpanId)] = s
		names = append(names, s.Name)
		if strings.Contains(s.Name, "sha256") {
			t.Errorf("span name %q names a digest", s.Name)
		}
	}
	parentName := func(s *tracepb.Span) string {
		if p, ok := byID[httpHex(s.ParentSpanId)]; ok {
			return p.Name
		}
		return ""
	}
	want := []string{"PUT manifest", "PUT upload", "PATCH upload", "wrap layer key", "encrypt blob", "upstream PUT", "upstream HEAD", "upstream PATCH"}
	for _, span := range want {
		found := false
		for _, s := range spans {
			if s.Name == span {
				found = true
			}
		}
		if !found {
			t.Errorf("no %q span; the spans: %v", span, names)
		}
	}
	for _, s := range spans {
		switch s.Name {
		case "wrap layer key":
			if p := parentName(s); p != "PUT upload" && p != "PUT manifest" {
				t.Errorf("a layer key's wrap is under %q, want a request's span", p)
			}
		case "encrypt blob":
			if p := parentName(s); p != "PATCH upload" && p != "PUT upload" && p != "POST upload" {
				t.Errorf("a blob's encryption is under %q, want the upload request's span", p)
			}
		}
		if strings.HasPrefix(s.Name, "upstream ") && parentName(s) == "" {
			t.Errorf("upstream span %q has no parent in the trace", s.Name)
		}
	}
	sawContext := false
	for _, tp := range upstreamTraceparents {
		if strings.Contains(tp, traceID) {
			sawContext = true
		}
	}
	if !sawContext {
		t.Errorf("the upstream got no traceparent of the client's trace: %v", upstreamTraceparents)
	}
	t.Logf("%d spans: %v", len(spans), names)
}

func httpHex(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

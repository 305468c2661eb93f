package proxy

import (
	"context"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/shroud-oci/shroud/crypto"
)

// Traces (OpenTelemetry). Each request is a server span, named by its
// method and the kind of API call (never by a digest or tag, which would
// make as many names as requests), a child of the client's span when it
// sent a W3C traceparent. The upstream calls are child spans of it (the
// upstream transport's, otelhttp: cmd/shroud), which carry traceparent on
// to the upstream. A blob's encryption or decryption and each key wrap and
// unwrap are spans of their own, with what they did (bytes, scheme, key
// id), never key material, digests of plaintext, or repository contents.

// tracerName is the instrumentation scope of shroud's spans.
const tracerName = "github.com/shroud-oci/shroud/proxy"

func newTracer(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		tp = noop.NewTracerProvider()
	}
	return tp.Tracer(tracerName)
}

// spanNames name a request's span by its path.
var spanNames = []struct {
	re   *regexp.Regexp
	name string
}{
	{regexp.MustCompile(`^/v2/$`), "ping"},
	{regexp.MustCompile(`^/v2/_catalog$`), "catalog"},
	{regexp.MustCompile(`/tags/list$`), "tags"},
	{regexp.MustCompile(`/referrers/[^/]+$`), "referrers"},
	{regexp.MustCompile(`/manifests/[^/]+$`), "manifest"},
	{regexp.MustCompile(`/blobs/uploads/?[^/]*$`), "upload"},
	{regexp.MustCompile(`/blobs/[^/]+$`), "blob"},
}

func spanName(r *http.Request) string {
	for _, n := range spanNames {
		if n.re.MatchString(r.URL.Path) {
			return r.Method + " " + n.name
		}
	}
	return r.Method
}

// startRequestSpan starts the server span of r, under the client's
// trace context if it sent one.
func (h *Handler) startRequestSpan(r *http.Request) (*http.Request, trace.Span) {
	if r.URL.Path == livePath || r.URL.Path == readyPath {
		return r, trace.SpanFromContext(r.Context()) // probes: not traced
	}
	ctx := propagation.TraceContext{}.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	ctx, span := h.tracer.Start(ctx, spanName(r), trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("http.request.method", r.Method)))
	return r.WithContext(ctx), span
}

// endRequestSpan records the answer on the request's span and ends it.
func endRequestSpan(span trace.Span, status int, bytes int64) {
	span.SetAttributes(attribute.Int("http.response.status_code", status), attribute.Int64("http.response.body.size", bytes))
	if status >= 500 {
		span.SetStatus(codes.Error, http.StatusText(status))
	}
	span.End()
}

// keySpan traces one key wrap or unwrap: what did it (the schemes), for
// which repository, how long it took, whether it failed.
func (h *Handler) keySpan(ctx context.Context, op, repo string) (context.Context, func(err error, attrs ...attribute.KeyValue)) {
	ctx, span := h.tracer.Start(ctx, op, trace.WithAttributes(attribute.String("shroud.repository", repo)))
	return ctx, func(err error, attrs ...attribute.KeyValue) {
		span.SetAttributes(attrs...)
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, "failed")
		}
		span.End()
	}
}

// blobSpan traces a blob's encryption or decryption: its bytes and its
// duration.
func (h *Handler) blobSpan(ctx context.Context, op string) (context.Context, func(bytes int64, err error)) {
	start := time.Now()
	ctx, span := h.tracer.Start(ctx, op)
	return ctx, func(bytes int64, err error) {
		span.SetAttributes(attribute.Int64("shroud.bytes", bytes), attribute.Int64("shroud.duration_ms", time.Since(start).Milliseconds()))
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, "failed")
		}
		span.End()
	}
}

// schemesOf names the ocicrypt schemes a layer's annotations wrap for.
func schemesOf(ann map[string]string) []string {
	var out []string
	for k := range ann {
		if s, ok := strings.CutPrefix(k, crypto.AnnotationKeys); ok {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}

// jobSpan traces a job's work on one repository, and what it did.
func (h *Handler) jobSpan(ctx context.Context, kind, repo string) (context.Context, func(JobReport, error)) {
	ctx, span := h.tracer.Start(ctx, kind, trace.WithAttributes(attribute.String("shroud.repository", repo)))
	return ctx, func(rep JobReport, err error) {
		span.SetAttributes(attribute.Int("shroud.manifests", rep.Manifests), attribute.Int("shroud.rewritten", rep.Rewritten),
			attribute.Int("shroud.foreign", rep.Foreign))
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, "failed")
		}
		span.End()
	}
}

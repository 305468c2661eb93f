package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/shroud-oci/shroud/config"
)

// tracing starts the OpenTelemetry trace pipeline the config asks for:
// spans batched to an OTLP/HTTP exporter, which reads where to send them
// from OTEL_EXPORTER_OTLP_ENDPOINT (or _TRACES_ENDPOINT) and its headers
// and TLS from the other OTEL_EXPORTER_OTLP_* variables. nil when tracing
// is off; shutdown flushes what is left.
func tracing(ctx context.Context, cfg config.Config, log *slog.Logger) (tp trace.TracerProvider, shutdown func(context.Context) error, err error) {
	none := func(context.Context) error { return nil }
	if !cfg.Tracing.Enabled {
		return nil, none, nil
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, none, fmt.Errorf("tracing: %w", err)
	}
	res, err := resource.Merge(resource.Environment(), resource.NewSchemaless(attribute.String("service.name", "shroud")))
	if err != nil {
		res = resource.NewSchemaless(attribute.String("service.name", "shroud"))
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithBatcher(exp), sdktrace.WithResource(res)}
	if r := cfg.Tracing.SampleRatio; r > 0 {
		opts = append(opts, sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(r))))
	}
	p := sdktrace.NewTracerProvider(opts...)
	log.Info("exporting traces over OTLP/HTTP", "sample_ratio", cfg.Tracing.SampleRatio)
	return p, p.Shutdown, nil
}

// tracedTransport makes each upstream call a client span of the request
// it serves, and carries the W3C trace context on to the upstream.
func tracedTransport(tr http.RoundTripper, tp trace.TracerProvider) http.RoundTripper {
	if tp == nil {
		return tr
	}
	return otelhttp.NewTransport(tr, otelhttp.WithTracerProvider(tp), otelhttp.WithPropagators(propagation.TraceContext{}),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return "upstream " + r.Method }))
}

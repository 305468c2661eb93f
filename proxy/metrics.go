package proxy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// metrics are the instruments shroud records with the Meter it is given
// (OpenTelemetry; cmd/shroud exports them for Prometheus). Names follow
// OpenTelemetry's conventions; attributes stay few-valued (no repository
// or digest), so that series do not grow with the registry.
type metrics struct {
	// requests: http.server.request.duration {http.request.method,
	// http.response.status_code, shroud.route}
	requests metric.Float64Histogram
	// blobBytes: plaintext bytes through the layer streams,
	// {shroud.direction = encrypt | decrypt}.
	blobBytes metric.Int64Counter
	// integrityFailures: pulls aborted because ciphertext failed its
	// HMAC or the plaintext its digest: tampering or corruption upstream.
	integrityFailures metric.Int64Counter
	// blobPulls and upstreamFetches: full-blob pulls shroud decrypted, and
	// the upstream GETs they took (fewer when concurrent pulls share one).
	blobPulls       metric.Int64Counter
	upstreamFetches metric.Int64Counter
	// manifests: manifests stored upstream {shroud.rule}.
	manifests metric.Int64Counter
	// denied: requests a policy rule (or no rule) refused.
	denied metric.Int64Counter
	// cacheLookups: mapping cache lookups {shroud.table = blob | manifest,
	// shroud.result = hit | miss}.
	cacheLookups metric.Int64Counter
	// uploads: upload requests in flight (a session's state lives in its
	// Location, so no replica holds the sessions themselves).
	uploads metric.Int64UpDownCounter
	// sharedErrors: calls to the shared tier (Redis/Valkey) that failed
	// {shroud.op}; shroud answered from its own memory and the upstream.
	sharedErrors metric.Int64Counter
	// keysRefused: keys not wrapped for or not unwrapped with
	// {shroud.op = wrap | unwrap, shroud.reason = expired |
	// not-yet-valid | revoked | not-allowed | frozen | other}.
	keysRefused metric.Int64Counter
}

func newMetrics(m metric.Meter) (*metrics, error) {
	if m == nil {
		m = noop.NewMeterProvider().Meter("")
	}
	var mt metrics
	var errs [11]error
	mt.requests, errs[0] = m.Float64Histogram("http.server.request.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of the requests shroud served."),
		metric.WithExplicitBucketBoundaries(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
	mt.blobBytes, errs[1] = m.Int64Counter("shroud.blob.bytes", metric.WithUnit("By"),
		metric.WithDescription("Plaintext bytes encrypted on push and decrypted on pull."))
	mt.integrityFailures, errs[2] = m.Int64Counter("shroud.blob.integrity_failures",
		metric.WithDescription("Pulls aborted because a blob failed its HMAC or digest check."))
	mt.blobPulls, errs[3] = m.Int64Counter("shroud.blob.pulls",
		metric.WithDescription("Whole-blob pulls decrypted."))
	mt.upstreamFetches, errs[4] = m.Int64Counter("shroud.blob.upstream_fetches",
		metric.WithDescription("Upstream GETs of ciphertext for whole-blob pulls; concurrent pulls share one."))
	mt.manifests, errs[5] = m.Int64Counter("shroud.manifests.stored",
		metric.WithDescription("Manifests stored upstream, by policy rule."))
	mt.denied, errs[6] = m.Int64Counter("shroud.policy.denied",
		metric.WithDescription("Requests refused by the policy."))
	mt.cacheLookups, errs[7] = m.Int64Counter("shroud.cache.lookups",
		metric.WithDescription("Mapping cache lookups."))
	mt.uploads, errs[8] = m.Int64UpDownCounter("shroud.uploads.active",
		metric.WithDescription("Upload requests in flight."))
	mt.sharedErrors, errs[9] = m.Int64Counter("shroud.cache.shared_errors",
		metric.WithDescription("Shared tier (Redis/Valkey) calls that failed; shroud served from its own memory and the upstream."))
	mt.keysRefused, errs[10] = m.Int64Counter("shroud.keys.refused",
		metric.WithDescription("Keys a push did not wrap layer keys for, or a pull did not unwrap with: expired, not yet valid, or refused by the trust documents."))
	if err := errors.Join(errs[:]...); err != nil {
		return nil, fmt.Errorf("proxy: metrics: %w", err)
	}
	return &mt, nil
}

var (
	encryptDirection = metric.WithAttributeSet(attribute.NewSet(attribute.String("shroud.direction", "encrypt")))
	decryptDirection = metric.WithAttributeSet(attribute.NewSet(attribute.String("shroud.direction", "decrypt")))
)

func (m *metrics) cacheLookup(ctx context.Context, table string, hit bool) {
	result := "miss"
	if hit {
		result = "hit"
	}
	m.cacheLookups.Add(ctx, 1, metric.WithAttributes(attribute.String("shroud.table", table), attribute.String("shroud.result", result)))
}

func (m *metrics) request(ctx context.Context, r *http.Request, status int, d time.Duration) {
	m.requests.Record(ctx, d.Seconds(), metric.WithAttributes(
		attribute.String("http.request.method", r.Method),
		attribute.Int("http.response.status_code", status),
		attribute.String("shroud.route", route(r.URL.Path)),
	))
}

// route names the kind of endpoint a path is, for the request metrics.
func route(path string) string {
	switch {
	case path == livePath || path == readyPath:
		return "probe"
	case path == "/v2/" || path == "/v2":
		return "ping"
	case path == "/v2/_catalog":
		return "catalog"
	case strings.Contains(path, "/blobs/uploads/"):
		return "uploads"
	}
	for _, r := range []string{"manifests", "blobs", "tags", "referrers"} {
		if strings.Contains(path, "/"+r+"/") {
			return r
		}
	}
	return "other"
}

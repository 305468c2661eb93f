package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/shroud-oci/shroud/cache"
	"github.com/shroud-oci/shroud/config"
	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/proxy"
)

// sharedTier is the Redis/Valkey tier every replica keeps its mappings
// and upload ledger in, and what the handler reports its failures to.
type sharedTier struct {
	client redis.UniversalClient
	names  *crypto.KeyedHash
	box    *crypto.Box
	cfg    config.Shared
	// failed is where Tiered reports a failing call; the handler it
	// counts in is built after the caches.
	failed func(ctx context.Context, op string, err error)
}

// newSharedTier connects to cfg's servers (lazily: a server down at start
// makes shroud start degraded, not fail) with keys derived from id.
func newSharedTier(cfg config.Shared, id *crypto.Identity, log *slog.Logger) (*sharedTier, error) {
	// go-redis logs (a dial failing, a pool event) through a logger of
	// its package; they go to shroud's log at debug level, the failures
	// themselves being counted and shown on /readyz.
	redis.SetLogger(redisLog{log})
	opts := &redis.UniversalOptions{Addrs: cfg.Addrs, MasterName: cfg.MasterName, Username: cfg.Username, DB: cfg.DB,
		// A call's deadline ends it and frees its connection (without it
		// go-redis waits out its own 3 s read timeout).
		ContextTimeoutEnabled: true}
	if cfg.PasswordFile != "" {
		b, err := os.ReadFile(cfg.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("shared: password file: %w", err)
		}
		opts.Password = strings.TrimRight(string(b), "\r\n")
	}
	if cfg.TLS {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if cfg.CA != "" {
			pem, err := os.ReadFile(cfg.CA)
			if err != nil {
				return nil, fmt.Errorf("shared: ca: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, errors.New("shared: ca: no PEM certificate in the file")
			}
			tc.RootCAs = pool
		}
		opts.TLSConfig = tc
	}
	kk, err := id.DeriveKey(crypto.PurposeSharedKey)
	if err != nil {
		return nil, err
	}
	vk, err := id.DeriveKey(crypto.PurposeSharedValue)
	if err != nil {
		return nil, err
	}
	names, err := crypto.NewKeyedHash(kk)
	if err != nil {
		return nil, err
	}
	box, err := crypto.NewBox(vk)
	if err != nil {
		return nil, err
	}
	return &sharedTier{client: redis.NewUniversalClient(opts), names: names, box: box, cfg: cfg,
		failed: func(context.Context, string, error) {}}, nil
}

// store puts the shared tier behind b's cache. Each upstream has entries
// of its own (the same repository name on two mirrored origins is two
// repositories): its prefix carries a keyed hash of the upstream's name.
func (s *sharedTier) store(name string, b *proxy.Backend, log *slog.Logger) (*cache.Shared, *cache.Tiered, error) {
	sh, err := s.shared(name, log)
	if err != nil {
		return nil, nil, err
	}
	front, ok := b.Cache.(*cache.LRU)
	if !ok {
		return nil, nil, fmt.Errorf("shared: the in-process cache is a %T", b.Cache)
	}
	t, err := cache.NewTiered(front, sh, cache.TieredOptions{OnError: func(op string, err error) {
		s.failed(context.Background(), op, err)
	}})
	if err != nil {
		return nil, nil, err
	}
	b.Cache = t
	return sh, t, nil
}

// shared is the tier's entries of the upstream name.
func (s *sharedTier) shared(name string, log *slog.Logger) (*cache.Shared, error) {
	prefix := s.cfg.Prefix
	if prefix == "" {
		prefix = cache.DefaultPrefix
	}
	prefix += s.names.Sum("upstream", name)[:12] + ":"
	return cache.NewShared(s.client, s.names, s.box, cache.SharedOptions{Prefix: prefix, TTL: s.cfg.TTL, OpTimeout: s.cfg.Timeout,
		OnForeign: func(op string) {
			log.Warn("shared tier: an entry under one of shroud's keys did not open (damaged, moved, or written without the key); answered as a miss", "op", op)
		}})
}

func (s *sharedTier) Close() error { return s.client.Close() }

// redisLog routes go-redis' own log lines to shroud's.
type redisLog struct{ log *slog.Logger }

func (l redisLog) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, "redis: "+fmt.Sprintf(format, v...))
}

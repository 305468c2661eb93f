package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/shroud-oci/shroud/audit"
	"github.com/shroud-oci/shroud/config"
	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/proxy"
	"github.com/shroud-oci/shroud/proxy/upstream"
	"github.com/shroud-oci/shroud/trust"
)

// defaultTrustRefresh is how often the trust documents are fetched when
// the config does not say.
const defaultTrustRefresh = 5 * time.Minute

// maxTrustFile bounds what the OCI source reads of one upstream answer
// (the trust package bounds each document more tightly).
const maxTrustFile = 32 << 20

var (
	_ proxy.KeyChecker = (*trust.Checker)(nil)
	_ proxy.KeyRefusal = (*trust.Refusal)(nil)
)

// trustChecker builds the checker of the trust documents cfg names (nil
// when it names none), refreshes it once and keeps refreshing it until
// ctx ends. A first refresh that fails is not fatal: the documents
// persisted in the data dir by the last run decide until they expire,
// and with none every wrap and unwrap is refused (shroud fails closed)
// until a refresh succeeds. floor is the shared tier's rollback floor
// (nil without one).
func trustChecker(ctx context.Context, cfg config.Config, up *upstream.Client, pol *crypto.Policy, keys *crypto.Keyring, floor trust.SharedFloor, auditLog *audit.Logger, log *slog.Logger) (*trust.Checker, error) {
	if cfg.Trust.Source == "" {
		return nil, nil
	}
	root, err := os.ReadFile(cfg.Trust.Root)
	if err != nil {
		return nil, fmt.Errorf("trust root: %w", err)
	}
	src, err := trustSource(cfg.Trust.Source, up)
	if err != nil {
		return nil, err
	}
	rules := policyRules(cfg)
	// The floors replicas of the previous identities raised (identity
	// rotation): sealed under their keys, read with them.
	var previous []trust.SharedFloor
	if floor != nil {
		for _, p := range keys.Previous() {
			tier, err := newSharedTier(cfg.Shared, p, log)
			if err != nil {
				return nil, err
			}
			context.AfterFunc(ctx, func() { tier.Close() })
			sh, err := tier.shared("", log)
			if err != nil {
				return nil, err
			}
			previous = append(previous, sh)
		}
	}
	c, err := trust.New(trust.Options{Source: src, Root: root, DataDir: cfg.DataDir, Logger: log, SharedFloor: floor, PreviousFloors: previous,
		Grace: func(repo string) time.Duration {
			if r := pol.Match(repo); r != nil && r.Index < len(rules) {
				return rules[r.Index].TrustGrace
			}
			return 0
		},
		OnEvent: func(e trust.Event) {
			parts := append(append([]string{fmt.Sprintf("versions %v", e.Versions)}, e.Refusals...), e.Warnings...)
			if e.Error != "" {
				parts = append(parts, e.Error)
			}
			if err := auditLog.Log(audit.Event{Kind: trustKind(e.Kind), Outcome: e.Outcome, Document: e.Source, Version: e.Versions["timestamp"], Detail: strings.Join(parts, "; ")}); err != nil {
				log.Warn("audit log", "err", err)
			}
		}})
	if err != nil {
		return nil, err
	}
	if err := c.Refresh(ctx); err != nil {
		log.Error("trust documents: the first refresh failed; the last trusted ones decide until they expire (none: every wrap and unwrap is refused)", "source", src.Name, "err", err)
	}
	// shroud's identity is a key like the others: a trust source that does
	// not allow it refuses every push.
	if err := c.Check(ctx, trust.OpWrap, "any/repository", keys.Identity().KeyID(), time.Now()); err != nil {
		log.Warn("the trust documents do not allow shroud's identity: pushes are refused until they do (shroud trust add-key --public-key <identity.pub.pem> --scope '**')", "identity_key_id", keys.Identity().KeyID(), "err", err)
	}
	interval := cfg.Trust.Refresh
	if interval == 0 {
		interval = defaultTrustRefresh
	}
	go func() {
		if err := c.Run(ctx, interval); err != nil && ctx.Err() == nil {
			log.Error("trust refreshes stopped", "err", err)
		}
	}()
	return c, nil
}

// trustSource reads a trust.source setting: oci:<repository>[:<tag>] in
// the default upstream, an https:// URL, or a directory.
func trustSource(s string, up *upstream.Client) (trust.Source, error) {
	switch {
	case strings.HasPrefix(s, "oci:"):
		repo, tag := strings.TrimPrefix(s, "oci:"), "trust"
		if i := strings.LastIndex(repo, ":"); i > 0 {
			repo, tag = repo[:i], repo[i+1:]
		}
		return trust.OCISource(repo, tag, func(ctx context.Context, name string) ([]byte, error) {
			h := http.Header{"Accept": {"application/vnd.oci.image.manifest.v1+json"}}
			resp, err := up.Do(ctx, http.MethodGet, "/v2/"+name, nil, h)
			if err != nil {
				return nil, err
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return nil, &upstream.StatusError{Method: http.MethodGet, Path: "/v2/" + name, StatusCode: resp.StatusCode}
			}
			b, err := io.ReadAll(io.LimitReader(resp.Body, maxTrustFile+1))
			if err != nil {
				return nil, err
			}
			if len(b) > maxTrustFile {
				return nil, fmt.Errorf("trust source: %s is larger than %d bytes", name, maxTrustFile)
			}
			return b, nil
		}), nil
	case strings.HasPrefix(s, "https://"):
		return trust.HTTPSource(s, &http.Client{Timeout: time.Minute})
	default:
		return trust.DirSource(s)
	}
}

// trustKind is the audit kind of a trust event (a refresh, a freeze).
func trustKind(k string) audit.Kind {
	if k == "" {
		return audit.TrustRefresh
	}
	return audit.Kind(k)
}

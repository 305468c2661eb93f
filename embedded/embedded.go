// Package embedded runs a distribution v3 registry in-process, on a
// loopback port of its own: shroud's default upstream when none is
// configured, and the upstream of the tests.
package embedded

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem" // the storage driver, registered by name
	"github.com/sirupsen/logrus"
)

// Registry is a running embedded registry.
type Registry struct {
	// URL is the registry's base URL, http://127.0.0.1:<port>.
	URL string
	// Dir is the storage root.
	Dir string

	app *handlers.App
	srv *http.Server
}

// Start runs a registry storing under dir on 127.0.0.1 (a free port) with
// deletes enabled. It serves until Close.
func Start(ctx context.Context, dir string) (*Registry, error) {
	// Parsed from YAML, so that every default distribution fills in when
	// it reads its own config file (catalog page size, ...) is set.
	yml := fmt.Sprintf(`version: 0.1
storage:
  filesystem:
    rootdirectory: %q
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  secret: %q
`, dir, "embedded-"+dir) // one instance: the secret only needs to be stable
	cfg, err := configuration.Parse(strings.NewReader(yml))
	if err != nil {
		return nil, fmt.Errorf("embedded registry config: %w", err)
	}
	// distribution logs every request, and every 404 as an error, through
	// logrus's standard logger, which it offers no per-instance way to
	// set. shroud logs what matters of the upstream's answers itself.
	logrus.SetLevel(logrus.FatalLevel)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("embedded registry: %w", err)
	}
	var app *handlers.App
	if err := func() (err error) {
		defer func() {
			if p := recover(); p != nil { // NewApp panics on a bad storage config
				err = fmt.Errorf("embedded registry: %v", p)
			}
		}()
		app = handlers.NewApp(ctx, cfg)
		return nil
	}(); err != nil {
		ln.Close()
		return nil, err
	}
	srv := &http.Server{Handler: app, ReadHeaderTimeout: 30 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logrus.WithError(err).Error("embedded registry stopped")
		}
	}()
	return &Registry{URL: "http://" + ln.Addr().String(), Dir: dir, app: app, srv: srv}, nil
}

// Close stops the registry.
func (r *Registry) Close(ctx context.Context) error {
	err := r.srv.Shutdown(ctx)
	return errors.Join(err, r.app.Shutdown())
}

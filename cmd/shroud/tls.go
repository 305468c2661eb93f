package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// certReloader serves a certificate from files that may be replaced while
// shroud runs (cert-manager rotating a Kubernetes secret): at a handshake
// it reads the files again when either changed since they were loaded. A
// replacement that does not load is logged and the loaded one kept.
type certReloader struct {
	certFile, keyFile string
	log               *slog.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	certMod time.Time
	keyMod  time.Time
}

func newCertReloader(certFile, keyFile string, log *slog.Logger) (*certReloader, error) {
	c := &certReloader{certFile: certFile, keyFile: keyFile, log: log}
	if err := c.load(); err != nil {
		return nil, err
	}
	return c, nil
}

// load reads the pair. The caller holds mu, or c is not shared yet.
func (c *certReloader) load() error {
	certMod, keyMod, err := c.modTimes()
	if err != nil {
		return err
	}
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("tls-cert %s / tls-key %s: %w", c.certFile, c.keyFile, err)
	}
	c.cert, c.certMod, c.keyMod = &cert, certMod, keyMod
	return nil
}

func (c *certReloader) modTimes() (certMod, keyMod time.Time, err error) {
	cs, err := os.Stat(c.certFile)
	if err != nil {
		return certMod, keyMod, fmt.Errorf("tls-cert: %w", err)
	}
	ks, err := os.Stat(c.keyFile)
	if err != nil {
		return certMod, keyMod, fmt.Errorf("tls-key: %w", err)
	}
	return cs.ModTime(), ks.ModTime(), nil
}

// GetCertificate is tls.Config.GetCertificate.
func (c *certReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	certMod, keyMod, err := c.modTimes()
	if err == nil && (!certMod.Equal(c.certMod) || !keyMod.Equal(c.keyMod)) {
		if err = c.load(); err == nil {
			c.log.Info("reloaded the TLS certificate", "tls_cert", c.certFile)
		}
	}
	if err != nil {
		c.log.Warn("the TLS certificate files changed but cannot be loaded; serving the loaded certificate", "err", err)
	}
	return c.cert, nil
}

// serverTLS is the listener's TLS configuration, nil for plain HTTP.
// With clientCAs, a client may present a certificate, which must verify
// against them (a handshake with one that does not fails); one without a
// certificate is anonymous to the TLS layer and authenticates otherwise.
func serverTLS(certFile, keyFile string, clientCAs *x509.CertPool, log *slog.Logger) (*tls.Config, error) {
	if certFile == "" {
		return nil, nil
	}
	r, err := newCertReloader(certFile, keyFile, log)
	if err != nil {
		return nil, err
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.GetCertificate}
	if clientCAs != nil {
		c.ClientCAs, c.ClientAuth = clientCAs, tls.VerifyClientCertIfGiven
	}
	return c, nil
}

// upstreamRoots are the system's roots plus the CAs of file, or nil (the
// system's roots alone) when file is empty.
func upstreamRoots(file string) (*x509.CertPool, error) {
	if file == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("upstream-ca: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("upstream-ca " + file + ": no PEM certificate in it")
	}
	return pool, nil
}

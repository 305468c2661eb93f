package keyprovider

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// callerID is who asks, for the log, the audit and the bounds per
// client.
type callerID struct {
	// name is the verified client certificate's subject, or the peer
	// address when there is none.
	name string
	// cert is the SHA-256 fingerprint of the verified client
	// certificate ("sha256:<hex>" of its DER), "" without one.
	cert string
	// key names the client the bounds count against: the certificate's
	// fingerprint, else the peer's IP address (its port changes with
	// every connection).
	key string
}

// caller names who asks; with RequireClientCert, a caller without a
// verified client certificate is an error.
func (s *Server) caller(ctx context.Context) (callerID, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		if s.o.RequireClientCert {
			return callerID{}, errUnauthenticated
		}
		return callerID{}, nil
	}
	var c callerID
	if p.Addr != nil {
		c.name = p.Addr.String()
		c.key = c.name
		if host, _, err := net.SplitHostPort(c.name); err == nil {
			c.key = host
		}
	}
	if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 && len(ti.State.VerifiedChains[0]) > 0 {
		leaf := ti.State.VerifiedChains[0][0]
		sum := sha256.Sum256(leaf.Raw)
		c.cert = "sha256:" + hex.EncodeToString(sum[:])
		c.name, c.key = leaf.Subject.String(), c.cert
		return c, nil
	}
	if s.o.RequireClientCert {
		return c, errUnauthenticated
	}
	return c, nil
}

package keyprovider

import (
	"context"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// caller names who asks (the client certificate's subject, or the peer
// address) for the log and the audit; with RequireClientCert, a caller
// without a verified client certificate is an error.
func (s *Server) caller(ctx context.Context) (string, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		if s.o.RequireClientCert {
			return "", errUnauthenticated
		}
		return "", nil
	}
	name := ""
	if p.Addr != nil {
		name = p.Addr.String()
	}
	if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 && len(ti.State.VerifiedChains[0]) > 0 {
		return ti.State.VerifiedChains[0][0].Subject.String(), nil
	}
	if s.o.RequireClientCert {
		return name, errUnauthenticated
	}
	return name, nil
}

package keyprovider

import (
	"crypto/tls"
	"time"

	pb "github.com/containers/ocicrypt/utils/keyprovider"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
)

// GRPCServer is a gRPC server serving s: over TLS when tlsCfg is not nil
// (ask for client certificates in it for RequireClientCert), with
// messages bounded by MaxRequest, few concurrent streams per connection
// and connections that must finish their handshake quickly.
func GRPCServer(s *Server, tlsCfg *tls.Config) *grpc.Server {
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxRequest),
		grpc.MaxSendMsgSize(MaxRequest),
		grpc.MaxConcurrentStreams(16),
		grpc.ConnectionTimeout(10 * time.Second),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: 5 * time.Minute}),
	}
	if tlsCfg != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(tlsCfg)))
	}
	g := grpc.NewServer(opts...)
	pb.RegisterKeyProviderServiceServer(g, s)
	return g
}

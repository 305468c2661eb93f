// Command testprovider is the tests' key provider as a command: one
// ocicrypt key-provider protocol request on stdin, the answer on stdout.
// With --grpc ADDR (and --tls-cert/--tls-key) it serves the gRPC service
// instead, until killed.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net"
	"os"

	pb "github.com/containers/ocicrypt/utils/keyprovider"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/shroud-oci/shroud/internal/keyprovidertest"
)

func main() {
	addr := flag.String("grpc", "", "serve gRPC on this address")
	cert := flag.String("tls-cert", "", "TLS certificate (gRPC)")
	key := flag.String("tls-key", "", "TLS key (gRPC)")
	flag.Parse()
	if *addr == "" {
		in, err := io.ReadAll(os.Stdin)
		if err == nil {
			var out []byte
			if out, err = keyprovidertest.Handle(in); err == nil {
				os.Stdout.Write(out)
				return
			}
		}
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var opts []grpc.ServerOption
	if *cert != "" {
		c, err := tls.LoadX509KeyPair(*cert, *key)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{c}})))
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	s := grpc.NewServer(opts...)
	pb.RegisterKeyProviderServiceServer(s, keyprovidertest.Server{})
	if err := s.Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

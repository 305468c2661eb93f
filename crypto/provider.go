package crypto

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"time"

	"github.com/containers/ocicrypt/config"
	keyproviderconfig "github.com/containers/ocicrypt/config/keyprovider-config"
	"github.com/containers/ocicrypt/keywrap"
	"github.com/containers/ocicrypt/keywrap/keyprovider"
	pb "github.com/containers/ocicrypt/utils/keyprovider"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// DefaultProviderTimeout bounds one call to a key provider (a command's
// run, a gRPC call) unless WithProviderTimeout says otherwise.
const DefaultProviderTimeout = 10 * time.Second

// maxProviderResponse bounds what a key provider's answer may be: the
// protocol's JSON around a wrapped key or the private options.
const maxProviderResponse = 1 << 20

// WithProviderTimeout sets how long one call to a key provider may take
// (DefaultProviderTimeout if d is not positive). A command still running
// then is killed; a gRPC call is cancelled.
func WithProviderTimeout(d time.Duration) KeyringOption {
	return func(o *keyringOptions) { o.providerTimeout = d }
}

// providerWrapper speaks ocicrypt's key-provider protocol (its protocol
// types and generated gRPC client), as ocicrypt's keyprovider wrapper
// does, but bounded: every call has a deadline, a command is killed when
// it passes it, a gRPC provider is reached over one connection kept for
// the keyring's life (ocicrypt dials one per call), and answers are read
// up to maxProviderResponse. It implements keywrap.KeyWrapper.
type providerWrapper struct {
	name    string
	cmd     *keyproviderconfig.Command
	conn    *grpc.ClientConn
	client  pb.KeyProviderServiceClient
	timeout time.Duration
}

func newProviderWrapper(name string, a keyproviderconfig.KeyProviderAttrs, timeout time.Duration) (*providerWrapper, error) {
	if timeout <= 0 {
		timeout = DefaultProviderTimeout
	}
	p := &providerWrapper{name: name, timeout: timeout}
	switch {
	case a.Command != nil:
		p.cmd = a.Command
	case a.Grpc != "":
		creds, err := providerCredentials(a.GrpcTLS)
		if err != nil {
			return nil, fmt.Errorf("key provider %q: %w", name, err)
		}
		// The connection is made on the first call, and made again
		// should it break.
		conn, err := grpc.NewClient(a.Grpc, grpc.WithTransportCredentials(creds),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxProviderResponse)))
		if err != nil {
			return nil, fmt.Errorf("key provider %q: gRPC %s: %w", name, a.Grpc, err)
		}
		p.conn, p.client = conn, pb.NewKeyProviderServiceClient(conn)
	default:
		return nil, fmt.Errorf("key provider %q: neither cmd nor grpc is set", name)
	}
	return p, nil
}

// providerCredentials are the TLS options ocicrypt's keyprovider wrapper
// gives a gRPC provider: the root CAs of RootCAFile (or the system's), a
// client certificate where both its files are set, the server name, and
// InsecureSkipVerify; no TLS without GrpcTLS.
func providerCredentials(t *keyproviderconfig.GrpcTLS) (credentials.TransportCredentials, error) {
	if t == nil {
		return insecure.NewCredentials(), nil
	}
	var roots *x509.CertPool
	if t.RootCAFile != "" {
		b, err := os.ReadFile(t.RootCAFile)
		if err != nil {
			return nil, fmt.Errorf("root CA certificates: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("no certificate in %s", t.RootCAFile)
		}
	} else {
		var err error
		if roots, err = x509.SystemCertPool(); err != nil {
			return nil, fmt.Errorf("system certificates: %w", err)
		}
	}
	var certs []tls.Certificate
	if t.CertFile != "" && t.KeyFile != "" {
		c, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		certs = []tls.Certificate{c}
	}
	return credentials.NewTLS(&tls.Config{
		RootCAs:            roots,
		ServerName:         t.ServerName,
		InsecureSkipVerify: t.InsecureSkipVerify,
		Certificates:       certs,
	}), nil
}

// GetAnnotationID implements keywrap.KeyWrapper.
func (p *providerWrapper) GetAnnotationID() string { return AnnotationKeys + "provider." + p.name }

// WrapKeys asks the provider to wrap optsData, if ec names it.
func (p *providerWrapper) WrapKeys(ec *config.EncryptConfig, optsData []byte) ([]byte, error) {
	if _, ok := ec.Parameters[p.name]; !ok {
		return nil, nil
	}
	out, err := p.call(keyprovider.OpKeyWrap, keyprovider.KeyProviderKeyWrapProtocolInput{
		Operation:     keyprovider.OpKeyWrap,
		KeyWrapParams: keyprovider.KeyWrapParams{Ec: ec, OptsData: optsData},
	})
	if err != nil {
		return nil, err
	}
	return out.KeyWrapResults.Annotation, nil
}

// UnwrapKey asks the provider to unwrap a wrapped key.
func (p *providerWrapper) UnwrapKey(dc *config.DecryptConfig, annotation []byte) ([]byte, error) {
	out, err := p.call(keyprovider.OpKeyUnwrap, keyprovider.KeyProviderKeyWrapProtocolInput{
		Operation:       keyprovider.OpKeyUnwrap,
		KeyUnwrapParams: keyprovider.KeyUnwrapParams{Dc: dc, Annotation: annotation},
	})
	if err != nil {
		return nil, err
	}
	return out.KeyUnwrapResults.OptsData, nil
}

// NoPossibleKeys implements keywrap.KeyWrapper: a provider decides itself.
func (p *providerWrapper) NoPossibleKeys(map[string][][]byte) bool { return false }

// GetPrivateKeys implements keywrap.KeyWrapper: a provider holds its keys.
func (p *providerWrapper) GetPrivateKeys(map[string][][]byte) [][]byte { return nil }

// GetKeyIdsFromPacket implements keywrap.KeyWrapper: a provider's wrapped
// keys are opaque.
func (p *providerWrapper) GetKeyIdsFromPacket(string) ([]uint64, error) { return nil, nil }

// GetRecipients implements keywrap.KeyWrapper.
func (p *providerWrapper) GetRecipients(string) ([]string, error) { return nil, nil }

// call sends one protocol request, within the provider timeout.
func (p *providerWrapper) call(op keyprovider.KeyProviderKeyWrapProtocolOperation, in keyprovider.KeyProviderKeyWrapProtocolInput) (*keyprovider.KeyProviderKeyWrapProtocolOutput, error) {
	input, err := json.Marshal(in)
	if err != nil {
		return nil, fmt.Errorf("key provider %q: %w", p.name, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	defer cancel()
	var answer []byte
	if p.cmd != nil {
		answer, err = p.run(ctx, input)
	} else {
		req := &pb.KeyProviderKeyWrapProtocolInput{KeyProviderKeyWrapProtocolInput: input}
		var resp *pb.KeyProviderKeyWrapProtocolOutput
		if op == keyprovider.OpKeyWrap {
			resp, err = p.client.WrapKey(ctx, req)
		} else {
			resp, err = p.client.UnWrapKey(ctx, req)
		}
		answer = resp.GetKeyProviderKeyWrapProtocolOutput()
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("key provider %q: no answer within %v: %w", p.name, p.timeout, ctx.Err())
	}
	if err != nil {
		return nil, fmt.Errorf("key provider %q: %s: %w", p.name, op, err)
	}
	var out keyprovider.KeyProviderKeyWrapProtocolOutput
	if err := json.Unmarshal(answer, &out); err != nil {
		return nil, fmt.Errorf("key provider %q: its answer to %s is not the protocol's JSON: %w", p.name, op, err)
	}
	return &out, nil
}

// run runs the provider command with input on its standard input; it is
// killed when ctx ends.
func (p *providerWrapper) run(ctx context.Context, input []byte) ([]byte, error) {
	cmd := exec.CommandContext(ctx, p.cmd.Path, p.cmd.Args...)
	cmd.Stdin = bytes.NewReader(input)
	stdout, stderr := &boundedBuffer{max: maxProviderResponse}, &boundedBuffer{max: 512}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	// A child that keeps the pipes open does not hold the call past
	// the deadline for more than this.
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("command %s (stderr %q): %w", p.cmd.Path, stderr.buf.Bytes(), err)
	}
	if stdout.over {
		return nil, fmt.Errorf("command %s answered more than %d bytes", p.cmd.Path, maxProviderResponse)
	}
	return stdout.buf.Bytes(), nil
}

// Close closes the gRPC connection, if there is one.
func (p *providerWrapper) Close() error {
	if p.conn == nil {
		return nil
	}
	return p.conn.Close()
}

// boundedBuffer keeps the first max bytes written to it and discards the
// rest (so that a command writing more is not blocked), noting it.
type boundedBuffer struct {
	buf  bytes.Buffer
	max  int
	over bool
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.buf.Len(); len(p) > room {
		b.buf.Write(p[:max(room, 0)])
		b.over = true
		return len(p), nil
	}
	return b.buf.Write(p)
}

// checkProvider fails when a key provider cannot be reached: its command
// is not there, or its gRPC address does not accept a connection (and a
// TLS handshake, where configured).
func checkProvider(name string, a keyproviderconfig.KeyProviderAttrs) error {
	switch {
	case a.Command != nil:
		if _, err := exec.LookPath(a.Command.Path); err != nil {
			return fmt.Errorf("key provider %q: command: %w", name, err)
		}
	case a.Grpc != "":
		conn, err := net.DialTimeout("tcp", a.Grpc, 5*time.Second)
		if err != nil {
			return fmt.Errorf("key provider %q: gRPC %s does not answer: %w", name, a.Grpc, err)
		}
		defer conn.Close()
		if a.GrpcTLS != nil {
			host, _, _ := net.SplitHostPort(a.Grpc)
			cfg := &tls.Config{ServerName: host, InsecureSkipVerify: a.GrpcTLS.InsecureSkipVerify}
			if a.GrpcTLS.ServerName != "" {
				cfg.ServerName = a.GrpcTLS.ServerName
			}
			if a.GrpcTLS.RootCAFile != "" {
				pemBytes, err := os.ReadFile(a.GrpcTLS.RootCAFile)
				if err != nil {
					return fmt.Errorf("key provider %q: %w", name, err)
				}
				cfg.RootCAs = x509.NewCertPool()
				if !cfg.RootCAs.AppendCertsFromPEM(pemBytes) {
					return fmt.Errorf("key provider %q: no certificate in %s", name, a.GrpcTLS.RootCAFile)
				}
			}
			if a.GrpcTLS.CertFile != "" {
				c, err := tls.LoadX509KeyPair(a.GrpcTLS.CertFile, a.GrpcTLS.KeyFile)
				if err != nil {
					return fmt.Errorf("key provider %q: client certificate: %w", name, err)
				}
				cfg.Certificates = []tls.Certificate{c}
			}
			tc := tls.Client(conn, cfg)
			tc.SetDeadline(time.Now().Add(5 * time.Second))
			if err := tc.Handshake(); err != nil {
				return fmt.Errorf("key provider %q: TLS with %s: %w", name, a.Grpc, err)
			}
		}
	default:
		return fmt.Errorf("key provider %q: neither cmd nor grpc is set", name)
	}
	return nil
}

var _ keywrap.KeyWrapper = (*providerWrapper)(nil)

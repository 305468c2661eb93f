package keyprovider

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/containers/ocicrypt/keywrap/keyprovider"
	pb "github.com/containers/ocicrypt/utils/keyprovider"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shroud-oci/shroud/audit"
	"github.com/shroud-oci/shroud/crypto"
)

// DefaultName is the provider name nodes and shroud serve configure
// (recipient provider:shroud, key-providers: shroud: ...).
const DefaultName = "shroud"

// Bounds on what a request may carry.
const (
	// MaxRequest bounds one gRPC message (and the protocol JSON in it).
	MaxRequest = 64 << 10
	// MaxScope bounds the repository scope a recipient binds.
	MaxScope = 255
)

// opUnwrap is the op a KeyChecker is asked about (proxy.OpUnwrap);
// opWrap names WrapKey in the log and the audit.
const (
	opUnwrap = "unwrap"
	opWrap   = "wrap"
)

// KeyChecker decides whether a key may be used: proxy.KeyChecker, which
// *trust.Checker implements. op is "unwrap", repo the bound scope ("" if
// none), keyID the identity's key id.
type KeyChecker interface {
	Check(ctx context.Context, op, repo, keyID string, now time.Time) error
}

// Options configure a Server.
type Options struct {
	// Identity wraps and opens the layer options. Required.
	Identity *crypto.Identity
	// Name is the provider name the recipients use (DefaultName if "").
	Name string
	// Policy, when not nil, refuses what its deny rules cover.
	Policy *Policy
	// KeyCheck, when not nil, refuses revoked keys (trust documents).
	KeyCheck KeyChecker
	// RequireClientCert refuses callers without a verified TLS client
	// certificate (the gRPC server's TLS must ask for one).
	RequireClientCert bool
	// MaxPerClient bounds the requests one client (a client
	// certificate, or an IP address without one) has in flight: past it
	// a request waits a second for a slot, then is refused with
	// ResourceExhausted. 0: DefaultMaxPerClient.
	MaxPerClient int
	// Audit receives every unwrap, opened or refused, and every refused
	// wrap.
	Audit  *audit.Logger
	Logger *slog.Logger
	Now    func() time.Time
}

// Server implements pb.KeyProviderServiceServer.
type Server struct {
	pb.UnimplementedKeyProviderServiceServer
	o     Options
	slots *clientSlots
}

// New checks o and returns the server.
func New(o Options) (*Server, error) {
	if o.Identity == nil {
		return nil, errors.New("keyprovider: no identity")
	}
	if o.Name == "" {
		o.Name = DefaultName
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MaxPerClient < 0 {
		return nil, fmt.Errorf("keyprovider: MaxPerClient %d", o.MaxPerClient)
	}
	if o.MaxPerClient == 0 {
		o.MaxPerClient = DefaultMaxPerClient
	}
	return &Server{o: o, slots: newClientSlots(o.MaxPerClient, clientWait)}, nil
}

// WrapKey wraps the options of one layer for the scope the recipient's
// argument names.
func (s *Server) WrapKey(ctx context.Context, req *pb.KeyProviderKeyWrapProtocolInput) (*pb.KeyProviderKeyWrapProtocolOutput, error) {
	c, err := s.caller(ctx)
	if err != nil {
		return nil, s.refuse(ctx, opWrap, "", c, reasonUnauthenticated, err)
	}
	release, err := s.slots.acquire(ctx, c.key)
	if err != nil {
		return nil, s.refuse(ctx, opWrap, "", c, reasonBusy, err)
	}
	defer release()
	in, err := decode(req, keyprovider.OpKeyWrap)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if in.KeyWrapParams.Ec == nil {
		return nil, status.Error(codes.InvalidArgument, "keyprovider: no encrypt config")
	}
	scope, err := s.scopeOf(in.KeyWrapParams.Ec.Parameters)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if len(in.KeyWrapParams.OptsData) == 0 {
		return nil, status.Error(codes.InvalidArgument, "keyprovider: no layer options to wrap")
	}
	wrapped, err := s.o.Identity.WrapOptions(in.KeyWrapParams.OptsData, scope)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	var out keyprovider.KeyProviderKeyWrapProtocolOutput
	out.KeyWrapResults.Annotation = []byte(wrapped)
	s.o.Logger.DebugContext(ctx, "wrapped a layer key", "scope", scope, "caller", c.name, "caller_cert", c.cert)
	return encode(out)
}

// UnWrapKey opens one wrapped key, if the caller, the policy and the
// trust documents allow it. Every unwrap is audited, opened or refused.
func (s *Server) UnWrapKey(ctx context.Context, req *pb.KeyProviderKeyWrapProtocolInput) (*pb.KeyProviderKeyWrapProtocolOutput, error) {
	c, err := s.caller(ctx)
	if err != nil {
		return nil, s.refuse(ctx, opUnwrap, "", c, reasonUnauthenticated, err)
	}
	release, err := s.slots.acquire(ctx, c.key)
	if err != nil {
		return nil, s.refuse(ctx, opUnwrap, "", c, reasonBusy, err)
	}
	defer release()
	in, err := decode(req, keyprovider.OpKeyUnwrap)
	if err != nil {
		return nil, s.refuse(ctx, opUnwrap, "", c, reasonBadRequest, err)
	}
	opts, scope, _, err := s.o.Identity.OpenOptions(string(in.KeyUnwrapParams.Annotation))
	if err != nil {
		// Not ours (another shroud's, or garbage): ocicrypt tries the
		// next key.
		return nil, s.refuse(ctx, opUnwrap, "", c, reasonNotOurs, err)
	}
	if err := validScope(scope); err != nil {
		return nil, s.refuse(ctx, opUnwrap, "", c, reasonBadScope, err)
	}
	if err := s.o.Policy.allows(scope); err != nil {
		return nil, s.refuse(ctx, opUnwrap, scope, c, reasonPolicyDeny, err)
	}
	if s.o.KeyCheck != nil {
		if err := s.o.KeyCheck.Check(ctx, opUnwrap, scope, s.o.Identity.KeyID(), s.o.Now()); err != nil {
			return nil, s.refuse(ctx, opUnwrap, scope, c, reasonOf(err), err)
		}
	}
	var out keyprovider.KeyProviderKeyWrapProtocolOutput
	out.KeyUnwrapResults.OptsData = opts
	s.o.Logger.InfoContext(ctx, "unwrapped a layer key", "scope", scope, "caller", c.name, "caller_cert", c.cert)
	if aerr := s.o.Audit.Log(audit.Event{Kind: audit.UnwrapAllowed, Op: opUnwrap, Repository: scope, KeyID: s.o.Identity.KeyID(),
		Outcome: "allowed", Actor: c.name, ActorCert: c.cert}); aerr != nil {
		s.o.Logger.WarnContext(ctx, "audit log", "err", aerr)
	}
	return encode(out)
}

// Refusal reasons of the key provider's own (a KeyChecker's refusal
// says its own: "revoked", "frozen", ...).
const (
	reasonUnauthenticated = "unauthenticated"
	reasonBusy            = "busy"
	reasonBadRequest      = "bad-request"
	reasonNotOurs         = "not-wrapped-for-identity"
	reasonBadScope        = "bad-scope"
	reasonPolicyDeny      = "policy-deny"
)

// refuse logs and audits a refusal with everything it rests on (the
// rule, the trust document) and returns the gRPC error the caller gets,
// which names the scope and the reason only: a caller must not learn
// the policy's deny rules or the trust documents by asking.
func (s *Server) refuse(ctx context.Context, op, scope string, c callerID, reason string, err error) error {
	s.o.Logger.WarnContext(ctx, "key provider refused", "op", op, "scope", scope, "caller", c.name, "caller_cert", c.cert, "reason", reason, "err", err)
	kind := audit.UnwrapRefused
	if op != opUnwrap {
		kind = audit.WrapRefused
	}
	if aerr := s.o.Audit.Log(audit.Event{Kind: kind, Op: op, Repository: scope, KeyID: s.o.Identity.KeyID(), Reason: reason,
		Actor: c.name, ActorCert: c.cert, Detail: "shroud keyprovider: " + err.Error()}); aerr != nil {
		s.o.Logger.WarnContext(ctx, "audit log", "err", aerr)
	}
	head := "shroud keyprovider: " + op + " refused"
	switch reason {
	case reasonUnauthenticated:
		return status.Error(codes.Unauthenticated, head+": "+errUnauthenticated.Error())
	case reasonBusy:
		return status.Error(codes.ResourceExhausted, head+": "+errBusy.Error())
	case reasonBadRequest, reasonNotOurs:
		// The request's own fault, said with what the caller sent.
		return status.Error(codes.InvalidArgument, head+": "+err.Error())
	case reasonBadScope:
		return status.Error(codes.PermissionDenied, head+": the wrap's scope is not a repository glob")
	case reasonPolicyDeny:
		return status.Errorf(codes.PermissionDenied, "%s by policy for %s (%s)", head, scopeName(scope), reason)
	}
	return status.Errorf(codes.PermissionDenied, "%s by the trust documents for %s (%s)", head, scopeName(scope), reason)
}

func scopeName(scope string) string {
	if scope == "" {
		return "a wrap bound to no repository"
	}
	return fmt.Sprintf("scope %q", scope)
}

// reasonOf is a KeyChecker refusal's reason (trust.Refusal says it).
func reasonOf(err error) string {
	var r interface{ RefusalReason() string }
	if errors.As(err, &r) {
		return r.RefusalReason()
	}
	return "key-check"
}

// decode reads the protocol JSON of a request, bounded, and checks it
// asks for op.
func decode(req *pb.KeyProviderKeyWrapProtocolInput, op keyprovider.KeyProviderKeyWrapProtocolOperation) (*keyprovider.KeyProviderKeyWrapProtocolInput, error) {
	b := req.GetKeyProviderKeyWrapProtocolInput()
	if len(b) > MaxRequest {
		return nil, fmt.Errorf("keyprovider: request of %d bytes, more than %d", len(b), MaxRequest)
	}
	var in keyprovider.KeyProviderKeyWrapProtocolInput
	if err := json.Unmarshal(b, &in); err != nil {
		return nil, fmt.Errorf("keyprovider: request is not the protocol's JSON: %w", err)
	}
	if in.Operation != op {
		return nil, fmt.Errorf("keyprovider: operation %q sent to %s", in.Operation, op)
	}
	return &in, nil
}

func encode(out keyprovider.KeyProviderKeyWrapProtocolOutput) (*pb.KeyProviderKeyWrapProtocolOutput, error) {
	b, err := json.Marshal(out)
	if err != nil {
		return nil, status.Error(codes.Internal, "keyprovider: encode answer")
	}
	return &pb.KeyProviderKeyWrapProtocolOutput{KeyProviderKeyWrapProtocolOutput: b}, nil
}

var _ pb.KeyProviderServiceServer = (*Server)(nil)

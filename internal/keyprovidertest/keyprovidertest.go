// Package keyprovidertest is a key provider for the tests: it speaks the
// ocicrypt key-provider protocol (as a command, and as a gRPC service)
// and wraps layer options with AES-256-GCM under a key named by the
// recipient's argument (provider:<name>:<key id>). It keeps no secret
// worth the name: it exists to prove shroud talks to real providers.
package keyprovidertest

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/containers/ocicrypt/keywrap/keyprovider"
	pb "github.com/containers/ocicrypt/utils/keyprovider"
)

// Name is a provider name the tests configure; the provider answers to
// any name, taking its argument from the one parameter it is sent.
const Name = "testkms"

// own returns the only parameter a request carries: shroud must send a
// provider its own parameter and nothing else (ocicrypt would send it
// every scheme's keys, private ones included).
func own(params map[string][][]byte) ([]byte, error) {
	if len(params) != 1 {
		var names []string
		for k := range params {
			names = append(names, k)
		}
		return nil, fmt.Errorf("the provider was sent parameters %v; want its own alone", names)
	}
	for _, v := range params {
		if len(v) == 0 {
			return nil, errors.New("no argument")
		}
		return v[0], nil
	}
	return nil, nil
}

// wrapped is the annotation the provider writes.
type wrapped struct {
	KeyID string `json:"kid"`
	Nonce []byte `json:"nonce"`
	Data  []byte `json:"data"`
}

func gcm(keyID string) (cipher.AEAD, error) {
	k := sha256.Sum256([]byte("shroud test provider key " + keyID))
	b, err := aes.NewCipher(k[:])
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// Handle answers one protocol request (the JSON a command reads on stdin)
// with the JSON it writes on stdout.
func Handle(input []byte) ([]byte, error) {
	var in keyprovider.KeyProviderKeyWrapProtocolInput
	if err := json.Unmarshal(input, &in); err != nil {
		return nil, fmt.Errorf("bad request: %w", err)
	}
	var out keyprovider.KeyProviderKeyWrapProtocolOutput
	switch in.Operation {
	case keyprovider.OpKeyWrap:
		if in.KeyWrapParams.Ec == nil {
			return nil, errors.New("no encrypt config")
		}
		id, err := own(in.KeyWrapParams.Ec.Parameters)
		if err != nil {
			return nil, err
		}
		g, err := gcm(string(id))
		if err != nil {
			return nil, err
		}
		nonce := make([]byte, g.NonceSize())
		rand.Read(nonce)
		ann, err := json.Marshal(wrapped{KeyID: string(id), Nonce: nonce, Data: g.Seal(nil, nonce, in.KeyWrapParams.OptsData, nil)})
		if err != nil {
			return nil, err
		}
		out.KeyWrapResults.Annotation = ann
	case keyprovider.OpKeyUnwrap:
		var w wrapped
		if err := json.Unmarshal(in.KeyUnwrapParams.Annotation, &w); err != nil {
			return nil, fmt.Errorf("bad annotation: %w", err)
		}
		if dc := in.KeyUnwrapParams.Dc; dc != nil {
			if _, err := own(dc.Parameters); err != nil {
				return nil, err
			}
		}
		g, err := gcm(w.KeyID)
		if err != nil {
			return nil, err
		}
		opts, err := g.Open(nil, w.Nonce, w.Data, nil)
		if err != nil {
			return nil, fmt.Errorf("unwrap: %w", err)
		}
		out.KeyUnwrapResults.OptsData = opts
	default:
		return nil, fmt.Errorf("unknown operation %q", in.Operation)
	}
	return json.Marshal(out)
}

// Server is the provider as a gRPC service.
type Server struct {
	pb.UnimplementedKeyProviderServiceServer
}

// WrapKey implements the service.
func (Server) WrapKey(_ context.Context, in *pb.KeyProviderKeyWrapProtocolInput) (*pb.KeyProviderKeyWrapProtocolOutput, error) {
	out, err := Handle(in.KeyProviderKeyWrapProtocolInput)
	return &pb.KeyProviderKeyWrapProtocolOutput{KeyProviderKeyWrapProtocolOutput: out}, err
}

// UnWrapKey implements the service.
func (Server) UnWrapKey(_ context.Context, in *pb.KeyProviderKeyWrapProtocolInput) (*pb.KeyProviderKeyWrapProtocolOutput, error) {
	out, err := Handle(in.KeyProviderKeyWrapProtocolInput)
	return &pb.KeyProviderKeyWrapProtocolOutput{KeyProviderKeyWrapProtocolOutput: out}, err
}

package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/containers/ocicrypt/utils"
	"github.com/go-jose/go-jose/v4"

	"github.com/shroud-oci/shroud/access"
)

const accessUsage = `usage: shroud access <command> [flags]

requesters (the registry listener, no credentials):
  request  ask for a key to become a recipient of repositories:
           shroud access request --server URL --key PRIVATE.pem [--cert CERT.pem] --repository NAME... --name NAME
           (an OpenPGP key: --pgp-key PRIVATE.asc instead of --key)
  status   shroud access status --server URL ID

owners (the admin API, its bearer token):
  list     shroud access list --admin URL --admin-token-file FILE
  show     shroud access show --admin URL --admin-token-file FILE ID
  approve  shroud access approve --admin URL --admin-token-file FILE [--expires RFC3339] ID
           encrypt-only repositories: add --key OWNER.pem, a recipient's private key; the
           layer keys are unwrapped and wrapped for the requester here, and only the new
           wrapped keys, signed with it, go to shroud
  deny     shroud access deny --admin URL --admin-token-file FILE [--reason TEXT] ID

--ca FILE adds PEM CAs to trust for an https:// URL.
`

// accessCmd runs `shroud access`.
func accessCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stderr, accessUsage)
		return 2
	}
	fs := flag.NewFlagSet("access "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		server    = fs.String("server", "", "shroud's registry URL (requesters)")
		adminURL  = fs.String("admin", "", "shroud's admin API URL (owners)")
		tokenFile = fs.String("admin-token-file", "", "the admin API's bearer token file (owners)")
		keyFile   = fs.String("key", "", "the private key of the key asking for access (request); an owner's key, a recipient of the repositories' encrypt-only rule (approve)")
		certFile  = fs.String("cert", "", "an X.509 certificate of that key: the request is for pkcs7 (request)")
		pgpKey    = fs.String("pgp-key", "", "an armored OpenPGP private key (no passphrase) asking for access as a pgp recipient, instead of --key (request)")
		name      = fs.String("name", "", "who asks, for the owner (request)")
		expires   = fs.String("expires", "", "when the grant ends, RFC 3339 (approve; empty: it does not)")
		reason    = fs.String("reason", "", "why (deny)")
		keyID     = fs.String("request-key-id", "", "the key id the requester told you out of band: approve --key refuses a request for another key (a compromised server could swap it)")
		caFile    = fs.String("ca", "", "PEM CAs to trust for https:// URLs")
		repos     listFlag
	)
	fs.Var(&repos, "repository", "repeatable: a repository the key asks for (request)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	client, err := accessClient(*caFile)
	if err == nil {
		c := &accessCall{ctx: ctx, client: client, out: stdout}
		switch args[0] {
		case "request":
			if *pgpKey != "" {
				err = c.requestPGP(*server, *pgpKey, *name, repos)
			} else {
				err = c.request(*server, *keyFile, *certFile, *name, repos)
			}
		case "status":
			err = c.one(fs, func(id string) error {
				return c.do(http.MethodGet, *server, access.PathPrefix+"/requests/"+id, "", nil)
			})
		case "list":
			err = c.owner(*adminURL, *tokenFile, http.MethodGet, "/admin/v1/access/requests", nil)
		case "show":
			err = c.one(fs, func(id string) error {
				return c.owner(*adminURL, *tokenFile, http.MethodGet, "/admin/v1/access/requests/"+id, nil)
			})
		case "approve":
			body := map[string]any{}
			if *expires != "" {
				t, perr := time.Parse(time.RFC3339, *expires)
				if perr != nil {
					fmt.Fprintf(stderr, "shroud access approve: --expires: %v\n", perr)
					return 2
				}
				body["expires"] = t
			}
			err = c.one(fs, func(id string) error {
				if *keyFile != "" {
					exp, _ := body["expires"].(time.Time)
					return c.ownerApprove(*adminURL, *tokenFile, *keyFile, *keyID, id, exp, stderr)
				}
				return c.owner(*adminURL, *tokenFile, http.MethodPost, "/admin/v1/access/requests/"+id+"/approve", body)
			})
		case "deny":
			err = c.one(fs, func(id string) error {
				return c.owner(*adminURL, *tokenFile, http.MethodPost, "/admin/v1/access/requests/"+id+"/deny", map[string]any{"reason": *reason})
			})
			if err == nil && c.rewrapLater != "" {
				// The key still opens the images stored while it held.
				fmt.Fprintf(stderr, "shroud access deny: %s\n", c.rewrapLater)
				return 3
			}
		default:
			fmt.Fprintf(stderr, "shroud access: unknown command %q\n%s", args[0], accessUsage)
			return 2
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "shroud access %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

type accessCall struct {
	ctx    context.Context
	client *http.Client
	out    io.Writer
	// rewrapLater is what the last answer said of a rewrap not started.
	rewrapLater string
}

func (c *accessCall) one(fs *flag.FlagSet, f func(id string) error) error {
	if fs.NArg() != 1 {
		return errors.New("name one request id")
	}
	return f(fs.Arg(0))
}

// request signs and submits an access request, and prints its id and
// state.
func (c *accessCall) request(server, keyFile, certFile, name string, repos []string) error {
	if server == "" || keyFile == "" || name == "" || len(repos) == 0 {
		return errors.New("--server, --key, --name and at least one --repository are required")
	}
	signer, err := parseSigner(keyFile)
	if err != nil {
		return err
	}
	p := access.Payload{Name: name, Repositories: repos, Created: time.Now().UTC()}
	if certFile != "" {
		cert, err := os.ReadFile(certFile)
		if err != nil {
			return err
		}
		p.Scheme, p.Key = "pkcs7", string(cert)
	} else {
		der, err := x509.MarshalPKIXPublicKey(signer.Public())
		if err != nil {
			return err
		}
		p.Scheme, p.Key = "jwe", string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	}
	var info struct {
		Audience string `json:"audience"`
	}
	if err := c.json(http.MethodGet, server, access.PathPrefix, "", nil, &info); err != nil {
		return err
	}
	p.Audience = info.Audience
	jws, err := access.Sign(p, signer)
	if err != nil {
		return err
	}
	return c.do(http.MethodPost, server, access.PathPrefix+"/requests", "", strings.NewReader(jws))
}

// parseSigner reads an RSA or EC private key file (PEM, PKCS#8 or
// PKCS#1/SEC 1, or a JWK) as ocicrypt reads a --decryption-key.
func parseSigner(keyFile string) (crypto.Signer, error) {
	b, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, err
	}
	k, err := utils.ParsePrivateKey(b, nil, "access")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyFile, err)
	}
	if jwk, ok := k.(*jose.JSONWebKey); ok {
		k = jwk.Key
	}
	switch k := k.(type) {
	case *rsa.PrivateKey:
		return k, nil
	case *ecdsa.PrivateKey:
		return k, nil
	default:
		return nil, fmt.Errorf("%s: %T is not an RSA or EC private key", keyFile, k)
	}
}

// owner calls the admin API with its token and prints the answer.
func (c *accessCall) owner(base, tokenFile, method, path string, body any) error {
	if base == "" || tokenFile == "" {
		return errors.New("--admin and --admin-token-file are required")
	}
	tok, err := os.ReadFile(tokenFile)
	if err != nil {
		return err
	}
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		r = bytes.NewReader(b)
	}
	return c.do(method, base, path, strings.TrimSpace(string(tok)), r)
}

// do sends one request and prints the JSON answer; a status of 400 or
// more is an error carrying the answer's message.
func (c *accessCall) do(method, base, path, token string, body io.Reader) error {
	var v json.RawMessage
	if err := c.json(method, base, path, token, body, &v); err != nil {
		return err
	}
	var later struct {
		RewrapLater string `json:"rewrap_later"`
	}
	if json.Unmarshal(v, &later) == nil {
		c.rewrapLater = later.RewrapLater
	}
	var out bytes.Buffer
	if json.Indent(&out, v, "", "  ") != nil {
		out.Reset()
		out.Write(v)
	}
	fmt.Fprintln(c.out, strings.TrimSpace(out.String()))
	return nil
}

func (c *accessCall) json(method, base, path, token string, body io.Reader, v any) error {
	if base == "" {
		return errors.New("no URL: give --server or --admin")
	}
	req, err := http.NewRequestWithContext(c.ctx, method, strings.TrimSuffix(base, "/")+path, body)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 400 {
		var e struct {
			Errors []struct{ Code, Message string } `json:"errors"`
		}
		if json.Unmarshal(b, &e) == nil && len(e.Errors) > 0 {
			return fmt.Errorf("%s: %s: %s", resp.Status, e.Errors[0].Code, e.Errors[0].Message)
		}
		return fmt.Errorf("%s", resp.Status)
	}
	return json.Unmarshal(b, v)
}

func accessClient(caFile string) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if caFile != "" {
		b, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("%s: no PEM certificate", caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr, Timeout: time.Minute}, nil
}

package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"

	"github.com/shroud-oci/shroud/access"
	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/proxy"
)

// ownerApprove approves a request of encrypt-only repositories on the
// owner's machine: it lists the repositories' encrypted layers (nothing
// secret), unwraps each layer key with the owner's key here, wraps it for
// the request's key, and submits only those wrapped keys, signed with the
// owner's key. The server never sees a layer key.
func (c *accessCall) ownerApprove(base, tokenFile, keyFile, wantKeyID, id string, expires time.Time, stderr io.Writer) error {
	if base == "" || tokenFile == "" {
		return errors.New("--admin and --admin-token-file are required")
	}
	tb, err := os.ReadFile(tokenFile)
	if err != nil {
		return err
	}
	tok := strings.TrimSpace(string(tb))
	var listing struct {
		Request  access.Request         `json:"request"`
		Audience string                 `json:"audience"`
		Layers   []proxy.EncryptedLayer `json:"layers"`
	}
	if err := c.json(http.MethodGet, base, "/admin/v1/access/requests/"+id+"/layers", tok, nil, &listing); err != nil {
		return err
	}
	req := listing.Request
	if req.State != access.Pending {
		return fmt.Errorf("request %s is %s, not pending", id, req.State)
	}
	signer, err := parseSigner(keyFile)
	if err != nil {
		return err
	}
	owner, err := crypto.ParseDecryptionKey(keyFile)
	if err != nil {
		return err
	}
	// A keyring of the owner's key alone; its identity is a throwaway
	// key that opens nothing.
	tmp, err := os.MkdirTemp("", "shroud-owner-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	throwaway, _, err := crypto.LoadOrCreateIdentity(tmp)
	if err != nil {
		return err
	}
	kr, err := crypto.NewKeyring(throwaway, []crypto.DecryptionKey{owner})
	if err != nil {
		return err
	}
	rec, err := crypto.ParseRecipientData("access:"+req.Name, req.Scheme, []byte(req.Key))
	if err != nil {
		return fmt.Errorf("the request's key: %w", err)
	}
	if rec.KeyID() != req.KeyID {
		return fmt.Errorf("the request's key has id %s, the server says %s", rec.KeyID(), req.KeyID)
	}
	if wantKeyID != "" && rec.KeyID() != wantKeyID {
		return fmt.Errorf("request %s is for key %s, not %s (--request-key-id): nothing approved", id, rec.KeyID(), wantKeyID)
	}
	fmt.Fprintf(stderr, "shroud access approve: wrapping the layer keys of %s for %q, key %s\n", strings.Join(req.Repositories, ", "), req.Name, rec.KeyID())
	set, err := kr.Recipients([]crypto.Recipient{rec})
	if err == nil {
		set, err = set.WithoutIdentity()
	}
	if err != nil {
		return err
	}
	a := access.OwnerApproval{Request: id, Audience: listing.Audience, Created: time.Now().UTC(), Expires: expires}
	skipped := 0
	for _, l := range listing.Layers {
		opts, _, err := kr.UnwrapWith(l.Annotations, func(k string) bool { return k != crypto.IdentityKey })
		if errors.Is(err, crypto.ErrNoKey) {
			skipped++
			continue
		}
		if err != nil {
			return fmt.Errorf("layer %s of %s: %w", l.CipherDigest, l.Repository, err)
		}
		pub, err := crypto.ParsePublicOptions(l.Annotations)
		if err != nil {
			return fmt.Errorf("layer %s of %s: %w", l.CipherDigest, l.Repository, err)
		}
		ann, err := kr.Wrap(opts, pub, set)
		if err != nil {
			return err
		}
		wrapped := map[string]string{}
		for k, v := range ann {
			if strings.HasPrefix(k, crypto.AnnotationKeys) {
				wrapped[k] = v
			}
		}
		a.Wraps = append(a.Wraps, access.OwnerWrap{Repository: l.Repository, CipherDigest: l.CipherDigest, PlainDigest: opts.PlainDigest, Annotations: wrapped})
	}
	if len(a.Wraps) == 0 {
		return fmt.Errorf("the key %s opens none of the %d encrypted layers of %s", keyFile, len(listing.Layers), strings.Join(req.Repositories, ", "))
	}
	if skipped > 0 {
		fmt.Fprintf(stderr, "shroud access approve: %d of %d layers do not open with %s: the requester gets no key for them\n", skipped, len(listing.Layers), keyFile)
	}
	jws, err := access.SignOwnerApproval(a, signer)
	if err != nil {
		return err
	}
	b, err := json.Marshal(map[string]string{"owner_approval": jws})
	if err != nil {
		return err
	}
	return c.do(http.MethodPost, base, "/admin/v1/access/requests/"+id+"/approve", tok, bytes.NewReader(b))
}

// requestPGP signs (a detached OpenPGP signature) and submits an access
// request for an OpenPGP key, and prints its id and state.
func (c *accessCall) requestPGP(server, keyFile, name string, repos []string) error {
	if server == "" || name == "" || len(repos) == 0 {
		return errors.New("--server, --pgp-key, --name and at least one --repository are required")
	}
	f, err := os.Open(keyFile)
	if err != nil {
		return err
	}
	defer f.Close()
	ring, err := openpgp.ReadArmoredKeyRing(f)
	if err != nil {
		return fmt.Errorf("%s: not an armored OpenPGP private key: %w", keyFile, err)
	}
	if len(ring) != 1 || ring[0].PrivateKey == nil || ring[0].PrivateKey.Encrypted {
		return fmt.Errorf("%s: want one OpenPGP private key without a passphrase", keyFile)
	}
	var info struct {
		Audience string `json:"audience"`
	}
	if err := c.json(http.MethodGet, server, access.PathPrefix, "", nil, &info); err != nil {
		return err
	}
	body, err := access.SignPGP(access.Payload{Audience: info.Audience, Name: name, Repositories: repos, Created: time.Now().UTC()}, ring[0])
	if err != nil {
		return err
	}
	return c.do(http.MethodPost, server, access.PathPrefix+"/requests", "", bytes.NewReader(body))
}

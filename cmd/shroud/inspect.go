package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shroud-oci/shroud/config"
	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/proxy"
)

// inspection is what `shroud inspect` reports.
type inspection struct {
	Reference string        `json:"reference"`
	Digest    string        `json:"digest"`
	MediaType string        `json:"mediaType"`
	Images    []imageReport `json:"images"`
}

type imageReport struct {
	Platform       string `json:"platform,omitempty"`
	PlainDigest    string `json:"plainDigest,omitempty"`
	UpstreamDigest string `json:"upstreamDigest"`
	// SealedFor is the repository shroud sealed the manifest for.
	SealedFor string        `json:"sealedFor,omitempty"`
	Layers    []layerReport `json:"layers"`
}

type layerReport struct {
	Index        int      `json:"index"`
	MediaType    string   `json:"mediaType"`
	Size         int64    `json:"size"`
	Encrypted    bool     `json:"encrypted"`
	PlainDigest  string   `json:"plainDigest,omitempty"`
	CipherDigest string   `json:"cipherDigest,omitempty"`
	Schemes      []string `json:"schemes,omitempty"`
	Recipients   []string `json:"recipients,omitempty"`
	Openable     bool     `json:"openable"`
	OpenedBy     string   `json:"openedBy,omitempty"`
}

// viewTransport asks shroud for manifests as the upstream stores them; a
// registry ignores the header.
type viewTransport struct{ next http.RoundTripper }

func (v viewTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(proxy.HeaderView, "upstream")
	return v.next.RoundTrip(r)
}

func inspect(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("shroud inspect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	output := fs.String("output", "text", "text or json")
	insecure := fs.Bool("insecure", false, "plain HTTP, or HTTPS without certificate checks")
	dataDir := fs.String("data-dir", "./shroud-data", "where shroud's identity is (identity.pem), if it is here")
	identity := fs.String("identity", "", "shroud's private key file, or pkcs11:<ocicrypt PKCS#11 key file> (default <data-dir>/identity.pem)")
	cfgPath := fs.String("config", "", "shroud's YAML config: its identity and pkcs11 sections apply (flags win)")
	var keys listFlag
	fs.Var(&keys, "decryption-key", "repeatable: a private key, OpenPGP private key or certificate to try")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 1 || (*output != "text" && *output != "json") {
		fmt.Fprintln(stderr, "usage: shroud inspect [--output text|json] [--insecure] [--config FILE] [--identity FILE|pkcs11:KEYFILE] [--decryption-key FILE]... REF")
		return 2
	}
	cfg := config.Default()
	if *cfgPath != "" {
		var err error
		if cfg, err = config.Load(*cfgPath); err != nil {
			fmt.Fprintf(stderr, "shroud inspect: %v\n", err)
			return 2
		}
	}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "data-dir":
			cfg.DataDir = *dataDir
		case "identity":
			cfg.Identity = *identity
		}
	})
	if *cfgPath == "" {
		cfg.DataDir = *dataDir
	}
	kr, err := inspectKeyring(ctx, cfg, keys)
	if err != nil {
		fmt.Fprintf(stderr, "shroud inspect: %v\n", err)
		return 2
	}
	rep, err := inspectRef(ctx, fs.Arg(0), *insecure, kr)
	if err != nil {
		fmt.Fprintf(stderr, "shroud inspect: %v\n", err)
		return 1
	}
	if *output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(rep)
		return 0
	}
	printInspection(stdout, rep)
	return 0
}

// inspectKeyring is the identity (a fresh throwaway one if there is none:
// it opens nothing) with the decryption keys.
func inspectKeyring(ctx context.Context, cfg config.Config, keys []string) (*crypto.Keyring, error) {
	if cfg.Identity == "" {
		if _, err := os.Stat(filepath.Join(cfg.DataDir, crypto.IdentityFile)); err == nil {
			cfg.Identity = filepath.Join(cfg.DataDir, crypto.IdentityFile)
		} else {
			// Not loadIdentity's data dir: inspect writes nothing there.
			tmp, err := os.MkdirTemp("", "shroud-inspect")
			if err != nil {
				return nil, err
			}
			defer os.RemoveAll(tmp)
			cfg.DataDir = tmp
		}
	}
	id, err := loadIdentity(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, err
	}
	var dks []crypto.DecryptionKey
	for _, k := range keys {
		dk, err := crypto.ParseDecryptionKey(k)
		if err != nil {
			return nil, err
		}
		dks = append(dks, dk)
	}
	return crypto.NewKeyring(id, dks, crypto.WithPKCS11(cfg.PKCS11.AllowedModulePaths, cfg.PKCS11.ModuleDirectories))
}

func inspectRef(ctx context.Context, refStr string, insecure bool, kr *crypto.Keyring) (*inspection, error) {
	var nopts []name.Option
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if insecure {
		nopts = append(nopts, name.Insecure)
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	}
	ref, err := name.ParseReference(refStr, nopts...)
	if err != nil {
		return nil, err
	}
	ropts := []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain), remote.WithTransport(viewTransport{tr})}
	desc, err := remote.Get(ref, ropts...)
	if err != nil {
		return nil, err
	}
	rep := &inspection{Reference: refStr, Digest: desc.Digest.String(), MediaType: string(desc.MediaType)}
	var top struct {
		Manifests []ocispec.Descriptor `json:"manifests"`
	}
	json.Unmarshal(desc.Manifest, &top)
	if top.Manifests == nil {
		img, err := inspectImage(desc.Manifest, desc.Digest.String(), kr)
		if err != nil {
			return nil, err
		}
		rep.Images = append(rep.Images, img)
		return rep, nil
	}
	for _, child := range top.Manifests {
		cd, err := remote.Get(ref.Context().Digest(child.Digest.String()), ropts...)
		if err != nil {
			return nil, fmt.Errorf("index child %s: %w", child.Digest, err)
		}
		img, err := inspectImage(cd.Manifest, cd.Digest.String(), kr)
		if err != nil {
			return nil, err
		}
		if p := child.Platform; p != nil {
			img.Platform = strings.TrimSuffix(p.OS+"/"+p.Architecture+"/"+p.Variant, "/")
		}
		rep.Images = append(rep.Images, img)
	}
	return rep, nil
}

func inspectImage(raw []byte, upDigest string, kr *crypto.Keyring) (imageReport, error) {
	var m ocispec.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return imageReport{}, err
	}
	img := imageReport{UpstreamDigest: upDigest}
	var orig ocispec.Manifest
	if sealed := m.Annotations[crypto.AnnotationOriginal]; sealed != "" {
		if seal, _, err := kr.OpenSeal(sealed); err == nil {
			img.PlainDigest = digest.FromBytes(seal.Manifest).String()
			img.SealedFor = seal.Repository
			json.Unmarshal(seal.Manifest, &orig)
		}
	}
	for i, l := range m.Layers {
		lr := layerReport{Index: i, MediaType: l.MediaType, Size: l.Size, Encrypted: crypto.IsEncryptedMediaType(l.MediaType)}
		if !lr.Encrypted {
			lr.PlainDigest = l.Digest.String()
			lr.Openable = true
			img.Layers = append(img.Layers, lr)
			continue
		}
		lr.CipherDigest = l.Digest.String()
		for k := range crypto.EncAnnotations(l.Annotations) {
			if s, ok := strings.CutPrefix(k, crypto.AnnotationKeys); ok {
				lr.Schemes = append(lr.Schemes, s)
			}
		}
		lr.Recipients = kr.Describe(l.Annotations)
		if opts, err := kr.Unwrap(l.Annotations); err == nil {
			lr.Openable, lr.PlainDigest = true, opts.PlainDigest.String()
			lr.OpenedBy = kr.OpenedBy(l.Annotations)
		} else if len(orig.Layers) == len(m.Layers) {
			lr.PlainDigest = orig.Layers[i].Digest.String()
		}
		img.Layers = append(img.Layers, lr)
	}
	return img, nil
}

func printInspection(w io.Writer, rep *inspection) {
	fmt.Fprintf(w, "%s\n  digest %s\n  media type %s\n", rep.Reference, rep.Digest, rep.MediaType)
	for _, img := range rep.Images {
		fmt.Fprintf(w, "\nimage")
		if img.Platform != "" {
			fmt.Fprintf(w, " %s", img.Platform)
		}
		fmt.Fprintf(w, "\n  upstream digest %s\n", img.UpstreamDigest)
		if img.PlainDigest != "" {
			fmt.Fprintf(w, "  plain digest    %s\n", img.PlainDigest)
		}
		for _, l := range img.Layers {
			fmt.Fprintf(w, "  layer %d  %s  %d bytes\n", l.Index, l.MediaType, l.Size)
			if l.PlainDigest != "" {
				fmt.Fprintf(w, "    plain    %s\n", l.PlainDigest)
			}
			if !l.Encrypted {
				fmt.Fprintf(w, "    not encrypted\n")
				continue
			}
			fmt.Fprintf(w, "    cipher   %s\n    schemes  %s\n    wrapped  %s\n", l.CipherDigest, strings.Join(l.Schemes, ", "), strings.Join(l.Recipients, "; "))
			if l.Openable {
				fmt.Fprintf(w, "    opens    yes, with %s\n", l.OpenedBy)
			} else {
				fmt.Fprintf(w, "    opens    no: none of the local keys is a recipient\n")
			}
		}
	}
}

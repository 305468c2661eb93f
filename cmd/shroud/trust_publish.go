package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/shroud-oci/shroud/proxy/upstream"
	"github.com/shroud-oci/shroud/trust"
)

// defaultTrustTag is the artifact's tag when --to names none: the one
// --trust-source oci:REPO reads.
const defaultTrustTag = "trust"

// trustPublish runs `shroud trust publish`: the repository directory
// pushed as the OCI artifact trust.OCISource reads, straight to the
// registry (through shroud an encrypt rule would encrypt it), once it
// verifies as a replica that trusted what the tag holds would verify it.
// What the tag holds must verify too (as of when it was last valid, if
// it expired since); --force publishes over one that does not, loudly.
func trustPublish(ctx context.Context, fs *flag.FlagSet, args []string, stdout io.Writer) error {
	dir := fs.String("dir", "", "directory of the trust repository (required)")
	to := fs.String("to", "", "HOST/REPO[:TAG] in the registry itself, not through shroud (required; tag default "+defaultTrustTag+")")
	plainHTTP := fs.Bool("plain-http", false, "talk to the registry over plain HTTP")
	authFile := fs.String("auth-file", "", "Docker config.json with the registry's credentials, as --upstream-auth-file (default: the docker keychain)")
	force := fs.Bool("force", false, "push even when what the tag holds does not verify (another trust repository, a broken one): replicas given its root refuse the new one until given the new root")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *dir == "" || *to == "" {
		return usagef("--dir and --to are required")
	}
	var nameOpts []name.Option
	if *plainHTTP {
		nameOpts = append(nameOpts, name.Insecure)
	}
	tag, err := name.NewTag(*to, append(nameOpts, name.WithDefaultTag(defaultTrustTag))...)
	if err != nil {
		return usagef("--to %q: %v (want HOST/REPO[:TAG])", *to, err)
	}
	auth, err := publishAuth(*authFile, tag.Registry)
	if err != nil {
		return err
	}
	opts := []remote.Option{remote.WithContext(ctx), remote.WithUserAgent("shroud"), auth}

	a, err := trust.BuildArtifact(*dir)
	if err != nil {
		return err
	}
	for _, s := range a.Skipped {
		fmt.Fprintf(stdout, "left out %s\n", s)
	}
	published, err := publishedArtifact(tag, opts)
	if err != nil {
		return err
	}
	now := time.Now()
	v, err := a.Verify(ctx, now, published)
	forced := false
	if errors.Is(err, trust.ErrPublishedUnverified) {
		if !*force {
			return fmt.Errorf("%w; nothing pushed (replicas trust what %s holds: publishing over it would make them refuse; --force replaces it)", err, tag.Name())
		}
		fmt.Fprintf(fs.Output(), "WARNING: --force: %v.\nWARNING: publishing over it as a first publication: no version or deny entry of it is kept, and every replica given its root (--trust-root) refuses the new artifact until given %s/metadata/1.root.json and a fresh data dir.\n", err, *dir)
		v, err = a.Verify(ctx, now, nil)
		forced = true
	}
	if err != nil {
		return fmt.Errorf("%s does not verify as the replicas would check it, nothing pushed: %w", *dir, err)
	}
	switch {
	case forced:
	case published == nil:
		fmt.Fprintf(stdout, "nothing at %s yet: a first publication\n", tag.Name())
	case v.PublishedAt.Before(now):
		fmt.Fprintf(stdout, "what %s holds expired at %s: checked against it as replicas trusted it then (its deny entries all kept)\n", tag.Name(), v.PublishedAt.UTC().Format(time.RFC3339))
	}
	if !forced && published != nil && len(v.Published.Refusals) > 0 {
		fmt.Fprintf(stdout, "what %s holds has refused lists, replicas keep what they trusted before for them: %s\n", tag.Name(), strings.Join(v.Published.Refusals, "; "))
	}

	for _, b := range a.Blobs() {
		if err := remote.WriteLayer(tag.Repository, static.NewLayer(b.Data, types.MediaType(b.MediaType)), opts...); err != nil {
			return fmt.Errorf("push %s: blob %s: %w", tag.Repository, b.Digest, err)
		}
	}
	if err := remote.Put(tag, rawManifest(a.Manifest), opts...); err != nil {
		return fmt.Errorf("push %s: %w", tag, err)
	}
	fmt.Fprintf(stdout, "pushed %s@%s (%d files) as %s\n", tag.Repository, a.Digest(), len(a.Files), tag.Name())
	for _, r := range v.Status.Roles {
		fmt.Fprintf(stdout, "  %s v%d, expires %s\n", r.Name, r.Version, r.Expires.UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(stdout, "replicas whose upstream is %s read it with --trust-source oci:%s:%s\n", tag.RegistryStr(), tag.RepositoryStr(), tag.TagStr())
	return nil
}

// publishAuth is how the push authenticates: the entry for reg of a
// Docker config.json read as --upstream-auth-file reads it, else the
// default keychain (docker login, credential helpers).
func publishAuth(file string, reg name.Registry) (remote.Option, error) {
	if file == "" {
		return remote.WithAuthFromKeychain(authn.DefaultKeychain), nil
	}
	auths, err := upstream.LoadAuthFile(file)
	if err != nil {
		return nil, err
	}
	a, ok := auths.For(reg.Scheme() + "://" + reg.RegistryStr())
	if !ok {
		return nil, fmt.Errorf("--auth-file %s has no entry for %s", file, reg.RegistryStr())
	}
	return remote.WithAuth(a), nil
}

// publishedArtifact is the artifact tag holds now, as a source, so that
// the new one is checked against what replicas trust (nil: none there).
func publishedArtifact(tag name.Tag, opts []remote.Option) (*trust.Source, error) {
	_, err := remote.Head(tag, opts...)
	var te *transport.Error
	if errors.As(err, &te) && te.StatusCode == http.StatusNotFound {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", tag.Name(), err)
	}
	src := trust.OCISource(tag.RepositoryStr(), tag.TagStr(), registryFetch(tag.Repository, opts))
	return &src, nil
}

// registryFetch reads repo for trust.OCISource with go-containerregistry
// (the artifact as published, straight from the registry).
func registryFetch(repo name.Repository, opts []remote.Option) trust.RegistryFetch {
	return func(ctx context.Context, p string) ([]byte, error) {
		opts := append(opts[:len(opts):len(opts)], remote.WithContext(ctx))
		rest, ok := strings.CutPrefix(p, repo.RepositoryStr()+"/")
		if !ok {
			return nil, fmt.Errorf("trust source: %s is not in %s", p, repo)
		}
		if ref, ok := strings.CutPrefix(rest, "manifests/"); ok {
			d, err := remote.Get(repo.Tag(ref), opts...)
			if err != nil {
				return nil, err
			}
			return d.Manifest, nil
		}
		dgst, ok := strings.CutPrefix(rest, "blobs/")
		if !ok {
			return nil, fmt.Errorf("trust source: %s is neither a manifest nor a blob", p)
		}
		l, err := remote.Layer(repo.Digest(dgst), opts...)
		if err != nil {
			return nil, err
		}
		rc, err := l.Compressed()
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		b, err := io.ReadAll(io.LimitReader(rc, maxTrustFile+1))
		if err != nil {
			return nil, err
		}
		if len(b) > maxTrustFile {
			return nil, fmt.Errorf("trust source: %s is larger than %d bytes", p, maxTrustFile)
		}
		return b, nil
	}
}

// rawManifest is a manifest pushed as it is (remote.Put takes its media
// type from MediaType).
type rawManifest []byte

func (m rawManifest) RawManifest() ([]byte, error) { return m, nil }

func (m rawManifest) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }

var _ remote.Taggable = rawManifest(nil)

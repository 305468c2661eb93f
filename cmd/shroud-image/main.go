// Command shroud-image builds shroud's container image without a daemon:
// it cross-compiles the static binary (CGO_ENABLED=0) for each platform,
// and writes the image (an index when there are several platforms) to an
// OCI layout, pushes it, or both. The same source and SOURCE_DATE_EPOCH
// give the same digest.
//
//	go run ./cmd/shroud-image --out ./image --platform linux/amd64,linux/arm64
//	go run ./cmd/shroud-image --push registry.example.com/shroud:v1
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/shroud-oci/shroud/internal/ociimage"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(context.Background(), os.Args[1:], os.Stdout, log); err != nil {
		log.Error("shroud-image", "err", err)
		os.Exit(1)
	}
}

type options struct {
	out, push, platforms, version, source, licenses, caCerts, pkg string
	insecure                                                      bool
}

func run(ctx context.Context, args []string, stdout io.Writer, log *slog.Logger) error {
	var o options
	fs := flag.NewFlagSet("shroud-image", flag.ContinueOnError)
	fs.StringVar(&o.out, "out", "", "write the image to this OCI layout directory")
	fs.StringVar(&o.push, "push", "", "push the image to this reference")
	fs.BoolVar(&o.insecure, "insecure", false, "push over plain http")
	fs.StringVar(&o.platforms, "platform", "linux/amd64", "comma-separated os/arch[/variant] to build for")
	fs.StringVar(&o.version, "version", "", "org.opencontainers.image.version (default: git describe, or dev)")
	fs.StringVar(&o.source, "source", "https://github.com/shroud-oci/shroud", "org.opencontainers.image.source")
	fs.StringVar(&o.licenses, "licenses", "", "org.opencontainers.image.licenses (SPDX); empty leaves it out")
	fs.StringVar(&o.caCerts, "ca-certs", "/etc/ssl/certs/ca-certificates.crt", "PEM roots copied into the image")
	fs.StringVar(&o.pkg, "package", "./cmd/shroud", "the package of the shroud command")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.out == "" && o.push == "" {
		return errors.New("give --out DIR, --push REF or both")
	}
	certs, err := os.ReadFile(o.caCerts)
	if err != nil {
		return fmt.Errorf("CA certificates: %w", err)
	}
	revision := git(ctx, "rev-parse", "HEAD")
	if o.version == "" {
		if o.version = git(ctx, "describe", "--tags", "--always", "--dirty"); o.version == "" {
			o.version = "dev"
		}
	}
	created, err := sourceDate(ctx)
	if err != nil {
		return err
	}
	var plats []v1.Platform
	for _, p := range strings.Split(o.platforms, ",") {
		pl, err := v1.ParsePlatform(strings.TrimSpace(p))
		if err != nil || pl.OS == "" || pl.Architecture == "" {
			return fmt.Errorf("--platform %q: want os/arch[/variant]", p)
		}
		plats = append(plats, *pl)
	}
	tmp, err := os.MkdirTemp("", "shroud-image")
	if err != nil {
		return fmt.Errorf("temporary directory: %w", err)
	}
	defer os.RemoveAll(tmp)

	var imgs []v1.Image
	for _, pl := range plats {
		bin, err := compile(ctx, o.pkg, filepath.Join(tmp, "shroud-"+strings.ReplaceAll(pl.String(), "/", "-")), pl)
		if err != nil {
			return err
		}
		img, err := ociimage.Build(ociimage.Spec{
			Binary: bin, CACerts: certs, Platform: pl, Created: created,
			Version: o.version, Revision: revision, Source: o.source, Licenses: o.licenses,
		})
		if err != nil {
			return fmt.Errorf("image for %s: %w", pl, err)
		}
		d, err := img.Digest()
		if err != nil {
			return fmt.Errorf("image for %s: %w", pl, err)
		}
		log.Info("built image", "platform", pl.String(), "digest", d.String(), "binary_bytes", len(bin))
		imgs = append(imgs, img)
	}

	var top interface{ Digest() (v1.Hash, error) }
	var idx v1.ImageIndex
	if len(imgs) == 1 {
		top = imgs[0]
	} else {
		idx = mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
		for i, img := range imgs {
			idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &plats[i]}})
		}
		top = idx
	}
	if o.out != "" {
		if err := writeLayout(o.out, imgs, idx, plats); err != nil {
			return err
		}
		log.Info("wrote OCI layout", "dir", o.out)
	}
	if o.push != "" {
		var nopts []name.Option
		if o.insecure {
			nopts = append(nopts, name.Insecure)
		}
		ref, err := name.ParseReference(o.push, nopts...)
		if err != nil {
			return fmt.Errorf("--push %q: %w", o.push, err)
		}
		ropts := []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)}
		if idx != nil {
			err = remote.WriteIndex(ref, idx, ropts...)
		} else {
			err = remote.Write(ref, imgs[0], ropts...)
		}
		if err != nil {
			return fmt.Errorf("push %s: %w", ref, err)
		}
		log.Info("pushed", "ref", ref.String())
	}
	d, err := top.Digest()
	if err != nil {
		return fmt.Errorf("digest: %w", err)
	}
	fmt.Fprintln(stdout, d.String())
	return nil
}

// writeLayout writes the image (or index) to an OCI layout at dir, its
// index.json naming it once.
func writeLayout(dir string, imgs []v1.Image, idx v1.ImageIndex, plats []v1.Platform) error {
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("OCI layout %s: %w", dir, err)
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("OCI layout %s: %w", dir, err)
	}
	if idx != nil {
		err = p.AppendIndex(idx)
	} else {
		err = p.AppendImage(imgs[0], layout.WithPlatform(plats[0]))
	}
	if err != nil {
		return fmt.Errorf("OCI layout %s: %w", dir, err)
	}
	return nil
}

// compile builds a static shroud for pl and returns its bytes.
func compile(ctx context.Context, pkg, out string, pl v1.Platform) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false",
		"-ldflags", "-s -w -buildid=", "-o", out, pkg)
	env := append(os.Environ(), "CGO_ENABLED=0", "GOOS="+pl.OS, "GOARCH="+pl.Architecture)
	if pl.Variant != "" && pl.Architecture == "arm" {
		env = append(env, "GOARM="+strings.TrimPrefix(pl.Variant, "v"))
	}
	cmd.Env = env
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build %s for %s: %w\n%s", pkg, pl, err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return nil, fmt.Errorf("read the built binary: %w", err)
	}
	return b, nil
}

// sourceDate is SOURCE_DATE_EPOCH, else the commit's time, else 0.
func sourceDate(ctx context.Context) (time.Time, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		s = git(ctx, "log", "-1", "--format=%ct")
	}
	if s == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH %q: %w", s, err)
	}
	return time.Unix(n, 0).UTC(), nil
}

// git runs git and returns its trimmed output, or "" when it fails (no
// git, not a checkout).
func git(ctx context.Context, args ...string) string {
	b, err := exec.CommandContext(ctx, "git", args...).Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

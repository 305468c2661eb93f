package trust

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/theupdateframework/go-tuf/v2/metadata/fetcher"
)

// Media types of the OCI artifact that carries a trust repository.
const (
	ArtifactType  = "application/vnd.shroud.trust.v1"
	FileMediaType = "application/vnd.shroud.trust.file.v1+json"
)

// maxArtifactManifest bounds the artifact's manifest (what registries
// accept for a manifest).
const maxArtifactManifest = 4 << 20

// RegistryFetch reads from the registry: name is the distribution API
// path below /v2/ ("team/trust/manifests/trust",
// "team/trust/blobs/sha256:..."); a manifest is asked for as an OCI image
// manifest. The caller (the proxy) supplies it with its upstream client.
type RegistryFetch func(ctx context.Context, name string) ([]byte, error)

// OCISource reads a trust repository stored in the registry itself, so
// that every replica and every site sees the same documents: the files
// are the layers of an OCI artifact manifest (artifactType ArtifactType)
// tagged tag in repository, each titled (org.opencontainers.image.title)
// with its path in the repository layout ("metadata/1.root.json",
// "targets/team-a/<sha256>.recipients.json"). The registry is not
// trusted: every blob is checked against its descriptor's digest and
// size, and TUF checks the rest. One refresh reads the manifest once, so
// it sees one state of the repository.
func OCISource(repository, tag string, fetch RegistryFetch) Source {
	return Source{
		Name:        "oci:" + repository + ":" + tag,
		MetadataURL: metadataDir + "/",
		TargetsURL:  targetsDir + "/",
		Fetcher: func(ctx context.Context) fetcher.Fetcher {
			a := &artifact{repository: repository, tag: tag, fetch: fetch}
			return fetchFunc(func(name string, maxLength int64) ([]byte, error) {
				return a.file(ctx, name, maxLength)
			})
		},
	}
}

// artifact is the trust artifact as one refresh sees it.
type artifact struct {
	repository, tag string
	fetch           RegistryFetch

	once  sync.Once
	files map[string]ocispec.Descriptor
	err   error
}

func (a *artifact) load(ctx context.Context) error {
	a.once.Do(func() {
		raw, err := a.fetch(ctx, a.repository+"/manifests/"+a.tag)
		if err != nil {
			a.err = fmt.Errorf("trust artifact %s:%s: %w", a.repository, a.tag, err)
			return
		}
		if len(raw) > maxArtifactManifest {
			a.err = fmt.Errorf("trust artifact %s:%s: manifest of %d bytes exceeds %d", a.repository, a.tag, len(raw), maxArtifactManifest)
			return
		}
		var m ocispec.Manifest
		if err := json.Unmarshal(raw, &m); err != nil {
			a.err = fmt.Errorf("trust artifact %s:%s: %w", a.repository, a.tag, err)
			return
		}
		if m.MediaType != ocispec.MediaTypeImageManifest || m.ArtifactType != ArtifactType {
			a.err = fmt.Errorf("trust artifact %s:%s: not a shroud trust artifact (media type %q, artifact type %q)", a.repository, a.tag, m.MediaType, m.ArtifactType)
			return
		}
		a.files = make(map[string]ocispec.Descriptor, len(m.Layers))
		for _, l := range m.Layers {
			title := l.Annotations[ocispec.AnnotationTitle]
			if title == "" {
				continue
			}
			if _, dup := a.files[title]; dup {
				a.err = fmt.Errorf("trust artifact %s:%s: two files titled %q", a.repository, a.tag, title)
				return
			}
			a.files[title] = l
		}
	})
	return a.err
}

func (a *artifact) file(ctx context.Context, name string, maxLength int64) ([]byte, error) {
	if err := a.load(ctx); err != nil {
		return nil, err
	}
	d, ok := a.files[strings.TrimPrefix(name, "/")]
	if !ok {
		return nil, notFound(name)
	}
	if d.Size > maxLength {
		return nil, tooLong(name, d.Size, maxLength)
	}
	if err := d.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("trust artifact: %s: %w", name, err)
	}
	data, err := a.fetch(ctx, a.repository+"/blobs/"+d.Digest.String())
	if err != nil {
		return nil, fmt.Errorf("trust artifact: %s: %w", name, err)
	}
	if int64(len(data)) != d.Size || d.Digest.Algorithm().FromBytes(data) != d.Digest {
		return nil, fmt.Errorf("trust artifact: %s: blob does not match its descriptor %s (%d bytes)", name, d.Digest, d.Size)
	}
	return data, nil
}

// ArtifactLayer is the descriptor of one file of a trust artifact.
func ArtifactLayer(name string, data []byte) ocispec.Descriptor {
	return ocispec.Descriptor{
		MediaType:   FileMediaType,
		Digest:      digest.FromBytes(data),
		Size:        int64(len(data)),
		Annotations: map[string]string{ocispec.AnnotationTitle: name},
	}
}

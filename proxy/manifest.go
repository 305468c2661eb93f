package proxy

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Manifest media types.
const (
	mediaTypeOCIManifest    = ocispec.MediaTypeImageManifest
	mediaTypeOCIIndex       = ocispec.MediaTypeImageIndex
	mediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	mediaTypeDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
	mediaTypeDockerSchema1  = "application/vnd.docker.distribution.manifest.v1+json"
	mediaTypeDockerSigned1  = "application/vnd.docker.distribution.manifest.v1+prettyjws"
)

// manifest is an image manifest or an index, parsed so that its
// descriptors can be rewritten while every other field is kept as it was.
type manifest struct {
	raw         map[string]json.RawMessage
	mediaType   string
	config      *ocispec.Descriptor
	layers      []ocispec.Descriptor
	manifests   []ocispec.Descriptor
	subject     *ocispec.Descriptor
	annotations map[string]string
}

func (m *manifest) isIndex() bool { return m.raw["manifests"] != nil }

// parseManifest reads an OCI or Docker schema 2 manifest or index. The
// media type comes from the body, or else from contentType.
func parseManifest(body []byte, contentType string) (*manifest, error) {
	invalid := func(format string, args ...any) error {
		return apiErr(http.StatusBadRequest, codeManifestInvalid, format, args...)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, invalid("manifest is not a JSON object: %v", err)
	}
	m := &manifest{raw: raw}
	var version int
	if err := unmarshalField(raw, "schemaVersion", &version); err != nil {
		return nil, invalid("schemaVersion: %v", err)
	}
	if err := unmarshalField(raw, "mediaType", &m.mediaType); err != nil {
		return nil, invalid("mediaType: %v", err)
	}
	if m.mediaType == "" {
		m.mediaType = contentType
	}
	if version == 1 || m.mediaType == mediaTypeDockerSchema1 || m.mediaType == mediaTypeDockerSigned1 {
		return nil, invalid("Docker schema 1 manifests are not supported: push a schema 2 or OCI manifest")
	}
	if version != 2 {
		return nil, invalid("schemaVersion is %d, want 2", version)
	}
	for _, f := range []struct {
		key string
		dst any
	}{{"config", &m.config}, {"layers", &m.layers}, {"manifests", &m.manifests}, {"subject", &m.subject}, {"annotations", &m.annotations}} {
		if err := unmarshalField(raw, f.key, f.dst); err != nil {
			return nil, invalid("%s: %v", f.key, err)
		}
	}
	switch {
	case m.isIndex() && (m.config != nil || m.layers != nil):
		return nil, invalid("a manifest cannot have both manifests and layers")
	case !m.isIndex() && m.config == nil:
		return nil, invalid("an image manifest needs a config")
	}
	for _, d := range m.descriptors() {
		if err := d.Digest.Validate(); err != nil {
			return nil, invalid("descriptor digest %q: %v", d.Digest, err)
		}
		if d.Size < 0 {
			return nil, invalid("descriptor %s has a negative size", d.Digest)
		}
	}
	return m, nil
}

// descriptors lists every descriptor of m.
func (m *manifest) descriptors() []*ocispec.Descriptor {
	var out []*ocispec.Descriptor
	if m.config != nil {
		out = append(out, m.config)
	}
	for i := range m.layers {
		out = append(out, &m.layers[i])
	}
	for i := range m.manifests {
		out = append(out, &m.manifests[i])
	}
	if m.subject != nil {
		out = append(out, m.subject)
	}
	return out
}

func unmarshalField(raw map[string]json.RawMessage, key string, dst any) error {
	v, ok := raw[key]
	if !ok || string(v) == "null" {
		return nil
	}
	return json.Unmarshal(v, dst)
}

// marshal writes m back, keeping the fields shroud does not rewrite.
func (m *manifest) marshal() ([]byte, error) {
	out := maps.Clone(m.raw)
	set := func(key string, v any, present bool) error {
		if !present {
			delete(out, key)
			return nil
		}
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("marshal %s: %w", key, err)
		}
		out[key] = b
		return nil
	}
	for _, err := range []error{
		set("mediaType", m.mediaType, m.mediaType != ""),
		set("config", m.config, m.config != nil),
		set("layers", m.layers, m.raw["layers"] != nil || len(m.layers) > 0),
		set("manifests", m.manifests, m.isIndex()),
		set("subject", m.subject, m.subject != nil),
		set("annotations", m.annotations, len(m.annotations) > 0),
	} {
		if err != nil {
			return nil, err
		}
	}
	return json.Marshal(out)
}

// isDigest says whether a manifest reference is a digest (else a tag).
func isDigest(ref string) (digest.Digest, bool) {
	d, err := digest.Parse(ref)
	return d, err == nil
}

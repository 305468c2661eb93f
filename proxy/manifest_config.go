package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/proxy/upstream"
)

// maxConfig bounds the config bytes shroud reads to check and decide on:
// configs are small (distribution and containerd read them whole).
const maxConfig = 4 << 20

// Config media types whose content shroud knows.
const (
	mediaTypeOCIConfig    = ocispec.MediaTypeImageConfig
	mediaTypeDockerConfig = "application/vnd.docker.container.image.v1+json"
	mediaTypeEmpty        = "application/vnd.oci.empty.v1+json"
)

// emptyJSONDigest is the digest of {}, the OCI empty descriptor's content.
var emptyJSONDigest = digest.FromBytes([]byte("{}"))

// prepareConfig makes sure the upstream holds an image's config in
// plaintext (every ocicrypt consumer needs it so) and says whether the
// rule's platforms encrypt the image. Every decision comes from the
// client's own config bytes, verified against their digest (shroud's
// ciphertext of what the client uploaded, or the upstream's copy checked
// against the digest), never from what the upstream returns unverified.
// A config that names no platform, or one shroud cannot read, is
// encrypted: where shroud cannot decide, it encrypts.
//
// A config is refused when it is a blob a manifest of the repository
// names as a layer (storing "the config" would put the layer upstream in
// plaintext), when a known config type does not parse as one, or when it
// is a layer archive by its first bytes.
func (h *Handler) prepareConfig(ctx context.Context, be *backend, repo string, cfg ocispec.Descriptor, rule *crypto.Rule) (encrypts bool, err error) {
	invalid := func(format string, args ...any) (bool, error) {
		return false, apiErr(http.StatusBadRequest, codeManifestInvalid, "config %s: "+format, append([]any{cfg.Digest}, args...)...)
	}
	b, mapped := h.blobMapping(ctx, be, repo, cfg.Digest)
	// The empty JSON {} is both the OCI empty config and the empty layer
	// of artifacts; its two bytes are no secret.
	if mapped && b.Layer && cfg.Digest != emptyJSONDigest {
		// Unless the upstream holds it in plaintext already (an image
		// pushed again through a replica that knows its config only
		// through the blob pointer, which counts it as a layer):
		// nothing is stored, and its copy is read against the digest.
		if _, ok, err := be.cl.HeadBlob(ctx, repo, cfg.Digest); err != nil {
			return false, err
		} else if !ok {
			return invalid("the blob is a layer of another manifest of %s; a layer is never stored in plaintext as a config", repo)
		}
		mapped = false
	}
	if mapped && !b.Bound {
		mapped = false // not shroud's own ciphertext: only the upstream's plaintext copy counts
	}
	if mapped && b.WrappedFor != nil && b.Pending == nil {
		// Encrypt-only, its key dropped once a manifest named it: shroud
		// cannot open its ciphertext, the upstream's plaintext copy
		// (checked against the digest) is the config.
		mapped = false
	}
	if mapped && b.Size != cfg.Size {
		return invalid("the manifest says %d bytes, %d were pushed", cfg.Size, b.Size)
	}
	if cfg.Size > maxConfig {
		// Too large to read here: stored as pushed (streamed), and the
		// platform cannot be told, so the layers are encrypted.
		return true, h.storeAsPushed(ctx, be, repo, cfg, "config")
	}
	var data []byte
	if mapped {
		r, err := h.openBlob(ctx, be, repo, b)
		if err != nil {
			return false, fmt.Errorf("config %s: %w", cfg.Digest, err)
		}
		data, err = io.ReadAll(io.LimitReader(r, maxConfig)) // verified at its end
		r.Close()
		if err != nil {
			return false, fmt.Errorf("config %s: %w", cfg.Digest, err)
		}
	} else {
		if data, err = h.upstreamConfig(ctx, be, repo, cfg); err != nil {
			return false, err
		}
	}
	if err := checkConfig(cfg.MediaType, data); err != nil {
		return invalid("%v", err)
	}
	if mapped {
		if _, ok, err := be.cl.HeadBlob(ctx, repo, cfg.Digest); err != nil {
			return false, err
		} else if !ok {
			if err := h.uploadPlain(ctx, be, repo, cfg.Digest, bytes.NewReader(data), int64(len(data)), "config"); err != nil {
				return false, err
			}
		}
		h.settled(ctx, be, b)
	}
	return encryptsPlatform(rule, cfg.MediaType, data), nil
}

// upstreamConfig reads a config the upstream holds in plaintext (pushed
// before shroud, or mounted), checked against its digest.
func (h *Handler) upstreamConfig(ctx context.Context, be *backend, repo string, cfg ocispec.Descriptor) ([]byte, error) {
	resp, err := be.cl.GetBlob(ctx, repo, cfg.Digest, "")
	if err != nil {
		if upstream.IsStatus(err, http.StatusNotFound) {
			return nil, apiErr(http.StatusBadRequest, codeManifestBlobUnknown, "config %s is unknown to repository %s", cfg.Digest, repo)
		}
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxConfig+1))
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", cfg.Digest, err)
	}
	if !cfg.Digest.Algorithm().Available() || cfg.Digest.Algorithm().FromBytes(data) != cfg.Digest {
		return nil, fmt.Errorf("the upstream's config %s does not match its digest", cfg.Digest)
	}
	return data, nil
}

// checkConfig refuses config bytes that are not what their media type
// says, or that are a layer archive (gzip, zstd or tar).
func checkConfig(mediaType string, data []byte) error {
	switch {
	case bytes.HasPrefix(data, []byte{0x1f, 0x8b}), bytes.HasPrefix(data, []byte{0x28, 0xb5, 0x2f, 0xfd}),
		len(data) >= 262 && string(data[257:262]) == "ustar":
		return fmt.Errorf("it is a layer archive (gzip, zstd or tar), not a config")
	}
	switch mediaType {
	case mediaTypeEmpty:
		if string(data) != "{}" {
			return fmt.Errorf("an %s config must be {}", mediaTypeEmpty)
		}
	case mediaTypeOCIConfig, mediaTypeDockerConfig:
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(data, &obj); err != nil {
			return fmt.Errorf("it does not parse as an image config: %v", err)
		}
	}
	return nil
}

// encryptsPlatform says whether rule encrypts the image whose verified
// config bytes are data: with platforms listed, only an image config that
// names an os and architecture none of them matches is left in plaintext.
func encryptsPlatform(rule *crypto.Rule, mediaType string, data []byte) bool {
	if len(rule.Platforms) == 0 || (mediaType != mediaTypeOCIConfig && mediaType != mediaTypeDockerConfig) {
		return true
	}
	var p struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
		Variant      string `json:"variant"`
	}
	if json.Unmarshal(data, &p) != nil || p.OS == "" || p.Architecture == "" {
		return true
	}
	return rule.EncryptsPlatform(p.OS, p.Architecture, p.Variant)
}

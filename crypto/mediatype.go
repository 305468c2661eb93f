package crypto

import "strings"

// Media types a layer can have, plain and encrypted.
const (
	MediaTypeDockerLayer        = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	MediaTypeDockerForeignLayer = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
	MediaTypeOCILayerGzip       = "application/vnd.oci.image.layer.v1.tar+gzip"
	encryptedSuffix             = "+encrypted"
)

// EncryptedMediaType is the media type of layer m once encrypted, as ocicrypt
// writes it: OCI layer types gain "+encrypted", Docker's gzip layer becomes
// the OCI gzip layer type, any other type M becomes M+encrypted.
func EncryptedMediaType(m string) string {
	if IsEncryptedMediaType(m) {
		return m
	}
	if m == MediaTypeDockerLayer {
		return MediaTypeOCILayerGzip + encryptedSuffix
	}
	return m + encryptedSuffix
}

// PlainMediaType strips "+encrypted" from m.
func PlainMediaType(m string) string { return strings.TrimSuffix(m, encryptedSuffix) }

// IsEncryptedMediaType says whether m names an encrypted layer.
func IsEncryptedMediaType(m string) bool { return strings.HasSuffix(m, encryptedSuffix) }

// IsNonDistributable says whether m names a foreign or non-distributable
// layer, which registries need not hold and clients fetch from its URLs.
func IsNonDistributable(m string) bool {
	return m == MediaTypeDockerForeignLayer || strings.Contains(m, ".nondistributable.")
}

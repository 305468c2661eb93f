package proxy

import (
	"bytes"
	"testing"
)

// Manifests come from clients and from the hostile upstream: parsing
// never panics, and what parses marshals back to something that parses
// with the same descriptors.
func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip+encrypted","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2,"annotations":{"org.opencontainers.image.enc.keys.jwe":"eA=="},"data":"e30="}]}`), "")
	f.Add([]byte(`{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2}],"subject":{"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":-1}}`), "application/vnd.oci.image.index.v1+json")
	f.Add([]byte(`{"schemaVersion":1}`), "application/vnd.docker.distribution.manifest.v1+prettyjws")
	f.Fuzz(func(t *testing.T, body []byte, contentType string) {
		m, err := parseManifest(body, contentType)
		if err != nil {
			return
		}
		out, err := m.marshal()
		if err != nil {
			t.Fatalf("marshal of a parsed manifest: %v", err)
		}
		m2, err := parseManifest(out, contentType)
		if err != nil {
			t.Fatalf("re-parse: %v (%s)", err, out)
		}
		if len(m2.descriptors()) != len(m.descriptors()) {
			t.Fatalf("descriptors %d -> %d", len(m.descriptors()), len(m2.descriptors()))
		}
	})
}

// Range and Content-Range headers come from clients and the upstream: a
// parsed range lies inside the blob.
func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"bytes=0-", "bytes=-1", "bytes=5-2", "bytes=0-99999999999999999999", "bytes=1-2,3-4", "bytes=-0", "0-0", "bytes 0-9/10"} {
		f.Add(s, int64(10))
	}
	f.Fuzz(func(t *testing.T, h string, size int64) {
		if size < 0 {
			size = -size
		}
		if r, partial, err := parseRange(h, size); err == nil && partial {
			if r.start < 0 || r.end < r.start || r.end >= size {
				t.Fatalf("parseRange(%q, %d) = %+v outside the blob", h, size, r)
			}
		}
		if start, end, ok := parseContentRange(h); ok && (start < 0 || end < start) {
			t.Fatalf("parseContentRange(%q) = %d-%d", h, start, end)
		}
		if err := checkConfig("application/vnd.oci.image.config.v1+json", []byte(h)); err == nil && bytes.HasPrefix([]byte(h), []byte{0x1f, 0x8b}) {
			t.Fatal("a gzip stream passed as a config")
		}
	})
}

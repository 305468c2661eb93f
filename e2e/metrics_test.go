package e2e

import (
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"
)

// scrape reads a Prometheus endpoint.
func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return string(b)
}

// sample is the value of the first series of name whose labels match
// labels (a regexp over the label set), or -1.
func sample(text, name, labels string) float64 {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `\{[^}]*` + labels + `[^}]*\} (\S+)$`).FindStringSubmatch(text)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// --metrics-listen serves Prometheus figures on a port of its own: after
// skopeo pushed and pulled an image through the binary, the bytes it
// encrypted are exactly the image's blobs, the manifest is counted under
// its rule, and the process and Go runtime figures are there. The API
// port does not serve them.
func TestServeMetrics(t *testing.T) {
	bin := buildShroud(t)
	maddr := freeAddr(t)
	addr, _, _ := startShroud(t, bin, "--data-dir", t.TempDir(), "--metrics-listen", maddr)
	src, img := ociLayout(t, 2, 150_000)
	skopeo(t, "copy", "--dest-tls-verify=false", src, "docker://"+addr+"/team/app:1")
	skopeo(t, "copy", "--src-tls-verify=false", "docker://"+addr+"/team/app:1", "oci:"+t.TempDir()+":app")

	cfg, _ := img.RawConfigFile()
	blobs := float64(len(cfg))
	var layers float64
	ls, _ := img.Layers()
	for _, l := range ls {
		n, _ := l.Size()
		layers += float64(n)
	}
	blobs += layers
	text := scrape(t, "http://"+maddr+"/metrics")
	if got := sample(text, "shroud_blob_bytes_total", `shroud_direction="encrypt"`); got != blobs {
		t.Errorf("encrypted bytes %v, want %v (the image's blobs)", got, blobs)
	}
	if got := sample(text, "shroud_blob_bytes_total", `shroud_direction="decrypt"`); got < layers {
		t.Errorf("decrypted bytes %v, want at least the layers' %v", got, layers)
	}
	if got := sample(text, "shroud_manifests_stored_total", `shroud_rule="policy rule 0 \(encrypt \\"\*\*\\"\)"`); got != 1 {
		t.Errorf("manifests stored %v, want 1", got)
	}
	if got := sample(text, "http_server_request_duration_seconds_count", `shroud_route="manifests"`); got < 1 {
		t.Errorf("no manifest requests in the request histogram")
	}
	for _, name := range []string{"process_resident_memory_bytes", "go_goroutines"} {
		if !regexp.MustCompile(`(?m)^` + name + ` `).MatchString(text) {
			t.Errorf("no %s", name)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", text)
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("the API port answers /metrics: %s", resp.Status)
	}
}

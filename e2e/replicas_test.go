package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"

	"github.com/shroud-oci/shroud/internal/shroudtest"
)

// Two shroud replicas holding one identity and one Redis, behind nginx
// balancing round-robin with no affinity: skopeo pushes a multi-layer
// image through the balancer, and its uploads' chunks and commits land
// on different replicas (each continues the session the other started);
// the image pulls back by tag and by digest byte for byte; the
// registry's storage holds no plaintext of any layer; and a push of the
// same image to another repository stores no new layer blob upstream
// (whichever replica it lands on knows the layers, from the Redis).
func TestReplicasBehindBalancer(t *testing.T) {
	rs := startReplicaSet(t)
	src, img := ociLayout(t, 6, 300_000)
	skopeo(t, "copy", "--dest-tls-verify=false", src, "docker://"+rs.host()+"/team/app:1")

	reqs := rs.lb.requests(t)
	counts := rs.perReplica(reqs)
	t.Logf("requests per replica (nginx access log) for the push: %s", counts)
	split := uploadsSplit(reqs)
	t.Logf("uploads whose PATCH and PUT went to different replicas: %d of %d", split.split, split.sessions)
	if split.split == 0 {
		t.Fatalf("no upload had its PATCH and PUT on different replicas (%d uploads): the balancer did not spread the push\n%s", split.sessions, counts)
	}
	for _, r := range rs.replicas {
		if r.requestLines("PATCH", "/blobs/uploads/") == 0 || r.requestLines("PUT", "/blobs/uploads/") == 0 {
			t.Fatalf("%s logged no PATCH or no PUT of an upload: the push did not use both replicas\n%s", r.name, r.proc.logs)
		}
	}

	back := filepath.Join(t.TempDir(), "by-tag")
	skopeo(t, "copy", "--src-tls-verify=false", "docker://"+rs.host()+"/team/app:1", "oci:"+back+":app")
	assertSameImage(t, img, back)
	d := digestOf(t, img)
	byDigest := filepath.Join(t.TempDir(), "by-digest")
	skopeo(t, "copy", "--src-tls-verify=false", "docker://"+rs.host()+"/team/app@"+d, "oci:"+byDigest+":app")
	assertSameImage(t, img, byDigest)

	rs.assertNoPlaintext(t, img)

	before := layerBlobFiles(t, rs.storage)
	if before < 6 {
		t.Fatalf("%d layer blobs upstream after pushing 6 layers", before)
	}
	skopeo(t, "copy", "--dest-tls-verify=false", src, "docker://"+rs.host()+"/other/app:1")
	if after := layerBlobFiles(t, rs.storage); after != before {
		t.Fatalf("the same image pushed to another repository through the balancer: %d layer blobs upstream before, %d after; want no new one", before, after)
	}
	again := filepath.Join(t.TempDir(), "other")
	skopeo(t, "copy", "--src-tls-verify=false", "docker://"+rs.host()+"/other/app@"+d, "oci:"+again+":app")
	assertSameImage(t, img, again)
	t.Logf("requests per replica (nginx access log), whole test: %s", rs.perReplica(rs.lb.requests(t)))
}

// perReplica counts the balancer's requests by the replica that
// answered them and by method.
func (rs *replicaSet) perReplica(reqs []balancedRequest) string {
	byReplica := map[string]map[string]int{}
	for _, r := range reqs {
		if len(r.upstreams) == 0 {
			continue
		}
		name := r.upstreams[len(r.upstreams)-1]
		if rp := rs.byAddr(name); rp != nil {
			name = rp.name
		}
		if byReplica[name] == nil {
			byReplica[name] = map[string]int{}
		}
		byReplica[name][r.method]++
	}
	var out []string
	for name, m := range byReplica {
		var ms []string
		for method, n := range m {
			ms = append(ms, method+"="+strconv.Itoa(n))
		}
		sort.Strings(ms)
		out = append(out, name+" "+strings.Join(ms, " "))
	}
	sort.Strings(out)
	return strings.Join(out, "; ")
}

var uploadPath = regexp.MustCompile(`/blobs/uploads/([a-f0-9]+)$`)

// uploadsSplit counts the upload sessions in the access log, and those
// whose PATCH and PUT were answered by different replicas.
func uploadsSplit(reqs []balancedRequest) (s struct{ sessions, split int }) {
	patch, put := map[string]string{}, map[string]string{}
	for _, r := range reqs {
		m := uploadPath.FindStringSubmatch(r.uri)
		if m == nil || len(r.upstreams) == 0 {
			continue
		}
		at := r.upstreams[len(r.upstreams)-1]
		switch r.method {
		case "PATCH":
			patch[m[1]] = at
		case "PUT":
			put[m[1]] = at
		}
	}
	for id, p := range patch {
		if q, ok := put[id]; ok {
			s.sessions++
			if p != q {
				s.split++
			}
		}
	}
	return s
}

// assertNoPlaintext reads every file of the registry's storage for the
// first bytes of each of the images' layers (the suite's storage scan).
func (rs *replicaSet) assertNoPlaintext(t *testing.T, imgs ...v1.Image) {
	t.Helper()
	var prefixes [][]byte
	for _, img := range imgs {
		prefixes = append(prefixes, layerPrefixes(t, img)...)
	}
	rs.assertNoPlaintextBytes(t, prefixes...)
}

// assertNoPlaintextBytes reads every file of the registry's storage for
// each of prefixes (the first bytes of layers pushed).
func (rs *replicaSet) assertNoPlaintextBytes(t *testing.T, prefixes ...[]byte) {
	t.Helper()
	scan := &sharedUpstream{up: shroudtest.Upstream{Dir: rs.storage}, plains: prefixes}
	if err := scan.checkNoPlaintext(); err != nil {
		t.Fatal(err)
	}
	if scan.files == 0 {
		t.Fatalf("the storage scan read no file under %s", rs.storage)
	}
	t.Logf("storage scan: %d files, none holds plaintext of the %d layers", scan.files, len(scan.plains))
}

// layerBlobFiles counts the registry's blob files that are not JSON
// (manifests and configs are; encrypted layers are not).
func layerBlobFiles(t *testing.T, storage string) int {
	t.Helper()
	n := 0
	for _, p := range shroudtest.BlobFiles(t, storage) {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 1)
		f.Read(b)
		f.Close()
		if b[0] != '{' {
			n++
		}
	}
	return n
}

// A replica dies (kill -9) while a 64 MiB layer streams through it: the
// client's retry of the blob upload (a new POST, as clients retry)
// succeeds through the balancer on the other replica, and the image
// pulls back byte for byte. Then, with the killed replica back, a
// replica is stopped (SIGTERM) under a slow pull: its /readyz answers
// 503 at once, the pull in flight completes byte for byte, and the
// process exits within its drain timeout; the balancer's next pull goes
// to the other replica.
func TestReplicaKilledMidPush(t *testing.T) {
	// A drain delay, as an operator sets one, gives the balancer the
	// time to see /readyz turn 503 (with none the listener closes at
	// once and a probe is refused instead).
	const drainDelay, drainTimeout = 2 * time.Second, 20 * time.Second
	rs := startReplicaSet(t, "--drain-delay", drainDelay.String(), "--drain-timeout", drainTimeout.String())
	c := registryClient{t: t, base: "http://" + rs.host(), repo: "big/app"}
	layer := make([]byte, 64<<20)
	rand.Read(layer)
	layerDigest := digest.FromBytes(layer)

	// The first attempt: a streamed PATCH (no length, as docker sends
	// it), held after 16 MiB until its replica is killed.
	loc := c.startUpload()
	pr, pw := io.Pipe()
	reached, resume := make(chan struct{}), make(chan struct{})
	go func() {
		const chunk = 1 << 20
		for off := 0; off < len(layer); off += chunk {
			if off == 16<<20 {
				close(reached)
				<-resume
			}
			if _, err := pw.Write(layer[off : off+chunk]); err != nil {
				return
			}
		}
		pw.Close()
	}()
	type result struct {
		status int
		err    error
	}
	done := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest("PATCH", loc, pr)
		req.Header.Set("Content-Type", "application/octet-stream")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- result{err: err}
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		done <- result{status: resp.StatusCode}
	}()
	select {
	case <-reached:
	case r := <-done:
		t.Fatalf("the streamed PATCH ended before 16 MiB: %+v", r)
	case <-time.After(30 * time.Second):
		t.Fatal("16 MiB of the PATCH were not taken within 30s")
	}
	victim := rs.streaming(t, "shroud_uploads_active")
	victim.proc.kill(t)
	t.Logf("killed %s (kill -9) with 16 MiB of the 64 MiB layer sent through it", victim.name)
	close(resume)
	defer pw.CloseWithError(errors.New("the test stopped sending"))
	select {
	case r := <-done:
		if r.err == nil && r.status < 300 {
			t.Fatalf("the PATCH through the killed replica answered %d", r.status)
		}
		var ue *url.Error
		if errors.As(r.err, &ue) {
			r.err = ue.Err // without the URL and its sealed state
		}
		t.Logf("the client's first attempt failed, as it should: error %v, status %d", r.err, r.status)
	case <-time.After(60 * time.Second):
		t.Fatal("the PATCH through the killed replica did not end within 60s")
	}

	// The retry, as a client retries a failed blob: a new upload.
	start := time.Now()
	c.pushBlob(layer)
	t.Logf("the retried 64 MiB upload through the balancer took %v", time.Since(start).Round(time.Millisecond))
	cfg := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["` + layerDigest.String() + `"]}}`)
	c.pushBlob(cfg)
	manifest := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",` +
		`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` + digest.FromBytes(cfg).String() + `","size":` + strconv.Itoa(len(cfg)) + `},` +
		`"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"` + layerDigest.String() + `","size":` + strconv.Itoa(len(layer)) + `}]}`)
	c.putManifest("1", manifest)
	c.assertImage("1", manifest, layer)
	c.assertImage(digest.FromBytes(manifest).String(), manifest, layer)
	t.Logf("requests per replica (nginx access log) after the kill and retry: %s", rs.perReplica(rs.lb.requests(t)))

	// The killed replica comes back; then one is drained under a pull.
	victim.start()
	pullsBefore := map[*replica]float64{}
	for _, r := range rs.replicas {
		pullsBefore[r] = r.metricSum(t, "shroud_blob_pulls_total")
	}
	resp := c.get("/v2/big/app/blobs/"+layerDigest.String(), 200)
	defer resp.Body.Close()
	h := sha256.New()
	if _, err := io.CopyN(h, resp.Body, 4<<20); err != nil {
		t.Fatalf("the first 4 MiB of the pull: %v", err)
	}
	var draining *replica
	for _, r := range rs.replicas {
		if r.metricSum(t, "shroud_blob_pulls_total") > pullsBefore[r] {
			draining = r
		}
	}
	if draining == nil {
		t.Fatal("no replica counted the pull in flight (shroud_blob_pulls_total)")
	}
	sigterm := time.Now()
	draining.proc.signal(t, syscall.SIGTERM)
	// /readyz turns 503 at once: poll it briefly, the signal is async.
	var status int
	var body map[string]any
	var raw string
	for time.Since(sigterm) < time.Second {
		if status, body, raw = draining.ready(t); status == 503 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if status != 503 || body["draining"] != true {
		t.Fatalf("%s /readyz %v after SIGTERM: %d %s, want 503 draining", draining.name, time.Since(sigterm), status, raw)
	}
	t.Logf("%s /readyz %v after SIGTERM: %d %s", draining.name, time.Since(sigterm).Round(time.Millisecond), status, raw)
	time.Sleep(drainDelay + time.Second)
	if !draining.proc.running() {
		t.Fatalf("%s exited with a pull in flight:\n%s", draining.name, draining.proc.logs)
	}
	// The client reads the rest slowly (4 MiB a tenth of a second).
	for {
		n, err := io.CopyN(h, resp.Body, 4<<20)
		if err == io.EOF && n >= 0 {
			break
		}
		if err != nil {
			t.Fatalf("the pull in flight on the draining %s broke: %v\n%s", draining.name, err, draining.proc.logs)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != layerDigest.String() {
		t.Fatalf("the pull in flight during the drain got %s, want %s", got, layerDigest)
	}
	pulled := time.Now()
	select {
	case <-draining.proc.exited:
		if draining.proc.err != nil {
			t.Fatalf("%s exited with %v after the drain:\n%s", draining.name, draining.proc.err, draining.proc.logs)
		}
		t.Logf("%s exited cleanly %v after SIGTERM, %v after its pull completed (drain delay %v, timeout %v)", draining.name,
			time.Since(sigterm).Round(time.Millisecond), time.Since(pulled).Round(time.Millisecond), drainDelay, drainTimeout)
	case <-time.After(time.Until(sigterm.Add(drainDelay + drainTimeout + time.Second))):
		t.Fatalf("%s still running %v after SIGTERM (drain delay %v, timeout %v):\n%s", draining.name, time.Since(sigterm), drainDelay, drainTimeout, draining.proc.logs)
	}
	c.assertImage(digest.FromBytes(manifest).String(), manifest, layer)
	rs.assertNoPlaintextBytes(t, layer[:4096], layer[32<<20:32<<20+4096])
}

// streaming is the replica with a request of the gauge in flight (polled
// for up to 10 s).
func (rs *replicaSet) streaming(t *testing.T, gauge string) *replica {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for _, r := range rs.replicas {
			if r.metricSum(t, gauge) > 0 {
				return r
			}
		}
	}
	t.Fatalf("no replica has %s > 0", gauge)
	return nil
}

// registryClient speaks the distribution API to one host, as a client
// does, failing the test on any unexpected answer.
type registryClient struct {
	t    *testing.T
	base string // http://host:port
	repo string
}

func (c registryClient) do(method, u string, body io.Reader, length int64, hdr ...string) *http.Response {
	c.t.Helper()
	if strings.HasPrefix(u, "/") {
		u = c.base + u
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		c.t.Fatal(err)
	}
	req.ContentLength = length
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, u, err)
	}
	return resp
}

// expect reads resp's body and fails unless its status is want.
func (c registryClient) expect(resp *http.Response, want int, what string) {
	c.t.Helper()
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != want {
		c.t.Fatalf("%s: %d %s, want %d", what, resp.StatusCode, b, want)
	}
}

// location resolves a Location header (shroud's are relative paths)
// against the host the client asked.
func (c registryClient) location(resp *http.Response) string {
	c.t.Helper()
	l := resp.Header.Get("Location")
	if l == "" {
		c.t.Fatalf("%s %s answered %d without a Location", resp.Request.Method, resp.Request.URL, resp.StatusCode)
	}
	u, err := resp.Request.URL.Parse(l)
	if err != nil {
		c.t.Fatal(err)
	}
	return u.String()
}

func (c registryClient) startUpload() string {
	c.t.Helper()
	resp := c.do("POST", "/v2/"+c.repo+"/blobs/uploads/", nil, 0)
	loc := c.location(resp)
	c.expect(resp, 202, "POST an upload")
	return loc
}

// pushBlob uploads b: POST, one streamed PATCH, PUT ?digest=.
func (c registryClient) pushBlob(b []byte) {
	c.t.Helper()
	resp := c.do("PATCH", c.startUpload(), bytes.NewReader(b), -1, "Content-Type", "application/octet-stream")
	loc := c.location(resp)
	c.expect(resp, 202, "PATCH the blob")
	u, _ := url.Parse(loc)
	q := u.Query()
	q.Set("digest", digest.FromBytes(b).String())
	u.RawQuery = q.Encode()
	resp = c.do("PUT", u.String(), nil, 0)
	if got := resp.Header.Get("Docker-Content-Digest"); resp.StatusCode == 201 && got != digest.FromBytes(b).String() {
		c.t.Fatalf("PUT the blob: Docker-Content-Digest %s, want %s", got, digest.FromBytes(b))
	}
	c.expect(resp, 201, "PUT the blob")
}

func (c registryClient) putManifest(ref string, m []byte) {
	c.t.Helper()
	resp := c.do("PUT", "/v2/"+c.repo+"/manifests/"+ref, bytes.NewReader(m), int64(len(m)), "Content-Type", "application/vnd.oci.image.manifest.v1+json")
	if got := resp.Header.Get("Docker-Content-Digest"); resp.StatusCode == 201 && got != digest.FromBytes(m).String() {
		c.t.Fatalf("PUT the manifest: Docker-Content-Digest %s, want %s", got, digest.FromBytes(m))
	}
	c.expect(resp, 201, "PUT the manifest")
}

func (c registryClient) get(path string, want int) *http.Response {
	c.t.Helper()
	resp := c.do("GET", path, nil, 0, "Accept", "application/vnd.oci.image.manifest.v1+json")
	if resp.StatusCode != want {
		c.expect(resp, want, "GET "+path)
	}
	return resp
}

// assertImage pulls ref's manifest and its layer: the bytes pushed.
func (c registryClient) assertImage(ref string, manifest, layer []byte) {
	c.t.Helper()
	resp := c.get("/v2/"+c.repo+"/manifests/"+ref, 200)
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(got, manifest) {
		c.t.Fatalf("manifest %s pulled: %.300s, want the bytes pushed", ref, got)
	}
	resp = c.get("/v2/"+c.repo+"/blobs/"+digest.FromBytes(layer).String(), 200)
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || !bytes.Equal(got, layer) {
		c.t.Fatalf("layer of %s pulled: %d bytes (%v), want the %d pushed", ref, len(got), err, len(layer))
	}
}

// The Redis dies mid-test: pushes and pulls through the balancer go on,
// each replica's /readyz is still 200 with the shared tier "degraded",
// and its shared-errors metric counts the failed calls; Redis back on
// the same port, /readyz says the shared tier is ok again, and a push
// works across the replicas again.
func TestRedisKilledMidTest(t *testing.T) {
	rs := startReplicaSet(t)
	src1, img1 := ociLayout(t, 3, 200_000)
	skopeo(t, "copy", "--dest-tls-verify=false", src1, "docker://"+rs.host()+"/team/one:1")
	for _, r := range rs.replicas {
		if status, body, raw := r.ready(t); status != 200 || body["shared"] != "ok" {
			t.Fatalf("%s /readyz with Redis up: %d %s, want 200 shared ok", r.name, status, raw)
		}
	}

	rs.redis.proc.kill(t)
	t.Logf("killed redis-server (kill -9)")
	// A push with Redis down, to one replica: a blob's plain<->cipher
	// pairing lives then in the memory of the replica that took the
	// upload, so a manifest PUT on another replica cannot name its
	// layers (MANIFEST_BLOB_UNKNOWN, nothing stored) until the pairing
	// is also recorded upstream: not built yet (issue 10's closing
	// note). Pulls go through the balancer.
	pushTo := rs.replicas[0].addr
	src2, img2 := ociLayout(t, 3, 200_000)
	pulls := []struct {
		ref string
		img v1.Image
	}{{"team/one:1", img1}, {"team/one@" + digestOf(t, img1), img1}}
	if out, err := skopeoErr(t, "copy", "--dest-tls-verify=false", src2, "docker://"+pushTo+"/team/two:1"); err != nil {
		t.Errorf("push to one replica with Redis down: %v\n%s", err, out)
	} else {
		pulls = append(pulls, struct {
			ref string
			img v1.Image
		}{"team/two:1", img2}, struct {
			ref string
			img v1.Image
		}{"team/two@" + digestOf(t, img2), img2})
		// The same image again into another repository: its
		// layers are mounted, not uploaded twice, without Redis too.
		before := layerBlobFiles(t, rs.storage)
		if out, err := skopeoErr(t, "copy", "--dest-tls-verify=false", src2, "docker://"+pushTo+"/team/three:1"); err != nil {
			t.Errorf("push to another repository with Redis down: %v\n%s", err, out)
		} else if after := layerBlobFiles(t, rs.storage); after != before {
			t.Logf("with Redis down, the same image into another repository stored %d new layer blobs upstream (a replica that did not see the first push cannot know its layers)", after-before)
		}
	}
	for _, pull := range pulls {
		dir := filepath.Join(t.TempDir(), "back")
		skopeo(t, "copy", "--src-tls-verify=false", "docker://"+rs.host()+"/"+pull.ref, "oci:"+dir+":app")
		assertSameImage(t, pull.img, dir)
	}
	t.Logf("requests per replica (nginx access log) with Redis down: %s", rs.perReplica(rs.lb.requests(t)))
	for _, r := range rs.replicas {
		status, body, raw := r.ready(t)
		if status != 200 || body["shared"] != "degraded" || body["ready"] != true {
			t.Fatalf("%s /readyz with Redis down: %d %s, want 200 ready, shared degraded", r.name, status, raw)
		}
		n := r.metricSum(t, "shroud_cache_shared_errors_total")
		if n <= 0 {
			t.Fatalf("%s shroud_cache_shared_errors_total %v with Redis down, want > 0:\n%s", r.name, n, grepLines(scrape(t, "http://"+r.metrics+"/metrics"), "shared"))
		}
		t.Logf("%s with Redis down: /readyz %d %s; shroud_cache_shared_errors_total %v", r.name, status, raw, n)
	}

	rs.redis.start()
	t.Logf("redis-server started again on %s", rs.redis.addr)
	for _, r := range rs.replicas {
		var raw string
		ok := false
		for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline) && !ok; time.Sleep(100 * time.Millisecond) {
			var status int
			var body map[string]any
			status, body, raw = r.ready(t)
			ok = status == 200 && body["shared"] == "ok"
		}
		if !ok {
			t.Fatalf("%s /readyz 15s after Redis came back: %s, want shared ok", r.name, raw)
		}
	}
	src3, img3 := ociLayout(t, 3, 200_000)
	skopeo(t, "copy", "--dest-tls-verify=false", src3, "docker://"+rs.host()+"/team/four:1")
	dir := filepath.Join(t.TempDir(), "four")
	skopeo(t, "copy", "--src-tls-verify=false", "docker://"+rs.host()+"/team/four@"+digestOf(t, img3), "oci:"+dir+":app")
	assertSameImage(t, img3, dir)
	rs.assertNoPlaintext(t, img1, img2, img3)
}

// grepLines are text's lines holding s.
func grepLines(text, s string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// The conformance suite through nginx in front of two replicas sharing
// one identity and one Redis passes every test it passes straight at a
// fresh distribution v3 (TestConformanceParity's measure, for a
// balanced deployment).
func TestReplicasConformanceParity(t *testing.T) {
	direct, directTotal := conformance(t, distributionV3(t).Host())
	rs := startReplicaSet(t)
	through, throughTotal := conformance(t, rs.host())
	var lost []string
	for name, n := range direct {
		if through[name] < n {
			lost = append(lost, fmt.Sprintf("%s (%d of %d)", name, through[name], n))
		}
	}
	sort.Strings(lost)
	line := fmt.Sprintf("conformance distribution-v3 via nginx and 2 replicas with redis: passed direct %d / passed through shroud %d / lost %d", directTotal, throughTotal, len(lost))
	t.Log(line)
	t.Logf("requests per replica (nginx access log): %s", rs.perReplica(rs.lb.requests(t)))
	summarize(line)
	if len(lost) > 0 {
		t.Errorf("tests that pass straight at distribution-v3 fail through the balanced replicas:\n  %s", strings.Join(lost, "\n  "))
	}
}

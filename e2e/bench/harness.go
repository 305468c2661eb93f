package main

import (
	"bufio"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/shroud-oci/shroud/crypto"
)

type options struct {
	Layers    int
	LayerSize int64
	Rounds    int
	BigLayer  int64
	Clients   int
	JSON      string
	// CPUBlob is the blob of the CPU measurement (cpu.go).
	CPUBlob int64
	// ShroudBefore is another shroud binary to measure in the CPU
	// section, in the same run: the code before a change.
	ShroudBefore string
	// ManifestSamples and RedisImages size the replicas section: GETs of
	// each kind of the manifest measurement, images of the Redis memory
	// measurement.
	ManifestSamples int
	RedisImages     int
	// Only lists the sections to run (timing, memory, concurrency, cpu,
	// replicas); empty runs them all.
	Only []string
}

func defaultOptions() options {
	return options{Layers: 4, LayerSize: 256 << 20, Rounds: 3, BigLayer: 2 << 30, Clients: 16, CPUBlob: 1 << 30, ManifestSamples: 30, RedisImages: 20}
}

// runs says whether the section is to run.
func (o options) runs(section string) bool {
	return len(o.Only) == 0 || slices.Contains(o.Only, section)
}

type sizeFlag struct{ p *int64 }

func (s sizeFlag) String() string {
	if s.p == nil {
		return ""
	}
	return strconv.FormatInt(*s.p, 10)
}

func (s sizeFlag) Set(v string) error {
	mult := int64(1)
	for suf, m := range map[string]int64{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
		if strings.HasSuffix(v, suf) {
			v, mult = strings.TrimSuffix(v, suf), m
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		return fmt.Errorf("size %q: want a positive number with KiB, MiB or GiB", v)
	}
	*s.p = n * mult
	return nil
}

// target is one figure and the bound the issue sets for it.
type target struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Bound float64 `json:"bound"`
	Unit  string  `json:"unit"`
	OK    bool    `json:"ok"`
}

type results struct {
	Options         options              `json:"options"`
	Seconds         map[string]float64   `json:"medianSeconds"`
	Rounds          map[string][]float64 `json:"roundSeconds"`
	PeakRSSPushMiB  float64              `json:"peakRSSPushMiB"`
	PeakRSSPullMiB  float64              `json:"peakRSSPullMiB"`
	Clients         int                  `json:"clients"`
	UpstreamFetches map[string]int       `json:"upstreamFetchesPerBlob"`
	// UpstreamRanges are those of UpstreamFetches with a Range header.
	UpstreamRanges map[string]int `json:"upstreamRangeFetchesPerBlob"`
	ManifestDirect float64        `json:"manifestMedianDirectMs"`
	ManifestShroud float64        `json:"manifestMedianShroudMs"`
	// ImagePull counts shroud's upstream requests, by kind, for one pull
	// of an image: "cold" by a fresh process, "warm" right after.
	ImagePull map[string]map[string]int `json:"upstreamRequestsPerImagePull,omitempty"`
	CPU       *cpuResults               `json:"cpu,omitempty"`
	Replicas  *replicasResults          `json:"replicas,omitempty"`
	Targets   []target                  `json:"targets"`
}

func (r *results) writeJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// env is what a run starts: binaries, a registry, shroud.
type env struct {
	work     string
	shroud   string // binary
	registry string // binary
	procs    []*exec.Cmd
}

func (e *env) stopAll() {
	for _, p := range e.procs {
		p.Process.Kill()
		p.Wait()
	}
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func waitHTTP(ctx context.Context, u string) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		if resp, err := http.Get(u); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s did not answer", u)
}

func (e *env) start(ctx context.Context, bin string, args ...string) (*exec.Cmd, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	logf, err := os.Create(filepath.Join(e.work, filepath.Base(bin)+"-"+strconv.Itoa(len(e.procs))+".log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	e.procs = append(e.procs, cmd)
	return cmd, nil
}

func (e *env) startRegistry(ctx context.Context, dir string) (string, error) {
	addr, err := freeAddr()
	if err != nil {
		return "", err
	}
	cfg := filepath.Join(dir, "config.yml")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(cfg, []byte(fmt.Sprintf("version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: %s\n  secret: bench\n", filepath.Join(dir, "storage"), addr)), 0o600)
	if _, err := e.start(ctx, e.registry, "serve", cfg); err != nil {
		return "", err
	}
	return addr, waitHTTP(ctx, "http://"+addr+"/v2/")
}

func (e *env) startShroud(ctx context.Context, upstream, dataDir string, extra ...string) (addr string, cmd *exec.Cmd, err error) {
	return e.startShroudBin(ctx, e.shroud, upstream, dataDir, extra...)
}

func (e *env) startShroudBin(ctx context.Context, bin, upstream, dataDir string, extra ...string) (addr string, cmd *exec.Cmd, err error) {
	if addr, err = freeAddr(); err != nil {
		return "", nil, err
	}
	cmd, err = e.start(ctx, bin, append([]string{"serve", "--listen", addr, "--upstream", upstream, "--data-dir", dataDir, "--log-level", "warn"}, extra...)...)
	if err != nil {
		return "", nil, err
	}
	return addr, cmd, waitHTTP(ctx, "http://"+addr+"/v2/")
}

func stopProc(cmd *exec.Cmd) {
	cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

// peakRSS reads a process's peak resident set (VmHWM) in MiB.
func peakRSS(pid int) (float64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			return kb / 1024, err
		}
	}
	return 0, errors.New("no VmHWM")
}

func skopeo(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, "skopeo", append([]string{"--insecure-policy"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("skopeo %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// gzipLayer is a layer of random (incompressible) bytes wrapped in a gzip
// stream of stored blocks: skopeo sees an already-compressed layer and
// copies it as it is, so the measurements are of transfer and crypto, not
// of gzip.
func gzipLayer(dir string, size int64) (v1.Layer, string, error) {
	opener := func() (io.ReadCloser, error) {
		pr, pw := io.Pipe()
		go func() {
			zw, _ := gzip.NewWriterLevel(pw, gzip.NoCompression)
			_, err := io.CopyN(zw, rand.Reader, size)
			if err == nil {
				err = zw.Close()
			}
			pw.CloseWithError(err)
		}()
		return pr, nil
	}
	// Materialize once so every read gives the same bytes.
	f, err := os.CreateTemp(dir, "layer-*.gz")
	if err != nil {
		return nil, "", err
	}
	rc, _ := opener()
	if _, err := io.Copy(f, rc); err != nil {
		f.Close()
		return nil, "", err
	}
	f.Close()
	path := f.Name()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return os.Open(path) }, tarball.WithMediaType(types.OCILayer))
	return l, path, err
}

// makeLayout writes an OCI layout holding a fresh image of n layers.
func makeLayout(dir string, n int, size int64) (string, error) {
	img := mutate.MediaType(mutate.ConfigMediaType(empty.Image, types.OCIConfigJSON), types.OCIManifestSchema1)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	var tmp []string
	for i := 0; i < n; i++ {
		l, path, err := gzipLayer(dir, size)
		if err != nil {
			return "", err
		}
		tmp = append(tmp, path)
		if img, err = mutate.AppendLayers(img, l); err != nil {
			return "", err
		}
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return "", err
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "bench"})); err != nil {
		return "", err
	}
	for _, t := range tmp {
		os.Remove(t)
	}
	return "oci:" + dir + ":bench", nil
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func run(ctx context.Context, o options, out io.Writer) (*results, error) {
	if _, err := exec.LookPath("skopeo"); err != nil {
		return nil, errors.New("skopeo is not installed (apt-get install skopeo)")
	}
	if o.runs("replicas") {
		if err := requireReplicaTools(); err != nil { // before the other sections' minutes
			return nil, err
		}
	}
	work, err := os.MkdirTemp("", "shroud-bench")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	e := &env{work: work}
	defer e.stopAll()
	bin := filepath.Join(work, "bin")
	fmt.Fprintf(out, "building shroud and distribution's registry...\n")
	if b, err := exec.CommandContext(ctx, "go", "build", "-o", bin+"/", "github.com/shroud-oci/shroud/cmd/shroud", "github.com/distribution/distribution/v3/cmd/registry").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build: %w\n%s", err, b)
	}
	e.shroud, e.registry = filepath.Join(bin, "shroud"), filepath.Join(bin, "registry")
	reg, err := e.startRegistry(ctx, filepath.Join(work, "registry"))
	if err != nil {
		return nil, err
	}
	regPid := e.procs[len(e.procs)-1].Process.Pid
	// bench/vbr is pulled under verify-before-release, the rest as usual.
	policy := filepath.Join(work, "shroud.yaml")
	if err := os.WriteFile(policy, []byte("policy:\n"+
		"  - {repositories: \"bench/vbr\", action: encrypt, verify-before-release: true}\n"+
		"  - {repositories: \"**\", action: encrypt}\n"), 0o644); err != nil {
		return nil, err
	}
	shAddr, shCmd, err := e.startShroud(ctx, "http://"+reg, filepath.Join(work, "shroud"), "--config", policy)
	if err != nil {
		return nil, err
	}
	priv, pub, err := crypto.GenerateKeyPair("ec")
	if err != nil {
		return nil, err
	}
	privFile, pubFile := filepath.Join(work, "k.pem"), filepath.Join(work, "k.pub.pem")
	os.WriteFile(privFile, priv, 0o600)
	os.WriteFile(pubFile, pub, 0o644)

	res := &results{Options: o, Seconds: map[string]float64{}, Rounds: map[string][]float64{}}
	timed := func(name string, f func() error) error {
		start := time.Now()
		if err := f(); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		d := time.Since(start).Seconds()
		res.Rounds[name] = append(res.Rounds[name], d)
		fmt.Fprintf(out, "  %-28s %7.2f s\n", name, d)
		return nil
	}
	total := int64(o.Layers) * o.LayerSize
	for r := 0; r < o.Rounds && o.runs("timing"); r++ {
		fmt.Fprintf(out, "round %d of %d (%d layers of %d MiB)\n", r+1, o.Rounds, o.Layers, o.LayerSize>>20)
		srcs := map[string]string{}
		for _, k := range []string{"plain", "enc", "shroud", "vbr"} {
			if srcs[k], err = makeLayout(filepath.Join(work, fmt.Sprintf("img-%s-%d", k, r)), o.Layers, o.LayerSize); err != nil {
				return nil, err
			}
		}
		tag := func(host, repo string) string { return fmt.Sprintf("docker://%s/bench/%s:r%d", host, repo, r) }
		pushes := []func() error{
			func() error {
				return timed("push plain direct", func() error {
					return skopeo(ctx, "copy", "--dest-tls-verify=false", srcs["plain"], tag(reg, "plain"))
				})
			},
			func() error {
				return timed("push skopeo-encrypted direct", func() error {
					return skopeo(ctx, "copy", "--dest-tls-verify=false", "--encryption-key", "jwe:"+pubFile, srcs["enc"], tag(reg, "enc"))
				})
			},
			func() error {
				return timed("push through shroud", func() error {
					return skopeo(ctx, "copy", "--dest-tls-verify=false", srcs["shroud"], tag(shAddr, "shroud"))
				})
			},
		}
		pulls := []func() error{
			func() error {
				return timed("pull plain direct", func() error {
					return skopeo(ctx, "copy", "--src-tls-verify=false", tag(reg, "plain"), "oci:"+filepath.Join(work, fmt.Sprintf("out-plain-%d", r))+":x")
				})
			},
			func() error {
				return timed("pull skopeo-decrypted direct", func() error {
					return skopeo(ctx, "copy", "--src-tls-verify=false", "--decryption-key", privFile, tag(reg, "enc"), "oci:"+filepath.Join(work, fmt.Sprintf("out-enc-%d", r))+":x")
				})
			},
			func() error {
				return timed("pull through shroud", func() error {
					return skopeo(ctx, "copy", "--src-tls-verify=false", tag(shAddr, "shroud"), "oci:"+filepath.Join(work, fmt.Sprintf("out-shroud-%d", r))+":x")
				})
			},
			func() error {
				return timed("pull through shroud verify-before-release", func() error {
					return skopeo(ctx, "copy", "--src-tls-verify=false", tag(shAddr, "vbr"), "oci:"+filepath.Join(work, fmt.Sprintf("out-vbr-%d", r))+":x")
				})
			},
		}
		if r%2 == 1 { // alternate the order: no alternative always goes first
			for i, j := 0, len(pushes)-1; i < j; i, j = i+1, j-1 {
				pushes[i], pushes[j] = pushes[j], pushes[i]
				pulls[i], pulls[j] = pulls[j], pulls[i]
			}
		}
		for _, f := range pushes {
			if err := f(); err != nil {
				return nil, err
			}
		}
		if err := skopeo(ctx, "copy", "--dest-tls-verify=false", srcs["vbr"], tag(shAddr, "vbr")); err != nil {
			return nil, fmt.Errorf("push to bench/vbr: %w", err)
		}
		if err := timed("re-push through shroud", func() error {
			return skopeo(ctx, "copy", "--dest-tls-verify=false", srcs["shroud"], tag(shAddr, "shroud"))
		}); err != nil {
			return nil, err
		}
		for _, f := range pulls {
			if err := f(); err != nil {
				return nil, err
			}
		}
		for _, d := range []string{"img-plain", "img-enc", "img-shroud", "img-vbr", "out-plain", "out-enc", "out-shroud", "out-vbr"} {
			os.RemoveAll(filepath.Join(work, fmt.Sprintf("%s-%d", d, r)))
		}
	}
	for k, v := range res.Rounds {
		res.Seconds[k] = median(v)
	}
	s := res.Seconds
	if o.runs("timing") {
		res.Targets = append(res.Targets,
			target{"push through shroud / skopeo client-side encryption", s["push through shroud"] / s["push skopeo-encrypted direct"], 0.8, "x", false},
			target{"push through shroud / plain push", s["push through shroud"] / s["push plain direct"], 1.4, "x", false},
			target{"re-push through shroud", s["re-push through shroud"], 1, "s", false},
			target{"pull through shroud / skopeo decryption", s["pull through shroud"] / s["pull skopeo-decrypted direct"], 0.6, "x", false},
			target{"pull through shroud / plain pull", s["pull through shroud"] / s["pull plain direct"], 1.4, "x", false},
			target{"pull verify-before-release / pull through shroud", s["pull through shroud verify-before-release"] / s["pull through shroud"], 2.0, "x", false},
		)
	}

	// Memory: one big layer through a fresh shroud process each way.
	if o.runs("memory") {
		fmt.Fprintf(out, "memory: one layer of %d MiB\n", o.BigLayer>>20)
		big, err := makeLayout(filepath.Join(work, "img-big"), 1, o.BigLayer)
		if err != nil {
			return nil, err
		}
		stopProc(shCmd)
		if shAddr, shCmd, err = e.startShroud(ctx, "http://"+reg, filepath.Join(work, "shroud")); err != nil {
			return nil, err
		}
		if err := skopeo(ctx, "copy", "--dest-tls-verify=false", big, "docker://"+shAddr+"/bench/big:1"); err != nil {
			return nil, err
		}
		if res.PeakRSSPushMiB, err = peakRSS(shCmd.Process.Pid); err != nil {
			return nil, err
		}
		stopProc(shCmd)
		os.RemoveAll(filepath.Join(work, "img-big"))
		if shAddr, shCmd, err = e.startShroud(ctx, "http://"+reg, filepath.Join(work, "shroud")); err != nil {
			return nil, err
		}
		if err := skopeo(ctx, "copy", "--src-tls-verify=false", "docker://"+shAddr+"/bench/big:1", "oci:"+filepath.Join(work, "out-big")+":x"); err != nil {
			return nil, err
		}
		if res.PeakRSSPullMiB, err = peakRSS(shCmd.Process.Pid); err != nil {
			return nil, err
		}
		os.RemoveAll(filepath.Join(work, "out-big"))
		fmt.Fprintf(out, "  peak RSS pushing %.1f MiB, pulling %.1f MiB\n", res.PeakRSSPushMiB, res.PeakRSSPullMiB)
		res.Targets = append(res.Targets,
			target{"peak RSS pushing one big layer", res.PeakRSSPushMiB, 100, "MiB", false},
			target{"peak RSS pulling one big layer", res.PeakRSSPullMiB, 100, "MiB", false})
		// Manifest latency, warm cache.
		if err := manifestLatency(ctx, reg, shAddr, res, out); err != nil {
			return nil, err
		}
		res.Targets = append(res.Targets, target{"extra manifest GET latency (median, warm)", res.ManifestShroud - res.ManifestDirect, 1, "ms", false})
	}
	stopProc(shCmd)

	// Concurrency: clients pulling the same image at once through a
	// shroud whose upstream requests are counted.
	if o.runs("concurrency") {
		if err := concurrency(ctx, e, o, reg, res, out); err != nil {
			return nil, err
		}
	}
	// CPU seconds per GiB pushed and pulled.
	if o.runs("cpu") && o.CPUBlob > 0 {
		if err := cpuCost(ctx, e, o, reg, regPid, res, out); err != nil {
			return nil, err
		}
	}
	// Two replicas behind nginx, sharing Redis, against one shroud.
	if o.runs("replicas") {
		if err := replicas(ctx, e, o, reg, res, out); err != nil {
			return nil, fmt.Errorf("replicas: %w", err)
		}
	}

	fmt.Fprintf(out, "\nmedians over %d rounds (%d MiB image):\n", o.Rounds, total>>20)
	names := make([]string, 0, len(s))
	for k := range s {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		fmt.Fprintf(out, "  %-28s %7.2f s\n", k, s[k])
	}
	if res.CPU != nil {
		reportCPU(res.CPU, res, out)
	}
	if res.Replicas != nil {
		reportReplicas(res.Replicas, out)
	}
	fmt.Fprintf(out, "\ntargets:\n")
	for i := range res.Targets {
		t := &res.Targets[i]
		t.OK = t.Value <= t.Bound
		mark := "ok"
		if !t.OK {
			mark = "MISSED"
		}
		fmt.Fprintf(out, "  %-52s %8.3f %-3s (<= %g) %s\n", t.Name, t.Value, t.Unit, t.Bound, mark)
	}
	return res, nil
}

// countingProxy forwards to the registry and counts blob GETs per digest
// (and those of them with a Range header), and every request by kind
// ("GET manifest", "HEAD blob", ...).
type countingProxy struct {
	mu     sync.Mutex
	counts map[string]int
	ranges map[string]int
	kinds  map[string]int
	rp     *httputil.ReverseProxy
	// owner, once set, names the client of a connection (asked on the
	// connection's first request after it is set); blob GETs are then
	// also counted by it, in owned.
	owner func(net.Conn) string
	owned map[string]map[string]*blobCount
}

// blobCount is the GETs of one blob: all, and those with a Range.
type blobCount struct{ All, Ranged int }

type ownerKey struct{}

// connOwner is who holds the other end of a connection, found once.
type connOwner struct {
	once sync.Once
	conn net.Conn
	name string
}

// countBy makes the proxy count blob GETs by who (of each connection)
// too.
func (c *countingProxy) countBy(who func(net.Conn) string) {
	c.mu.Lock()
	c.owner = who
	c.mu.Unlock()
}

// ownedBlobGETs copies the blob GETs by owner and digest.
func (c *countingProxy) ownedBlobGETs() map[string]map[string]blobCount {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]map[string]blobCount{}
	for o, m := range c.owned {
		out[o] = map[string]blobCount{}
		for d, n := range m {
			out[o][d] = *n
		}
	}
	return out
}

// startCountingProxy serves a countingProxy to the registry at upstream
// (host:port) on a free port; stop closes it.
func startCountingProxy(upstream string) (cp *countingProxy, addr string, stop func(), err error) {
	target, err := url.Parse("http://" + upstream)
	if err != nil {
		return nil, "", nil, err
	}
	cp = &countingProxy{counts: map[string]int{}, ranges: map[string]int{}, kinds: map[string]int{}, rp: httputil.NewSingleHostReverseProxy(target),
		owned: map[string]map[string]*blobCount{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", nil, err
	}
	srv := &http.Server{Handler: cp, ConnContext: func(ctx context.Context, conn net.Conn) context.Context {
		return context.WithValue(ctx, ownerKey{}, &connOwner{conn: conn})
	}}
	go srv.Serve(ln)
	return cp, ln.Addr().String(), func() { srv.Close() }, nil
}

func (c *countingProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	who := c.owner
	c.mu.Unlock()
	owner, counted := "", false
	if co, ok := r.Context().Value(ownerKey{}).(*connOwner); ok && who != nil {
		co.once.Do(func() { co.name = who(co.conn) })
		owner, counted = co.name, true
	}
	c.mu.Lock()
	if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") {
		d := r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]
		ranged := r.Header.Get("Range") != ""
		c.counts[d]++
		if ranged {
			c.ranges[d]++
		}
		if counted {
			if c.owned[owner] == nil {
				c.owned[owner] = map[string]*blobCount{}
			}
			n := c.owned[owner][d]
			if n == nil {
				n = &blobCount{}
				c.owned[owner][d] = n
			}
			n.All++
			if ranged {
				n.Ranged++
			}
		}
	}
	kind := "other"
	switch {
	case strings.Contains(r.URL.Path, "/manifests/"):
		kind = "manifest"
	case strings.Contains(r.URL.Path, "/blobs/uploads/"):
		kind = "upload"
	case strings.Contains(r.URL.Path, "/blobs/"):
		kind = "blob"
	case strings.Contains(r.URL.Path, "/tags/"):
		kind = "tags"
	case strings.Contains(r.URL.Path, "/referrers/"):
		kind = "referrers"
	}
	c.kinds[r.Method+" "+kind]++
	c.mu.Unlock()
	c.rp.ServeHTTP(w, r)
}

// reset zeroes the counts and returns the request counts by kind so far.
func (c *countingProxy) reset() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := c.kinds
	c.counts, c.ranges, c.kinds, c.owned = map[string]int{}, map[string]int{}, map[string]int{}, map[string]map[string]*blobCount{}
	return k
}

// blobGETs copies the blob GET counts per digest: all, and with a Range.
func (c *countingProxy) blobGETs() (all, ranged map[string]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.counts), maps.Clone(c.ranges)
}

// pullImage pulls every layer of ref (manifest, config, layers), checking
// the digests.
func pullImage(ctx context.Context, ref name.Reference) error {
	img, err := remote.Image(ref, remote.WithContext(ctx))
	if err != nil {
		return err
	}
	if _, err := img.RawConfigFile(); err != nil {
		return err
	}
	ls, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range ls {
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, rc) // go-containerregistry checks the digest at EOF
		rc.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

func concurrency(ctx context.Context, e *env, o options, reg string, res *results, out io.Writer) error {
	cp, cpAddr, closeCP, err := startCountingProxy(reg)
	if err != nil {
		return err
	}
	defer closeCP()
	addr, cmd, err := e.startShroud(ctx, "http://"+cpAddr, filepath.Join(e.work, "shroud-concurrency"))
	if err != nil {
		return err
	}
	defer func() { stopProc(cmd) }()
	src, err := makeLayout(filepath.Join(e.work, "img-conc"), 4, 16<<20)
	if err != nil {
		return err
	}
	if err := skopeo(ctx, "copy", "--dest-tls-verify=false", src, "docker://"+addr+"/bench/conc:1"); err != nil {
		return err
	}
	// One pull of the image by a fresh process (cold), then by the same
	// one again (warm): the upstream requests each costs.
	stopProc(cmd)
	if addr, cmd, err = e.startShroud(ctx, "http://"+cpAddr, filepath.Join(e.work, "shroud-concurrency")); err != nil {
		return err
	}
	ref, err := name.ParseReference(addr+"/bench/conc:1", name.Insecure)
	if err != nil {
		return err
	}
	cp.reset()
	res.ImagePull = map[string]map[string]int{}
	for _, kind := range []string{"cold", "warm"} {
		if err := pullImage(ctx, ref); err != nil {
			return fmt.Errorf("%s pull: %w", kind, err)
		}
		res.ImagePull[kind] = cp.reset()
		fmt.Fprintf(out, "  one %s pull of a %d-layer image: upstream requests %v\n", kind, 4, res.ImagePull[kind])
	}
	errs := make(chan error, o.Clients)
	var wg sync.WaitGroup
	for i := 0; i < o.Clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- pullImage(ctx, ref)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return fmt.Errorf("concurrent pull: %w", err)
		}
	}
	res.Clients = o.Clients
	res.UpstreamFetches, res.UpstreamRanges = cp.blobGETs()
	fmt.Fprintf(out, "concurrency: %d clients pulled the same image, all digests right; upstream GETs per blob (of them with a Range):", o.Clients)
	for d, n := range res.UpstreamFetches {
		fmt.Fprintf(out, " %s…=%d (%d)", d[7:19], n, res.UpstreamRanges[d])
	}
	fmt.Fprintln(out)
	os.RemoveAll(filepath.Join(e.work, "img-conc"))
	return nil
}

func manifestLatency(ctx context.Context, reg, shAddr string, res *results, out io.Writer) error {
	get := func(u string, accept string) (time.Duration, error) {
		req, _ := http.NewRequestWithContext(ctx, "GET", u, nil)
		req.Header.Set("Accept", accept)
		start := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return 0, fmt.Errorf("GET %s: %d", u, resp.StatusCode)
		}
		return time.Since(start), nil
	}
	const accept = "application/vnd.oci.image.manifest.v1+json"
	// The digests: the plain one through shroud, the encrypted one direct.
	plainDesc, err := remote.Get(mustRef(shAddr + "/bench/big:1"))
	if err != nil {
		return err
	}
	upDesc, err := remote.Get(mustRef(reg + "/bench/big:1"))
	if err != nil {
		return err
	}
	viaShroud := "http://" + shAddr + "/v2/bench/big/manifests/" + plainDesc.Digest.String()
	direct := "http://" + reg + "/v2/bench/big/manifests/" + upDesc.Digest.String()
	var ds, dd []float64
	for i := 0; i < 200; i++ { // alternating, the first ones warm both up
		a, err := get(direct, accept)
		if err != nil {
			return err
		}
		b, err := get(viaShroud, accept)
		if err != nil {
			return err
		}
		if i >= 20 {
			dd, ds = append(dd, float64(a.Microseconds())/1000), append(ds, float64(b.Microseconds())/1000)
		}
	}
	res.ManifestDirect, res.ManifestShroud = median(dd), median(ds)
	fmt.Fprintf(out, "manifest GET by digest, median of 180: direct %.3f ms, through shroud %.3f ms\n", res.ManifestDirect, res.ManifestShroud)
	return nil
}

func mustRef(s string) name.Reference {
	r, err := name.ParseReference(s, name.Insecure)
	if err != nil {
		panic(err)
	}
	return r
}

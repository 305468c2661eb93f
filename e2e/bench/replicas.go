package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/redis/go-redis/v9"
)

// The replicas section measures shroud as a cluster runs it: Debian's
// redis-server (the shared tier) and nginx (round-robin over two
// replicas sharing one identity and the Redis), each on a free 127.0.0.1
// port with its configuration, logs and pid in the run's directory,
// stopped by pid; one distribution v3 registry behind them all.
//
//   - push and pull of the harness's image with skopeo through one shroud
//     without Redis, one with Redis, and nginx + two replicas with Redis,
//     alternating, medians over the rounds: wall time and CPU-s per GiB
//     (shroud's, summed over the replicas; nginx's and Redis's beside it);
//   - the manifest GET by digest by a process that has served it (warm)
//     and by one that has not (cold: a new repository per sample, pushed
//     through another process sharing the identity), without Redis (the
//     pointer lookup) and with it (the mapping from Redis): latency, and
//     the upstream requests and Redis commands each GET costs;
//   - Redis commands (INFO commandstats deltas) and round trips (a
//     counting TCP proxy in front of Redis) of a push and of pulls by the
//     replica that pushed, by a new one, and by that one again, for a
//     1-layer and a 4-layer image (so per image and per layer);
//   - Redis memory per image: used_memory and MEMORY USAGE by kind of key
//     over K pushed images of 10 layers, in a Redis of their own;
//   - upstream blob GETs per layer and replica (full, and Range) for
//     concurrent pulls through nginx and the two replicas.

const (
	redisServerBin = "/usr/bin/redis-server"
	nginxBin       = "/usr/sbin/nginx"
)

// replicasResults are the replicas section's figures.
type replicasResults struct {
	ImageMiB int64 `json:"imageMiB"`
	// By "push, <setup>" and "pull, <setup>": seconds, and CPU seconds
	// per GiB of the image of shroud (every replica of the setup), nginx
	// (master and worker) and Redis.
	Rounds    map[string][]float64 `json:"roundSeconds"`
	Seconds   map[string]float64   `json:"medianSeconds"`
	CPURounds map[string][]float64 `json:"roundShroudCPUsPerGiB"`
	ShroudCPU map[string]float64   `json:"medianShroudCPUsPerGiB"`
	NginxCPU  map[string]float64   `json:"medianNginxCPUsPerGiB"`
	RedisCPU  map[string]float64   `json:"medianRedisCPUsPerGiB"`
	// Manifest: GETs by digest, by "<cold|warm>, <with|without> Redis"
	// and "straight to the registry".
	Manifest map[string]*manifestGets `json:"manifestGetByDigest"`
	// Redis: what a push or a pull cost the shared tier, one sample per
	// round.
	Redis       map[string][]redisSample `json:"redisPerOperation"`
	RedisMemory *redisMemory             `json:"redisMemory"`
	Concurrent  []concurrentRound        `json:"concurrentPulls"`
}

type manifestGets struct {
	Ms       []float64 `json:"ms"`
	MedianMs float64   `json:"medianMs"`
	// Upstream requests and Redis commands, totals over the samples.
	Upstream map[string]int   `json:"upstreamRequests"`
	Redis    map[string]int64 `json:"redisCommands"`
}

// redisSample is what one push or pull cost the shared tier.
type redisSample struct {
	// Commands are deltas of INFO commandstats by command (the harness's
	// own INFO left out).
	Commands map[string]int64 `json:"commands"`
	// RoundTrips are the times a client spoke after the server had
	// answered (a pipeline is one), seen by a TCP proxy in front of
	// Redis, by the command each began with; Connections the
	// connections it opened.
	RoundTrips  map[string]int64 `json:"roundTrips"`
	Connections int64            `json:"connections"`
	Upstream    map[string]int   `json:"upstreamRequests"`
}

// setupCommands are those a client sends once per connection.
var setupCommands = []string{"hello", "client|setinfo", "auth", "select", "ping"}

// total is the commands of s but for connection setup.
func (s redisSample) total() int64 { return sumBut(s.Commands, setupCommands) }

// trips is the round trips of s but for connection setup.
func (s redisSample) trips() int64 {
	return sumBut(s.RoundTrips, append([]string{"client"}, setupCommands...))
}

func sumBut(m map[string]int64, but []string) int64 {
	var n int64
	for k, v := range m {
		if !slices.Contains(but, k) {
			n += v
		}
	}
	return n
}

type redisMemory struct {
	Images, LayersPerImage int
	// UsedMemory is used_memory's growth over the Images pushes, bytes;
	// Keys and Usage (MEMORY USAGE, bytes) are by kind of key over every
	// key, the warm-up image's included (Images+1 images).
	UsedMemory int64            `json:"usedMemoryDelta"`
	Keys       map[string]int64 `json:"keysByKind"`
	Usage      map[string]int64 `json:"memoryUsageByKind"`
	Clients    [2]int64         `json:"connectedClientsBeforeAfter"`
}

// concurrentRound is one round of concurrent pulls through the
// balancer: upstream blob GETs by replica and layer.
type concurrentRound struct {
	Clients int     `json:"clients"`
	Full    [][]int `json:"fullGETs"`  // [replica][layer]
	Range   [][]int `json:"rangeGETs"` // [replica][layer]
	// Other is the replica's GETs of blobs no layer is: the config's.
	Other []int `json:"otherBlobGETs"`
}

func requireReplicaTools() error {
	for _, b := range []struct{ path, pkg string }{{redisServerBin, "redis-server"}, {nginxBin, "nginx"}} {
		if _, err := exec.LookPath(b.path); err != nil {
			return fmt.Errorf("the replicas section needs %s (apt-get install %s; or leave the section out with -only): %w", b.path, b.pkg, err)
		}
	}
	return nil
}

// daemon is a program the section runs and stops by its pid with SIGTERM
// (nginx's master stops its worker), SIGKILL after 10 s. It is not
// started with the run's context: a kill on cancel would leave nginx's
// worker behind.
type daemon struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func startDaemon(dir, name, bin string, args ...string) (*daemon, error) {
	d := &daemon{name: name, log: filepath.Join(dir, name+".log"), done: make(chan struct{})}
	logf, err := os.Create(d.log)
	if err != nil {
		return nil, err
	}
	d.cmd = exec.Command(bin, args...)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	if err := d.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	go func() { d.cmd.Wait(); logf.Close(); close(d.done) }()
	return d, nil
}

func (d *daemon) running() bool {
	select {
	case <-d.done:
		return false
	default:
		return true
	}
}

func (d *daemon) stop() {
	if !d.running() {
		return
	}
	syscall.Kill(d.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		syscall.Kill(d.cmd.Process.Pid, syscall.SIGKILL)
		<-d.done
	}
}

func (d *daemon) exited() error {
	b, _ := os.ReadFile(d.log)
	if len(b) > 4096 {
		b = b[len(b)-4096:]
	}
	return fmt.Errorf("%s exited (%v):\n%s", d.name, d.cmd.ProcessState, b)
}

// treeCPU is the CPU seconds of pid and its children (nginx's worker).
func treeCPU(pid int) (float64, error) {
	total, err := procCPU(pid)
	if err != nil {
		return 0, err
	}
	files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		for _, c := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(c); err == nil {
				if v, err := procCPU(n); err == nil {
					total += v
				}
			}
		}
	}
	return total, nil
}

// redisSrv is Debian's redis-server without persistence, with a client
// of the harness's own for INFO.
type redisSrv struct {
	addr  string
	d     *daemon
	admin *redis.Client
}

func startRedisServer(dir string) (*redisSrv, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	host, port, _ := net.SplitHostPort(addr)
	conf := filepath.Join(dir, "redis.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("bind %s\nport %s\nprotected-mode no\ndaemonize no\nsave \"\"\nappendonly no\ndir %s\npidfile %s\nlogfile \"\"\n",
		host, port, dir, filepath.Join(dir, "redis.pid"))), 0o600); err != nil {
		return nil, err
	}
	d, err := startDaemon(dir, "redis-server", redisServerBin, conf)
	if err != nil {
		return nil, err
	}
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if !d.running() {
			return nil, d.exited()
		}
		if rawPing(addr) == nil {
			return &redisSrv{addr: addr, d: d, admin: redis.NewClient(&redis.Options{Addr: addr, PoolSize: 1, ConnMaxIdleTime: -1})}, nil
		}
	}
	d.stop()
	return nil, fmt.Errorf("redis-server on %s did not answer PING", addr)
}

// rawPing speaks RESP's inline PING.
func rawPing(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "+PONG" {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

func (r *redisSrv) stop() {
	r.admin.Close()
	r.d.stop()
}

func (r *redisSrv) pid() int { return r.d.cmd.Process.Pid }

// info is one INFO section as fields.
func (r *redisSrv) info(ctx context.Context, section string) (map[string]string, error) {
	s, err := r.admin.Info(ctx, section).Result()
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, l := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(l), ":"); ok && !strings.HasPrefix(k, "#") {
			m[k] = v
		}
	}
	return m, nil
}

func (r *redisSrv) infoInt(ctx context.Context, section, field string) (int64, error) {
	m, err := r.info(ctx, section)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(m[field], 10, 64)
}

// commandStats is INFO commandstats: calls by command.
func (r *redisSrv) commandStats(ctx context.Context) (map[string]int64, error) {
	m, err := r.info(ctx, "commandstats")
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for k, v := range m {
		name, ok := strings.CutPrefix(k, "cmdstat_")
		if !ok {
			continue
		}
		for _, kv := range strings.Split(v, ",") {
			if c, ok := strings.CutPrefix(kv, "calls="); ok {
				out[name], _ = strconv.ParseInt(c, 10, 64)
			}
		}
	}
	return out, nil
}

// commandsDelta is after-before, the harness's own INFO left out.
func commandsDelta(before, after map[string]int64) map[string]int64 {
	d := map[string]int64{}
	for k, v := range after {
		if n := v - before[k]; n > 0 && k != "info" {
			d[k] = n
		}
	}
	return d
}

// turnCounter is a TCP proxy in front of Redis counting round trips: a
// client's bytes after the server's answer (or on a new connection)
// start one; a pipeline's commands go in one. Each is counted by the
// name of the command it starts with, so that connection setup (HELLO,
// CLIENT SETINFO) can be told from the work.
type turnCounter struct {
	ln            net.Listener
	target        string
	conns         atomic.Int64
	mu            sync.Mutex
	turns         map[string]int64
	open          []net.Conn
	closed        bool
	stoppedAccept chan struct{}
}

// counts copies the round trips by first command.
func (t *turnCounter) counts() map[string]int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return maps.Clone(t.turns)
}

// firstCommand is the (lowercased) name of the RESP command b starts
// with: *<n>\r\n$<len>\r\n<name>; "?" if b does not hold it.
func firstCommand(b []byte) string {
	f := bytes.SplitN(b, []byte("\r\n"), 3)
	if len(f) < 3 || len(f[0]) == 0 || f[0][0] != '*' || len(f[1]) == 0 || f[1][0] != '$' {
		return "?"
	}
	n, err := strconv.Atoi(string(f[1][1:]))
	if err != nil || n > len(f[2]) {
		return "?"
	}
	return strings.ToLower(string(f[2][:n]))
}

func newTurnCounter(target string) (*turnCounter, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	t := &turnCounter{ln: ln, target: target, turns: map[string]int64{}, stoppedAccept: make(chan struct{})}
	go t.serve()
	return t, nil
}

func (t *turnCounter) addr() string { return t.ln.Addr().String() }

func (t *turnCounter) serve() {
	defer close(t.stoppedAccept)
	for {
		c, err := t.ln.Accept()
		if err != nil {
			return
		}
		go t.pipe(c)
	}
}

func (t *turnCounter) track(cs ...net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.open = append(t.open, cs...)
	return true
}

func (t *turnCounter) pipe(c net.Conn) {
	s, err := net.Dial("tcp", t.target)
	if err != nil {
		c.Close()
		return
	}
	if !t.track(c, s) {
		c.Close()
		s.Close()
		return
	}
	t.conns.Add(1)
	var asked atomic.Bool // the client spoke and the server has not answered yet
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := s.Read(buf)
			if n > 0 {
				asked.Store(false)
				if _, werr := c.Write(buf[:n]); werr != nil {
					err = werr
				}
			}
			if err != nil {
				c.Close()
				return
			}
		}
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if asked.CompareAndSwap(false, true) {
				cmd := firstCommand(buf[:n])
				t.mu.Lock()
				t.turns[cmd]++
				t.mu.Unlock()
			}
			if _, werr := s.Write(buf[:n]); werr != nil {
				err = werr
			}
		}
		if err != nil {
			s.Close()
			return
		}
	}
}

func (t *turnCounter) close() {
	t.ln.Close()
	<-t.stoppedAccept
	t.mu.Lock()
	t.closed = true
	for _, c := range t.open {
		c.Close()
	}
	t.mu.Unlock()
}

// balancer is nginx round-robin over backends, bodies streamed both ways,
// no keepalive to them (each request its own connection), as README's
// example configures it.
type balancer struct {
	addr string
	d    *daemon
}

func startBalancer(ctx context.Context, dir string, backends []string) (*balancer, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	var servers strings.Builder
	for _, s := range backends {
		// max_fails=0: a replica is never shunned for fail_timeout.
		fmt.Fprintf(&servers, "    server %s max_fails=0;\n", s)
	}
	user := ""
	if os.Geteuid() == 0 {
		// A root master runs its worker as nobody, who cannot enter a
		// 0700 temporary directory.
		user = "user root;\n"
	}
	conf := fmt.Sprintf(`%sworker_processes 1;
error_log %[2]s/error.log warn;
pid %[2]s/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path %[2]s/client_body;
  proxy_temp_path %[2]s/proxy;
  fastcgi_temp_path %[2]s/fastcgi;
  uwsgi_temp_path %[2]s/uwsgi;
  scgi_temp_path %[2]s/scgi;
  upstream shroud {
%[3]s  }
  server {
    listen %[4]s;
    client_max_body_size 0;
    location / {
      proxy_pass http://shroud;
      proxy_http_version 1.1;
      proxy_request_buffering off;
      proxy_buffering off;
      proxy_read_timeout 300s;
      proxy_send_timeout 300s;
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_set_header X-Forwarded-Proto $scheme;
    }
  }
}
`, user, dir, servers.String(), addr)
	cfg := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	d, err := startDaemon(dir, "nginx", nginxBin, "-p", dir, "-c", cfg, "-e", filepath.Join(dir, "error.log"), "-g", "daemon off;")
	if err != nil {
		return nil, err
	}
	b := &balancer{addr: addr, d: d}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline) && ctx.Err() == nil; time.Sleep(50 * time.Millisecond) {
		if !d.running() {
			e, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			return nil, fmt.Errorf("%w\nerror.log:\n%s", d.exited(), e)
		}
		if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return b, nil
			}
		}
	}
	d.stop()
	return nil, fmt.Errorf("nginx on %s did not answer /healthz through the replicas", addr)
}

func (b *balancer) stop() { b.d.stop() }

// cluster is two (or more) replicas behind nginx.
type cluster struct {
	addrs []string
	cmds  []*exec.Cmd
	lb    *balancer
}

// startCluster starts one replica per upstream URL (each replica its own
// upstream, so that a counting proxy per replica tells them apart), with
// extra flags for all, and nginx in front.
func (e *env) startCluster(ctx context.Context, dir string, upstreams []string, extra ...string) (*cluster, error) {
	c := &cluster{}
	for i, up := range upstreams {
		addr, cmd, err := e.startShroud(ctx, up, filepath.Join(dir, "replica-"+strconv.Itoa(i)), extra...)
		if cmd != nil {
			c.cmds = append(c.cmds, cmd)
		}
		if err != nil {
			c.stop()
			return nil, err
		}
		c.addrs = append(c.addrs, addr)
	}
	lb, err := startBalancer(ctx, filepath.Join(dir, "nginx"), c.addrs)
	if err != nil {
		c.stop()
		return nil, err
	}
	c.lb = lb
	return c, nil
}

func (c *cluster) stop() {
	if c.lb != nil {
		c.lb.stop()
	}
	for _, cmd := range c.cmds {
		stopProc(cmd)
	}
}

// tinyImage is an OCI image of n layers of size random bytes each (in
// stored-block gzip, as the harness's big layers).
func tinyImage(n int, size int64) (v1.Image, error) {
	img := mutate.MediaType(mutate.ConfigMediaType(empty.Image, types.OCIConfigJSON), types.OCIManifestSchema1)
	for i := 0; i < n; i++ {
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, gzip.NoCompression)
		if _, err := io.CopyN(zw, rand.Reader, size); err != nil {
			return nil, err
		}
		zw.Close()
		b := buf.Bytes()
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }, tarball.WithMediaType(types.OCILayer))
		if err != nil {
			return nil, err
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			return nil, err
		}
	}
	return img, nil
}

// pushTiny pushes a fresh tinyImage to host/repo:1 and returns its
// manifest digest.
func pushTiny(ctx context.Context, host, repo string, layers int, size int64) (string, error) {
	img, err := tinyImage(layers, size)
	if err != nil {
		return "", err
	}
	if err := remote.Write(mustRef(host+"/"+repo+":1"), img, remote.WithContext(ctx)); err != nil {
		return "", fmt.Errorf("push %s/%s: %w", host, repo, err)
	}
	d, err := img.Digest()
	return d.String(), err
}

// getManifestMs is one GET of a manifest, in milliseconds.
func getManifestMs(ctx context.Context, u string) (float64, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", u, nil)
	req.Header.Set("Accept", ociManifest)
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
	return float64(time.Since(start).Microseconds()) / 1000, nil
}

// setupKind is one of the compared setups of the timing part.
type setupKind struct {
	name  string
	host  string
	pids  []int
	nginx *balancer
}

// replicas runs the section.
func replicas(ctx context.Context, e *env, o options, reg string, res *results, out io.Writer) error {
	if err := requireReplicaTools(); err != nil {
		return err
	}
	rr := &replicasResults{Rounds: map[string][]float64{}, Seconds: map[string]float64{}, CPURounds: map[string][]float64{},
		ShroudCPU: map[string]float64{}, NginxCPU: map[string]float64{}, RedisCPU: map[string]float64{},
		Manifest: map[string]*manifestGets{}, Redis: map[string][]redisSample{}}
	res.Replicas = rr
	dir := filepath.Join(e.work, "replicas")
	rs, err := startRedisServer(filepath.Join(dir, "redis"))
	if err != nil {
		return err
	}
	defer rs.stop()
	// One identity for every process: the first generates it.
	one, oneCmd, err := e.startShroud(ctx, "http://"+reg, filepath.Join(dir, "one"))
	if err != nil {
		return err
	}
	defer stopProc(oneCmd)
	id := filepath.Join(dir, "one", "identity.pem")
	if _, err := os.Stat(id); err != nil {
		return fmt.Errorf("the first shroud wrote no identity: %w", err)
	}
	withRedis := func(addr string) []string { return []string{"--identity", id, "--shared-redis", addr} }
	oneR, oneRCmd, err := e.startShroud(ctx, "http://"+reg, filepath.Join(dir, "one-redis"), withRedis(rs.addr)...)
	if err != nil {
		return err
	}
	defer stopProc(oneRCmd)
	cl, err := e.startCluster(ctx, filepath.Join(dir, "cluster"), []string{"http://" + reg, "http://" + reg}, withRedis(rs.addr)...)
	if err != nil {
		return err
	}
	defer cl.stop()
	setups := []setupKind{
		{name: "one shroud", host: one, pids: []int{oneCmd.Process.Pid}},
		{name: "one shroud + Redis", host: oneR, pids: []int{oneRCmd.Process.Pid}},
		{name: "nginx + 2 replicas + Redis", host: cl.lb.addr, pids: []int{cl.cmds[0].Process.Pid, cl.cmds[1].Process.Pid}, nginx: cl.lb},
	}
	if err := replicaTiming(ctx, e, o, setups, rs, rr, out); err != nil {
		return err
	}
	if err := manifestColdWarm(ctx, e, o, dir, id, reg, one, oneR, rs, rr, out); err != nil {
		return err
	}
	if err := redisPerPull(ctx, e, o, dir, id, reg, rs, rr, out); err != nil {
		return err
	}
	if err := redisMemoryPerImage(ctx, e, o, dir, id, reg, rr, out); err != nil {
		return err
	}
	return replicaConcurrency(ctx, e, o, dir, id, reg, rs, rr, out)
}

// replicaTiming pushes and pulls the harness's image through each setup,
// alternating their order from round to round.
func replicaTiming(ctx context.Context, e *env, o options, setups []setupKind, rs *redisSrv, rr *replicasResults, out io.Writer) error {
	total := int64(o.Layers) * o.LayerSize
	rr.ImageMiB = total >> 20
	fmt.Fprintf(out, "replicas: push and pull of %d layers of %d MiB, %d rounds\n", o.Layers, o.LayerSize>>20, o.Rounds)
	cpuOf := func(s setupKind) (sh, ng, rd float64, err error) {
		for _, p := range s.pids {
			v, err := procCPU(p)
			if err != nil {
				return 0, 0, 0, err
			}
			sh += v
		}
		if s.nginx != nil {
			if ng, err = treeCPU(s.nginx.d.cmd.Process.Pid); err != nil {
				return 0, 0, 0, err
			}
		}
		rd, err = procCPU(rs.pid())
		return sh, ng, rd, err
	}
	nginx, red := map[string][]float64{}, map[string][]float64{}
	measure := func(name string, s setupKind, f func() error) error {
		time.Sleep(200 * time.Millisecond) // what the last transfer left settles
		s0, n0, r0, err := cpuOf(s)
		if err != nil {
			return err
		}
		start := time.Now()
		if err := f(); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		wall := time.Since(start).Seconds()
		s1, n1, r1, err := cpuOf(s)
		if err != nil {
			return err
		}
		g := gib(total)
		rr.Rounds[name] = append(rr.Rounds[name], wall)
		rr.CPURounds[name] = append(rr.CPURounds[name], (s1-s0)/g)
		nginx[name], red[name] = append(nginx[name], (n1-n0)/g), append(red[name], (r1-r0)/g)
		fmt.Fprintf(out, "  %-36s %7.2f s  shroud %.2f CPU-s/GiB, nginx %.2f, Redis %.3f\n", name, wall, (s1-s0)/g, (n1-n0)/g, (r1-r0)/g)
		return nil
	}
	for r := 0; r < o.Rounds; r++ {
		fmt.Fprintf(out, "round %d of %d\n", r+1, o.Rounds)
		srcs := make([]string, len(setups))
		for i := range setups {
			var err error
			if srcs[i], err = makeLayout(filepath.Join(e.work, fmt.Sprintf("rep-img-%d-%d", i, r)), o.Layers, o.LayerSize); err != nil {
				return err
			}
		}
		order := []int{0, 1, 2}
		if r%2 == 1 {
			slices.Reverse(order)
		}
		tag := func(i int) string { return fmt.Sprintf("docker://%s/bench/replicas-%d:r%d", setups[i].host, i, r) }
		for _, i := range order {
			if err := measure("push, "+setups[i].name, setups[i], func() error {
				return skopeo(ctx, "copy", "--dest-tls-verify=false", srcs[i], tag(i))
			}); err != nil {
				return err
			}
		}
		for _, i := range order {
			dst := "oci:" + filepath.Join(e.work, fmt.Sprintf("rep-out-%d-%d", i, r)) + ":x"
			if err := measure("pull, "+setups[i].name, setups[i], func() error {
				return skopeo(ctx, "copy", "--src-tls-verify=false", tag(i), dst)
			}); err != nil {
				return err
			}
		}
		for i := range setups {
			os.RemoveAll(filepath.Join(e.work, fmt.Sprintf("rep-img-%d-%d", i, r)))
			os.RemoveAll(filepath.Join(e.work, fmt.Sprintf("rep-out-%d-%d", i, r)))
		}
	}
	for k, v := range rr.Rounds {
		rr.Seconds[k], rr.ShroudCPU[k] = median(v), median(rr.CPURounds[k])
		rr.NginxCPU[k], rr.RedisCPU[k] = median(nginx[k]), median(red[k])
	}
	return nil
}

// manifestColdWarm times GETs of a manifest by digest by a process that
// has not served it (a new repository each sample, pushed through
// another process) and right after by the same one again, without Redis
// and with it, through a counting proxy in front of the registry.
func manifestColdWarm(ctx context.Context, e *env, o options, dir, id, reg, pusher, pusherR string, rs *redisSrv, rr *replicasResults, out io.Writer) error {
	n := max(o.ManifestSamples, 1)
	cp, cpAddr, closeCP, err := startCountingProxy(reg)
	if err != nil {
		return err
	}
	defer closeCP()
	g, gCmd, err := e.startShroud(ctx, "http://"+cpAddr, filepath.Join(dir, "get"), "--identity", id)
	if err != nil {
		return err
	}
	defer stopProc(gCmd)
	gR, gRCmd, err := e.startShroud(ctx, "http://"+cpAddr, filepath.Join(dir, "get-redis"), "--identity", id, "--shared-redis", rs.addr)
	if err != nil {
		return err
	}
	defer stopProc(gRCmd)
	fmt.Fprintf(out, "replicas: manifest GET by digest, %d samples each (cold: a new repository per sample, pushed through another process)\n", n)
	cases := []struct{ label, short, pusher, getter string }{
		{"without Redis", "plain", pusher, g},
		{"with Redis", "redis", pusherR, gR},
	}
	record := func(name string, ms float64, up map[string]int, cmds map[string]int64) {
		m := rr.Manifest[name]
		if m == nil {
			m = &manifestGets{Upstream: map[string]int{}, Redis: map[string]int64{}}
			rr.Manifest[name] = m
		}
		m.Ms = append(m.Ms, ms)
		for k, v := range up {
			m.Upstream[k] += v
		}
		for k, v := range cmds {
			m.Redis[k] += v
		}
	}
	for i := 0; i < n; i++ {
		for j := range cases {
			c := cases[(i+j)%len(cases)]
			repo := fmt.Sprintf("bench/manifest-%s-%d", c.short, i)
			d, err := pushTiny(ctx, c.pusher, repo, 1, 4<<10)
			if err != nil {
				return err
			}
			for _, kind := range []string{"cold", "warm"} {
				c0, err := rs.commandStats(ctx)
				if err != nil {
					return err
				}
				cp.reset()
				ms, err := getManifestMs(ctx, "http://"+c.getter+"/v2/"+repo+"/manifests/"+d)
				if err != nil {
					return fmt.Errorf("%s GET %s: %w", kind, c.label, err)
				}
				up := cp.reset()
				c1, err := rs.commandStats(ctx)
				if err != nil {
					return err
				}
				record(kind+", "+c.label, ms, up, commandsDelta(c0, c1))
			}
			// The baseline: the registry's own GET of the encrypted
			// manifest by its digest.
			desc, err := remote.Head(mustRef(reg+"/"+repo+":1"), remote.WithContext(ctx))
			if err != nil {
				return err
			}
			ms, err := getManifestMs(ctx, "http://"+reg+"/v2/"+repo+"/manifests/"+desc.Digest.String())
			if err != nil {
				return err
			}
			record("straight to the registry", ms, nil, nil)
		}
	}
	for k, m := range rr.Manifest {
		m.MedianMs = median(m.Ms)
		fmt.Fprintf(out, "  %-28s median %6.3f ms over %d; per GET upstream %s, Redis %s\n", k, m.MedianMs, len(m.Ms), perGet(m.Upstream, len(m.Ms)), perGet(m.Redis, len(m.Ms)))
	}
	return nil
}

// perGet formats totals over n samples as means per sample.
func perGet[V int | int64](m map[string]V, n int) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %.4g", k, float64(m[k])/float64(n))
	}
	return b.String()
}

// redisPerPull counts what pushes and pulls cost the shared tier: Redis
// commands and round trips, and the upstream requests beside them.
func redisPerPull(ctx context.Context, e *env, o options, dir, id, reg string, rs *redisSrv, rr *replicasResults, out io.Writer) error {
	tc, err := newTurnCounter(rs.addr)
	if err != nil {
		return err
	}
	defer tc.close()
	cp, cpAddr, closeCP, err := startCountingProxy(reg)
	if err != nil {
		return err
	}
	defer closeCP()
	extra := []string{"--identity", id, "--shared-redis", tc.addr()}
	a, aCmd, err := e.startShroud(ctx, "http://"+cpAddr, filepath.Join(dir, "redis-a"), extra...)
	if err != nil {
		return err
	}
	defer stopProc(aCmd)
	fmt.Fprintf(out, "replicas: Redis commands and round trips, %d rounds\n", o.Rounds)
	measure := func(name string, f func() error) error {
		time.Sleep(200 * time.Millisecond)
		c0, err := rs.commandStats(ctx)
		if err != nil {
			return err
		}
		t0, n0 := tc.counts(), tc.conns.Load()
		cp.reset()
		if err := f(); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		time.Sleep(200 * time.Millisecond) // anything a request left running
		c1, err := rs.commandStats(ctx)
		if err != nil {
			return err
		}
		s := redisSample{Commands: commandsDelta(c0, c1), RoundTrips: commandsDelta(t0, tc.counts()), Connections: tc.conns.Load() - n0, Upstream: cp.reset()}
		rr.Redis[name] = append(rr.Redis[name], s)
		fmt.Fprintf(out, "  %-40s %3d commands %v, %d round trips %v, %d connections; upstream %v\n", name, s.total(), s.Commands, s.trips(), s.RoundTrips, s.Connections, s.Upstream)
		return nil
	}
	if err := measure("idle, 1 s", func() error { time.Sleep(time.Second); return nil }); err != nil {
		return err
	}
	for r := 0; r < o.Rounds; r++ {
		for _, layers := range []int{1, 4} {
			repo := fmt.Sprintf("bench/redis-%d-%d", layers, r)
			img, err := tinyImage(layers, 64<<10)
			if err != nil {
				return err
			}
			if err := measure("push, "+layersLabel(layers), func() error {
				return remote.Write(mustRef(a+"/"+repo+":1"), img, remote.WithContext(ctx))
			}); err != nil {
				return err
			}
			if err := measure("pull, the replica that pushed, "+layersLabel(layers), func() error {
				return pullImage(ctx, mustRef(a+"/"+repo+":1"))
			}); err != nil {
				return err
			}
			b, bCmd, err := e.startShroud(ctx, "http://"+cpAddr, filepath.Join(dir, fmt.Sprintf("redis-b-%d-%d", r, layers)), extra...)
			if err != nil {
				return err
			}
			for _, kind := range []string{"a new replica", "that replica again"} {
				if err := measure("pull, "+kind+", "+layersLabel(layers), func() error {
					return pullImage(ctx, mustRef(b+"/"+repo+":1"))
				}); err != nil {
					stopProc(bCmd)
					return err
				}
			}
			stopProc(bCmd)
		}
	}
	return nil
}

func layersLabel(n int) string {
	if n == 1 {
		return "1 layer"
	}
	return strconv.Itoa(n) + " layers"
}

// redisMemoryPerImage pushes images into a Redis of their own and
// measures what it holds for them.
func redisMemoryPerImage(ctx context.Context, e *env, o options, dir, id, reg string, rr *replicasResults, out io.Writer) error {
	const layers, size = 10, 4 << 10
	k := max(o.RedisImages, 1)
	m, err := startRedisServer(filepath.Join(dir, "redis-memory"))
	if err != nil {
		return err
	}
	defer m.stop()
	addr, cmd, err := e.startShroud(ctx, "http://"+reg, filepath.Join(dir, "memory"), "--identity", id, "--shared-redis", m.addr)
	if err != nil {
		return err
	}
	defer stopProc(cmd)
	// A first image opens the replica's connections, which Redis counts
	// in used_memory too.
	if _, err := pushTiny(ctx, addr, "bench/memory-warmup", layers, size); err != nil {
		return err
	}
	rm := &redisMemory{Images: k, LayersPerImage: layers, Keys: map[string]int64{}, Usage: map[string]int64{}}
	before, err := m.infoInt(ctx, "memory", "used_memory")
	if err != nil {
		return err
	}
	if rm.Clients[0], err = m.infoInt(ctx, "clients", "connected_clients"); err != nil {
		return err
	}
	for i := 0; i < k; i++ {
		if _, err := pushTiny(ctx, addr, fmt.Sprintf("bench/memory-%d", i), layers, size); err != nil {
			return err
		}
	}
	after, err := m.infoInt(ctx, "memory", "used_memory")
	if err != nil {
		return err
	}
	if rm.Clients[1], err = m.infoInt(ctx, "clients", "connected_clients"); err != nil {
		return err
	}
	rm.UsedMemory = after - before
	it := m.admin.Scan(ctx, 0, "*", 1000).Iterator()
	for it.Next(ctx) {
		key := it.Val()
		kind := "?"
		if i := strings.LastIndexByte(key, ':'); i >= 0 && i+1 < len(key) {
			kind = key[i+1 : i+2]
		}
		u, err := m.admin.MemoryUsage(ctx, key).Result()
		if err != nil {
			return err
		}
		rm.Keys[kind]++
		rm.Usage[kind] += u
	}
	if err := it.Err(); err != nil {
		return err
	}
	rr.RedisMemory = rm
	fmt.Fprintf(out, "replicas: Redis memory, %d images of %d layers: used_memory +%d bytes (%.1f KiB per image; connected clients %d then %d); keys by kind over %d images %v, MEMORY USAGE %v\n",
		k, layers, rm.UsedMemory, float64(rm.UsedMemory)/float64(k)/1024, rm.Clients[0], rm.Clients[1], k+1, rm.Keys, rm.Usage)
	return nil
}

// replicaConcurrency pulls one image with o.Clients clients at once
// through nginx and two replicas, over the rounds (a new image each).
// Both replicas have one upstream (one's upload Location must be the
// other's upstream too), a counting proxy, which tells their requests
// apart by the pid that holds each connection's socket.
func replicaConcurrency(ctx context.Context, e *env, o options, dir, id, reg string, rs *redisSrv, rr *replicasResults, out io.Writer) error {
	const layers, size = 4, 16 << 20
	cp, cpAddr, closeCP, err := startCountingProxy(reg)
	if err != nil {
		return err
	}
	defer closeCP()
	cl, err := e.startCluster(ctx, filepath.Join(dir, "concurrency"), []string{"http://" + cpAddr, "http://" + cpAddr}, "--identity", id, "--shared-redis", rs.addr)
	if err != nil {
		return err
	}
	defer cl.stop()
	pids := []int{cl.cmds[0].Process.Pid, cl.cmds[1].Process.Pid}
	cp.countBy(func(c net.Conn) string { return strconv.Itoa(socketOwner(c, pids)) })
	fmt.Fprintf(out, "replicas: %d concurrent pulls of %d layers of %d MiB through nginx and 2 replicas, %d rounds\n", o.Clients, layers, size>>20, o.Rounds)
	for r := 0; r < o.Rounds; r++ {
		src, err := makeLayout(filepath.Join(e.work, fmt.Sprintf("rep-conc-%d", r)), layers, size)
		if err != nil {
			return err
		}
		tag := fmt.Sprintf("bench/replicas-conc:r%d", r)
		if err := skopeo(ctx, "copy", "--dest-tls-verify=false", src, "docker://"+cl.lb.addr+"/"+tag); err != nil {
			return err
		}
		os.RemoveAll(filepath.Join(e.work, fmt.Sprintf("rep-conc-%d", r)))
		time.Sleep(200 * time.Millisecond)
		cp.reset()
		ref := mustRef(cl.lb.addr + "/" + tag)
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
				return fmt.Errorf("concurrent pull through the replicas: %w", err)
			}
		}
		// What the upstream holds: the layers' ciphertext digests.
		desc, err := remote.Get(mustRef(reg+"/"+tag), remote.WithContext(ctx))
		if err != nil {
			return err
		}
		um, err := v1.ParseManifest(bytes.NewReader(desc.Manifest))
		if err != nil {
			return err
		}
		owned := cp.ownedBlobGETs()
		all, _ := cp.blobGETs()
		if !maps.Equal(sumOwned(owned), all) {
			return fmt.Errorf("upstream blob GETs %v, of them by the replicas %v: some on connections no replica holds", all, owned)
		}
		cr := concurrentRound{Clients: o.Clients}
		for _, pid := range pids {
			byDigest := owned[strconv.Itoa(pid)]
			full, rng := make([]int, len(um.Layers)), make([]int, len(um.Layers))
			other := 0
			for _, n := range byDigest {
				other += n.All
			}
			for i, l := range um.Layers {
				n := byDigest[l.Digest.String()]
				full[i], rng[i] = n.All-n.Ranged, n.Ranged
				other -= n.All
			}
			cr.Full, cr.Range = append(cr.Full, full), append(cr.Range, rng)
			cr.Other = append(cr.Other, other)
		}
		rr.Concurrent = append(rr.Concurrent, cr)
		fmt.Fprintf(out, "  round %d: all digests right; upstream GETs per layer, full by replica %v, Range by replica %v; other blob GETs (the config) by replica %v\n", r+1, cr.Full, cr.Range, cr.Other)
	}
	return nil
}

// sumOwned adds up the blob GETs of every owner but "0" (none found).
func sumOwned(owned map[string]map[string]blobCount) map[string]int {
	sum := map[string]int{}
	for o, m := range owned {
		for d, n := range m {
			if o != "0" {
				sum[d] += n.All
			}
		}
	}
	return sum
}

// socketOwner is which of pids holds the other end of c, a loopback
// connection accepted here: the socket whose local port is c's remote
// port and whose remote port is c's local one (/proc/net/tcp), found
// among each pid's open files; 0 for none.
func socketOwner(c net.Conn, pids []int) int {
	la, ok1 := c.LocalAddr().(*net.TCPAddr)
	ra, ok2 := c.RemoteAddr().(*net.TCPAddr)
	if !ok1 || !ok2 {
		return 0
	}
	want := fmt.Sprintf(":%04X", ra.Port)
	peer := fmt.Sprintf(":%04X", la.Port)
	inode := ""
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, _ := os.ReadFile(table)
		for _, l := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(l)
			if len(f) > 9 && strings.HasSuffix(f[1], want) && strings.HasSuffix(f[2], peer) {
				inode = f[9]
			}
		}
	}
	if inode == "" {
		return 0
	}
	target := "socket:[" + inode + "]"
	for _, pid := range pids {
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		for _, fd := range fds {
			if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); l == target {
				return pid
			}
		}
	}
	return 0
}

// reportReplicas prints the section's medians.
func reportReplicas(rr *replicasResults, out io.Writer) {
	fmt.Fprintf(out, "\nreplicas, medians over the rounds (%d MiB image):\n", rr.ImageMiB)
	for _, dir := range []string{"push", "pull"} {
		base := rr.Seconds[dir+", one shroud"]
		for _, s := range []string{"one shroud", "one shroud + Redis", "nginx + 2 replicas + Redis"} {
			k := dir + ", " + s
			if _, ok := rr.Seconds[k]; !ok {
				continue
			}
			lo, hi := spread(rr.Rounds[k])
			ratio := 0.0
			if base > 0 {
				ratio = rr.Seconds[k] / base
			}
			fmt.Fprintf(out, "  %-36s %7.2f s (%.2f-%.2f) %5.2fx  shroud %.2f CPU-s/GiB, nginx %.2f, Redis %.3f\n",
				k, rr.Seconds[k], lo, hi, ratio, rr.ShroudCPU[k], rr.NginxCPU[k], rr.RedisCPU[k])
		}
	}
	names := make([]string, 0, len(rr.Manifest))
	for k := range rr.Manifest {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		m := rr.Manifest[k]
		fmt.Fprintf(out, "  manifest GET by digest, %-24s %6.3f ms; per GET upstream %s, Redis %s\n", k, m.MedianMs, perGet(m.Upstream, len(m.Ms)), perGet(m.Redis, len(m.Ms)))
	}
	med := func(name string, f func(redisSample) float64) float64 {
		var xs []float64
		for _, s := range rr.Redis[name] {
			xs = append(xs, f(s))
		}
		return median(xs)
	}
	cmds := func(s redisSample) float64 { return float64(s.total()) }
	trips := func(s redisSample) float64 { return float64(s.trips()) }
	for _, op := range []string{"push", "pull, the replica that pushed", "pull, a new replica", "pull, that replica again"} {
		c1, c4 := med(op+", 1 layer", cmds), med(op+", 4 layers", cmds)
		t1, t4 := med(op+", 1 layer", trips), med(op+", 4 layers", trips)
		if len(rr.Redis[op+", 1 layer"]) == 0 {
			continue
		}
		fmt.Fprintf(out, "  Redis, %-30s 1 layer: %g commands, %g round trips; 4 layers: %g, %g; so per layer %.3g commands, %.3g round trips, per image besides %.3g, %.3g (connection setup left out)\n",
			op, c1, t1, c4, t4, (c4-c1)/3, (t4-t1)/3, c1-(c4-c1)/3, t1-(t4-t1)/3)
	}
	if m := rr.RedisMemory; m != nil {
		var usage, keys int64
		for k, v := range m.Usage {
			if k != "l" { // upload ledger records, which end with their uploads' TTL
				usage += v
				keys += m.Keys[k]
			}
		}
		fmt.Fprintf(out, "  Redis memory per image of %d layers: used_memory %.1f KiB; MEMORY USAGE of the mappings %.1f KiB in %.1f keys (ledger records besides: %.1f KiB)\n",
			m.LayersPerImage, float64(m.UsedMemory)/float64(m.Images)/1024, float64(usage)/float64(m.Images+1)/1024, float64(keys)/float64(m.Images+1),
			float64(m.Usage["l"])/float64(m.Images+1)/1024)
	}
	for i, c := range rr.Concurrent {
		fmt.Fprintf(out, "  %d concurrent pulls, round %d: full GETs per layer by replica %v, Range %v\n", c.Clients, i+1, c.Full, c.Range)
	}
}

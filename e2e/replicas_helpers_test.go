package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The replica tests run Debian's redis-server and nginx as an operator
// would: each on a free 127.0.0.1 port, with its configuration, logs and
// pid file in the test's own directory, and stopped by pid.
const (
	redisServerBin = "/usr/bin/redis-server"
	nginxBin       = "/usr/sbin/nginx"
)

// requireBinary fails the test when a program the e2e suite runs is not
// installed, naming the package that has it.
func requireBinary(t *testing.T, path, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(path); err != nil {
		t.Fatalf("%s is not installed (apt-get install %s; .ci/run does): %v", path, pkg, err)
	}
}

// process is a program a test started, with its exit watched.
type process struct {
	name   string
	cmd    *exec.Cmd
	logs   *syncBuffer
	exited chan struct{}
	err    error // how it exited, once exited is closed
}

func startProcess(t *testing.T, name, bin string, args ...string) *process {
	t.Helper()
	p := &process{name: name, logs: &syncBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.exited) }()
	return p
}

func (p *process) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// signal sends sig to the process by its pid.
func (p *process) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := syscall.Kill(p.cmd.Process.Pid, sig); err != nil && p.running() {
		t.Fatalf("kill -%d %s (pid %d): %v", sig, p.name, p.cmd.Process.Pid, err)
	}
}

// kill is kill -9, waited for.
func (p *process) kill(t *testing.T) {
	t.Helper()
	if !p.running() {
		return
	}
	p.signal(t, syscall.SIGKILL)
	<-p.exited
}

// stop asks the process to stop with sig, and kills it after 10 s.
func (p *process) stop(sig syscall.Signal) {
	if !p.running() {
		return
	}
	syscall.Kill(p.cmd.Process.Pid, sig)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		syscall.Kill(p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.exited
	}
}

// waitHTTP waits up to 30 s for GET url to answer want.
func waitHTTP(t *testing.T, p *process, url string, want int) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if !p.running() {
			t.Fatalf("%s exited (%v):\n%s", p.name, p.err, p.logs)
		}
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == want {
				return
			}
		}
	}
	t.Fatalf("%s: GET %s did not answer %d within 30s:\n%s", p.name, url, want, p.logs)
}

// redisServer is Debian's redis-server, without persistence, on a fixed
// address a test can kill it on and start it again.
type redisServer struct {
	t    *testing.T
	addr string
	conf string
	proc *process
}

func startRedis(t *testing.T) *redisServer {
	t.Helper()
	requireBinary(t, redisServerBin, "redis-server")
	dir := t.TempDir()
	r := &redisServer{t: t, addr: freeAddr(t), conf: filepath.Join(dir, "redis.conf")}
	host, port, _ := net.SplitHostPort(r.addr)
	conf := fmt.Sprintf("bind %s\nport %s\nprotected-mode no\ndaemonize no\nsave \"\"\nappendonly no\ndir %s\npidfile %s\nlogfile \"\"\n",
		host, port, dir, filepath.Join(dir, "redis.pid"))
	if err := os.WriteFile(r.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	r.start()
	t.Cleanup(func() { r.proc.stop(syscall.SIGTERM) })
	return r
}

// start runs the server and waits until it answers PING.
func (r *redisServer) start() {
	r.t.Helper()
	r.proc = startProcess(r.t, "redis-server", redisServerBin, r.conf)
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if !r.proc.running() {
			r.t.Fatalf("redis-server exited (%v):\n%s", r.proc.err, r.proc.logs)
		}
		if r.ping() == nil {
			return
		}
	}
	r.t.Fatalf("redis-server on %s did not answer PING:\n%s", r.addr, r.proc.logs)
}

// ping speaks RESP's inline PING.
func (r *redisServer) ping() error {
	c, err := net.DialTimeout("tcp", r.addr, time.Second)
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

// balancer is nginx in front of the replicas: plain round-robin, no
// keepalive to them (each request opens its own connection, so nothing
// ties a client's requests to one replica), bodies streamed both ways.
type balancer struct {
	addr   string
	dir    string
	access string // its access log: method, uri, status, upstream_addr
	proc   *process
}

func startNginx(t *testing.T, backends ...string) *balancer {
	t.Helper()
	requireBinary(t, nginxBin, "nginx")
	dir := t.TempDir()
	b := &balancer{addr: freeAddr(t), dir: dir, access: filepath.Join(dir, "access.log")}
	var servers strings.Builder
	for _, s := range backends {
		// max_fails=0: a replica that refused a connection is tried
		// again on the next request (it may be back), not shunned
		// for fail_timeout; nginx passes a refused request on to the
		// next replica either way.
		fmt.Fprintf(&servers, "    server %s max_fails=0;\n", s)
	}
	user := ""
	if os.Geteuid() == 0 {
		// A root master runs its worker as nobody, who cannot enter
		// the test's 0700 directory.
		user = "user root;\n"
	}
	conf := fmt.Sprintf(`%sworker_processes 1;
error_log %[2]s/error.log warn;
pid %[2]s/nginx.pid;
events { worker_connections 512; }
http {
  log_format replicas '$request_method|$uri|$status|$upstream_addr|$upstream_status';
  access_log %[2]s/access.log replicas;
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
      proxy_read_timeout 120s;
      proxy_send_timeout 120s;
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_set_header X-Forwarded-Proto $scheme;
    }
  }
}
`, user, dir, servers.String(), b.addr)
	cfg := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	b.proc = startProcess(t, "nginx", nginxBin, "-p", dir, "-c", cfg, "-g", "daemon off;")
	t.Cleanup(func() { b.proc.stop(syscall.SIGTERM) })
	waitHTTP(t, b.proc, "http://"+b.addr+"/healthz", 200)
	return b
}

// errorLog is nginx's error log, for failure messages.
func (b *balancer) errorLog() string {
	e, _ := os.ReadFile(filepath.Join(b.dir, "error.log"))
	return string(e)
}

// balancedRequest is one line of the balancer's access log.
type balancedRequest struct {
	method, uri, status string
	// upstreams are the replicas nginx tried, in order (more than one
	// when it passed the request on after a failure).
	upstreams []string
}

// requests reads the access log (nginx writes each line as a request
// ends).
func (b *balancer) requests(t *testing.T) []balancedRequest {
	t.Helper()
	raw, err := os.ReadFile(b.access)
	if err != nil {
		t.Fatal(err)
	}
	var out []balancedRequest
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		f := strings.Split(line, "|")
		if len(f) != 5 {
			continue
		}
		r := balancedRequest{method: f[0], uri: f[1], status: f[2]}
		for _, a := range strings.Split(f[3], ",") {
			if a = strings.TrimSpace(a); a != "" && a != "-" {
				r.upstreams = append(r.upstreams, a)
			}
		}
		out = append(out, r)
	}
	return out
}

// replica is one `shroud serve` process on a fixed address (the
// balancer's configuration names it), with its metrics on another.
type replica struct {
	t       *testing.T
	name    string
	bin     string
	addr    string
	metrics string
	args    []string
	proc    *process
}

func newReplica(t *testing.T, name, bin string, args ...string) *replica {
	t.Helper()
	r := &replica{t: t, name: name, bin: bin, addr: freeAddr(t), metrics: freeAddr(t), args: args}
	r.start()
	t.Cleanup(func() { r.proc.kill(t) })
	return r
}

// start runs the replica (again, after a kill) and waits for /healthz.
func (r *replica) start() {
	r.t.Helper()
	args := append([]string{"serve", "--listen", r.addr, "--metrics-listen", r.metrics}, r.args...)
	r.proc = startProcess(r.t, r.name, r.bin, args...)
	waitHTTP(r.t, r.proc, "http://"+r.addr+"/healthz", 200)
}

// ready is the replica's /readyz: its status and JSON body.
func (r *replica) ready(t *testing.T) (int, map[string]any, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+r.addr+"/readyz", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s /readyz: %v", r.name, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var body map[string]any
	if err := json.Unmarshal(b, &body); err != nil {
		t.Fatalf("%s /readyz answered %d %q, not JSON", r.name, resp.StatusCode, b)
	}
	return resp.StatusCode, body, strings.TrimSpace(string(b))
}

// metricSum is the sum of every series of a Prometheus metric on the
// replica's --metrics-listen (0 when it has none yet).
func (r *replica) metricSum(t *testing.T, name string) float64 {
	t.Helper()
	text := scrape(t, "http://"+r.metrics+"/metrics")
	var sum float64
	for _, m := range regexp.MustCompile(`(?m)^`+regexp.QuoteMeta(name)+`(?:\{[^}]*\})? (\S+)$`).FindAllStringSubmatch(text, -1) {
		v, _ := strconv.ParseFloat(m[1], 64)
		sum += v
	}
	return sum
}

// requestLines counts the request log lines of the replica by method,
// for paths holding part.
func (r *replica) requestLines(method, part string) int {
	n := 0
	for _, l := range strings.Split(r.proc.logs.String(), "\n") {
		if strings.Contains(l, "msg=request ") && strings.Contains(l, " method="+method+" ") && strings.Contains(l, part) {
			n++
		}
	}
	return n
}

// replicaBin is the shroud binary the replica tests run, built once for
// them all (into the suite's tools directory).
var replicaBin struct {
	once sync.Once
	path string
	err  error
	out  []byte
}

func replicaBinary(t *testing.T) string {
	t.Helper()
	replicaBin.once.Do(func() {
		replicaBin.path = filepath.Join(toolsDir, "shroud-replica")
		replicaBin.out, replicaBin.err = exec.Command("go", "build", "-o", replicaBin.path, "../cmd/shroud").CombinedOutput()
	})
	if replicaBin.err != nil {
		t.Fatalf("go build ./cmd/shroud: %v\n%s", replicaBin.err, replicaBin.out)
	}
	return replicaBin.path
}

// replicaSet is what the replica tests run: a distribution v3 registry,
// redis-server, two shroud replicas sharing one identity and the Redis,
// and nginx balancing between them.
type replicaSet struct {
	up       string // the registry's URL
	storage  string // its storage root
	redis    *redisServer
	replicas []*replica
	lb       *balancer
}

// startReplicaSet starts the set; extra are flags for both replicas.
func startReplicaSet(t *testing.T, extra ...string) *replicaSet {
	t.Helper()
	bin := replicaBinary(t)
	up := distributionV3(t)
	rs := &replicaSet{up: up.URL, storage: up.Dir, redis: startRedis(t)}
	first := filepath.Join(t.TempDir(), "a")
	common := append([]string{"--upstream", up.URL, "--shared-redis", rs.redis.addr, "--log-level", "info"}, extra...)
	a := newReplica(t, "replica-a", bin, append([]string{"--data-dir", first}, common...)...)
	// The second holds the identity the first generated.
	b := newReplica(t, "replica-b", bin, append([]string{"--data-dir", filepath.Join(t.TempDir(), "b"),
		"--identity", filepath.Join(first, "identity.pem")}, common...)...)
	rs.replicas = []*replica{a, b}
	rs.lb = startNginx(t, a.addr, b.addr)
	return rs
}

// host is the balancer's host:port, what clients are pointed at.
func (rs *replicaSet) host() string { return rs.lb.addr }

// byAddr is the replica listening on addr.
func (rs *replicaSet) byAddr(addr string) *replica {
	for _, r := range rs.replicas {
		if r.addr == addr {
			return r
		}
	}
	return nil
}

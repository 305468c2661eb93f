// Package redistest runs a real redis-server (Debian's) for a test: on a
// free 127.0.0.1 port, with no persistence and no unix socket, stopped by
// its pid when the test ends. The shared tier is tested against a real
// server, never a fake.
package redistest

import (
	"bufio"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is a redis-server process of a test's own.
type Server struct {
	t    *testing.T
	bin  string
	dir  string
	port int
	cmd  *exec.Cmd
}

// Start starts a redis-server for t, stopped when t ends. Debian's
// redis-server must be installed (apt-get install redis-server); with
// go test -short the test is skipped without it.
func Start(t *testing.T) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if testing.Short() {
			t.Skip("redis-server is not installed; skipped in -short mode")
		}
		t.Fatal("redis-server is not installed (apt-get install redis-server): the shared cache tier is tested against a real one")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	r := &Server{t: t, bin: bin, dir: t.TempDir(), port: port}
	r.Restart()
	t.Cleanup(r.Stop)
	return r
}

// Addr is the server's host:port.
func (r *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(r.port) }

// Restart runs the server on its port (again, after Stop) and waits until
// it answers PING.
func (r *Server) Restart() {
	r.t.Helper()
	cmd := exec.Command(r.bin,
		"--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", r.dir,
		"--daemonize", "no", "--loglevel", "warning")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		r.t.Fatalf("starting redis-server: %v", err)
	}
	r.cmd = cmd
	deadline := time.Now().Add(10 * time.Second)
	for {
		if Ping(r.Addr()) {
			return
		}
		if time.Now().After(deadline) {
			r.Stop()
			r.t.Fatalf("redis-server on %s did not answer within 10s:\n%s", r.Addr(), out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills the server by its pid and waits for it; stopping a stopped
// server does nothing.
func (r *Server) Stop() {
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Signal(syscall.SIGKILL)
	_ = r.cmd.Wait()
	r.cmd = nil
}

// Ping says whether addr answers PING, over a bare connection.
func Ping(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "+PONG")
}

// Client returns a go-redis client of the server, closed when the test
// ends, as shroud builds it (ContextTimeoutEnabled, one address).
func (r *Server) Client() redis.UniversalClient { return Client(r.t, r.Addr()) }

// Client returns a go-redis client of addr, closed when t ends.
func Client(t *testing.T, addr string) redis.UniversalClient {
	t.Helper()
	c := redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs:                 []string{addr},
		ContextTimeoutEnabled: true,
		DisableIdentity:       true,
		MaxRetries:            -1,
	})
	t.Cleanup(func() { c.Close() })
	return c
}

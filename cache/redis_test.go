package cache

import (
	"bufio"
	"context"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/shroud-oci/shroud/crypto"
)

// redisServer is a redis-server process of a test's own: on a free
// 127.0.0.1 port, no persistence, no unix socket.
type redisServer struct {
	t    *testing.T
	bin  string
	dir  string
	port int
	cmd  *exec.Cmd
}

// startRedis starts a redis-server for t, stopped when t ends. Debian's
// redis-server must be installed (apt-get install redis-server); with
// go test -short the test is skipped without it.
func startRedis(t *testing.T) *redisServer {
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
	r := &redisServer{t: t, bin: bin, dir: t.TempDir(), port: port}
	r.start()
	t.Cleanup(r.stop)
	return r
}

func (r *redisServer) addr() string { return "127.0.0.1:" + strconv.Itoa(r.port) }

// start runs the server on its port and waits until it answers PING.
func (r *redisServer) start() {
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
		if pingRaw(r.addr()) {
			return
		}
		if time.Now().After(deadline) {
			r.stop()
			r.t.Fatalf("redis-server on %s did not answer within 10s:\n%s", r.addr(), out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop kills the server by its pid and waits for it; stopping a stopped
// server does nothing.
func (r *redisServer) stop() {
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Signal(syscall.SIGKILL)
	_ = r.cmd.Wait()
	r.cmd = nil
}

// pingRaw says whether addr answers PING, over a bare connection.
func pingRaw(addr string) bool {
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

// client returns a go-redis client of the server, closed when the test
// ends, as the proxy would build it (ContextTimeoutEnabled, one address).
func (r *redisServer) client() redis.UniversalClient {
	return newClient(r.t, r.addr())
}

func newClient(t *testing.T, addr string) redis.UniversalClient {
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

// testIdentity returns a new identity of shroud's.
func testIdentity(t *testing.T) *crypto.Identity {
	t.Helper()
	id, _, err := crypto.LoadOrCreateIdentity(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// sharedKeys are the keyed hash and box the proxy derives from an
// identity for the shared tier: every replica holding id derives the same.
type sharedKeys struct {
	names *crypto.KeyedHash
	box   *crypto.Box
}

func keysOf(t *testing.T, id *crypto.Identity) sharedKeys {
	t.Helper()
	kk, err := id.DeriveKey(crypto.PurposeSharedKey)
	if err != nil {
		t.Fatal(err)
	}
	vk, err := id.DeriveKey(crypto.PurposeSharedValue)
	if err != nil {
		t.Fatal(err)
	}
	names, err := crypto.NewKeyedHash(kk)
	if err != nil {
		t.Fatal(err)
	}
	box, err := crypto.NewBox(vk)
	if err != nil {
		t.Fatal(err)
	}
	return sharedKeys{names: names, box: box}
}

// newTestShared returns a Shared on client under k.
func newTestShared(t *testing.T, client redis.UniversalClient, k sharedKeys, opts SharedOptions) *Shared {
	t.Helper()
	s, err := NewShared(client, k.names, k.box, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// ctxT is a context for one test's calls.
func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

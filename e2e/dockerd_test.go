package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Debian's dockerd and its docker client (package docker.io), which
// .ci/run installs. The client is named by path: another docker on PATH
// may be newer than the daemon speaks.
const (
	dockerdBin = "/usr/sbin/dockerd"
	dockerBin  = "/usr/bin/docker"
)

// dockerd is a Docker daemon of the test's own: private data and exec
// roots, no iptables, no bridge, the vfs storage driver.
type dockerd struct {
	t    *testing.T
	host string // unix://…/docker.sock
	cfg  string // the client's DOCKER_CONFIG
}

// startDockerd starts Debian's dockerd as root with args (registry
// mirrors) and stops it by its pid at the end.
func startDockerd(t *testing.T, args ...string) *dockerd {
	t.Helper()
	for _, bin := range []string{dockerdBin, dockerBin} {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("%s: %v (apt-get install docker.io; .ci/run does)", bin, err)
		}
	}
	if os.Geteuid() != 0 {
		t.Fatal("dockerd needs root (the e2e tests run as root, as on CI)")
	}
	dir, err := os.MkdirTemp("", "dkd")
	if err != nil {
		t.Fatal(err)
	}
	d := &dockerd{t: t, host: "unix://" + filepath.Join(dir, "d.sock"), cfg: filepath.Join(dir, "client")}
	logs := &syncBuffer{}
	cmd := exec.Command(dockerdBin, append([]string{"--iptables=false", "--ip6tables=false", "--bridge=none", "--storage-driver=vfs",
		"--data-root", filepath.Join(dir, "root"), "--exec-root", filepath.Join(dir, "exec"), "--pidfile", filepath.Join(dir, "d.pid"),
		"--host", d.host}, args...)...)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stopShroud(t, cmd) // SIGTERM, then a kill after 15 s
		os.RemoveAll(dir)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		if _, err := d.docker("version"); err == nil {
			return d
		}
		if ctx.Err() != nil {
			t.Fatalf("dockerd did not answer within 60s:\n%s", logs)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// docker runs the docker client against this daemon.
func (d *dockerd) docker(args ...string) (string, error) {
	cmd := exec.Command(dockerBin, args...)
	cmd.Env = append(os.Environ(), "DOCKER_HOST="+d.host, "DOCKER_CONFIG="+d.cfg)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func (d *dockerd) must(args ...string) string {
	d.t.Helper()
	out, err := d.docker(args...)
	if err != nil {
		d.t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// load loads img into the daemon as tag (docker load of a docker-archive).
func (d *dockerd) load(img v1.Image, tag string) {
	d.t.Helper()
	ref, err := name.NewTag(tag)
	if err != nil {
		d.t.Fatal(err)
	}
	f := filepath.Join(d.t.TempDir(), "image.tar")
	if err := tarball.WriteToFile(f, ref, img); err != nil {
		d.t.Fatal(err)
	}
	d.must("load", "-i", f)
}

// file reads path from ref's filesystem as docker unpacked it (docker
// create, docker cp: nothing runs).
func (d *dockerd) file(ref, path string) string {
	d.t.Helper()
	id := strings.TrimSpace(d.must("create", ref, "/nothing"))
	defer d.docker("rm", id)
	cmd := exec.Command(dockerBin, "cp", id+":"+path, "-")
	cmd.Env = append(os.Environ(), "DOCKER_HOST="+d.host, "DOCKER_CONFIG="+d.cfg)
	out, err := cmd.Output()
	if err != nil {
		d.t.Fatalf("docker cp %s:%s: %v", ref, path, err)
	}
	tr := tar.NewReader(bytes.NewReader(out))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			d.t.Fatalf("docker cp %s:%s gave no file", ref, path)
		}
		if err != nil {
			d.t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			b, _ := io.ReadAll(tr)
			return string(b)
		}
	}
}

// pushedDigest is the digest `docker push` reports.
var pushedDigest = regexp.MustCompile(`digest: (sha256:[0-9a-f]{64})`)

// Debian's dockerd pushes an image through shroud to distribution v3
// and pulls it back: the registry holds only encrypted layers, the pull
// gets the image ID that was pushed and the digest push reported, and the
// files docker unpacks are the pushed ones. Then, with shroud as its
// `registry-mirrors`, `docker pull` of a Docker Hub name is served by
// shroud from its upstream (no Hub is reachable here: nothing else could
// serve it).
func TestDockerdPushesAndPullsThroughShroud(t *testing.T) {
	bin := buildShroud(t)
	up := distributionV3(t)
	addr, _, _ := startShroud(t, bin, "--data-dir", t.TempDir(), "--upstream", up.URL)
	// 127.0.0.0/8 registries are insecure (plain HTTP) to docker by default.
	d := startDockerd(t, "--registry-mirror", "http://"+addr)

	img, content := fileImage(t, "srv/hello.txt", v1.Platform{OS: "linux", Architecture: "amd64"})
	d.load(img, "shroud-e2e/app:1")
	ref := addr + "/team/app:1"
	d.must("tag", "shroud-e2e/app:1", ref)
	id := strings.TrimSpace(d.must("image", "inspect", "-f", "{{.Id}}", ref))
	m := pushedDigest.FindStringSubmatch(d.must("push", ref))
	if m == nil {
		t.Fatal("docker push reported no digest")
	}
	pushed := m[1]

	// What docker pushed (its own manifest, through shroud's eyes) against
	// what the registry holds.
	plainRef, _ := name.ParseReference(ref, name.Insecure)
	plain, err := remote.Image(plainRef)
	if err != nil {
		t.Fatal(err)
	}
	if pd, _ := plain.Digest(); pd.String() != pushed {
		t.Fatalf("shroud serves %s for %s; docker pushed %s", pd, ref, pushed)
	}
	upstreamLayersEncrypted(t, up.Host()+"/team/app:1", plain)

	d.must("rmi", ref, "shroud-e2e/app:1")
	d.must("pull", ref)
	if got := strings.TrimSpace(d.must("image", "inspect", "-f", "{{.Id}}", ref)); got != id {
		t.Errorf("pulled image ID %s; pushed %s", got, id)
	}
	if got := d.must("image", "inspect", "-f", "{{json .RepoDigests}}", ref); !strings.Contains(got, addr+"/team/app@"+pushed) {
		t.Errorf("RepoDigests %s; want %s@%s", strings.TrimSpace(got), addr+"/team/app", pushed)
	}
	if got := d.file(ref, "/srv/hello.txt"); got != content {
		t.Errorf("unpacked /srv/hello.txt %q; pushed %q", got, content)
	}

	// registry-mirrors: a Docker Hub name, stored through shroud in its
	// upstream as library/mirrored.
	mimg, mcontent := fileImage(t, "srv/mirrored.txt", v1.Platform{OS: "linux", Architecture: "amd64"})
	pushThrough(t, addr, "library/mirrored", "1", mimg)
	upstreamLayersEncrypted(t, up.Host()+"/library/mirrored:1", mimg)
	d.must("pull", "docker.io/library/mirrored:1")
	if got := d.file("mirrored:1", "/srv/mirrored.txt"); got != mcontent {
		t.Errorf("unpacked /srv/mirrored.txt %q; pushed %q", got, mcontent)
	}
}

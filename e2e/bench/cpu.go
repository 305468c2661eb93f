package main

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/shroud-oci/shroud/crypto"
)

// CPU cost: shroud's own CPU seconds (utime+stime of its process, from
// /proc/<pid>/stat, read before and after) per GiB it moves, for a client
// that does no work of its own (a Go HTTP client reading into a 1 MiB
// buffer and dropping it). The registry's CPU is not shroud's: the
// baseline is the same client reading the plain blob straight from the
// registry, whose own CPU for it is reported beside shroud's as what
// relaying bytes from disk to a socket costs. The crypto alone (AES-CTR
// and HMAC-SHA256 on one thread, and the decrypt and encrypt streams) is
// measured in this process in the same run.

// cpuResults are the CPU figures of a run, CPU seconds per GiB.
type cpuResults struct {
	BlobMiB int64 `json:"blobMiB"`
	// CryptoAlone is AES-256-CTR + HMAC-SHA256 on one thread: what a pull
	// of a blob shroud vouches for cannot go below.
	CryptoAlone float64 `json:"cryptoAloneCPUsPerGiB"`
	// DecryptStream and EncryptStream are the crypto package's streams
	// over memory (crypto.DecryptReader with the HMAC alone, and the
	// Encrypter's WriteTo), all their goroutines counted.
	DecryptStream float64 `json:"decryptStreamCPUsPerGiB"`
	EncryptStream float64 `json:"encryptStreamCPUsPerGiB"`
	// Rounds and Medians: CPU seconds per GiB of each measurement.
	Rounds  map[string][]float64 `json:"roundCPUsPerGiB"`
	Medians map[string]float64   `json:"medianCPUsPerGiB"`
	// Seconds: the client's wall seconds of each measurement, medians.
	Seconds map[string]float64 `json:"medianSeconds"`
}

// procCPU is a process's CPU seconds so far (user and system, every
// thread).
func procCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("unreadable /proc stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	// Fields 14 and 15 of stat(5), utime and stime, in USER_HZ (100).
	u, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return (u + st) / 100, nil
}

// selfCPU is this process's CPU seconds so far.
func selfCPU() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return tv(ru.Utime) + tv(ru.Stime)
}

// threadCPU is the calling thread's CPU seconds so far.
func threadCPU() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(1, &ru) // RUSAGE_THREAD
	return tv(ru.Utime) + tv(ru.Stime)
}

func tv(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }

// cryptoAlone measures AES-256-CTR + HMAC-SHA256 over 1 MiB buffers on
// one thread, best of three passes over n bytes, in CPU seconds per GiB.
func cryptoAlone(n int64) float64 {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	buf := make([]byte, 1<<20)
	rand.Read(buf)
	key, iv := make([]byte, 32), make([]byte, 16)
	blk, _ := aes.NewCipher(key)
	best := 0.0
	for r := 0; r < 3; r++ {
		s, m := cipher.NewCTR(blk, iv), hmac.New(sha256.New, key)
		start := threadCPU()
		for done := int64(0); done < n; done += int64(len(buf)) {
			m.Write(buf)
			s.XORKeyStream(buf, buf)
		}
		m.Sum(nil)
		if c := (threadCPU() - start) / gib(n); best == 0 || c < best {
			best = c
		}
	}
	return best
}

// streamCPU measures the crypto package's decrypt stream (HMAC alone, as
// for a blob shroud vouches for) and its encrypt stream over n bytes in
// memory, in CPU seconds per GiB, the process's whole CPU counted (their
// worker goroutines included); best of three.
func streamCPU(n int64) (dec, enc float64, err error) {
	k, err := crypto.NewLayerKey()
	if err != nil {
		return 0, 0, err
	}
	plain := make([]byte, n)
	rand.Read(plain)
	var ct []byte
	var sealed crypto.Sealed
	for r := 0; r < 3; r++ {
		e, err := crypto.NewEncrypter(k)
		if err != nil {
			return 0, 0, err
		}
		var out bytes.Buffer
		out.Grow(int(n))
		start := selfCPU()
		if _, err := io.Copy(&out, e.Reader(bytes.NewReader(plain))); err != nil {
			return 0, 0, err
		}
		sealed = e.Seal()
		if c := (selfCPU() - start) / gib(n); enc == 0 || c < enc {
			enc = c
		}
		ct = out.Bytes()
	}
	for r := 0; r < 3; r++ {
		d, err := crypto.DecryptReader(bytes.NewReader(ct), k, sealed.HMAC, "")
		if err != nil {
			return 0, 0, err
		}
		start := selfCPU()
		if _, err := io.Copy(io.Discard, d); err != nil {
			return 0, 0, err
		}
		if c := (selfCPU() - start) / gib(n); dec == 0 || c < dec {
			dec = c
		}
	}
	return dec, enc, nil
}

func gib(n int64) float64 { return float64(n) / (1 << 30) }

// benchClient does no work of its own: large buffers, no digest.
var benchClient = &http.Client{Transport: &http.Transport{
	ReadBufferSize: 1 << 20, WriteBufferSize: 1 << 20, DisableCompression: true, MaxIdleConnsPerHost: 4,
}}

// blobFile is a blob of random bytes on disk and its digest.
type blobFile struct {
	path   string
	size   int64
	digest string
}

func writeBlob(dir string, size int64) (blobFile, error) {
	f, err := os.CreateTemp(dir, "blob-*")
	if err != nil {
		return blobFile{}, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyBuffer(io.MultiWriter(f, h), io.LimitReader(rand.Reader, size), make([]byte, 1<<20)); err != nil {
		return blobFile{}, err
	}
	return blobFile{path: f.Name(), size: size, digest: "sha256:" + hex.EncodeToString(h.Sum(nil))}, nil
}

func httpDo(ctx context.Context, method, u string, body io.Reader, size int64, header map[string]string, want int) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.ContentLength = size
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := benchClient.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != want {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		return nil, fmt.Errorf("%s %s: %d, want %d: %s", method, u, resp.StatusCode, want, b)
	}
	return resp, nil
}

// pushBlob uploads a blob as docker does: POST, one streamed PATCH, PUT
// ?digest=.
func pushBlob(ctx context.Context, host, repo string, body func() (io.ReadCloser, error), size int64, digest string) error {
	resp, err := httpDo(ctx, "POST", "http://"+host+"/v2/"+repo+"/blobs/uploads/", nil, 0, nil, http.StatusAccepted)
	if err != nil {
		return err
	}
	resp.Body.Close()
	loc, err := resp.Location()
	if err != nil {
		return err
	}
	rc, err := body()
	if err != nil {
		return err
	}
	defer rc.Close()
	resp, err = httpDo(ctx, "PATCH", loc.String(), rc, size, map[string]string{"Content-Type": "application/octet-stream"}, http.StatusAccepted)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if loc, err = resp.Location(); err != nil {
		return err
	}
	q := loc.Query()
	q.Set("digest", digest)
	loc.RawQuery = q.Encode()
	resp, err = httpDo(ctx, "PUT", loc.String(), http.NoBody, 0, nil, http.StatusCreated)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

const ociManifest = "application/vnd.oci.image.manifest.v1+json"

// pushImage pushes a one-layer image whose layer is blob, tagged tag.
func pushImage(ctx context.Context, host, repo, tag string, blob blobFile) error {
	if err := pushBlob(ctx, host, repo, func() (io.ReadCloser, error) { return os.Open(blob.path) }, blob.size, blob.digest); err != nil {
		return err
	}
	cfg := []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[%q]}}`, blob.digest))
	cfgDigest := fmt.Sprintf("sha256:%x", sha256.Sum256(cfg))
	if err := pushBlob(ctx, host, repo, func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(cfg)), nil }, int64(len(cfg)), cfgDigest); err != nil {
		return err
	}
	m, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": ociManifest,
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfgDigest, "size": len(cfg)},
		"layers": []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": blob.digest, "size": blob.size}},
	})
	resp, err := httpDo(ctx, "PUT", "http://"+host+"/v2/"+repo+"/manifests/"+tag, bytes.NewReader(m), int64(len(m)), map[string]string{"Content-Type": ociManifest}, http.StatusCreated)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// pullLayer gets the image's manifest by tag, then its layer, dropping
// the bytes; it returns how many came.
func pullLayer(ctx context.Context, host, repo, tag string) (int64, error) {
	resp, err := httpDo(ctx, "GET", "http://"+host+"/v2/"+repo+"/manifests/"+tag, nil, 0, map[string]string{"Accept": ociManifest}, http.StatusOK)
	if err != nil {
		return 0, err
	}
	var m struct {
		Layers []struct {
			Digest string `json:"digest"`
			Size   int64  `json:"size"`
		} `json:"layers"`
	}
	err = json.NewDecoder(resp.Body).Decode(&m)
	resp.Body.Close()
	if err != nil || len(m.Layers) != 1 {
		return 0, fmt.Errorf("manifest of %s/%s:%s: %v", host, repo, tag, err)
	}
	resp, err = httpDo(ctx, "GET", "http://"+host+"/v2/"+repo+"/blobs/"+m.Layers[0].Digest, nil, 0, nil, http.StatusOK)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	buf := make([]byte, 1<<20)
	var n int64
	for {
		k, err := resp.Body.Read(buf)
		n += int64(k)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return n, err
		}
	}
	if n != m.Layers[0].Size {
		return n, fmt.Errorf("pulled %d of %d bytes", n, m.Layers[0].Size)
	}
	return n, nil
}

// cpuSubject is a shroud binary measured: the one built from this tree,
// and optionally another (-shroud-before) in the same run.
type cpuSubject struct {
	label string // "" or " (before)"
	bin   string
}

// cpuCost measures shroud's CPU seconds per GiB pushing and pulling one
// large blob, against the same client straight to the registry.
func cpuCost(ctx context.Context, e *env, o options, reg string, regPid int, res *results, out io.Writer) error {
	fmt.Fprintf(out, "CPU: one blob of %d MiB, %d rounds\n", o.CPUBlob>>20, o.Rounds)
	c := &cpuResults{BlobMiB: o.CPUBlob >> 20, Rounds: map[string][]float64{}, Medians: map[string]float64{}, Seconds: map[string]float64{}}
	res.CPU = c
	c.CryptoAlone = cryptoAlone(max(o.CPUBlob/2, 64<<20))
	var err error
	if c.DecryptStream, c.EncryptStream, err = streamCPU(min(o.CPUBlob, 256<<20)); err != nil {
		return err
	}
	runtime.GC()
	fmt.Fprintf(out, "  crypto alone (AES-CTR + HMAC, one thread) %.3f CPU-s/GiB; decrypt stream %.3f, encrypt stream %.3f\n", c.CryptoAlone, c.DecryptStream, c.EncryptStream)

	blob, err := writeBlob(e.work, o.CPUBlob)
	if err != nil {
		return err
	}
	defer os.Remove(blob.path)
	subjects := []cpuSubject{{"", e.shroud}}
	if o.ShroudBefore != "" {
		subjects = append(subjects, cpuSubject{" (before)", o.ShroudBefore})
	}
	walls := map[string][]float64{}
	record := func(name string, cpu, wall float64, n int64) {
		v := cpu / gib(n)
		c.Rounds[name] = append(c.Rounds[name], v)
		walls[name] = append(walls[name], wall)
		fmt.Fprintf(out, "  %-40s %6.3f CPU-s/GiB %7.2f s\n", name, v, wall)
	}
	// measure runs f and records pid's CPU for it.
	measure := func(name string, pid int, n int64, f func() error) error {
		time.Sleep(200 * time.Millisecond) // what a start or the last request left settles
		before, err := procCPU(pid)
		if err != nil {
			return err
		}
		start := time.Now()
		if err := f(); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		wall := time.Since(start).Seconds()
		after, err := procCPU(pid)
		if err != nil {
			return err
		}
		record(name, after-before, wall, n)
		return nil
	}
	pullDirect := func(r int) error {
		return measure("registry, plain pull straight", regPid, blob.size, func() error {
			_, err := pullLayer(ctx, reg, "bench/cpu-plain", "r"+strconv.Itoa(r))
			return err
		})
	}
	for r := 0; r < o.Rounds; r++ {
		fmt.Fprintf(out, "round %d of %d\n", r+1, o.Rounds)
		tag := "r" + strconv.Itoa(r)
		if err := measure("registry, plain push straight", regPid, blob.size, func() error {
			return pushImage(ctx, reg, "bench/cpu-plain", tag, blob)
		}); err != nil {
			return err
		}
		if r%2 == 0 {
			if err := pullDirect(r); err != nil {
				return err
			}
		}
		order := subjects
		if r%2 == 1 && len(order) > 1 {
			order = []cpuSubject{subjects[1], subjects[0]}
		}
		for _, s := range order {
			dir := filepath.Join(e.work, "shroud-cpu"+strconv.Itoa(len(s.label)))
			addr, cmd, err := e.startShroudBin(ctx, s.bin, "http://"+reg, dir)
			if err != nil {
				return err
			}
			pid := cmd.Process.Pid
			repo := "bench/cpu"
			if err := measure("shroud, push"+s.label, pid, blob.size, func() error {
				return pushImage(ctx, addr, repo, tag, blob)
			}); err != nil {
				return err
			}
			// Cold: a fresh process, which knows the image only from
			// the upstream.
			stopProc(cmd)
			if addr, cmd, err = e.startShroudBin(ctx, s.bin, "http://"+reg, dir); err != nil {
				return err
			}
			pid = cmd.Process.Pid
			for _, kind := range []string{"cold", "warm"} {
				if err := measure("shroud, pull "+kind+s.label, pid, blob.size, func() error {
					_, err := pullLayer(ctx, addr, repo, tag)
					return err
				}); err != nil {
					return err
				}
			}
			stopProc(cmd)
		}
		if r%2 == 1 {
			if err := pullDirect(r); err != nil {
				return err
			}
		}
		// The registry's storage is not the measurement: every round
		// pushes the same blob again, which it keeps once.
	}
	for k, v := range c.Rounds {
		c.Medians[k] = median(v)
		c.Seconds[k] = median(walls[k])
	}
	return nil
}

// reportCPU prints the medians and spreads, and adds the targets.
func reportCPU(c *cpuResults, res *results, out io.Writer) {
	fmt.Fprintf(out, "\nCPU seconds per GiB, medians (min-max) over the rounds (%d MiB blob):\n", c.BlobMiB)
	names := make([]string, 0, len(c.Medians))
	for k := range c.Medians {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		lo, hi := spread(c.Rounds[k])
		fmt.Fprintf(out, "  %-40s %6.3f (%.3f-%.3f) %7.2f s  %5.2fx crypto alone\n", k, c.Medians[k], lo, hi, c.Seconds[k], c.Medians[k]/c.CryptoAlone)
	}
	if d := c.Seconds["registry, plain pull straight"]; d > 0 {
		fmt.Fprintf(out, "  pull through shroud / plain pull straight, wall: cold %.2fx, warm %.2fx\n",
			c.Seconds["shroud, pull cold"]/d, c.Seconds["shroud, pull warm"]/d)
	}
	res.Targets = append(res.Targets,
		target{"shroud CPU per GiB pulled, cold", c.Medians["shroud, pull cold"], 1.0, "s", false},
		target{"shroud CPU per GiB pulled, warm", c.Medians["shroud, pull warm"], 1.0, "s", false})
}

func spread(xs []float64) (lo, hi float64) {
	for i, x := range xs {
		if i == 0 || x < lo {
			lo = x
		}
		if i == 0 || x > hi {
			hi = x
		}
	}
	return lo, hi
}

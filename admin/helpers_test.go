package admin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.opentelemetry.io/otel/metric"

	"github.com/shroud-oci/shroud/admin"
	"github.com/shroud-oci/shroud/audit"
	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/shroudtest"
	"github.com/shroud-oci/shroud/proxy"
)

// token is the admin API's bearer token in these tests.
const token = "test-admin-token-0123456789abcdef"

const repo = "team/app"

func must[T any](t testing.TB) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func ref(t testing.TB, host, r string) name.Reference {
	t.Helper()
	return must[name.Reference](t)(name.ParseReference(host+"/"+r, name.Insecure))
}

// keyPair writes a key pair and returns it as a recipient and a
// decryption key.
func keyPair(t *testing.T, kind string) (crypto.Recipient, crypto.DecryptionKey) {
	t.Helper()
	dir := t.TempDir()
	priv, pub, err := crypto.GenerateKeyPair(kind)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "k.pem"), priv, 0o600)
	os.WriteFile(filepath.Join(dir, "k.pub.pem"), pub, 0o644)
	return must[crypto.Recipient](t)(crypto.ParseRecipient("jwe:" + filepath.Join(dir, "k.pub.pem"))),
		must[crypto.DecryptionKey](t)(crypto.ParseDecryptionKey(filepath.Join(dir, "k.pem")))
}

// opens says whether a keyring holding only key opens a layer's key.
func opens(t *testing.T, key crypto.DecryptionKey, l ocispec.Descriptor) bool {
	t.Helper()
	id, _, _ := crypto.LoadOrCreateIdentity(t.TempDir())
	kr := must[*crypto.Keyring](t)(crypto.NewKeyring(id, []crypto.DecryptionKey{key}))
	_, err := kr.Unwrap(l.Annotations)
	if err != nil && !errors.Is(err, crypto.ErrNoKey) {
		t.Fatal(err)
	}
	return err == nil
}

// fixture is team/app pushed through shroud while its rule named
// recipients a and b: an image under two tags and a multi-platform
// index; then a second shroud (the same identity) whose rule names b
// alone, the one the jobs run on.
type fixture struct {
	up         shroudtest.Upstream
	first      shroudtest.Shroud
	keyA, keyB crypto.DecryptionKey
	recB       crypto.Recipient
	img        v1.Image
	idx        v1.ImageIndex
	audit      *lockedBuffer
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	recA, keyA := keyPair(t, "ec")
	recB, keyB := keyPair(t, "rsa")
	f := &fixture{up: shroudtest.Distribution(t), keyA: keyA, keyB: keyB, recB: recB, audit: &lockedBuffer{}}
	f.first = shroudtest.Start(t, f.up, shroudtest.WithPolicy(shroudtest.Rule{Pattern: "team/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{recA, recB}}))
	f.img = must[v1.Image](t)(random.Image(30_000, 3))
	f.idx = must[v1.ImageIndex](t)(random.Index(10_000, 2, 2))
	for _, tag := range []string{"1", "2"} {
		if err := remote.Write(ref(t, f.first.Host(), repo+":"+tag), f.img); err != nil {
			t.Fatal(err)
		}
	}
	if err := remote.WriteIndex(ref(t, f.first.Host(), repo+":multi"), f.idx); err != nil {
		t.Fatal(err)
	}
	for _, l := range f.layers(t) {
		if !opens(t, keyA, l) || !opens(t, keyB, l) {
			t.Fatal("before the job, a layer does not open with both recipients' keys")
		}
	}
	return f
}

// second is a shroud with the fixture's identity whose rule names b
// alone, in front of up (the fixture's upstream, or one behind a
// middleware); its audit log is f.audit.
func (f *fixture) second(t *testing.T, up shroudtest.Upstream) shroudtest.Shroud {
	t.Helper()
	return shroudtest.StartWithIdentity(t, up, f.first.Keyring, f.first.DataDir, shroudtest.WithAudit(audit.New(f.audit)),
		shroudtest.WithPolicy(shroudtest.Rule{Pattern: "team/**", Action: crypto.Encrypt, Recipients: []crypto.Recipient{f.recB}}))
}

// layers are every encrypted layer upstream the fixture's tags name,
// the index's children's included.
func (f *fixture) layers(t *testing.T) []ocispec.Descriptor {
	t.Helper()
	var out []ocispec.Descriptor
	for _, tag := range []string{"1", "2", "multi"} {
		var m struct {
			Layers    []ocispec.Descriptor `json:"layers"`
			Manifests []ocispec.Descriptor `json:"manifests"`
		}
		json.Unmarshal(must[*remote.Descriptor](t)(remote.Get(ref(t, f.up.Host(), repo+":"+tag))).Manifest, &m)
		out = append(out, m.Layers...)
		for _, c := range m.Manifests {
			var cm ocispec.Manifest
			json.Unmarshal(must[*remote.Descriptor](t)(remote.Get(ref(t, f.up.Host(), repo+"@"+c.Digest.String()))).Manifest, &cm)
			out = append(out, cm.Layers...)
		}
	}
	return out
}

// checkAfter asserts what a job that took recipient a away leaves:
// straight from the upstream no layer opens with a's key and every one
// with b's; through each shroud given, every tag pulls the digests
// pushed and layers that verify.
func (f *fixture) checkAfter(t *testing.T, through ...shroudtest.Shroud) {
	t.Helper()
	ls := f.layers(t)
	if len(ls) == 0 {
		t.Fatal("no layers upstream")
	}
	for _, l := range ls {
		if opens(t, f.keyA, l) {
			t.Errorf("layer %s still opens with the key taken away", l.Digest)
		}
		if !opens(t, f.keyB, l) {
			t.Errorf("layer %s does not open with the remaining recipient's key", l.Digest)
		}
	}
	want := must[v1.Hash](t)(f.img.Digest())
	for _, s := range through {
		for _, tag := range []string{"1", "2"} {
			img := must[v1.Image](t)(remote.Image(ref(t, s.Host(), repo+":"+tag)))
			if must[v1.Hash](t)(img.Digest()) != want {
				t.Errorf("%s: tag %s pulls another digest", s.URL, tag)
			}
			for i, l := range must[[]v1.Layer](t)(img.Layers()) {
				rc := must[io.ReadCloser](t)(l.Compressed())
				_, err := io.Copy(io.Discard, rc) // the layer's digest is checked at EOF
				rc.Close()
				if err != nil {
					t.Errorf("%s: tag %s layer %d: %v", s.URL, tag, i, err)
				}
			}
		}
		idx := must[v1.ImageIndex](t)(remote.Index(ref(t, s.Host(), repo+":multi")))
		if must[v1.Hash](t)(idx.Digest()) != must[v1.Hash](t)(f.idx.Digest()) {
			t.Errorf("%s: the index pulls another digest", s.URL)
		}
	}
}

// lockedBuffer is a buffer safe to read while a job writes to it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// lines are the audit lines of kind admin.
func (l *lockedBuffer) adminEvents(t *testing.T) []audit.Event {
	t.Helper()
	var out []audit.Event
	for _, line := range strings.Split(strings.TrimSpace(l.String()), "\n") {
		var e audit.Event
		if line == "" || json.Unmarshal([]byte(line), &e) != nil {
			continue
		}
		if e.Kind == audit.Admin {
			out = append(out, e)
		}
	}
	return out
}

// adminAPI is an admin server run for a test, and its client.
type adminAPI struct {
	t    *testing.T
	srv  *admin.Server
	url  string
	stop func() // cancels Run and waits for it
}

// startAdmin runs an admin server with the jobs' handler h, keeping its
// files in dir; ctx ends its Run.
func startAdmin(ctx context.Context, t *testing.T, h *proxy.Handler, dir string, o admin.Options) *adminAPI {
	t.Helper()
	o.Handler, o.Dir, o.Token = h, dir, []byte(token)
	srv := must[*admin.Server](t)(admin.New(o))
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); srv.Run(ctx) }()
	a := &adminAPI{t: t, srv: srv, url: hs.URL, stop: func() { cancel(); <-done }}
	t.Cleanup(a.stop)
	return a
}

// startAdminAudited is startAdmin for the jobs of s, writing to the
// fixture's audit log (the one s writes the jobs' steps to).
func startAdminAudited(ctx context.Context, t *testing.T, s shroudtest.Shroud, dir string, f *fixture, meter metric.Meter) *adminAPI {
	t.Helper()
	return startAdmin(ctx, t, s.Handler, dir, admin.Options{Audit: audit.New(f.audit), Meter: meter})
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

// do sends a request with the authorization given ("" for none).
func (a *adminAPI) do(method, path, authorization string, body any) answer {
	a.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	default:
		r = bytes.NewReader(must[[]byte](a.t)(json.Marshal(b)))
	}
	req := must[*http.Request](a.t)(http.NewRequest(method, a.url+path, r))
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp := must[*http.Response](a.t)(http.DefaultClient.Do(req))
	defer resp.Body.Close()
	return answer{status: resp.StatusCode, header: resp.Header, body: must[[]byte](a.t)(io.ReadAll(resp.Body))}
}

// call sends an authenticated request and wants status.
func (a *adminAPI) call(method, path string, body any, status int) answer {
	a.t.Helper()
	ans := a.do(method, path, "Bearer "+token, body)
	if ans.status != status {
		a.t.Fatalf("%s %s: %d %s, want %d", method, path, ans.status, ans.body, status)
	}
	return ans
}

// jobView is the part of a job's answer the tests read.
type jobView struct {
	ID           string `json:"id"`
	State        string `json:"state"`
	Job          string `json:"job"`
	Actor        string `json:"actor"`
	ResumedSteps int    `json:"resumed_steps"`
	Restarted    bool   `json:"restarted"`
	Error        string `json:"error"`
	Repositories []struct {
		Repository string `json:"repository"`
		State      string `json:"state"`
		Done       int    `json:"done"`
		Total      int    `json:"total"`
		Report     *struct {
			Manifests int `json:"manifests"`
			Rewritten int `json:"rewritten"`
			Pointers  int `json:"pointers"`
			Resumed   int `json:"resumed"`
		} `json:"report"`
	} `json:"repositories"`
}

func (a *adminAPI) job(id string) jobView {
	a.t.Helper()
	var v jobView
	if err := json.Unmarshal(a.call("GET", "/admin/v1/jobs/"+id, nil, http.StatusOK).body, &v); err != nil {
		a.t.Fatal(err)
	}
	return v
}

// start starts a job and returns its answer.
func (a *adminAPI) start(spec any) jobView {
	a.t.Helper()
	ans := a.call("POST", "/admin/v1/jobs", spec, http.StatusAccepted)
	var v jobView
	if err := json.Unmarshal(ans.body, &v); err != nil {
		a.t.Fatal(err)
	}
	if v.ID == "" || ans.header.Get("Location") != "/admin/v1/jobs/"+v.ID {
		a.t.Fatalf("start: %s (Location %q): want an id and its Location", ans.body, ans.header.Get("Location"))
	}
	return v
}

// wait polls job id until it has ended, and returns it.
func (a *adminAPI) wait(id string) jobView {
	a.t.Helper()
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if v := a.job(id); v.State == "done" || v.State == "failed" || v.State == "cancelled" {
			return v
		}
	}
	a.t.Fatalf("job %s did not end within 60s: %+v", id, a.job(id))
	return jobView{}
}

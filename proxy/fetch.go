package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// fetchTimeout bounds a shared upstream fetch, which outlives the request
// that started it.
const fetchTimeout = time.Hour

// fetches coalesces concurrent pulls of one ciphertext blob. The first
// pull streams straight from the upstream, as if alone: a pull with no
// company pays nothing. A pull that arrives while another is under way
// starts one shared fetch spooled to an unlinked temporary file, and every
// later pull joins it, reading the spool as it grows: N concurrent pulls
// cost the upstream two fetches, not N. Only pulls with the same
// credentials share a fetch.
type fetches struct {
	mu  sync.Mutex
	m   map[string]*fetch
	dir string // where spools go; "" is the system temp dir
}

func newFetches(dir string) *fetches { return &fetches{m: map[string]*fetch{}, dir: dir} }

// fetchKey names what can be shared: one upstream, repository and blob,
// fetched with one Authorization.
func fetchKey(be *backend, repo, cipherDigest string) string {
	return be.name + "\x00" + repo + "\x00" + cipherDigest + "\x00" + be.auth
}

// opener opens the upstream ciphertext.
type opener func(ctx context.Context) (io.ReadCloser, error)

// fetch is one pull under way: either the first, direct one (a marker with
// no spool) or a shared spooled fetch.
type fetch struct {
	direct bool

	mu      sync.Mutex
	cond    *sync.Cond
	spool   *os.File
	written int64
	started bool
	done    bool
	err     error
	readers int
	cancel  context.CancelFunc
}

// errOversize is an upstream that sent a blob longer than its mapping says.
var errOversize = errors.New("the upstream sent more bytes than the blob has")

// open returns the ciphertext of the blob key names, of size bytes, for
// one pull. A shared fetch spools size bytes at most: an upstream that
// sends more fails it.
func (fs *fetches) open(ctx context.Context, key string, size int64, open opener) (io.ReadCloser, error) {
	fs.mu.Lock()
	f := fs.m[key]
	switch {
	case f == nil:
		marker := &fetch{direct: true}
		fs.m[key] = marker
		fs.mu.Unlock()
		rc, err := open(ctx)
		if err != nil {
			fs.forget(key, marker)
			return nil, err
		}
		return &directReader{ReadCloser: rc, release: func() { fs.forget(key, marker) }}, nil
	case f.direct:
		sp, err := os.CreateTemp(fs.dir, "shroud-fetch-*")
		if err != nil {
			fs.mu.Unlock()
			return open(ctx) // no spool: this pull goes alone
		}
		os.Remove(sp.Name()) // unlinked: gone with the last descriptor, even after a crash
		f = &fetch{spool: sp}
		f.cond = sync.NewCond(&f.mu)
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), fetchTimeout)
		f.cancel = cancel
		fs.m[key] = f
		f.readers = 1
		fs.mu.Unlock()
		go f.run(fctx, size, open)
	default:
		f.mu.Lock()
		f.readers++
		f.mu.Unlock()
		fs.mu.Unlock()
	}
	t := &tailReader{f: f, ctx: ctx, release: func() { fs.leave(key, f) }}
	if err := t.ready(); err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

func (fs *fetches) forget(key string, f *fetch) {
	fs.mu.Lock()
	if fs.m[key] == f {
		delete(fs.m, key)
	}
	fs.mu.Unlock()
}

// leave drops one reader of a shared fetch; the last one ends it: the
// upstream request is cancelled if it is still running, the spool closed.
func (fs *fetches) leave(key string, f *fetch) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	f.mu.Lock()
	f.readers--
	last := f.readers == 0
	f.mu.Unlock()
	if !last {
		return
	}
	if fs.m[key] == f {
		delete(fs.m, key)
	}
	f.cancel()
	go func() { // after run has stopped writing
		f.mu.Lock()
		for !f.done {
			f.cond.Wait()
		}
		f.mu.Unlock()
		f.spool.Close()
	}()
}

// run copies the upstream ciphertext, size bytes, into the spool.
func (f *fetch) run(ctx context.Context, size int64, open opener) {
	err := func() error {
		rc, err := open(ctx)
		if err != nil {
			return err
		}
		defer rc.Close()
		f.mu.Lock()
		f.started = true
		f.cond.Broadcast()
		f.mu.Unlock()
		buf := make([]byte, chunkBytes)
		for {
			n, rerr := rc.Read(buf)
			if int64(n) > size-f.written {
				// Written up to the size, so that readers behind get
				// the blob; nothing past it.
				n, rerr = int(size-f.written), fmt.Errorf("%w: more than %d", errOversize, size)
			}
			if n > 0 {
				if _, err := f.spool.WriteAt(buf[:n], f.written); err != nil {
					return err
				}
				f.mu.Lock()
				f.written += int64(n)
				f.cond.Broadcast()
				f.mu.Unlock()
			}
			if errors.Is(rerr, io.EOF) {
				return nil
			}
			if rerr != nil {
				return rerr
			}
		}
	}()
	f.mu.Lock()
	f.done, f.err = true, err
	f.cond.Broadcast()
	f.mu.Unlock()
}

// chunkBytes is the spool's copy buffer.
const chunkBytes = 1 << 20

// tailReader reads a shared fetch's spool as it grows.
type tailReader struct {
	f       *fetch
	ctx     context.Context
	pos     int64
	release func()
	once    sync.Once
}

// wait blocks until cond holds, the fetch ends or the pull's context does.
func (t *tailReader) wait(cond func() bool) error {
	stop := context.AfterFunc(t.ctx, func() {
		t.f.mu.Lock()
		t.f.cond.Broadcast()
		t.f.mu.Unlock()
	})
	defer stop()
	for !cond() && !t.f.done && t.ctx.Err() == nil {
		t.f.cond.Wait()
	}
	return t.ctx.Err()
}

// ready waits for the upstream to answer, so that a pull that fails
// before any byte gets the upstream's error, not a broken stream.
func (t *tailReader) ready() error {
	f := t.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := t.wait(func() bool { return f.started }); err != nil {
		return err
	}
	if !f.started && f.err != nil {
		return f.err
	}
	return nil
}

func (t *tailReader) Read(p []byte) (int, error) {
	f := t.f
	f.mu.Lock()
	if err := t.wait(func() bool { return f.written > t.pos }); err != nil {
		f.mu.Unlock()
		return 0, err
	}
	avail, done, ferr := f.written-t.pos, f.done, f.err
	f.mu.Unlock()
	if avail == 0 {
		if done && ferr == nil {
			return 0, io.EOF
		}
		if ferr != nil {
			return 0, ferr
		}
		return 0, io.ErrUnexpectedEOF
	}
	n, err := f.spool.ReadAt(p[:min(int64(len(p)), avail)], t.pos)
	t.pos += int64(n)
	if errors.Is(err, io.EOF) && n > 0 {
		err = nil
	}
	return n, err
}

func (t *tailReader) Close() error {
	t.once.Do(t.release)
	return nil
}

// directReader is the first pull's own upstream body.
type directReader struct {
	io.ReadCloser
	release func()
	once    sync.Once
}

func (d *directReader) Close() error {
	err := d.ReadCloser.Close()
	d.once.Do(d.release)
	return err
}

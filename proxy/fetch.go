package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// fetchTimeout bounds a shared upstream fetch, which outlives the request
// that started it, from the moment it is shared.
const fetchTimeout = time.Hour

// fetches coalesces concurrent pulls of one ciphertext blob into one
// upstream fetch. The first pull streams straight from the upstream, as
// if alone: a pull with no company pays nothing (no spool, no copy). When
// a second pull comes while the first is under way, at byte p0 of the
// body, the first pull becomes joinable: a spool (an unlinked temporary
// file) is made, the first pull's upstream body is handed to a goroutine
// that drains it into the spool from p0 at the upstream's pace, and the
// first pull reads the rest of its blob from the spool like any joiner.
// The p0 bytes it had already released are fetched once with a Range
// request of the prefix. Every later pull joins the spool. N concurrent
// pulls so cost the upstream one fetch of the blob and at most one of a
// prefix of it, not N. Only pulls with the same credentials share.
//
// Each client verifies what it read (the HMAC of the whole ciphertext,
// decryptBlob): a prefix the upstream changed fails every joiner, never
// the first pull, which read its own prefix.
type fetches struct {
	mu    sync.Mutex
	alone map[string]*directReader // first pulls, streaming alone
	m     map[string]*fetch        // shared fetches
	dir   string                   // where spools go; "" is the system temp dir
}

func newFetches(dir string) *fetches {
	return &fetches{alone: map[string]*directReader{}, m: map[string]*fetch{}, dir: dir}
}

// fetchKey names what can be shared: one upstream, repository and blob,
// fetched with one Authorization.
func fetchKey(be *backend, repo, cipherDigest string) string {
	return be.name + "\x00" + repo + "\x00" + cipherDigest + "\x00" + be.auth
}

// opener opens the upstream ciphertext, whole.
type opener func(ctx context.Context) (io.ReadCloser, error)

// prefixOpener opens the first n bytes of the upstream ciphertext (a
// Range request): the body starts at the blob's first byte and has at
// least n bytes, of which only n are read (prefixBody).
type prefixOpener func(ctx context.Context, n int64) (io.ReadCloser, error)

// errOversize is an upstream that sent a blob longer than its mapping says.
var errOversize = errors.New("the upstream sent more bytes than the blob has")

// open returns the ciphertext of the blob key names, of size bytes, for
// one pull. A shared fetch spools size bytes at most: an upstream that
// sends more fails it.
func (fs *fetches) open(ctx context.Context, key string, size int64, open opener, openPrefix prefixOpener) (io.ReadCloser, error) {
	fs.mu.Lock()
	f := fs.m[key]
	switch first := fs.alone[key]; {
	case f == nil && first == nil:
		d := &directReader{fs: fs, key: key, ctx: ctx, opened: make(chan struct{})}
		fs.alone[key] = d
		fs.mu.Unlock()
		return d.open(open)
	case f == nil:
		sp, err := os.CreateTemp(fs.dir, "shroud-fetch-*")
		if err != nil {
			fs.mu.Unlock()
			return open(ctx) // no spool: this pull goes alone
		}
		os.Remove(sp.Name()) // unlinked: gone with the last descriptor, even after a crash
		f = &fetch{spool: sp, size: size, readers: 1}
		f.cond = sync.NewCond(&f.mu)
		f.ctx, f.cancel = context.WithTimeout(context.WithoutCancel(ctx), fetchTimeout)
		f.forget = func() { fs.forget(key, f) }
		delete(fs.alone, key)
		fs.m[key] = f
		fs.mu.Unlock()
		go f.takeOver(first, open, openPrefix)
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

func (fs *fetches) forgetAlone(key string, d *directReader) {
	fs.mu.Lock()
	if fs.alone[key] == d {
		delete(fs.alone, key)
	}
	fs.mu.Unlock()
}

// leave drops one reader of a shared fetch; the last one ends it: the
// upstream requests are cancelled if they are still running, the spool
// closed.
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
	go func() { // after every writer has stopped
		f.mu.Lock()
		for !f.settled || !f.prefix.done || !f.tail.done {
			f.cond.Wait()
		}
		f.mu.Unlock()
		f.spool.Close()
	}()
}

// fetch is a shared fetch: the blob's bytes in a spool, written by two
// parts, each from one upstream answer: the prefix [0,p0) (a Range
// request) and the tail [p0,size) (the first pull's body from where it
// was when it was joined; the whole blob, p0 = 0, from a fetch of its
// own when the first pull could not be joined).
type fetch struct {
	ctx    context.Context // of the upstream requests
	cancel context.CancelFunc
	forget func() // takes the fetch out of the map: later pulls do not join it
	spool  *os.File
	size   int64

	mu      sync.Mutex
	cond    *sync.Cond
	settled bool // p0 is known and the parts are under way (or failed)
	p0      int64
	prefix  part
	tail    part
	readers int
}

// part is what one upstream answer writes into the spool.
type part struct {
	from    int64 // its first byte
	written int64 // [from, written) is in the spool
	started bool  // the upstream answered
	done    bool  // nothing more is written
	err     error
}

// takeOver makes the first pull d joinable (handOver) or, when it
// cannot be joined (it failed, ended, or its client left), fetches the
// blob anew into the spool.
func (f *fetch) takeOver(d *directReader, open opener, openPrefix prefixOpener) {
	select {
	case <-d.opened:
	case <-f.ctx.Done(): // every joiner left before the first pull's upstream answered
		f.settle(0, func() { f.tail.done, f.tail.err = true, f.ctx.Err() })
		return
	}
	body, p0, cancel, outcome := d.handOver(f)
	switch outcome {
	case abandoned:
		f.settle(0, func() { f.tail.done, f.tail.err = true, context.Canceled })
	case fresh:
		f.settle(0, nil)
		f.run(open)
	case handedOver:
		if p0 > 0 {
			go f.fetchPrefix(openPrefix, p0)
		}
		f.drain(body, cancel)
	}
}

// settle records p0 and starts the parts: the prefix is done at once
// when it is empty. also runs under the lock.
func (f *fetch) settle(p0 int64, also func()) {
	f.mu.Lock()
	f.settled, f.p0 = true, p0
	f.prefix = part{done: p0 == 0}
	f.tail = part{from: p0, written: p0}
	if also != nil {
		also()
	}
	f.cond.Broadcast()
	f.mu.Unlock()
}

// drain copies the rest of the first pull's upstream body, from p0, into
// the spool.
func (f *fetch) drain(body io.ReadCloser, cancel context.CancelFunc) {
	stop := context.AfterFunc(f.ctx, cancel) // the last reader leaving ends the request
	err := f.fill(&f.tail, body, f.size, true)
	body.Close()
	stop()
	cancel()
	f.end(&f.tail, err)
}

// run fetches the whole blob into the spool.
func (f *fetch) run(open opener) {
	err := func() error {
		rc, err := open(f.ctx)
		if err != nil {
			return err
		}
		defer rc.Close()
		f.start(&f.tail)
		return f.fill(&f.tail, rc, f.size, true)
	}()
	f.end(&f.tail, err)
}

// fetchPrefix fetches the first n bytes into the spool, once, with a
// Range request. An upstream that refuses it, or answers with other
// bytes than asked for, fails the joiners (a clean error before their
// first byte where it can), never the first pull.
func (f *fetch) fetchPrefix(openPrefix prefixOpener, n int64) {
	err := func() error {
		rc, err := openPrefix(f.ctx, n)
		if err != nil {
			return err
		}
		defer rc.Close() // before its end where the upstream sent the whole blob
		f.start(&f.prefix)
		return f.fill(&f.prefix, rc, n, false)
	}()
	if err != nil && !errors.Is(err, errStaleMapping) && f.ctx.Err() == nil {
		// Not the upstream's own answer (which writeError would relay,
		// a 416 to a client that asked for no range): a 502 that says
		// what happened. The cause is flattened for the same reason.
		err = &apiError{status: http.StatusBadGateway, code: codeUnavailable,
			message: fmt.Sprintf("another pull of this blob was under way, and the upstream did not serve the first %d bytes of it (a Range request); pull again", n),
			cause:   errors.New(err.Error())}
	}
	f.end(&f.prefix, err)
}

func (f *fetch) start(pt *part) {
	f.mu.Lock()
	pt.started = true
	f.cond.Broadcast()
	f.mu.Unlock()
}

// end marks a part done. A part that failed takes the fetch out of the
// map first: the pulls that come after start afresh instead of joining
// a failed fetch.
func (f *fetch) end(pt *part, err error) {
	if err != nil {
		f.forget()
	}
	f.mu.Lock()
	pt.done, pt.err = true, err
	f.cond.Broadcast()
	f.mu.Unlock()
}

// fill copies r into the spool from pt.written up to end. strict: more
// bytes than that fail the part (errOversize), after end is written;
// else only end is read and the rest left unread.
func (f *fetch) fill(pt *part, r io.Reader, end int64, strict bool) error {
	buf := make([]byte, chunkBytes)
	for {
		want := int64(len(buf))
		if !strict {
			if pt.written >= end {
				return nil
			}
			want = min(want, end-pt.written)
		}
		n, rerr := r.Read(buf[:want])
		if int64(n) > end-pt.written {
			// Written up to the end, so that readers behind get the
			// blob; nothing past it.
			n, rerr = int(end-pt.written), fmt.Errorf("%w: more than %d", errOversize, f.size)
		}
		if n > 0 {
			if _, err := f.spool.WriteAt(buf[:n], pt.written); err != nil {
				return err
			}
			f.mu.Lock()
			pt.written += int64(n)
			f.cond.Broadcast()
			f.mu.Unlock()
		}
		if errors.Is(rerr, io.EOF) {
			if pt.written < end {
				return fmt.Errorf("the upstream sent %d of %d bytes: %w", pt.written-pt.from, end-pt.from, io.ErrUnexpectedEOF)
			}
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
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

// wait blocks until cond holds or the pull's context ends; f.mu is held.
func (t *tailReader) wait(cond func() bool) error {
	stop := context.AfterFunc(t.ctx, func() {
		t.f.mu.Lock()
		t.f.cond.Broadcast()
		t.f.mu.Unlock()
	})
	defer stop()
	for !cond() && t.ctx.Err() == nil {
		t.f.cond.Wait()
	}
	return t.ctx.Err()
}

// ready waits for the upstream to answer, for the tail and for the
// prefix, so that a pull that fails before any byte gets the error, not
// a broken stream.
func (t *tailReader) ready() error {
	f := t.f
	f.mu.Lock()
	defer f.mu.Unlock()
	err := t.wait(func() bool {
		return f.settled && (f.tail.started || f.tail.done) && (f.prefix.started || f.prefix.done)
	})
	switch {
	case err != nil:
		return err
	case !f.tail.started && f.tail.err != nil:
		return f.tail.err
	case !f.prefix.started && f.prefix.err != nil:
		return f.prefix.err
	}
	return nil
}

// at is the part a reader at pos reads.
func (f *fetch) at(pos int64) *part {
	if pos < f.p0 {
		return &f.prefix
	}
	return &f.tail
}

func (t *tailReader) Read(p []byte) (int, error) {
	f := t.f
	f.mu.Lock()
	if err := t.wait(func() bool {
		if !f.settled {
			return false
		}
		pt := f.at(t.pos)
		return pt.written > t.pos || pt.done
	}); err != nil {
		f.mu.Unlock()
		return 0, err
	}
	pt := f.at(t.pos)
	avail, ferr := pt.written-t.pos, pt.err
	end := f.size
	if pt == &f.prefix {
		end = f.p0
	}
	f.mu.Unlock()
	if avail <= 0 {
		switch {
		case ferr != nil:
			return 0, ferr
		case t.pos >= end && pt == &f.tail:
			return 0, io.EOF
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

// directReader is the first pull: its own upstream body, read straight
// while it is alone, and the spool from where it was once someone joins.
type directReader struct {
	fs     *fetches
	key    string
	ctx    context.Context // the client's
	opened chan struct{}   // closed once the upstream answered: body or openErr set
	// Of the upstream request, which the client's context cancels until
	// the body is handed over (stop unties them).
	cancel  context.CancelFunc
	stop    func() bool
	openErr error

	mu     sync.Mutex // held around each body Read: handOver waits at most one
	body   io.ReadCloser
	pos    int64 // bytes read from the body
	broken bool  // the body returned an error or its end: not to be handed over
	closed bool
	tail   *tailReader // once handed over: this pull's reader of the spool
}

// open makes the upstream request, under a context the client's cancels
// as long as the pull is alone.
func (d *directReader) open(open opener) (io.ReadCloser, error) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(d.ctx))
	d.cancel, d.stop = cancel, context.AfterFunc(d.ctx, cancel)
	body, err := open(ctx)
	d.body, d.openErr = body, err
	close(d.opened)
	if err != nil {
		d.stop()
		cancel()
		d.fs.forgetAlone(d.key, d)
		return nil, err
	}
	return d, nil
}

func (d *directReader) Read(p []byte) (int, error) {
	d.mu.Lock()
	if t := d.tail; t != nil {
		d.mu.Unlock()
		return t.Read(p)
	}
	if d.closed {
		d.mu.Unlock()
		return 0, os.ErrClosed
	}
	n, err := d.body.Read(p)
	d.pos += int64(n)
	if err != nil {
		d.broken = true
	}
	d.mu.Unlock()
	return n, err
}

func (d *directReader) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	t, body := d.tail, d.body
	d.mu.Unlock()
	if t != nil { // the body is the shared fetch's now
		return t.Close()
	}
	err := body.Close()
	d.stop()
	d.cancel()
	d.fs.forgetAlone(d.key, d)
	return err
}

type handOverOutcome int

const (
	handedOver handOverOutcome = iota
	fresh                      // d cannot be joined: the fetch gets a body of its own
	abandoned                  // every joiner left
)

// handOver takes d's upstream body for f, with the offset it is at and
// the cancel of its request, and switches d to reading f's spool from
// there. It waits at most for one body Read, never for the client.
func (d *directReader) handOver(f *fetch) (io.ReadCloser, int64, context.CancelFunc, handOverOutcome) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.openErr != nil || d.closed || d.broken {
		return nil, 0, nil, fresh
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.readers == 0 {
		return nil, 0, nil, abandoned
	}
	if !d.stop() { // the client left: its request is being cancelled
		return nil, 0, nil, fresh
	}
	f.readers++ // d
	f.settled, f.p0 = true, d.pos
	f.prefix = part{done: d.pos == 0}
	f.tail = part{from: d.pos, written: d.pos, started: true}
	f.cond.Broadcast()
	d.tail = &tailReader{f: f, ctx: d.ctx, pos: d.pos, release: func() { d.fs.leave(d.key, f) }}
	body := d.body
	d.body = nil
	return body, d.pos, d.cancel, handedOver
}

// prefixBody checks the upstream's answer to a Range request of the
// first n bytes of a blob of size bytes: a 206 of exactly those bytes,
// or a 200 of the whole blob (an upstream that ignores Range), of which
// the caller reads n bytes and drops the rest with the connection.
func prefixBody(resp *http.Response, n, size int64) (io.ReadCloser, error) {
	switch resp.StatusCode {
	case http.StatusPartialContent:
		cr := resp.Header.Get("Content-Range")
		start, end, total, ok := responseRange(cr)
		if !ok || start != 0 || end != n-1 || (total >= 0 && total != size) || (resp.ContentLength >= 0 && resp.ContentLength != n) {
			resp.Body.Close()
			return nil, fmt.Errorf("the upstream answered the range 0-%d of a blob of %d bytes with Content-Range %q and %d bytes", n-1, size, cr, resp.ContentLength)
		}
	case http.StatusOK:
		if resp.ContentLength >= 0 && resp.ContentLength != size {
			resp.Body.Close()
			return nil, fmt.Errorf("upstream blob has %d bytes, the mapping says %d", resp.ContentLength, size)
		}
	default:
		resp.Body.Close()
		return nil, fmt.Errorf("the upstream answered a range with %d", resp.StatusCode)
	}
	return resp.Body, nil
}

// responseRange reads a response's Content-Range, "bytes a-b/n" or
// "bytes a-b/*" (total -1).
func responseRange(cr string) (start, end, total int64, ok bool) {
	s, ok := strings.CutPrefix(cr, "bytes ")
	if !ok {
		return 0, 0, 0, false
	}
	r, t, ok := strings.Cut(s, "/")
	if !ok {
		return 0, 0, 0, false
	}
	a, b, ok := strings.Cut(r, "-")
	if !ok {
		return 0, 0, 0, false
	}
	var err1, err2, err3 error
	start, err1 = strconv.ParseInt(a, 10, 64)
	end, err2 = strconv.ParseInt(b, 10, 64)
	total = -1
	if t != "*" {
		total, err3 = strconv.ParseInt(t, 10, 64)
	}
	if errors.Join(err1, err2, err3) != nil || start < 0 || end < start {
		return 0, 0, 0, false
	}
	return start, end, total, true
}

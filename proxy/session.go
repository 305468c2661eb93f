package proxy

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/metric"

	"github.com/shroud-oci/shroud/cache"
	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/proxy/upstream"
)

// maxLocation bounds the Location shroud hands a client for an upload:
// the upstream's own location travels sealed inside it.
const maxLocation = 6 << 10

// upload is one client upload session as one request works on it. Its
// whole state (upstream location, layer key, stream state) travels in
// the Location URL, sealed (sealedUpload): any replica that holds
// shroud's identity continues it, and none keeps it in memory.
type upload struct {
	id    string
	repo  string
	ns    string // the backend (mirror origin) the session was opened on
	owner string // backend.principal of the client that opened it
	// accepted is the backend.auth (the credentials) the upstream last
	// accepted for this session: other credentials of the same principal
	// (a refreshed token) are checked upstream before they may touch it.
	accepted string
	location string // the upstream session's current location
	enc      *crypto.Encrypter
	// step counts the requests that moved the session on; the ledger
	// holds the step each session stands at, so that an older state
	// (a replay, or a retry after a later chunk) is refused.
	step int64
	// claimed is the ledger record this request holds the session by,
	// and ledger the one it is held in.
	claimed string
	ledger  cache.Ledger
	token   string // the sealed state for the next request
	// shared says the session's steps are in the shared ledger
	// (sealedUpload.Shared).
	shared bool
}

// offset is the number of bytes the session holds.
func (u *upload) offset() int64 { return u.enc.Size() }

// sealedUpload is the state an upload's Location carries, sealed with
// the identity's upload-state key and bound to the session id.
type sealedUpload struct {
	ID       string `json:"id"`
	Repo     string `json:"repo"`
	NS       string `json:"ns,omitempty"`
	Owner    string `json:"owner"`
	Accepted string `json:"accepted"`
	Location string `json:"loc"`
	Key      []byte `json:"key"`
	Nonce    []byte `json:"nonce"`
	Stream   []byte `json:"stream"`
	Step     int64  `json:"step"`
	Expires  int64  `json:"exp"`
	// Shared says the session's steps are recorded in the shared ledger:
	// they are never taken from this process's ledger (which the other
	// replicas do not see), even while the shared one fails.
	Shared bool `json:"shared,omitempty"`
}

// sessions seals upload states into tokens and keeps the ledger of where
// each session stands: the shared tier's when there is one (every
// replica sees every step), this process's otherwise or while the shared
// one fails. A session neither ledger knows (opened on another replica
// while the shared tier was down, or evicted from it) is checked against
// the upstream's own offset before it goes on.
type sessions struct {
	box    *crypto.Box
	local  cache.Ledger
	shared cache.Ledger
	ttl    time.Duration
	now    func() time.Time
	gauge  metric.Int64UpDownCounter // upload requests in flight
	// sharedFailed reports a failing shared ledger (a metric, /readyz).
	sharedFailed func(ctx context.Context, err error)
}

func newSessions(box *crypto.Box, local, shared cache.Ledger, ttl time.Duration, gauge metric.Int64UpDownCounter, sharedFailed func(context.Context, error)) *sessions {
	if ttl <= 0 {
		ttl = time.Hour
	}
	if sharedFailed == nil {
		sharedFailed = func(context.Context, error) {}
	}
	return &sessions{box: box, local: local, shared: shared, ttl: ttl, now: time.Now, gauge: gauge, sharedFailed: sharedFailed}
}

// recordTTL is how long a ledger record outlives the session's last
// step: longer than any state of it stays valid, so a valid state always
// finds its record (short of an evicting or failed shared tier).
func (s *sessions) recordTTL() time.Duration { return 2 * s.ttl }

func ledgerName(id string) string { return "upload/" + id }

func record(phase string, step, offset int64) string {
	return phase + ":" + strconv.FormatInt(step, 10) + ":" + strconv.FormatInt(offset, 10)
}

// parseRecord reads a ledger record: phase, step and offset.
func parseRecord(v string) (phase string, step, offset int64, ok bool) {
	parts := strings.Split(v, ":")
	if len(parts) != 3 {
		return "", 0, 0, false
	}
	st, err1 := strconv.ParseInt(parts[1], 10, 64)
	off, err2 := strconv.ParseInt(parts[2], 10, 64)
	return parts[0], st, off, err1 == nil && err2 == nil
}

// errLedgerDown answers a request on a session whose steps are in the
// shared ledger while that fails: no other ledger may stand in for it.
func errLedgerDown(id string) error {
	e := apiErr(http.StatusServiceUnavailable, codeUnavailable, "upload %s: the shared tier that records it does not answer; retry", id)
	e.header = http.Header{"Retry-After": {"5"}}
	return e
}

// swap tries the shared ledger, then (on its failure, or without one, and
// unless sharedOnly) this process's; it reports the ledger that answered.
// A full ledger is 503: no live record is ever dropped for a new one.
func (s *sessions) swap(ctx context.Context, name, old, new string, sharedOnly bool) (bool, cache.Ledger, error) {
	if s.shared != nil {
		ok, err := s.shared.Swap(ctx, name, old, new, s.recordTTL())
		if err == nil {
			return ok, s.shared, nil
		}
		s.sharedFailed(ctx, err)
		if sharedOnly {
			return false, s.shared, err
		}
	}
	ok, err := s.local.Swap(ctx, name, old, new, s.recordTTL())
	if err != nil {
		e := apiErr(http.StatusServiceUnavailable, codeUnavailable, "too many uploads are open on this replica; retry later")
		e.header = http.Header{"Retry-After": {"30"}}
		e.cause = err
		return false, s.local, e
	}
	return ok, s.local, nil
}

// get reads a record from the shared ledger, or (on its failure, or
// without one) this process's.
func (s *sessions) get(ctx context.Context, name string, sharedOnly bool) (string, bool, error) {
	if s.shared != nil {
		v, ok, err := s.shared.Get(ctx, name)
		if err == nil {
			return v, ok, nil
		}
		s.sharedFailed(ctx, err)
		if sharedOnly {
			return "", false, err
		}
	}
	v, ok, _ := s.local.Get(ctx, name)
	return v, ok, nil
}

// open records a new session at step 0 and seals its first state.
func (s *sessions) open(ctx context.Context, u *upload) error {
	ok, l, err := s.swap(ctx, ledgerName(u.id), "", record("idle", 0, 0), false)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("upload %s: the id is taken", u.id)
	}
	u.shared = l == s.shared && s.shared != nil
	return s.seal(u)
}

// seal sets u.token to u's state, valid for the TTL from now.
func (s *sessions) seal(u *upload) error {
	st, err := u.enc.MarshalState()
	if err != nil {
		return err
	}
	k := u.enc.Key()
	b, err := json.Marshal(sealedUpload{
		ID: u.id, Repo: u.repo, NS: u.ns, Owner: u.owner, Accepted: u.accepted,
		Location: u.location, Key: k.Key, Nonce: k.Nonce, Stream: st,
		Step: u.step, Expires: s.now().Add(s.ttl).Unix(), Shared: u.shared,
	})
	if err != nil {
		return fmt.Errorf("seal upload state: %w", err)
	}
	sealed, err := s.box.Seal(b, stateAD(u.id))
	if err != nil {
		return err
	}
	u.token = base64.RawURLEncoding.EncodeToString(sealed)
	if len(uploadLocation(u)) > maxLocation {
		return apiErr(http.StatusBadGateway, codeUnknown, "the upstream's upload location is too long to carry in a Location header")
	}
	return nil
}

func stateAD(id string) []byte { return []byte("shroud upload state\x00" + id) }

// unseal opens the state a request carries for session id of repo. What
// does not open, or names another session, repository or client, is as
// unknown as a session that never existed.
func (s *sessions) unseal(id, repo, token, principal string) (*upload, error) {
	unknown := apiErr(http.StatusNotFound, codeBlobUploadUnknown, "upload %s is unknown, finished, cancelled or expired", id)
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || token == "" {
		return nil, unknown
	}
	b, err := s.box.Open(raw, stateAD(id))
	if err != nil {
		return nil, unknown
	}
	var st sealedUpload
	if err := json.Unmarshal(b, &st); err != nil || st.ID != id || st.Repo != repo {
		return nil, unknown
	}
	if s.now().Unix() > st.Expires {
		return nil, unknown
	}
	// Another client's session: holding its URL is not enough to read,
	// feed or cancel it.
	if subtle.ConstantTimeCompare([]byte(st.Owner), []byte(principal)) != 1 {
		return nil, unknown
	}
	enc, err := crypto.ResumeEncrypter(crypto.LayerKey{Key: st.Key, Nonce: st.Nonce}, st.Stream)
	if err != nil {
		return nil, unknown
	}
	return &upload{id: st.ID, repo: st.Repo, ns: st.NS, owner: st.Owner, accepted: st.Accepted,
		location: st.Location, enc: enc, step: st.Step, token: token, shared: st.Shared}, nil
}

// errRecord explains a ledger record that a state does not continue.
func errRecord(u *upload, cur string) error {
	phase, step, offset, ok := parseRecord(cur)
	switch {
	case !ok:
		return apiErr(http.StatusNotFound, codeBlobUploadUnknown, "upload %s is unknown, finished, cancelled or expired", u.id)
	case phase == "done":
		return apiErr(http.StatusNotFound, codeBlobUploadUnknown, "upload %s is finished", u.id)
	case phase == "failed":
		return apiErr(http.StatusNotFound, codeBlobUploadUnknown, "upload %s: an earlier request on it failed or cancelled it; start a new upload", u.id)
	case phase == "busy" && step == u.step:
		return apiErr(http.StatusConflict, codeBlobUploadInvalid, "upload %s: another request is writing to it now", u.id)
	default:
		return apiErr(http.StatusRequestedRangeNotSatisfiable, codeBlobUploadInvalid,
			"upload %s: this state is stale (%d bytes); a later request moved the upload on to %d bytes: continue from the Location of the last response", u.id, u.offset(), offset)
	}
}

// claim takes the session for one request: its record goes from idle at
// the state's step to busy, or the request is refused. body says the
// request carries bytes to encrypt. check asks the upstream for the
// session's offset.
//
// A session no ledger this process can see knows (opened on another
// replica without the shared tier, or its record evicted) is taken only
// by a request with no body (the final PUT, whose digests the state
// holds): for one with a body, the upstream's offset cannot vouch that no
// other replica is encrypting at that offset at the same moment, and
// two chunks under one key stream would hand the registry their XOR. A
// request with a body also checks, once it holds the session, that the
// upstream holds the state's offset: a shared ledger rolled back (by
// whoever can write to it) does not alone let an old state be replayed.
func (s *sessions) claim(ctx context.Context, u *upload, body bool, check func(ctx context.Context) (int64, error)) error {
	name := ledgerName(u.id)
	busy := record("busy", u.step, u.offset())
	ledgerErr := func(err error) error {
		if u.shared {
			return errLedgerDown(u.id)
		}
		return err
	}
	ok, l, err := s.swap(ctx, name, record("idle", u.step, u.offset()), busy, u.shared)
	if err != nil {
		return ledgerErr(err)
	}
	if !ok {
		cur, found, err := s.get(ctx, name, u.shared)
		if err != nil {
			return ledgerErr(err)
		}
		phase, step, _, _ := parseRecord(cur)
		switch {
		case found && step < u.step && (phase == "idle" || phase == "busy"):
			// The request that issued this state moved the session on
			// but could not record it (the shared tier failed as it
			// ended): the state, which only that request could seal,
			// is the newer truth.
			ok, l, err = s.swap(ctx, name, cur, busy, u.shared)
		case found:
			return errRecord(u, cur)
		case body:
			return apiErr(http.StatusNotFound, codeBlobUploadUnknown,
				"upload %s: no ledger this replica sees records it (opened on another replica without the shared tier, or its record was evicted), so nothing vouches that no other request writes at its offset; start a new upload", u.id)
		default:
			if err := upstreamHolds(ctx, u, check); err != nil {
				return err
			}
			ok, l, err = s.swap(ctx, name, "", busy, u.shared)
		}
		if err != nil {
			return ledgerErr(err)
		}
		if !ok {
			return apiErr(http.StatusConflict, codeBlobUploadInvalid, "upload %s: another request is writing to it now", u.id)
		}
	}
	u.claimed, u.ledger = busy, l
	s.gauge.Add(ctx, 1)
	if body {
		// An upstream that cannot tell an upload's offset (ggcr's
		// registry has no status request) is not asked: the check is
		// against the shared tier, not the upstream. Its refusal of
		// the client's credentials is the client's answer.
		off, err := check(ctx)
		if upstream.IsStatus(err, http.StatusUnauthorized) || upstream.IsStatus(err, http.StatusForbidden) {
			s.release(ctx, u, record("idle", u.step, u.offset()))
			return err
		}
		if err != nil {
			off = -1
		}
		if off >= 0 && !sameOffset(off, u.offset()) {
			s.end(ctx, u, "failed")
			return apiErr(http.StatusRequestedRangeNotSatisfiable, codeBlobUploadInvalid,
				"upload %s: the upstream holds %d bytes, this state %d: the session is closed; start a new upload", u.id, off, u.offset())
		}
	}
	return nil
}

// sameOffset compares the upstream's offset with a state's; "0-0" is an
// empty session or one of one byte.
func sameOffset(upstream, state int64) bool {
	return upstream == state || (upstream == 0 && state == 1)
}

// current checks, without taking the session, that u's state is the one
// the session stands at (a status request, which a streaming PATCH need
// not wait for).
func (s *sessions) current(ctx context.Context, u *upload, check func(ctx context.Context) (int64, error)) error {
	cur, found, err := s.get(ctx, ledgerName(u.id), u.shared)
	if err != nil {
		return errLedgerDown(u.id)
	}
	phase, step, _, _ := parseRecord(cur)
	switch {
	case found && step == u.step && (phase == "idle" || phase == "busy"):
		return nil
	case found && step < u.step && (phase == "idle" || phase == "busy"):
		return nil
	case found:
		return errRecord(u, cur)
	}
	return upstreamHolds(ctx, u, check)
}

// upstreamHolds checks that the upstream holds u's offset: what vouches
// for a session no ledger records, for a request that encrypts nothing.
func upstreamHolds(ctx context.Context, u *upload, check func(ctx context.Context) (int64, error)) error {
	off, err := check(ctx)
	if err != nil {
		return err
	}
	if !sameOffset(off, u.offset()) {
		return errRecord(u, record("idle", u.step+1, off))
	}
	return nil
}

// cancel records the session cancelled from any state of it (nothing is
// encrypted, so an older state will do: a client may cancel with the
// Location it started with). A finished session is not cancelled; a
// request still writing finds its record changed and fails.
func (s *sessions) cancel(ctx context.Context, u *upload) error {
	name := ledgerName(u.id)
	cur, found, err := s.get(ctx, name, u.shared)
	if err != nil {
		return errLedgerDown(u.id)
	}
	phase, _, _, _ := parseRecord(cur)
	if found && phase != "idle" && phase != "busy" {
		return errRecord(u, cur)
	}
	if ok, _, err := s.swap(ctx, name, cur, record("failed", u.step, u.offset()), u.shared); err != nil {
		return errLedgerDown(u.id)
	} else if !ok && found {
		return apiErr(http.StatusConflict, codeBlobUploadInvalid, "upload %s: changed while it was being cancelled; try again", u.id)
	}
	return nil
}

// advance ends a request that moved the session on: the next step is
// recorded and sealed into u.token.
func (s *sessions) advance(ctx context.Context, u *upload) error {
	next := record("idle", u.step+1, u.offset())
	if ok := s.release(ctx, u, next); !ok {
		return apiErr(http.StatusConflict, codeBlobUploadInvalid, "upload %s: its record changed while this request wrote to it", u.id)
	}
	u.step++
	return s.seal(u)
}

// keep ends a request that did not move the session on (a status
// request, a refused cancel): the state it came with stays the current one.
func (s *sessions) keep(ctx context.Context, u *upload) error {
	s.release(ctx, u, record("idle", u.step, u.offset()))
	return s.seal(u)
}

// end records a session as finished or failed: no state of it is taken
// again.
func (s *sessions) end(ctx context.Context, u *upload, phase string) {
	s.release(ctx, u, record(phase, u.step, u.offset()))
}

func (s *sessions) release(ctx context.Context, u *upload, next string) bool {
	if u.claimed == "" {
		return true
	}
	defer s.gauge.Add(ctx, -1)
	ctx = context.WithoutCancel(ctx)
	name := ledgerName(u.id)
	ttl := s.recordTTL()
	if phase, _, _, _ := parseRecord(next); phase == "done" || phase == "failed" {
		// Every state of an ended session expires within the TTL of
		// its end: its record need not outlive that (a replica's
		// ledger holds a bounded number).
		ttl = s.ttl
	}
	ok, err := u.ledger.Swap(ctx, name, u.claimed, next, ttl)
	if err == nil && !ok {
		// A request that held the session for longer than the record
		// lives (a multi-hour PATCH) finds it gone: nobody else can
		// have taken it since, as no state of it was valid without it.
		if _, found, gerr := u.ledger.Get(ctx, name); gerr == nil && !found {
			ok, err = u.ledger.Swap(ctx, name, "", next, ttl)
		}
	}
	if err != nil && u.ledger == s.shared {
		s.sharedFailed(ctx, err)
	}
	u.claimed = ""
	return ok || err != nil
}

// gate passes reads through until closed; after close a read fails. It
// keeps a reader (and the Encrypter behind it) from being touched by an
// HTTP transport that still holds it after the request returned.
type gate struct {
	mu     sync.Mutex
	r      io.Reader
	closed bool
}

func (g *gate) Read(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return 0, io.ErrClosedPipe
	}
	return g.r.Read(p)
}

// WriteTo lets io.Copy in the HTTP transport use the encrypting reader's
// chunked, two-core WriteTo.
func (g *gate) WriteTo(w io.Writer) (int64, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return 0, io.ErrClosedPipe
	}
	if wt, ok := g.r.(io.WriterTo); ok {
		return wt.WriteTo(w)
	}
	return io.Copy(w, struct{ io.Reader }{g.r})
}

func (g *gate) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}

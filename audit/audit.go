package audit

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"regexp"
	"sync"
	"time"
)

// Kind is what an event records.
type Kind string

// The kinds of events.
const (
	// WrapRefused: a layer key was not wrapped for a key (expired, not
	// yet valid, revoked, not allowed, frozen trust documents).
	WrapRefused Kind = "wrap-refused"
	// UnwrapRefused: shroud did not open a layer with one of its keys.
	UnwrapRefused Kind = "unwrap-refused"
	// UnwrapAllowed: shroud keyprovider opened a wrapped layer key for
	// a caller (its scope, the caller and the key; never the key).
	UnwrapAllowed Kind = "unwrap-allowed"
	// TrustRefresh: trust documents were fetched (versions, outcome).
	TrustRefresh Kind = "trust-refresh"
	// JobStep: one step of a rewrap, re-encrypt or rotation job.
	JobStep Kind = "job-step"
	// Admin: an action through the admin API or command line.
	Admin Kind = "admin"
	// Access: an access request submitted, approved, denied.
	Access Kind = "access"
)

// Event is one line of the audit log. Zero fields are left out.
type Event struct {
	// Time is when it happened; zero: when it is logged.
	Time time.Time `json:"time"`
	Kind Kind      `json:"kind"`
	// Repository, Rule and Op say where: the repository, the policy
	// rule, "wrap" or "unwrap".
	Repository string `json:"repository,omitempty"`
	Rule       string `json:"rule,omitempty"`
	Op         string `json:"op,omitempty"`
	// KeyID names the key (crypto key ids: sha256:…, pgp:…, pkcs11:…,
	// provider:…), never its material; Reason says why it was refused
	// (expired, not-yet-valid, revoked, not-allowed, frozen...).
	KeyID  string `json:"key_id,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Document and Expires name the trust document a decision rests on
	// and its expiry; Version is its version.
	Document string    `json:"document,omitempty"`
	Expires  time.Time `json:"expires,omitzero"`
	Version  int64     `json:"version,omitempty"`
	// Job, JobID and Step name a job's step; Digest and NewDigest the
	// manifest or blob it worked on; Outcome how it ended.
	Job       string `json:"job,omitempty"`
	JobID     string `json:"job_id,omitempty"`
	Step      string `json:"step,omitempty"`
	Digest    string `json:"digest,omitempty"`
	NewDigest string `json:"new_digest,omitempty"`
	Outcome   string `json:"outcome,omitempty"`
	// Actor is who asked (a user, a certificate subject, "shroud").
	Actor string `json:"actor,omitempty"`
	// ActorCert is the SHA-256 fingerprint ("sha256:<hex>" of the DER)
	// of the client certificate the actor presented.
	ActorCert string `json:"actor_cert,omitempty"`
	// Detail is a message for people.
	Detail string `json:"detail,omitempty"`
}

// Logger writes events as JSON lines. It is safe for concurrent use; a
// nil *Logger writes nothing.
type Logger struct {
	mu  sync.Mutex
	w   io.Writer
	now func() time.Time
}

// New returns a Logger writing to w.
func New(w io.Writer) *Logger { return &Logger{w: w, now: time.Now} }

// WithClock has the Logger stamp events with now (tests).
func (l *Logger) WithClock(now func() time.Time) *Logger {
	if l != nil {
		l.now = now
	}
	return l
}

// Open opens the audit log at path, appending ("-": stdout). The file
// is created mode 0600. The returned closer closes it (stdout is not
// closed).
func Open(path string) (*Logger, io.Closer, error) {
	if path == "-" {
		return New(os.Stdout), io.NopCloser(nil), nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("audit log: %w", err)
	}
	return New(f), f, nil
}

// Log writes one event as one line. It returns the write's error (the
// event is then lost: the caller says so in its own log).
func (l *Logger) Log(e Event) error {
	if l == nil {
		return nil
	}
	if e.Time.IsZero() {
		e.Time = l.now()
	}
	e.Time = e.Time.UTC()
	e.Expires = e.Expires.UTC()
	scrub(&e)
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	b = append(b, '\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := l.w.Write(b); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	return nil
}

// redacted replaces a string that looks like key material.
const redacted = "[redacted: looks like key material]"

// armor matches PEM and OpenPGP armor headers and JWKs; base64Run a run of
// base64 longer than any key id or digest in hex (wrapped keys, DER,
// JWE): a key id (sha256: and 64 hex digits) is 71 characters, a sha512
// digest 135, and runs of hex digits are let through.
var (
	armor     = regexp.MustCompile(`-----BEGIN |PRIVATE KEY|"kty"`)
	base64Run = regexp.MustCompile(`[A-Za-z0-9+/=_-]{100,}`)
	hexOnly   = regexp.MustCompile(`^[0-9a-fA-F]+$`)
	repoName  = regexp.MustCompile(`^[a-z0-9._/*?-]*$`)
)

// scrub replaces every field of e that looks like key material; a
// repository that is not a name of the distribution spec's grammar (a
// long path segment is not base64, which has capitals), or a glob of
// such names (shroud keyprovider's scopes: "*" and "?" are not base64
// either), too.
func scrub(e *Event) {
	if !repoName.MatchString(e.Repository) {
		e.Repository = redacted
	}
	for _, s := range []*string{&e.Rule, &e.Op, &e.KeyID, &e.Reason, &e.Document,
		&e.Job, &e.JobID, &e.Step, &e.Digest, &e.NewDigest, &e.Outcome, &e.Actor, &e.ActorCert, &e.Detail} {
		if looksLikeKeyMaterial(*s) {
			*s = redacted
		}
	}
}

func looksLikeKeyMaterial(s string) bool {
	if armor.MatchString(s) {
		return true
	}
	for _, run := range base64Run.FindAllString(s, -1) {
		if !hexOnly.MatchString(run) {
			return true
		}
	}
	return false
}

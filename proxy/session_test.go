package proxy

import (
	"testing"
	"time"

	"go.opentelemetry.io/otel/metric/noop"
)

// An idle upload session expires a TTL after its last request ended; one
// a request still works on (a PATCH streaming for longer than the TTL)
// neither expires nor is swept, and its TTL starts again when it ends.
func TestSessionExpiry(t *testing.T) {
	const ttl = time.Hour
	now := time.Unix(1_000_000, 0)
	s := newSessions(ttl, noop.Int64UpDownCounter{})
	s.now = func() time.Time { return now }

	idle := &upload{id: "idle", repo: "r"}
	streaming := &upload{id: "streaming", repo: "r"}
	s.add(idle)
	s.add(streaming)
	if s.get("idle", "other") != nil {
		t.Fatal("a session was found under another repository")
	}
	if s.get("streaming", "r") != streaming {
		t.Fatal("a new session is not found")
	}

	now = now.Add(2 * ttl) // the PATCH on "streaming" is still running
	if s.get("idle", "r") != nil {
		t.Fatal("an idle session outlived its TTL")
	}
	s.add(&upload{id: "new", repo: "r"}) // sweeps
	if _, ok := s.m["idle"]; ok {
		t.Fatal("the expired session was not swept")
	}
	if _, ok := s.m["streaming"]; !ok {
		t.Fatal("a session a request works on was swept")
	}

	s.done(streaming) // the PATCH ends; the client PUTs within the TTL
	now = now.Add(ttl - time.Minute)
	u := s.get("streaming", "r")
	if u != streaming {
		t.Fatal("a session was lost while a request worked on it")
	}
	s.done(u)
	now = now.Add(ttl + time.Second)
	if s.get("streaming", "r") != nil {
		t.Fatal("a session idle for longer than the TTL after its last request was found")
	}
}

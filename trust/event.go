package trust

import "time"

// Event kinds.
const (
	// EventRefresh reports a refresh's outcome.
	EventRefresh = "trust-refresh"
	// EventFreeze reports that a document the decisions rest on expired:
	// wrapping stops at once, unwrapping after the grace. It is sent once
	// per document and expiry.
	EventFreeze = "trust-freeze"
)

// Refresh outcomes.
const (
	// OutcomeOK: everything the source offered was verified and is in
	// force (or nothing was new).
	OutcomeOK = "ok"
	// OutcomeRefused: the new top-level documents are in force but some of
	// what the source offered was refused (a namespace's lists, a deny list
	// dropping entries, an equivocating timestamp); Refusals say what, and
	// the previously trusted lists stay in force for it.
	OutcomeRefused = "refused"
	// OutcomeFailed: nothing new is in force; the last good state stays
	// (and freezes when its documents expire).
	OutcomeFailed = "failed"
)

// Event is what a refresh, or a freeze, reports to Options.OnEvent (the
// audit log subscribes). It names documents, versions and key ids, never
// key material.
type Event struct {
	Kind   string
	Time   time.Time
	Source string
	// Outcome is OutcomeOK, OutcomeRefused or OutcomeFailed (refreshes).
	Outcome string
	// Versions are the versions in force after the refresh, by role
	// ("root", "timestamp", "snapshot", "targets", delegated roles).
	Versions map[string]int64
	// Error is why a refresh failed.
	Error string
	// Refusals say what a refresh refused and why.
	Refusals []string
	// Warnings report what was ignored (an entry's scope reaching beyond
	// its role's namespace, a malformed entry).
	Warnings []string
	// Document and Expires name the expired document (freezes).
	Document string
	Expires  time.Time
}

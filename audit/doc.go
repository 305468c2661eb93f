// Package audit writes shroud's audit log: one JSON object per line for
// every key decision and job step (a refused wrap or unwrap, a trust
// refresh, a job step, an admin action), apart from the access log, to a
// file or stdout (serve --audit-log FILE|-).
//
// It names keys by their key ids and never holds key material: an event
// has no field for one, and a string that looks like key material (a PEM
// or OpenPGP armor block, a long run of base64) is replaced before it is
// written, whatever field a caller put it in.
//
// A nil *Logger is usable and writes nothing.
package audit

package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
)

// maxErrorBody bounds the error body kept from an upstream answer.
const maxErrorBody = 64 << 10

// StatusError is an upstream answer with a status the caller did not want.
// Path is the request's path alone: never its query, where distribution
// keeps an upload's sealed state.
type StatusError struct {
	Method     string
	Path       string
	StatusCode int
	Header     http.Header
	Body       []byte
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("upstream %s %s: %d %s", e.Method, e.Path, e.StatusCode, http.StatusText(e.StatusCode))
}

// TransportError is a failure to get any answer from the upstream, or an
// answer shroud does not take (a redirect it does not follow). Its text
// holds no URL's query or userinfo.
type TransportError struct {
	Method string
	Path   string
	Err    error
}

func (e *TransportError) Error() string {
	return fmt.Sprintf("upstream %s %s: %s", e.Method, e.Path, scrubText(e.Err.Error()))
}

func (e *TransportError) Unwrap() error { return e.Err }

// Timeout says whether the upstream did not answer in time.
func (e *TransportError) Timeout() bool {
	var ne net.Error
	return errors.Is(e.Err, context.DeadlineExceeded) || (errors.As(e.Err, &ne) && ne.Timeout())
}

// IsStatus says whether err is an upstream answer with that status.
func IsStatus(err error, status int) bool {
	var se *StatusError
	return errors.As(err, &se) && se.StatusCode == status
}

func statusError(resp *http.Response) *StatusError {
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	return &StatusError{
		Method:     resp.Request.Method,
		Path:       resp.Request.URL.Path,
		StatusCode: resp.StatusCode,
		Header:     resp.Header.Clone(),
		Body:       body,
	}
}

// redactURL returns u as text without what a log must not hold: its
// userinfo (credentials), query (distribution's sealed _state, presigned
// signatures) and fragment.
func redactURL(u *url.URL) string {
	r := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawPath: u.RawPath}
	return r.String()
}

// redactString is redactURL for a URL in text, which may not parse.
func redactString(s string) string {
	if u, err := url.Parse(s); err == nil {
		return redactURL(u)
	}
	if i := strings.IndexAny(s, "?#"); i >= 0 {
		s = s[:i]
	}
	if i := strings.Index(s, "://"); i >= 0 {
		rest := s[i+len("://"):]
		authority := rest
		if j := strings.IndexByte(rest, '/'); j >= 0 {
			authority = rest[:j]
		}
		if k := strings.LastIndexByte(authority, '@'); k >= 0 {
			s = s[:i+len("://")] + rest[k+1:]
		}
	}
	return s
}

// urlish matches what may be a URL, or the part of one, in error text:
// a run without blanks or quotes holding "://", or a "/" before a "?".
var urlish = regexp.MustCompile(`[^\s"'<>` + "`" + `]*(?:://|/[^\s"'<>` + "`" + `]*\?)[^\s"'<>` + "`" + `]*`)

// scrubText removes the userinfo and query of every URL in s.
func scrubText(s string) string {
	return urlish.ReplaceAllStringFunc(s, redactString)
}

// redacted is an error whose text had URLs with secrets; it reads as
// scrubText of it, and so does all it wraps.
type redacted struct {
	msg  string
	errs []error
}

func (e *redacted) Error() string   { return e.msg }
func (e *redacted) Unwrap() []error { return e.errs }

// Timeout reports a timeout below, as net/http's errors do.
func (e *redacted) Timeout() bool {
	var t interface{ Timeout() bool }
	for _, err := range e.errs {
		if errors.As(err, &t) && t.Timeout() {
			return true
		}
	}
	return false
}

// redactErr returns err with every URL in its text, and in that of the
// errors it wraps, stripped of userinfo and query. A *url.Error (what
// net/http and url.Parse return, the full URL in it) becomes one with the
// URL redacted; errors whose text holds no such URL are kept as they are,
// for errors.Is and errors.As.
func redactErr(err error) error {
	if err == nil {
		return nil
	}
	if ue, ok := err.(*url.Error); ok {
		return &url.Error{Op: ue.Op, URL: redactString(ue.URL), Err: redactErr(ue.Err)}
	}
	msg := err.Error()
	clean := scrubText(msg)
	if clean == msg {
		return err
	}
	var below []error
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		below = []error{u.Unwrap()}
	case interface{ Unwrap() []error }:
		below = u.Unwrap()
	}
	r := &redacted{msg: clean}
	for _, b := range below {
		if b != nil {
			r.errs = append(r.errs, redactErr(b))
		}
	}
	return r
}

package upstream

import (
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
)

// stateSecret stands for distribution's sealed upload state (the _state
// query parameter), which lets whoever holds it continue the upload.
const stateSecret = "SEALED-STATE-abcdef0123456789"

// assertRedacted fails if an error's text, or that of anything it wraps,
// holds one of the secrets.
func assertRedacted(t *testing.T, what string, err error, secrets ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error", what)
	}
	for e := err; e != nil; e = errors.Unwrap(e) {
		for _, s := range secrets {
			if strings.Contains(e.Error(), s) {
				t.Errorf("%s: error text %q holds %q", what, e.Error(), s)
			}
		}
	}
}

// An upstream that refuses an upload step, or drops the connection
// during one, yields errors that are logged: they must not hold the
// session's _state.
func TestUploadStateIsNotInErrorText(t *testing.T) {
	up := hostile(t, func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/hangup") {
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
			return
		}
		if strings.HasSuffix(r.URL.Path, "/badloc") {
			w.Header().Set("Location", "http://[::1/v2/x/blobs/uploads/u?_state="+stateSecret)
			w.WriteHeader(http.StatusAccepted)
			return
		}
		w.WriteHeader(http.StatusBadRequest)
	})
	c := newClient(t, up.URL, nil)
	ctx := t.Context()
	q := "?_state=" + stateSecret
	_, err := c.PatchUpload(ctx, up.URL+"/v2/x/blobs/uploads/u1"+q, strings.NewReader("c"), 0, 1)
	assertRedacted(t, "refused PATCH", err, stateSecret)
	_, err = c.PatchUpload(ctx, up.URL+"/v2/x/blobs/uploads/hangup"+q, strings.NewReader("c"), 0, 1)
	assertRedacted(t, "PATCH without an answer", err, stateSecret)
	err = c.CommitUpload(ctx, up.URL+"/v2/x/blobs/uploads/hangup"+q, blobDigest)
	assertRedacted(t, "PUT without an answer", err, stateSecret)
	err = c.CancelUpload(ctx, up.URL+"/v2/x/blobs/uploads/hangup"+q)
	assertRedacted(t, "DELETE without an answer", err, stateSecret)
	_, err = c.PatchUpload(ctx, up.URL+"/v2/x/blobs/uploads/badloc"+q, strings.NewReader("c"), 0, 1)
	assertRedacted(t, "PATCH answered with an unparsable Location", err, stateSecret)
	err = c.CommitUpload(ctx, "http://[::1/v2/x/blobs/uploads/u1"+q, blobDigest)
	assertRedacted(t, "PUT to an unparsable location", err, stateSecret)
	_, err = c.PatchUpload(ctx, "http://[::1/v2/x/blobs/uploads/u1"+q, strings.NewReader("c"), 0, 1)
	assertRedacted(t, "PATCH to an unparsable location", err, stateSecret)
}

// A redirect refused for a blob names neither the target's query (a
// presigned URL's signature) nor its userinfo.
func TestRefusedRedirectTargetIsRedactedInErrorText(t *testing.T) {
	internal := startInternal(t)
	up := hostile(t, redirectTo(strings.Replace(internal.URL, "http://", "http://storage-user:storage-pw@", 1)+"/b?X-Amz-Signature="+stateSecret))
	c := newClient(t, up.URL, nil)
	resp, err := c.GetBlob(t.Context(), "x", blobDigest, "")
	readAll(resp)
	assertRedacted(t, "refused redirect", err, stateSecret, "storage-user", "storage-pw")
}

// Credentials in the upstream URL (http://user:password@host) appear in
// no error, whether the upstream is unreachable or the URL is malformed.
func TestUpstreamURLUserinfoIsNotInErrorText(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	c := newClient(t, "http://shroud-robot:robot-password@"+addr, nil)
	err = c.Ping(t.Context())
	assertRedacted(t, "unreachable upstream", err, "shroud-robot", "robot-password")
	_, err = c.GetBlob(t.Context(), "x", blobDigest, "")
	assertRedacted(t, "unreachable upstream", err, "shroud-robot", "robot-password")

	_, err = New("http://shroud-robot:robot-password@registry:bad-port/?token="+stateSecret, nil)
	assertRedacted(t, "malformed upstream URL", err, "shroud-robot", "robot-password", stateSecret)
	_, err = WithCredentials(http.DefaultTransport, "http://shroud-robot:robot-password@registry:bad-port/", nil)
	assertRedacted(t, "malformed upstream URL", err, "shroud-robot", "robot-password")
}

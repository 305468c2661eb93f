package upstream

import (
	"errors"
	"net/http"
	"strings"
	"testing"
)

// The upstream answers an upload step with a Location on another host (a
// service on shroud's loopback, or the same host under another scheme):
// shroud must not take it as the session, or the next PATCH/PUT would
// carry the client's Authorization and layer there.
func TestUploadLocationOnAnotherOriginIsRefused(t *testing.T) {
	internal := startInternal(t)
	var foreign string
	up := hostile(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", foreign)
		w.WriteHeader(http.StatusAccepted)
	})
	c := newClient(t, up.URL, nil).WithAuthorization("Bearer client-token")
	ctx := t.Context()
	for _, loc := range []string{
		internal.URL + "/v2/evil/repo/blobs/uploads/u1?_state=x",
		"//" + strings.TrimPrefix(internal.URL, "http://") + "/v2/evil/repo/blobs/uploads/u1",
		strings.Replace(up.URL, "http://", "https://", 1) + "/v2/evil/repo/blobs/uploads/u1",
		strings.Replace(up.URL, "http://", "http://someone@", 1) + "/v2/evil/repo/blobs/uploads/u1",
	} {
		foreign = loc
		if got, err := c.StartUpload(ctx, "evil/repo"); !errors.Is(err, ErrForeignLocation) {
			t.Errorf("StartUpload took Location %q as %q (%v)", loc, got, err)
		}
		if _, got, err := c.Mount(ctx, "evil/repo", blobDigest, "other/repo"); err == nil {
			t.Errorf("Mount took Location %q as %q", loc, got)
		}
		own := up.URL + "/v2/evil/repo/blobs/uploads/u1"
		if got, err := c.PatchUpload(ctx, own, strings.NewReader("ciphertext"), 0, 10); err == nil {
			t.Errorf("PatchUpload took Location %q as %q", loc, got)
		}
	}
	if n := internal.hits.Load(); n != 0 {
		t.Fatalf("the internal service was reached %d times", n)
	}
}

// Defense in depth: a session location that is not on the upstream's
// origin, however it got to the caller, is never sent to.
func TestUploadStepsRefuseALocationOffTheUpstream(t *testing.T) {
	internal := startInternal(t)
	up := hostile(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", r.URL.String())
		w.WriteHeader(http.StatusNoContent)
	})
	c := newClient(t, up.URL, nil).WithAuthorization("Bearer client-token")
	ctx := t.Context()
	loc := internal.URL + "/v2/evil/repo/blobs/uploads/u1?_state=x"
	if _, err := c.PatchUpload(ctx, loc, strings.NewReader("ciphertext"), 0, 10); err == nil {
		t.Error("PatchUpload sent to a foreign location")
	}
	if err := c.CommitUpload(ctx, loc, blobDigest); err == nil {
		t.Error("CommitUpload sent to a foreign location")
	}
	if err := c.CancelUpload(ctx, loc); err == nil {
		t.Error("CancelUpload sent to a foreign location")
	}
	if n := internal.hits.Load(); n != 0 {
		t.Fatalf("the internal service was reached %d times with %q", n, internal.authSeen())
	}
	// The upstream's own locations still work.
	own := up.URL + "/v2/evil/repo/blobs/uploads/u1?_state=x"
	if _, err := c.PatchUpload(ctx, own, strings.NewReader("ciphertext"), 0, 10); err != nil {
		t.Fatal(err)
	}
	if err := c.CommitUpload(ctx, own, blobDigest); err != nil {
		t.Fatal(err)
	}
	if err := c.CancelUpload(ctx, own); err != nil {
		t.Fatal(err)
	}
}

package proxy_test

import (
	"bytes"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/internal/shroudtest"
)

// Attack: ".." escapes a passthrough rule. The policy passes public/**
// through and denies secret/**; shroud picks the rule from the raw path,
// so /v2/public/app/blobs/../../secret/app/manifests/latest is judged as
// public/app and relayed as it is, and the upstream (which cleans the
// path) serves secret/app. Go's client cleans paths, so the request is
// written on the connection. A user checks that such a request gets 400
// NAME_INVALID or 404, that the upstream never sees a request naming
// secret/, and that nothing of secret/app comes back.
func TestDotDotEscapesPassthrough(t *testing.T) {
	dist := shroudtest.Distribution(t)
	secretImg := atkStaticImage(t, atkRandBytes(t, 2000))
	if err := remote.Write(ref(t, dist.Host(), "secret/app:latest"), secretImg); err != nil {
		t.Fatal(err)
	}
	secretManifest := must[[]byte](t)(secretImg.RawManifest())
	rec := &shroudtest.Recorder{}
	up := shroudtest.Behind(t, dist, rec.Middleware)
	s := shroudtest.Start(t, up, shroudtest.WithPolicy(
		shroudtest.Rule{Pattern: "public/**", Action: crypto.Passthrough},
		shroudtest.Rule{Pattern: "secret/**", Action: crypto.Deny},
	))
	if st, _, _ := atkRawRequest(t, s.Host(), "GET", "/v2/secret/app/manifests/latest"); st != 403 {
		t.Fatalf("GET secret/app straight: %d, want 403", st)
	}
	if st, _, _ := atkRawRequest(t, s.Host(), "GET", "/v2/public/app/manifests/latest"); st != 404 {
		t.Fatalf("GET public/app (passthrough, nothing there): %d, want the upstream's 404", st)
	}
	if rec.Count(shroudtest.PathContains("/v2/public/app/manifests/latest")) != 1 {
		t.Fatal("the recorder did not see the passthrough request")
	}
	rec.Reset()
	for _, target := range []string{
		"/v2/public/app/blobs/../../secret/app/manifests/latest",
		"/v2/public/app/blobs/%2e%2e/%2e%2e/secret/app/manifests/latest",
		// Three levels: these clean to /v2/secret/app/manifests/latest.
		"/v2/public/app/blobs/../../../secret/app/manifests/latest",
		"/v2/public/app/blobs/%2e%2e/%2e%2e/%2e%2e/secret/app/manifests/latest",
		"/v2/public/app/blobs/%2E%2E/%2E%2E/%2E%2E/secret/app/manifests/latest",
		"/v2/public/app/blobs/..%2f..%2f..%2fsecret/app/manifests/latest",
		"/v2/public/app/manifests/..%2F..%2Fsecret%2Fapp%2Fmanifests%2Flatest",
	} {
		st, hdr, body := atkRawRequest(t, s.Host(), "GET", target)
		var code string
		if st != 404 || len(body) > 0 {
			code = answer{status: st, body: body}.errorCode()
		}
		if !(st == 400 && code == "NAME_INVALID") && st != 404 {
			t.Errorf("GET %s: %d %s %.200s (Location %q), want 400 NAME_INVALID or 404", target, st, code, body, hdr.Get("Location"))
		}
		if bytes.Contains(body, secretManifest[:64]) || bytes.Contains(body, []byte("schemaVersion")) {
			t.Errorf("GET %s returned secret/app's manifest", target)
		}
	}
	for _, r := range rec.Requests() {
		if shroudtest.PathContains("secret")(r) {
			t.Errorf("the upstream received %s %s", r.Method, r.RequestURI)
		}
	}
}

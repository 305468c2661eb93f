package proxy_test

import (
	"bytes"
	"encoding/base64"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/shroud-oci/shroud/internal/shroudtest"
)

// checkingUpstream is an upstream that accepts exactly the given
// Authorization headers (unlike shroudtest.RequireAuth, which accepts any).
func checkingUpstream(accepted ...string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ok := false
			for _, a := range accepted {
				ok = ok || r.Header.Get("Authorization") == a
			}
			if !ok {
				io.Copy(io.Discard, r.Body)
				w.Header().Set("WWW-Authenticate", `Basic realm="x"`)
				w.WriteHeader(http.StatusUnauthorized)
				io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}`)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// unsignedJWT is a token naming iss and sub, with a signature nobody
// checks here: what a forger can make.
func unsignedJWT(iss, sub, sig string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return "Bearer " + enc([]byte(`{"alg":"ES256"}`)) + "." + enc([]byte(`{"iss":"`+iss+`","sub":"`+sub+`"}`)) + "." + enc([]byte(sig))
}

// Attack: an upload session is taken over by its user name or subject. A
// client that learns alice's session URL sends alice's user name with a
// wrong password, or a forged token naming alice's subject: the upstream
// refuses those credentials, but shroud matched the session by name
// alone, so the client read its progress and a refused PATCH abandoned
// alice's session. A user checks that the intruder gets 404 or 401 and
// no Range, and that alice's next chunk and her commit succeed.
func TestUploadSessionTakenOverByUserNameOrSubject(t *testing.T) {
	aliceBasic := atkBasicAuth("alice", "s3cret")
	aliceToken := unsignedJWT("https://idp", "alice", "real-signature")
	up := shroudtest.Behind(t, shroudtest.Distribution(t), checkingUpstream(aliceBasic, aliceToken))
	s := shroudtest.Start(t, up)
	c := call{t, s.URL}
	for _, tc := range []struct{ name, alice, intruder string }{
		{"a wrong password", aliceBasic, atkBasicAuth("alice", "not-the-password")},
		{"a forged token of alice's subject", aliceToken, unsignedJWT("https://idp", "alice", "forged")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, d := randBlob(t, 3000)
			octet := func(auth string) []string {
				return []string{"Content-Type", "application/octet-stream", "Authorization", auth}
			}
			a := c.do("POST", "/v2/team/app/blobs/uploads/", nil, "Authorization", tc.alice)
			a.want(t, 202, "")
			loc := a.header.Get("Location")
			a = c.do("PATCH", loc, bytes.NewReader(b[:1000]), octet(tc.alice)...)
			a.want(t, 202, "")
			loc = a.header.Get("Location")

			if st := c.do("GET", loc, nil, "Authorization", tc.intruder); (st.status != 404 && st.status != 401) || st.header.Get("Range") != "" {
				t.Errorf("the intruder's status GET: %d, Range %q; want 404 or 401 and no Range", st.status, st.header.Get("Range"))
			}
			if p := c.do("PATCH", loc, strings.NewReader("x"), octet(tc.intruder)...); p.status != 404 && p.status != 401 {
				t.Errorf("the intruder's PATCH: %d %s, want 404 or 401", p.status, p.body)
			}
			if a = c.do("PATCH", loc, bytes.NewReader(b[1000:2000]), octet(tc.alice)...); a.status != 202 {
				t.Fatalf("alice's next chunk after the intruder: %d %s", a.status, a.body)
			}
			loc = a.header.Get("Location")
			sep := "?"
			if strings.Contains(loc, "?") {
				sep = "&"
			}
			if a = c.do("PUT", loc+sep+"digest="+d.String(), bytes.NewReader(b[2000:]), octet(tc.alice)...); a.status != 201 {
				t.Fatalf("alice commits: %d %s", a.status, a.body)
			}
			if got := c.do("GET", "/v2/team/app/blobs/"+d.String(), nil, "Authorization", tc.alice); got.status != 200 || !bytes.Equal(got.body, b) {
				t.Fatalf("alice's blob: %d, %d bytes", got.status, len(got.body))
			}
		})
	}
}

// Attack: plaintext for a client the upstream refuses. Without shroud's
// own authentication the upstream decides, with the client's own
// credentials. alice pushes a layer; while her pull of it is streaming
// (shroud holds the mapping and an upstream fetch is open), bob with a
// wrong password and an anonymous client ask for the same blob: a GET, a
// HEAD, a range. A user checks that each gets the upstream's 401, no
// size and no plaintext byte, and that alice's pull completes intact.
func TestUpstreamDecidesNoPlaintextForRefusedClient(t *testing.T) {
	alice := atkBasicAuth("alice", "s3cret")
	up := shroudtest.Behind(t, shroudtest.Distribution(t), checkingUpstream(alice))
	s := shroudtest.Start(t, up)
	c := call{t, s.URL}
	layer := atkRandBytes(t, 4<<20)
	ld := atkPushBlob(t, c, "team/app", layer, "Authorization", alice)

	req, err := http.NewRequest("GET", s.URL+"/v2/team/app/blobs/"+ld.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", alice)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	head := make([]byte, 4096)
	if _, err := io.ReadFull(resp.Body, head); err != nil || resp.StatusCode != 200 {
		t.Fatalf("alice's pull: %d %v", resp.StatusCode, err)
	}
	// alice's stream is open and stalled: bob and an anonymous client now.
	for _, who := range []struct{ name, auth string }{{"bob", atkBasicAuth("bob", "guess")}, {"alice's name with a wrong password", atkBasicAuth("alice", "guess")}, {"anonymous", ""}} {
		for _, probe := range [][]string{
			{"GET"}, {"HEAD"}, {"GET", "Range", "bytes=0-99"}, {"GET", "Range", "bytes=99999999-"},
		} {
			hdr := probe[1:]
			if who.auth != "" {
				hdr = append(hdr, "Authorization", who.auth)
			}
			a := c.do(probe[0], "/v2/team/app/blobs/"+ld.String(), nil, hdr...)
			what := who.name + " " + strings.Join(probe, " ")
			if a.status != 401 {
				t.Errorf("%s: %d, want the upstream's 401", what, a.status)
			}
			if a.header.Get("Content-Range") != "" || a.header.Get("Docker-Content-Digest") != "" || (a.header.Get("Content-Length") == "4194304") {
				t.Errorf("%s: a size or digest hint: %v", what, a.header)
			}
			atkNoPlaintextBlob(t, what, a, layer)
		}
	}
	rest, err := io.ReadAll(resp.Body)
	if err != nil || !bytes.Equal(append(head, rest...), layer) {
		t.Fatalf("alice's pull after the others: %d bytes, %v; want her layer intact", len(head)+len(rest), err)
	}
}

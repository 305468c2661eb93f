package admin_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/shroud-oci/shroud/access"
	"github.com/shroud-oci/shroud/admin"
	"github.com/shroud-oci/shroud/crypto"
	"github.com/shroud-oci/shroud/proxy"
)

// allowOnly is an allow list naming key for the repositories of repos.
type allowOnly struct {
	key   *string
	repos map[string]bool
}

func (a allowOnly) Check(_ context.Context, op, repo, keyID string, _ time.Time) error {
	if op == proxy.OpWrap && keyID != *a.key {
		return nil // the rule's own recipients
	}
	if a.repos[repo] {
		return nil
	}
	return errors.New("not-allowed")
}

// A request whose key the allow list names for every repository it asks
// for is approved at submission and its rewrap job started and done. A
// request for a repository the allow list
// does not name it for stays pending for the owners.
func TestAccessRequestTheAllowListNamesIsApprovedAtOnce(t *testing.T) {
	f := newFixture(t)
	s := f.second(t, f.up)
	var allowed string
	check := allowOnly{key: &allowed, repos: map[string]bool{repo: true}}
	pol := must[*crypto.Policy](t)(crypto.NewPolicy([]crypto.Rule{{Pattern: "team/**", Action: crypto.Encrypt,
		Recipients: must[*crypto.Recipients](t)(s.Keyring.Recipients([]crypto.Recipient{f.recB}))}}))
	store := must[*access.Store](t)(access.Open(access.Options{Dir: t.TempDir(), Keyring: s.Keyring, Policy: pol}))
	a := startAdmin(t.Context(), t, s.Handler, t.TempDir(), admin.Options{Access: store, AllowList: check})
	api := httptest.NewServer(&access.Handler{Store: store, AutoApprove: a.srv.AutoApprove})
	t.Cleanup(api.Close)

	submit := func(repos ...string) (access.Request, *ecdsa.PrivateKey) {
		t.Helper()
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
		pub := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
		rec := must[crypto.Recipient](t)(crypto.ParseRecipientData("access:x", "jwe", []byte(pub)))
		allowed = rec.KeyID()
		jws := must[string](t)(access.Sign(access.Payload{Audience: store.Audience(), Name: "cluster", Repositories: repos, Scheme: "jwe", Key: pub, Created: time.Now().UTC()}, k))
		resp, err := http.Post(api.URL+access.PathPrefix+"/requests", "application/jose", strings.NewReader(jws))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var st struct{ ID, State string }
		json.NewDecoder(resp.Body).Decode(&st)
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("submit: %d", resp.StatusCode)
		}
		return must[access.Request](t)(store.Get(st.ID)), k
	}
	req, _ := submit(repo)
	if req.State != access.Approved || req.DecidedBy != "trust allow list" {
		t.Fatalf("a request the allow list names: %s by %q, want approved by the allow list", req.State, req.DecidedBy)
	}
	var jobs struct {
		Jobs []jobView `json:"jobs"`
	}
	json.Unmarshal(a.call("GET", "/admin/v1/jobs", nil, http.StatusOK).body, &jobs)
	if len(jobs.Jobs) != 1 {
		t.Fatalf("jobs after the approval: %+v, want its rewrap", jobs.Jobs)
	}
	if v := a.wait(jobs.Jobs[0].ID); v.State != "done" {
		t.Fatalf("the approval's rewrap: %+v", v)
	}
	other, _ := submit(repo, "team/other")
	if other.State != access.Pending {
		t.Fatalf("a request for a repository the allow list does not name the key for: %s, want pending", other.State)
	}
}

// An owner with its own credentials (Options.Owners) lists and decides
// access requests, recorded as "owner:<name>"; the same credentials start
// no job, and without them the access paths answer 401.
func TestOwnersDecideAccessRequestsWithTheirOwnCredentials(t *testing.T) {
	f := newFixture(t)
	s := f.second(t, f.up)
	pol := must[*crypto.Policy](t)(crypto.NewPolicy([]crypto.Rule{{Pattern: "team/**", Action: crypto.Encrypt,
		Recipients: must[*crypto.Recipients](t)(s.Keyring.Recipients([]crypto.Recipient{f.recB}))}}))
	store := must[*access.Store](t)(access.Open(access.Options{Dir: t.TempDir(), Keyring: s.Keyring, Policy: pol}))
	owners := func(_ context.Context, r *http.Request) (string, bool) {
		u, pw, ok := r.BasicAuth()
		return u, ok && u == "olive" && pw == "owner-pw"
	}
	a := startAdmin(t.Context(), t, s.Handler, t.TempDir(), admin.Options{Access: store, Owners: owners})
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	pub := string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	jws := must[string](t)(access.Sign(access.Payload{Audience: store.Audience(), Name: "cluster", Repositories: []string{repo}, Scheme: "jwe", Key: pub, Created: time.Now().UTC()}, k))
	req, _, err := store.Submit([]byte(jws), "10.0.0.1")
	if err != nil {
		t.Fatal(err)
	}

	do := func(method, path, user, pw string) int {
		r, _ := http.NewRequest(method, a.url+path, strings.NewReader("{}"))
		if user != "" {
			r.SetBasicAuth(user, pw)
		}
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := do("GET", "/admin/v1/access/requests", "olive", "wrong"); got != http.StatusUnauthorized {
		t.Fatalf("wrong owner credentials: %d, want 401", got)
	}
	if got := do("GET", "/admin/v1/access/requests", "olive", "owner-pw"); got != http.StatusOK {
		t.Fatalf("the owner lists requests: %d", got)
	}
	if got := do("POST", "/admin/v1/jobs", "olive", "owner-pw"); got != http.StatusUnauthorized {
		t.Fatalf("the owner's credentials on the jobs API: %d, want 401", got)
	}
	if got := do("POST", "/admin/v1/access/requests/"+req.ID+"/deny", "olive", "owner-pw"); got != http.StatusOK {
		t.Fatalf("the owner denies: %d", got)
	}
	if got := must[access.Request](t)(store.Get(req.ID)); got.State != access.Denied || got.DecidedBy != "owner:olive" {
		t.Fatalf("the decision: %s by %q, want denied by owner:olive", got.State, got.DecidedBy)
	}
}

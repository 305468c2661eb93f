package jobs

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// A spec reads back what it wrote (the pace as a duration string, the
// revocation's time), and a field it does not know is an error.
func TestSpecJSON(t *testing.T) {
	s := Spec{Kind: Reencrypt, Repositories: []string{"team/app", "team/base"}, KeyID: keyID, Reason: "keyCompromise",
		At: time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC), Pace: 200 * time.Millisecond}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"pace":"200ms"`) {
		t.Errorf("marshalled: %s, want the pace as a duration string", b)
	}
	var back Spec
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.Kind != s.Kind || strings.Join(back.Repositories, ",") != strings.Join(s.Repositories, ",") || back.KeyID != s.KeyID ||
		back.Reason != s.Reason || !back.At.Equal(s.At) || back.Pace != s.Pace {
		t.Errorf("read back %+v, wrote %+v", back, s)
	}
	for _, bad := range []string{`{"kind":"rewrap","repositories":["a"],"paces":"1s"}`, `{"kind":"rewrap","repositories":["a"],"pace":"soon"}`} {
		if err := json.Unmarshal([]byte(bad), &back); err == nil {
			t.Errorf("%s: read without an error", bad)
		}
	}
}

// keyID is a key id as shroud spells it.
const keyID = "sha256:60cb0264f067b82086bf37362f4341ee232a83909f6afdbccea57e32323c16a0"

func TestSpecValidate(t *testing.T) {
	ok := []Spec{
		{Kind: Rewrap, Repositories: []string{"team/app"}},
		{Kind: Identity, Repositories: []string{"a", "b/c-d_e.f"}, Pace: time.Second},
		{Kind: Reencrypt, Repositories: []string{"team/app"}, KeyID: keyID},
	}
	for _, s := range ok {
		if err := s.Validate(); err != nil {
			t.Errorf("%+v: %v", s, err)
		}
	}
	bad := []Spec{
		{Kind: "shred", Repositories: []string{"a"}},
		{Kind: Rewrap},
		{Kind: Rewrap, Repositories: []string{"Team/App"}},
		{Kind: Rewrap, Repositories: []string{"a/../b"}},
		{Kind: Rewrap, Repositories: []string{"a", "a"}},
		{Kind: Rewrap, Repositories: []string{"a"}, KeyID: "sha256:x"},
		{Kind: Reencrypt, Repositories: []string{"a"}},
		{Kind: Reencrypt, Repositories: []string{"a"}, KeyID: "sha256:x"},
		{Kind: Reencrypt, Repositories: []string{"a"}, KeyID: strings.ToUpper(keyID)},
		{Kind: Reencrypt, Repositories: []string{"a"}, KeyID: keyID, Reason: "key\ncompromise"},
		{Kind: Rewrap, Repositories: []string{"a"}, Pace: -time.Second},
		{Kind: Rewrap, Repositories: []string{"a"}, Pace: 2 * MaxPace},
		{Kind: Rewrap, Repositories: make([]string, MaxRepositories+1)},
	}
	for _, s := range bad {
		if err := s.Validate(); err == nil {
			t.Errorf("%+v validated", s)
		}
	}
}

// Run refuses before it touches anything: no checkpoint path, a spec
// that does not validate, an identity job without a previous identity.
func TestRunRefusesBeforeItStarts(t *testing.T) {
	if _, err := Run(t.Context(), nil, Spec{Kind: Rewrap, Repositories: []string{"a"}}, RunOptions{}); err == nil {
		t.Error("a run without a checkpoint path started")
	}
	if _, err := Run(t.Context(), nil, Spec{Kind: Identity, Repositories: []string{"a"}}, RunOptions{Checkpoint: t.TempDir() + "/c"}); !errors.Is(err, ErrNoPreviousIdentity) {
		t.Errorf("an identity job without a previous identity: %v", err)
	}
}

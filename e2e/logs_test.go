package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// With --log-format json every line shroud writes is one JSON object, and
// the lines of a request carry the request id its response names in
// X-Request-Id.
func TestJSONLogsCarryTheRequestID(t *testing.T) {
	bin := buildShroud(t)
	up := distributionV3(t)
	addr, _, logs := startShroud(t, bin, "--upstream", up.URL, "--data-dir", t.TempDir(), "--log-format", "json")
	resp, err := http.Get("http://" + addr + "/v2/team/app/manifests/missing")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	id := resp.Header.Get("X-Request-Id")
	if id == "" {
		t.Fatal("no X-Request-Id in the response")
	}
	var found bool
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && !found; time.Sleep(50 * time.Millisecond) {
		found = strings.Contains(logs.String(), id)
	}
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var v map[string]any
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Fatalf("a log line is not JSON: %q", line)
		}
		if v["msg"] == "request" && v["path"] == "/v2/team/app/manifests/missing" {
			if v["request_id"] != id {
				t.Fatalf("the request's line has request_id %v, the response says %s", v["request_id"], id)
			}
			return
		}
	}
	t.Fatalf("no request line for the request:\n%s", logs)
}

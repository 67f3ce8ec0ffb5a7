package control

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestFormatStatusRestartNeeded: the keys a reload could not apply are in
// `ha status` (text) and in its JSON as restart_needed; none, no line.
func TestFormatStatusRestartNeeded(t *testing.T) {
	st := &Status{Node: "node-a", Mode: "a-p", RestartNeeded: []string{"cluster.mode", "cluster.session_pickup.enabled"}}
	var b bytes.Buffer
	FormatStatus(&b, st, time.Now())
	if want := "restart needed: cluster.mode, cluster.session_pickup.enabled"; !strings.Contains(b.String(), want) {
		t.Errorf("status output lacks %q:\n%s", want, b.String())
	}
	j, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if want := `"restart_needed":["cluster.mode","cluster.session_pickup.enabled"]`; !strings.Contains(string(j), want) {
		t.Errorf("status JSON lacks %s: %s", want, j)
	}
	st.RestartNeeded = nil
	b.Reset()
	FormatStatus(&b, st, time.Now())
	if strings.Contains(b.String(), "restart needed") {
		t.Errorf("restart needed shown with no key waiting:\n%s", b.String())
	}
}

package test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hagent/hagent/test/lab"
)

// packetSockets lists the Ethertypes of hagentd's AF_PACKET sockets in the
// node's namespace, as the kernel reports them (ss -0).
func packetSockets(t *testing.T, n *lab.Node) string {
	t.Helper()
	out, err := lab.Exec(n.NS, "ss", "-H", "-0", "-a", "-n", "-p")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "hagentd") {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}

// TestSyncDisabled: with sync.enabled false the agent opens no 0x8893
// socket at all (the channel carries nothing), says so to `ha synchronize`
// and `ha checksum`, and still fails over. With sync on (the other node),
// the kernel shows the 0x8893 socket: the check can fail.
func TestSyncDisabled(t *testing.T) {
	_, a, b := twoNodes(t)
	pa := params(200, false)
	pa.ClusterExtra = "sync: {enabled: false}"
	start(t, a, pa)
	start(t, b, params(100, false)) // sync on (the default)
	// 0x8893 = 34963, 0x8890 = 34960 as ss prints the protocol.
	eventually(t, 5*time.Second, "both nodes' sockets", func() error {
		if s := packetSockets(t, b); !strings.Contains(s, "[34963]") {
			return fmt.Errorf("node-b (sync on) shows no 0x8893 socket:\n%s", s)
		}
		if s := packetSockets(t, a); !strings.Contains(s, "[34960]") {
			return fmt.Errorf("node-a shows no heartbeat socket:\n%s", s)
		}
		return nil
	})
	if s := packetSockets(t, a); strings.Contains(s, "[34963]") {
		t.Fatalf("node-a has sync disabled but a 0x8893 socket:\n%s", s)
	}
	for _, cmd := range [][]string{{"ha", "synchronize"}, {"ha", "checksum"}} {
		out, err := a.Ctl(cmd...)
		if err == nil || !strings.Contains(out, "sync is disabled") {
			t.Errorf("%v with sync disabled: err %v, output %q", cmd, err, out)
		}
	}
	eventually(t, 10*time.Second, "election", func() error { return agree("node-a", a, b) })
	st, err := a.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Config.SyncOn {
		t.Errorf("status says sync is on: %+v", st.Config)
	}
}

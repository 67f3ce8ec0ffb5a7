package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hagent/hagent/config"
	"github.com/hagent/hagent/control"
	"github.com/hagent/hagent/heartbeat"
	"github.com/hagent/hagent/sessionsync"
)

func (n *sessNode) sessions(t *testing.T) *sessionsync.Status {
	t.Helper()
	v, err := n.a.Handle(control.Request{Cmd: control.CmdSessions})
	if err != nil {
		t.Fatal(err)
	}
	return v.(*sessionsync.Status)
}

// TestAgentFGSP: in mode fgsp the secondary's flows reach the primary as
// the primary's reach the secondary; `ha sessions` shows the mode and the
// peer's heartbeat health, which turns lost when the peer stops, with the
// flows sent to it kept.
func TestAgentFGSP(t *testing.T) {
	keyDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(keyDir, "key"), []byte("k-k-k-k-k-k-k-k-k\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mem := heartbeat.NewMemNetwork()
	a := startSessNodeMode(t, mem, keyDir, "a", 200, false, config.ModeFGSP)
	b := startSessNodeMode(t, mem, keyDir, "b", 100, false, config.ModeFGSP)
	waitFor(t, 5*time.Second, func() error {
		if ra, rb := a.status(t).Role, b.status(t).Role; ra != "primary" || rb != "secondary" {
			return fmt.Errorf("a is %s, b is %s", ra, rb)
		}
		return nil
	})
	waitFor(t, 5*time.Second, func() error {
		if !a.sessions(t).BulkDone || !b.sessions(t).BulkDone {
			return fmt.Errorf("bulk copies not done")
		}
		return nil
	})
	// A MemTable's listener attaches when the engine's Listen runs (the
	// kernel's event socket exists from the start): a probe flow on each
	// until its engine sees events.
	for i, n := range []*sessNode{a, b} {
		n.table.Put(testFlow(250 + i))
		waitFor(t, 5*time.Second, func() error {
			if n.sessions(t).Events == 0 {
				n.table.Put(testFlow(250 + i))
				return fmt.Errorf("%s's engine sees no events", n.a.config().Node.Name)
			}
			return nil
		})
	}
	for i := 0; i < 20; i++ {
		a.table.Put(testFlow(i))
		b.table.Put(testFlow(100 + i))
	}
	waitFor(t, 5*time.Second, func() error {
		na, _ := a.table.Count()
		nb, _ := b.table.Count()
		if na != 42 || nb != 42 {
			sa, sb := a.sessions(t), b.sessions(t)
			return fmt.Errorf("a holds %d flows, b %d, want 42 each; a: events %d echoes %d peers %+v sources %+v; b: events %d echoes %d peers %+v sources %+v",
				na, nb, sa.Events, sa.Echoes, sa.Peers, sa.Sources, sb.Events, sb.Echoes, sb.Peers, sb.Sources)
		}
		return nil
	})
	for _, n := range []*sessNode{a, b} {
		st := n.sessions(t)
		if st.Mode != "fgsp" || !st.Sending || len(st.Peers) != 1 || st.Peers[0].Heartbeat != "alive" || st.Peers[0].SentFlows < 21 {
			t.Fatalf("%s: ha sessions: mode %q sending %v peers %+v", n.a.config().Node.Name, st.Mode, st.Sending, st.Peers)
		}
	}
	if st := a.status(t); st.Mode != "fgsp" {
		t.Fatalf("ha status mode %q", st.Mode)
	}
	b.stop()
	waitFor(t, 5*time.Second, func() error {
		st := a.sessions(t)
		if len(st.Peers) != 1 || st.Peers[0].Heartbeat != "lost" || st.Peers[0].Live || st.Peers[0].SentFlows < 21 {
			return fmt.Errorf("a's peers after b stopped: %+v", st.Peers)
		}
		return nil
	})
}

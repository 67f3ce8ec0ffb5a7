package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hagent/hagent/heartbeat"
)

// TestSessionChannelFollowsEpochHint: an epoch hint raises the node's
// heartbeat epoch and its session channel's with it, as its sync channel's:
// the peers admit the channels by the heartbeat epoch
// (l2chan.Channel.Admit), so a channel left on an older epoch would be
// locked out at the next change. Session pickup still works after the
// raise. Before, only the sync channel was rekeyed.
func TestSessionChannelFollowsEpochHint(t *testing.T) {
	a, b := startSessPair(t)
	b.a.sendMu.Lock()
	old, id := b.a.epoch, b.a.nodeID
	b.a.sendMu.Unlock()
	f := heartbeat.Frame{Node: "a", NumHints: 1}
	f.Hints[0] = heartbeat.EpochHint{NodeID: id, Epoch: old + 1000}
	b.a.takeHints(&f)
	b.a.sendMu.Lock()
	now := b.a.epoch
	b.a.sendMu.Unlock()
	if now != old+1001 || b.a.sess.ch.Epoch() != now {
		t.Fatalf("after a hint of %d: heartbeat epoch %d, session channel epoch %d (was %d)", old+1000, now, b.a.sess.ch.Epoch(), old)
	}
	for i := 0; i < 20; i++ {
		a.table.Put(testFlow(i))
	}
	waitFor(t, 5*time.Second, func() error {
		if n, _ := b.table.Count(); n != 20 {
			return fmt.Errorf("b has %d flows", n)
		}
		return nil
	})
}

// startSessPair starts session-pickup nodes a (priority 200) and b (100)
// sharing a key and returns them once a is primary.
func startSessPair(t *testing.T) (a, b *sessNode) {
	t.Helper()
	keyDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(keyDir, "key"), []byte(testKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mem := heartbeat.NewMemNetwork()
	a = startSessNode(t, mem, keyDir, "a", 200, false)
	b = startSessNode(t, mem, keyDir, "b", 100, false)
	waitFor(t, 5*time.Second, func() error {
		if r := a.status(t).Role; r != "primary" {
			return fmt.Errorf("a is %s", r)
		}
		return nil
	})
	return a, b
}

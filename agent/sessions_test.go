package agent

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hagent/hagent/config"
	"github.com/hagent/hagent/control"
	"github.com/hagent/hagent/heartbeat"
	"github.com/hagent/hagent/internal/testutil"
	"github.com/hagent/hagent/sessionsync"
)

type sessNode struct {
	a      *Agent
	table  *sessionsync.MemTable
	cancel context.CancelFunc
	done   chan struct{}
}

func startSessNode(t *testing.T, mem *heartbeat.MemNetwork, keyDir, name string, prio int, override bool, slow ...time.Duration) *sessNode {
	t.Helper()
	return startSessNodeMode(t, mem, keyDir, name, prio, override, config.DefaultMode, slow...)
}

// startSessNodeMode is startSessNode in a cluster mode of its own.
func startSessNodeMode(t *testing.T, mem *heartbeat.MemNetwork, keyDir, name string, prio int, override bool, mode string, slow ...time.Duration) *sessNode {
	t.Helper()
	text := fmt.Sprintf(`
control_socket: /tmp/unused.sock
node: {name: %s, serial: SN-%s, priority: %d, override: %v}
cluster:
  group_id: 10
  mode: %s
  password_file: %s/key
  hbdev: [{name: ha1, priority: 50}]
  hb_interval: 20ms
  hb_lost_threshold: 10
  hello_holddown: 200ms
  sync: {enabled: false}
  session_pickup: {enabled: true, connectionless: true}
`, name, name, prio, override, mode, keyDir)
	cfg, err := config.Parse(name+".yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return startSessNodeConfig(t, mem, cfg, slow...)
}

// startSessNodeConfig is startSessNode for a configuration of its own.
func startSessNodeConfig(t *testing.T, mem *heartbeat.MemNetwork, cfg *config.Config, slow ...time.Duration) *sessNode {
	t.Helper()
	name := cfg.Node.Name
	var err error
	n := &sessNode{table: sessionsync.NewMemTable(), done: make(chan struct{})}
	if len(slow) > 0 {
		// A slow kernel: every applied flow costs this long.
		n.table.Refuse = func(*sessionsync.Flow) error { time.Sleep(slow[0]); return nil }
	}
	n.a, err = New(Options{Config: cfg, Network: &fakeNet{}, WatchLinks: (&fakeLinks{}).watch,
		Links:        []heartbeat.Link{mem.Link("hb", name, "ha1")},
		SessionLinks: []heartbeat.Link{mem.Link("session", name, "ha1")},
		SessionTable: n.table, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	go func() { _ = n.a.Run(ctx); close(n.done) }()
	t.Cleanup(n.stop)
	return n
}

func (n *sessNode) stop() {
	n.cancel()
	<-n.done
}

func (n *sessNode) status(t *testing.T) *control.Status {
	t.Helper()
	v, err := n.a.Handle(control.Request{Cmd: control.CmdStatus})
	if err != nil {
		t.Fatal(err)
	}
	return v.(*control.Status)
}

func testFlow(i int) sessionsync.Flow {
	c := netip.AddrFrom4([4]byte{10, 9, 0, byte(i)})
	s := netip.MustParseAddr("10.9.2.10")
	return sessionsync.Flow{Proto: sessionsync.ProtoTCP,
		Orig:   sessionsync.Tuple{Src: c, Dst: s, SrcPort: uint16(1000 + i), DstPort: 80},
		Reply:  sessionsync.Tuple{Src: s, Dst: netip.MustParseAddr("10.9.2.100"), SrcPort: 80, DstPort: uint16(2000 + i)},
		Status: sessionsync.StatusConfirmed | sessionsync.StatusAssured, Timeout: 300,
		TCP: &sessionsync.TCPInfo{State: sessionsync.TCPEstablished}}
}

func waitFor(t *testing.T, d time.Duration, cond func() error) {
	t.Helper()
	testutil.Eventually(t, d, "the condition", cond)
}

// TestAgentSessionPickup: the primary's flows reach the secondary; after
// `ha failover set` the new primary's takeover records sessions ready
// before the vMAC, and it copies its table back to the old primary.
func TestAgentSessionPickup(t *testing.T) {
	a, b := startSessPair(t)
	for i := 0; i < 50; i++ {
		a.table.Put(testFlow(i))
	}
	waitFor(t, 5*time.Second, func() error {
		if n, _ := b.table.Count(); n != 50 {
			return fmt.Errorf("b has %d flows", n)
		}
		return nil
	})
	st := a.status(t)
	if st.Sessions == nil || !st.Sessions.Enabled || !st.Sessions.Sending || len(st.Sessions.Peers) != 1 {
		t.Fatalf("sessions in status: %+v", st.Sessions)
	}
	if st.Health != "OK" {
		t.Fatalf("health %s: %v", st.Health, st.Problems)
	}
	if _, err := a.a.Handle(control.Request{Cmd: control.CmdFailoverSet}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() error {
		if r := b.status(t).Role; r != "primary" {
			return fmt.Errorf("b is %s", r)
		}
		return nil
	})
	hv, _ := b.a.Handle(control.Request{Cmd: control.CmdHistory})
	found := false
	for _, ev := range hv.([]control.Event) {
		if ev.Kind == "takeover" && strings.HasPrefix(ev.Reason, "sessions ready") {
			found = true
		}
	}
	if !found {
		t.Fatalf("no takeover with sessions ready in b's history: %+v", hv)
	}
	// b sends now: a new flow on b reaches a.
	b.table.Put(testFlow(99))
	waitFor(t, 5*time.Second, func() error {
		if _, ok := a.table.Get(testFlow(99).Key()); !ok {
			return fmt.Errorf("b's flow not on a")
		}
		return nil
	})
	// exposure lists the session sockets.
	ev, _ := b.a.Handle(control.Request{Cmd: control.CmdExposure})
	n := 0
	for _, s := range ev.(*control.Exposure).Sockets {
		if s.EtherType == "0x8892" || s.Address == "NETLINK_NETFILTER" {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("exposure lists %d session sockets, want 2", n)
	}
}

// TestAgentSessionOverrideHold: a returning member with override and the
// higher priority takes the primary role back only after its bulk copy.
func TestAgentSessionOverrideHold(t *testing.T) {
	keyDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(keyDir, "key"), []byte("k-k-k-k-k-k-k-k-k\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mem := heartbeat.NewMemNetwork()
	b := startSessNode(t, mem, keyDir, "b", 100, true)
	waitFor(t, 5*time.Second, func() error {
		if r := b.status(t).Role; r != "primary" {
			return fmt.Errorf("b is %s", r)
		}
		return nil
	})
	for i := 0; i < 200; i++ {
		b.table.Put(testFlow(i))
	}
	a := startSessNode(t, mem, keyDir, "a", 200, true, 2*time.Millisecond) // the copy takes 400 ms
	waitFor(t, 5*time.Second, func() error {
		if r := a.status(t).Role; r != "primary" {
			return fmt.Errorf("a is %s", r)
		}
		return nil
	})
	if n, _ := a.table.Count(); n != 200 {
		t.Fatalf("a took over with %d of 200 flows", n)
	}
	hv, _ := a.a.Handle(control.Request{Cmd: control.CmdHistory})
	var held, ended bool
	for _, ev := range hv.([]control.Event) {
		held = held || strings.Contains(ev.Reason, "holding back")
		ended = ended || strings.Contains(ev.Reason, "override hold ends: bulk session copy complete")
	}
	if !held || !ended {
		t.Fatalf("history lacks the hold (held %v, ended %v): %+v", held, ended, hv)
	}
	if a.status(t).FailoverSet {
		t.Fatal("failover still set after the hold")
	}
}

// TestAgentSessionsDisabled: with session_pickup off (the default) there
// is no session socket, `ha sessions` says disabled, and status carries
// {"enabled": false}.
func TestAgentSessionsDisabled(t *testing.T) {
	mem := heartbeat.NewMemNetwork()
	n := startNode(t, mem, testConfig(t, "a", 200, false))
	ev, err := n.a.Handle(control.Request{Cmd: control.CmdExposure})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range ev.(*control.Exposure).Sockets {
		if s.EtherType == "0x8892" || s.Address == "NETLINK_NETFILTER" {
			t.Fatalf("session pickup is off, yet exposure lists %+v", s)
		}
	}
	v, err := n.a.Handle(control.Request{Cmd: control.CmdSessions})
	if err != nil {
		t.Fatal(err)
	}
	if s := v.(*sessionsync.Status); s.Enabled {
		t.Fatalf("ha sessions: %+v", s)
	}
	st, err := n.a.Handle(control.Request{Cmd: control.CmdStatus})
	if err != nil {
		t.Fatal(err)
	}
	if s := st.(*control.Status).Sessions; s == nil || s.Enabled {
		t.Fatalf("status sessions: %+v", s)
	}
}

// TestAgentSessionsFromSecondaryRefused: a secondary (a key holder, not
// the primary) that sends another secondary session records gets nothing
// applied there: the records are held, then refused and counted, while
// the primary's are applied. Without the entitlement (every peer trusted,
// as before) c's flow is on b.
func TestAgentSessionsFromSecondaryRefused(t *testing.T) {
	mem := heartbeat.NewMemNetwork()
	var n [3]*sessNode
	keyDir := t.TempDir()
	for i, name := range []string{"a", "b", "c"} {
		if i == 0 {
			if err := os.WriteFile(filepath.Join(keyDir, "key"), []byte(testKey+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		n[i] = startSessNode(t, mem, keyDir, name, 200-75*i, false)
	}
	a, b, c := n[0], n[1], n[2]
	waitFor(t, 5*time.Second, func() error {
		if r := a.status(t).Role; r != "primary" {
			return fmt.Errorf("a is %s", r)
		}
		for _, n := range []*sessNode{b, c} {
			if st := n.status(t); st.Role != "secondary" || st.Sessions == nil || !slices.Equal(st.Sessions.Senders, []string{"a"}) {
				return fmt.Errorf("%s: role %s, session senders %v", st.Node, st.Role, st.Sessions.Senders)
			}
		}
		return nil
	})
	forged := testFlow(7)
	forged.Status = 0xffffffff
	msg, err := (&sessionsync.Message{Kind: sessionsync.KindStream, Records: []sessionsync.Record{{Op: sessionsync.OpUpsert, Flow: forged}}}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.a.sess.ch.Send(ctx, "b", msg); err != nil {
		t.Fatal(err)
	}
	a.table.Put(testFlow(8))
	waitFor(t, 10*time.Second, func() error {
		st := b.status(t).Sessions
		if _, ok := b.table.Get(testFlow(8).Key()); !ok {
			return fmt.Errorf("the primary's flow not on b")
		}
		if st.Refused[sessionsync.RefusedNotEntitled] != 1 {
			return fmt.Errorf("b: refused %v, held %d", st.Refused, st.Held)
		}
		return nil
	})
	if _, ok := b.table.Get(forged.Key()); ok {
		t.Fatal("the secondary's record was applied on b")
	}
}

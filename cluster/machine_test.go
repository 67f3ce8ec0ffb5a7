package cluster

import (
	"strings"
	"testing"
	"time"
)

// TestElection covers every FGCP rule and tie-break as table rows: which
// node ends up primary, and which criterion the reason names.
func TestElection(t *testing.T) {
	cfg := labConfig()
	small := cfg
	small.UptimeDiffMargin = 5 * time.Second
	tests := []struct {
		name   string
		cfg    Config
		nodes  []nodeSpec
		linkUp map[string]int // monitored links up after the start
		want   string
		why    string
	}{
		{
			name:  "override disabled: higher priority when uptimes within margin",
			cfg:   cfg,
			nodes: []nodeSpec{{name: "a", priority: 100}, {name: "b", priority: 200}},
			want:  "b", why: "largest value of priority",
		},
		{
			name:  "equal priority: higher serial",
			cfg:   cfg,
			nodes: []nodeSpec{{name: "a", serial: "FG2", priority: 100}, {name: "b", serial: "FG1", priority: 100}},
			want:  "a", why: "serial number",
		},
		{
			name:  "override disabled: uptime beyond margin beats priority",
			cfg:   small,
			nodes: []nodeSpec{{name: "a", priority: 100}, {name: "b", priority: 200, startAt: 8 * time.Second}},
			want:  "a", why: "largest value of uptime",
		},
		{
			name:  "override disabled: uptime within margin does not count",
			cfg:   cfg,
			nodes: []nodeSpec{{name: "a", priority: 100}, {name: "b", priority: 200, startAt: 8 * time.Second}},
			want:  "b", why: "largest value of priority",
		},
		{
			name:  "override enabled: priority beats uptime",
			cfg:   small,
			nodes: []nodeSpec{{name: "a", priority: 100, override: true}, {name: "b", priority: 200, override: true, startAt: 8 * time.Second}},
			want:  "b", why: "override priority",
		},
		{
			name:  "override enabled on one member switches the order for all",
			cfg:   small,
			nodes: []nodeSpec{{name: "a", priority: 100}, {name: "b", priority: 200, override: true, startAt: 8 * time.Second}},
			want:  "b", why: "override priority",
		},
		{
			name:  "override enabled: equal priority, uptime beyond margin",
			cfg:   small,
			nodes: []nodeSpec{{name: "a", priority: 100, override: true}, {name: "b", priority: 100, override: true, startAt: 8 * time.Second}},
			want:  "a", why: "largest value of uptime",
		},
		{
			name:   "monitored links first, even over override priority",
			cfg:    cfg,
			nodes:  []nodeSpec{{name: "a", priority: 250, override: true, monitor: 2}, {name: "b", priority: 10, monitor: 2}},
			linkUp: map[string]int{"a": 1},
			want:   "b", why: "most connected monitored interfaces",
		},
		{
			name: "3 members",
			cfg:  cfg,
			nodes: []nodeSpec{{name: "a", priority: 100}, {name: "b", priority: 150},
				{name: "c", priority: 120}},
			want: "b", why: "priority",
		},
		{
			name: "4 members, serial decides among equals",
			cfg:  cfg,
			nodes: []nodeSpec{{name: "a", serial: "S1", priority: 100}, {name: "b", serial: "S4", priority: 100},
				{name: "c", serial: "S3", priority: 100}, {name: "d", serial: "S2", priority: 100}},
			want: "b", why: "serial number",
		},
		{
			name: "4 members, monitor then priority",
			cfg:  cfg,
			nodes: []nodeSpec{{name: "a", priority: 250, monitor: 1}, {name: "b", priority: 100, monitor: 1},
				{name: "c", priority: 200, monitor: 1}, {name: "d", priority: 150, monitor: 1}},
			linkUp: map[string]int{"a": 0},
			want:   "c", why: "priority",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSim(t, tt.cfg, tt.nodes...)
			for name, up := range tt.linkUp {
				s.event(name, Event{Type: EventMonitor, MonitorUp: up})
			}
			s.run(5 * time.Second)
			s.checkSingle(tt.want)
			if r := s.reason(tt.want); !strings.Contains(r, tt.why) || !strings.HasPrefix(r, tt.want+" is selected as the primary because") {
				t.Fatalf("reason %q, want it to name %q", r, tt.why)
			}
		})
	}
}

// TestAgreeWithinOneInterval: members that start together converge on one
// primary, and once they hear each other all agree within one interval.
func TestAgreeWithinOneInterval(t *testing.T) {
	cfg := labConfig()
	s := newSim(t, cfg, nodeSpec{name: "a", priority: 10}, nodeSpec{name: "b", priority: 20},
		nodeSpec{name: "c", priority: 30}, nodeSpec{name: "d", priority: 40})
	// Hello: after joinDelay (2 intervals) + one interval everyone agrees.
	s.run(3*cfg.HBInterval + time.Millisecond)
	s.checkSingle("d")
	if got := strings.Join(s.nodes["a"].m.AlivePeers(nil), ","); got != "b,c,d" {
		t.Fatalf("AlivePeers = %s", got)
	}
}

func TestHelloHolddownAlone(t *testing.T) {
	cfg := labConfig()
	cfg.HelloHolddown = 3 * time.Second
	s := newSim(t, cfg, nodeSpec{name: "a", priority: 10})
	s.run(2999 * time.Millisecond)
	if r := s.nodes["a"].m.Role(); r != RoleStarting {
		t.Fatalf("role before hello_holddown = %s, want starting", r)
	}
	s.run(2 * time.Millisecond)
	s.checkSingle("a")
	if r := s.reason("a"); !strings.Contains(r, "only member") {
		t.Fatalf("reason %q", r)
	}
}

// TestPeerLoss: a crashed primary is replaced exactly hb_lost_threshold
// intervals after its last heartbeat, not later.
func TestPeerLoss(t *testing.T) {
	for _, threshold := range []int{1, 3, 6} {
		t.Run("threshold"+string(rune('0'+threshold)), func(t *testing.T) {
			cfg := labConfig()
			cfg.LostThreshold = threshold
			s := newSim(t, cfg, nodeSpec{name: "a", priority: 200}, nodeSpec{name: "b", priority: 100})
			s.run(3 * time.Second)
			s.checkSingle("a")
			last := s.nodes["a"].lastSent
			s.kill("a")
			deadline := last.Add(cfg.LostAfter())
			s.runUntil(deadline.Add(-time.Millisecond))
			if s.nodes["b"].owns {
				t.Fatalf("b took over %v early", deadline.Sub(s.now))
			}
			s.run(time.Millisecond)
			s.checkSingle("b")
			if got := s.nodes["b"].m.Status().Members[1].Alive; got {
				t.Fatalf("a still alive in b's view")
			}
			if got := s.nodes["b"].m.AlivePeers(nil); len(got) != 0 {
				t.Fatalf("AlivePeers after loss = %v", got)
			}
		})
	}
}

// TestReturningNode: after a failover the old primary (higher priority)
// comes back. With override it takes back; without, it does not.
func TestReturningNode(t *testing.T) {
	for _, override := range []bool{false, true} {
		t.Run(map[bool]string{false: "override disabled", true: "override enabled"}[override], func(t *testing.T) {
			cfg := labConfig()
			cfg.UptimeDiffMargin = 2 * time.Second
			s := newSim(t, cfg, nodeSpec{name: "a", priority: 200, override: override}, nodeSpec{name: "b", priority: 100, override: override})
			s.run(3 * time.Second)
			s.checkSingle("a")
			s.kill("a")
			s.run(3 * time.Second)
			s.checkSingle("b")
			s.start(cfg, nodeSpec{name: "a", priority: 200, override: override})
			s.run(5 * time.Second)
			if override {
				s.checkSingle("a")
				if r := s.reason("a"); !strings.Contains(r, "override priority") {
					t.Fatalf("reason %q", r)
				}
			} else {
				s.checkSingle("b")
				if r := s.reason("b"); !strings.Contains(r, "uptime") {
					t.Fatalf("reason %q", r)
				}
			}
		})
	}
}

// TestSplitBrain: cutting the heartbeat link makes both primary; healing
// it leaves exactly one within one interval, the loser released, and the
// winner re-announces the vMAC once the loser let it go.
func TestSplitBrain(t *testing.T) {
	cfg := labConfig()
	s := newSim(t, cfg, nodeSpec{name: "a", priority: 200}, nodeSpec{name: "b", priority: 100})
	s.run(3 * time.Second)
	s.checkSingle("a")
	s.cut[linkKey("a", "b")] = true
	s.run(cfg.LostAfter() + 2*cfg.HBInterval)
	if got := s.primaries(); len(got) != 2 {
		t.Fatalf("after the cut primaries = %v, want both", got)
	}
	announces := s.nodes["a"].announces
	delete(s.cut, linkKey("a", "b"))
	s.run(cfg.HBInterval + time.Millisecond)
	s.checkSingle("a")
	if s.nodes["a"].announces <= announces {
		t.Fatalf("a did not re-announce after b released")
	}
	if h := s.nodes["b"].hooks; h[len(h)-1] != RoleSecondary {
		t.Fatalf("b hooks %v, want secondary last", h)
	}
}

// TestMonitorFailover: a primary's monitored link goes down → the peer
// takes over at once (no tick), and the old primary's uptime is reset.
func TestMonitorFailover(t *testing.T) {
	cfg := labConfig()
	s := newSim(t, cfg, nodeSpec{name: "a", priority: 200, monitor: 2}, nodeSpec{name: "b", priority: 100, monitor: 2})
	s.run(3 * time.Second)
	s.checkSingle("a")
	before := s.nodes["a"].m.Status().Uptime
	s.event("a", Event{Type: EventMonitor, MonitorUp: 1})
	s.checkSingle("b") // same instant: event → heartbeat → takeover → claim → release
	if up := s.nodes["a"].m.Status().Uptime; up != 0 || before == 0 {
		t.Fatalf("uptime after link failure = %v (before %v), want reset to 0", up, before)
	}
	if r := s.reason("b"); !strings.Contains(r, "monitored") {
		t.Fatalf("reason %q", r)
	}
	// Link back: a has all links again but b has the uptime now? Both
	// within the default margin, so priority decides: a takes back.
	s.event("a", Event{Type: EventMonitor, MonitorUp: 2})
	s.run(cfg.HBInterval)
	s.checkSingle("a")
}

// TestFailoverSet: `ha failover set` steps the primary down and keeps it
// out while another member is healthy; unset lets it back (priority).
func TestFailoverSet(t *testing.T) {
	cfg := labConfig()
	s := newSim(t, cfg, nodeSpec{name: "a", priority: 200}, nodeSpec{name: "b", priority: 100})
	s.run(3 * time.Second)
	s.checkSingle("a")
	s.event("a", Event{Type: EventFailoverSet})
	s.checkSingle("b")
	s.run(5 * time.Second)
	s.checkSingle("b")
	if !s.nodes["a"].m.Status().FailoverSet {
		t.Fatal("status does not show failover set")
	}
	// Alone, a failover-set node still serves.
	s.kill("b")
	s.run(cfg.LostAfter() + cfg.HBInterval)
	s.checkSingle("a")
	s.start(cfg, nodeSpec{name: "b", priority: 100})
	s.run(2 * time.Second)
	s.checkSingle("b")
	s.event("a", Event{Type: EventFailoverUnset})
	s.run(cfg.HBInterval)
	s.checkSingle("a")
}

// TestGracefulShutdown: the leaving primary keeps the vMAC until the peer
// claims it (make-before-break), then releases and stops; the peer
// re-announces. No interval passes: it all happens at one instant.
func TestGracefulShutdown(t *testing.T) {
	cfg := labConfig()
	s := newSim(t, cfg, nodeSpec{name: "a", priority: 200}, nodeSpec{name: "b", priority: 100})
	s.run(3 * time.Second)
	s.checkSingle("a")
	start := s.now
	s.event("a", Event{Type: EventShutdown})
	if !s.nodes["a"].stopped {
		t.Fatal("a did not stop")
	}
	if s.nodes["a"].owns {
		t.Fatal("a still owns the vMAC after stopping")
	}
	if !s.nodes["b"].owns || s.nodes["b"].m.Role() != RolePrimary {
		t.Fatal("b did not take over")
	}
	if s.now != start {
		t.Fatalf("hand-over took %v of simulated time", s.now.Sub(start))
	}
	if s.nodes["b"].announces == 0 {
		t.Fatal("b did not re-announce after a released")
	}
	// b forgot a at once instead of waiting the lost threshold.
	if n := len(s.nodes["b"].m.Status().Members); n != 1 {
		t.Fatalf("b still lists %d members", n)
	}
}

// TestShutdownAloneAndNoTaker: a lone primary stops at once; one whose
// peers never claim releases at the hand-over deadline.
func TestShutdownDeadline(t *testing.T) {
	cfg := labConfig()
	s := newSim(t, cfg, nodeSpec{name: "a", priority: 200}, nodeSpec{name: "b", priority: 100})
	s.run(3 * time.Second)
	s.checkSingle("a")
	s.cut[linkKey("a", "b")] = true // a cannot hear b's claim
	s.event("a", Event{Type: EventShutdown})
	if s.nodes["a"].stopped {
		t.Fatal("a stopped before the deadline although b was alive")
	}
	s.run(s.nodes["a"].m.handoverWait() + time.Millisecond)
	if !s.nodes["a"].stopped || s.nodes["a"].owns {
		t.Fatal("a did not release at the deadline")
	}
}

// TestFailoverHoldTime: a second change of primary within the hold time
// waits for it; a lost primary is replaced at once regardless.
func TestFailoverHoldTime(t *testing.T) {
	cfg := labConfig()
	cfg.FailoverHoldTime = 10 * time.Second
	s := newSim(t, cfg, nodeSpec{name: "a", priority: 200, override: true, monitor: 1}, nodeSpec{name: "b", priority: 100, override: true, monitor: 1})
	s.run(3 * time.Second)
	s.checkSingle("a")
	s.event("a", Event{Type: EventMonitor, MonitorUp: 0})
	s.run(cfg.HBInterval)
	if got := s.primaries(); len(got) != 1 || got[0] != "b" {
		t.Fatalf("link failover blocked: %v", got)
	}
	// a is healthy again and wins by priority, but b became primary less
	// than the hold time ago: a waits.
	changed := s.now
	s.event("a", Event{Type: EventMonitor, MonitorUp: 1})
	s.run(5 * time.Second)
	s.checkSingle("b")
	s.runUntil(changed.Add(cfg.FailoverHoldTime + cfg.HBInterval))
	s.checkSingle("a")
}

// TestFault: a faulted node leaves the election and releases; it comes back
// when the fault clears.
func TestFault(t *testing.T) {
	cfg := labConfig()
	s := newSim(t, cfg, nodeSpec{name: "a", priority: 200, override: true}, nodeSpec{name: "b", priority: 100, override: true})
	s.run(3 * time.Second)
	s.checkSingle("a")
	s.event("a", Event{Type: EventFault, Fault: true, Reason: "port1 missing"})
	s.run(cfg.HBInterval)
	s.checkSingle("b")
	st := s.nodes["a"].m.Status()
	if st.Role != RoleFault || st.Fault != "port1 missing" {
		t.Fatalf("a status %s %q", st.Role, st.Fault)
	}
	if h := s.nodes["a"].hooks; h[len(h)-1] != RoleFault {
		t.Fatalf("hooks %v, want fault last", h)
	}
	s.event("a", Event{Type: EventFault, Fault: false})
	s.run(cfg.HBInterval)
	s.checkSingle("a")
}

func TestRejectedEvents(t *testing.T) {
	cfg := labConfig()
	cfg.Name, cfg.Serial = "a", "S-A"
	m := New(cfg, t0)
	adv := func(serial string) Event {
		return Event{Type: EventHeartbeat, Time: t0, Advert: Advert{Name: serial, Serial: serial, Role: RoleSecondary}}
	}
	for _, s := range []string{"S-B", "S-C", "S-D"} {
		if err := m.Step(adv(s)); err != nil {
			t.Fatalf("peer %s: %v", s, err)
		}
	}
	cases := []struct {
		ev   Event
		want error
	}{
		{adv("S-E"), ErrClusterFull},
		{adv("S-A"), ErrSameSerial},
		{adv(""), ErrBadEvent},
		{Event{Type: EventHeartbeat, Time: t0, Advert: Advert{Serial: "S-B", Role: 9}}, ErrBadEvent},
		{Event{Type: 99, Time: t0}, ErrBadEvent},
	}
	for _, c := range cases {
		if err := m.Step(c.ev); err != c.want {
			t.Errorf("Step(%+v) = %v, want %v", c.ev.Advert, err, c.want)
		}
	}
	// A lost peer makes room for a new one.
	if err := m.Step(Event{Type: EventTick, Time: t0.Add(cfg.LostAfter())}); err != nil {
		t.Fatal(err)
	}
	if err := m.Step(adv("S-E")); err != nil {
		t.Fatalf("after loss: %v", err)
	}
	_ = m.Step(Event{Type: EventShutdown, Time: t0})
	// A primary with a live peer waits for it to claim, up to a deadline.
	_ = m.Step(Event{Type: EventTick, Time: m.NextDeadline()})
	if r := m.Role(); r != RoleSecondary || !m.Stopped() {
		t.Fatalf("after shutdown role %s stopped %v", r, m.Stopped())
	}
	if err := m.Step(Event{Type: EventTick, Time: t0}); err != ErrStopped {
		t.Fatalf("after stop: %v", err)
	}
}

// TestNextDeadline: the machine names the exact instant a silent peer is
// lost, so the daemon needs no fine-grained polling.
func TestNextDeadline(t *testing.T) {
	cfg := labConfig()
	cfg.Name, cfg.Serial, cfg.HelloHolddown, cfg.Priority = "a", "S-A", 20*time.Second, 100
	m := New(cfg, t0)
	if d := m.NextDeadline(); !d.Equal(t0.Add(20 * time.Second)) {
		t.Fatalf("alone: deadline %v, want hello_holddown end", d.Sub(t0))
	}
	heard := t0.Add(50 * time.Millisecond)
	_ = m.Step(Event{Type: EventHeartbeat, Time: heard, Advert: Advert{Name: "b", Serial: "S-B", Role: RoleStarting, Priority: 1}})
	if d := m.NextDeadline(); !d.Equal(t0.Add(2 * cfg.HBInterval)) {
		t.Fatalf("heard a peer: deadline %v, want join delay", d.Sub(t0))
	}
	_ = m.Step(Event{Type: EventTick, Time: t0.Add(2*cfg.HBInterval - time.Nanosecond)})
	if m.Role() != RoleStarting {
		t.Fatalf("role %s before the join delay", m.Role())
	}
	_ = m.Step(Event{Type: EventTick, Time: t0.Add(2 * cfg.HBInterval)})
	if m.Role() != RolePrimary {
		t.Fatalf("role %s", m.Role())
	}
	if d := m.NextDeadline(); !d.Equal(heard.Add(cfg.LostAfter())) {
		t.Fatalf("deadline %v, want peer expiry %v", d.Sub(t0), heard.Add(cfg.LostAfter()).Sub(t0))
	}
}

// TestActionOrder: becoming primary puts the network first: take over,
// then tell peers, then the hook — the hook never delays the takeover.
func TestActionOrder(t *testing.T) {
	cfg := labConfig()
	cfg.Name, cfg.Serial, cfg.HelloHolddown = "a", "S-A", 0
	m := New(cfg, t0)
	_ = m.Step(Event{Type: EventTick, Time: t0})
	var got []string
	for _, a := range m.Ready().Actions {
		got = append(got, a.Type.String())
	}
	want := "role-change takeover heartbeat run-hook"
	if strings.Join(got, " ") != want && strings.Join(got, " ") != "heartbeat "+want {
		t.Fatalf("actions %v, want %s", got, want)
	}
	if len(m.Ready().Actions) != 0 {
		t.Fatal("Ready did not drain")
	}
}

// TestDeterministic: the same inputs in any order give the same result.
func TestDeterministic(t *testing.T) {
	cfg := labConfig()
	run := func() []string {
		s := newSim(t, cfg, nodeSpec{name: "a", serial: "X1", priority: 50}, nodeSpec{name: "b", serial: "X3", priority: 50},
			nodeSpec{name: "c", serial: "X2", priority: 50})
		s.run(3 * time.Second)
		return s.log
	}
	first := strings.Join(run(), "\n")
	for i := 0; i < 5; i++ {
		if got := strings.Join(run(), "\n"); got != first {
			t.Fatalf("run %d differs:\n%s\n--- vs ---\n%s", i, got, first)
		}
	}
}

// TestPeerLostByCarrier: EventPeerLost makes the peer lost at once, with
// the reason in FortiOS words; a heartbeat undoes it; the threshold path
// still names the heartbeat.
func TestPeerLostByCarrier(t *testing.T) {
	s := newSim(t, labConfig(), nodeSpec{name: "a", priority: 200}, nodeSpec{name: "b", priority: 100})
	s.run(3 * time.Second)
	s.checkSingle("a")
	s.kill("a")
	s.event("b", Event{Type: EventPeerLost, Serial: "SN-a", Reason: "carrier down on ha1, ha2"})
	s.checkSingle("b")
	if r := s.reason("b"); !strings.Contains(r, "lost: a, carrier down on ha1, ha2") {
		t.Fatalf("reason %q", r)
	}
	st := s.nodes["b"].m.Status()
	if m := st.Members[1]; m.Alive || m.LostBy != "carrier" || m.LostWhy != "carrier down on ha1, ha2" {
		t.Fatalf("a in b's view: %+v", m)
	}
	// Unknown or already lost peers: nothing happens, no error.
	for _, serial := range []string{"SN-a", "SN-x"} {
		if err := s.nodes["b"].m.Step(Event{Type: EventPeerLost, Time: s.now, Serial: serial, Reason: "again"}); err != nil {
			t.Fatalf("EventPeerLost %s: %v", serial, err)
		}
	}
	if m := s.nodes["b"].m.Status().Members[1]; m.LostWhy != "carrier down on ha1, ha2" {
		t.Fatalf("a lost twice: %+v", m)
	}
	// a comes back: its heartbeat undoes the loss, one primary again.
	s.start(labConfig(), nodeSpec{name: "a", priority: 200})
	s.run(3 * time.Second)
	if m := s.nodes["b"].m.Status().Members[1]; !m.Alive || m.LostBy != "" {
		t.Fatalf("a back in b's view: %+v", m)
	}
	if got := s.primaries(); len(got) != 1 {
		t.Fatalf("primaries %v", got)
	}
	// The threshold path says heartbeat.
	s.kill("a")
	s.run(2 * time.Second)
	if m := s.nodes["b"].m.Status().Members[1]; m.Alive || m.LostBy != "heartbeat" || !strings.Contains(m.LostWhy, "no heartbeat for 1.2s") {
		t.Fatalf("a lost by the threshold: %+v", m)
	}
}

// TestReannounceReturningPeer: a peer that was lost comes back; its first
// adverts say secondary, but between two of them it may have held the
// vMAC for a moment (a SIGCONTed agent with stale timers takes over and
// lets go before its claim left): the primary re-announces on each of its
// first returnAnnounces adverts, then only when a claim is let go.
func TestReannounceReturningPeer(t *testing.T) {
	cfg := labConfig()
	cfg.Name, cfg.Serial, cfg.Priority, cfg.Override = "a", "SN-a", 200, true
	now := t0
	m := New(cfg, now)
	step := func(ev Event) int {
		ev.Time = now
		if err := m.Step(ev); err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, a := range m.Ready().Actions {
			if a.Type == ActionAnnounce {
				n++
			}
		}
		return n
	}
	for now.Before(t0.Add(3 * time.Second)) {
		now = now.Add(cfg.HBInterval)
		step(Event{Type: EventTick})
	}
	if m.Role() != RolePrimary {
		t.Fatalf("a is %s alone", m.Role())
	}
	b := Advert{Name: "b", Serial: "SN-b", Role: RoleSecondary, Priority: 100, Override: true, Primary: "SN-a"}
	heard := func() int { return step(Event{Type: EventHeartbeat, Advert: b}) }
	for i := 1; i <= returnAnnounces; i++ {
		now = now.Add(cfg.HBInterval)
		if n := heard(); n != 1 {
			t.Fatalf("advert %d of the new peer b: %d announces, want 1", i, n)
		}
	}
	now = now.Add(cfg.HBInterval)
	if n := heard(); n != 0 {
		t.Fatalf("a steady secondary: %d announces", n)
	}
	// b is lost (frozen), then comes back.
	for i := 0; i <= cfg.LostThreshold; i++ {
		now = now.Add(cfg.HBInterval)
		step(Event{Type: EventTick})
	}
	total := 0
	for i := 0; i < returnAnnounces+2; i++ {
		now = now.Add(cfg.HBInterval)
		total += heard()
	}
	if total != returnAnnounces {
		t.Fatalf("b came back: %d announces over its first %d adverts, want %d", total, returnAnnounces+2, returnAnnounces)
	}
	// A claim heard and let go still announces.
	b.Role = RolePrimary
	now = now.Add(cfg.HBInterval)
	heard()
	b.Role = RoleSecondary
	if n := heard(); n != 1 {
		t.Fatalf("b let go of a claim: %d announces", n)
	}
}

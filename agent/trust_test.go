package agent

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hagent/hagent/cluster"
	"github.com/hagent/hagent/control"
	"github.com/hagent/hagent/heartbeat"
	"github.com/hagent/hagent/metrics"
)

// newIdleAgent builds an agent on an in-memory segment without running it:
// the test goroutine stands in for the run goroutine.
func newIdleAgent(t *testing.T, name string, opts ...func(*Options)) (*Agent, *fakeNet) {
	t.Helper()
	mem := heartbeat.NewMemNetwork()
	cfg := testConfig(t, name, 100, false)
	fn := &fakeNet{}
	o := Options{Config: cfg, Links: []heartbeat.Link{mem.Link("hb", name, "ha1")}, Network: fn,
		WatchLinks: (&fakeLinks{}).watch}
	for _, f := range opts {
		f(&o)
	}
	a, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.closeLinks(); a.closeNets(); a.hooks.close(0) })
	return a, fn
}

// TestEpochHintSaturates: an authentic hint of 2^64-1 about this node
// raises its epoch to 2^64-1, not to 0 (hint+1 wrapped: every peer would
// reject the node as a replay for good).
func TestEpochHintSaturates(t *testing.T) {
	a, _ := newIdleAgent(t, "a")
	f := heartbeat.Frame{Node: "b", Serial: "SN-b", Role: 2, NumHints: 1}
	f.Hints[0] = heartbeat.EpochHint{NodeID: a.nodeID, Epoch: math.MaxUint64}
	a.takeHints(&f)
	a.sendMu.Lock()
	e := a.epoch
	a.sendMu.Unlock()
	if e != math.MaxUint64 {
		t.Fatalf("epoch after a hint of 2^64-1 = %d, want %d", e, uint64(math.MaxUint64))
	}
	if got := a.state.startEpoch(1); got != math.MaxUint64 {
		t.Fatalf("next start epoch after 2^64-1 = %d, want it to stay %d", got, uint64(math.MaxUint64))
	}
}

// TestBadAuthFloodAggregated: 10 000 frames that fail authentication, from
// random source MACs (three each, enough to make each MAC's problem
// steady), on one hbdev within 10 s, write a bounded number of log lines
// and history entries: the role changes recorded before stay in the
// 256-entry history, and status names one problem.
func TestBadAuthFloodAggregated(t *testing.T) {
	var logs bytes.Buffer
	a, _ := newIdleAgent(t, "a", func(o *Options) {
		o.Logger = hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Info})
	})
	t0 := a.now()
	for i := 0; i < 5; i++ {
		a.hist.add(Event{Time: t0, Kind: "role", Role: "primary", Reason: fmt.Sprintf("role change %d", i)})
	}
	logs.Reset()
	good, err := heartbeat.NewCodec([]byte("s3cret"), 10).Append(nil, &heartbeat.Frame{GroupID: 10, VCluster: 1, Role: 2, Serial: "X", Node: "x", Epoch: 1, Seq: 1})
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(good)
	bad[len(bad)-1] ^= 1
	var f heartbeat.Frame
	derr := a.codec.Decode(bad, &f)
	rng := rand.New(rand.NewPCG(1, 2))
	l := a.links[0]
	mac := make(net.HardwareAddr, 6)
	const frames = 10000
	at := t0
	for i := 0; i < frames; i++ {
		if i%3 == 0 {
			for j := range mac {
				mac[j] = byte(rng.Uint32())
			}
		}
		at = at.Add(time.Millisecond)
		if !a.dropped(l, mac, bad, derr, at) {
			t.Fatal("a bad tag is not counted as bad_auth")
		}
		if i%50 == 0 {
			a.housekeeping(at)
		}
	}
	errs, _ := a.problems(nil, at)
	lines := strings.Count(logs.String(), "\n")
	var roles, health int
	for _, e := range a.hist.list() {
		switch e.Kind {
		case "role":
			roles++
		case "health":
			health++
		}
	}
	t.Logf("%d bad-auth frames from %d MACs over %v: %d log lines, %d health entries in history, problems %q",
		frames, frames/3, at.Sub(t0), lines, health, errs)
	if roles != 5 {
		t.Errorf("%d of the 5 role changes left in history (%d health entries pushed them out)", roles, health)
	}
	if lines > 2 || health > 2 {
		t.Errorf("%d log lines, %d history entries: want at most 2 each (one problem, one minute)", lines, health)
	}
	if len(errs) != 1 || !strings.Contains(errs[0], "fail authentication") || !strings.Contains(errs[0], "others") {
		t.Errorf("problems %q, want one naming several senders", errs)
	}
}

// fakeClock is a clock a test moves by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// TestStatusDoesNotStepMachine: reading status (the control call and a
// metrics scrape) neither steps the election nor waits for the run loop.
// With the peer's last heartbeat long past and its next one queued, 100
// status calls and scrapes leave the peer alive, the queued heartbeat in
// the queue and the role as they were: only the run loop, which reads the
// queue first, may judge the peer. Before, status stepped the machines to
// now and declared the peer lost.
func TestStatusDoesNotStepMachine(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	a, _ := newIdleAgent(t, "a", func(o *Options) { o.Now = clk.now })
	peer := heartbeat.Frame{GroupID: 10, VCluster: 1, Role: uint8(cluster.RoleSecondary), Priority: 100,
		Node: "b", Serial: "SN-b", NodeID: heartbeat.NodeID{2, 0, 0, 0, 0, 0xb}, Epoch: 1, Seq: 1}
	a.stepFrame(rxFrame{at: clk.now(), frame: peer})
	a.process()
	a.publishStatus() // the end of the run loop's step
	if st := a.status(); !alive(st, "b") {
		t.Fatalf("b not alive after its heartbeat: %+v", st.Members)
	}
	role := a.m.Role()
	clk.add(100 * a.detection())
	peer.Seq = 2
	a.rx <- rxFrame{at: clk.now(), frame: peer} // received just now, not yet stepped
	exp := metrics.New(a.metricsStatus, "test")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := 0; i < 100; i++ {
		v, err := a.Handle(control.Request{Cmd: control.CmdStatus})
		if err != nil {
			t.Fatalf("status call %d: %v", i, err)
		}
		if st := v.(*control.Status); !alive(st, "b") {
			t.Fatalf("status call %d shows b lost: a status call stepped the election", i)
		}
		if _, err := a.metricsStatus(ctx); err != nil {
			t.Fatal(err)
		}
	}
	rec := httptest.NewRecorder()
	exp.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if body := rec.Body.String(); !strings.Contains(body, `hagent_member_alive{node="b",serial="SN-b"} 1`) || !strings.Contains(body, "hagent_status_error 0") {
		t.Errorf("scrape: %s", body)
	}
	for _, m := range a.m.Status().Members {
		if m.Name == "b" && !m.Alive {
			t.Fatal("the machine lost b: status stepped it")
		}
	}
	if len(a.rx) != 1 || a.m.Role() != role {
		t.Fatalf("queued heartbeats %d (want 1), role %s (was %s)", len(a.rx), a.m.Role(), role)
	}
	// The run loop's own step, which reads the queue first, keeps b.
	a.drainRx()
	a.stepAll(cluster.Event{Type: cluster.EventTick, Time: clk.now()})
	a.process()
	a.publishStatus()
	if !alive(a.status(), "b") {
		t.Fatal("b lost although its heartbeat was queued")
	}
}

// TestMetricsAtNew: the exporter reads status as it is registered, in New,
// before Run: the first view is published before it.
func TestMetricsAtNew(t *testing.T) {
	a, _ := newIdleAgent(t, "a", func(o *Options) { o.Config.MetricsListen = "127.0.0.1:9650" })
	rec := httptest.NewRecorder()
	a.metrics.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if !strings.Contains(rec.Body.String(), "hagent_status_error 0") {
		t.Fatalf("scrape: %s", rec.Body.String())
	}
}

// TestPublishStatusCost prints what the run loop now pays after every
// step: publishing the status view (one peer, one vcluster). Measured, not
// asserted.
func TestPublishStatusCost(t *testing.T) {
	a, _ := newIdleAgent(t, "a")
	a.stepFrame(rxFrame{at: a.now(), frame: heartbeat.Frame{GroupID: 10, VCluster: 1, Role: 2, Node: "b", Serial: "SN-b", Epoch: 1, Seq: 1}})
	allocs := testing.AllocsPerRun(1000, a.publishStatus)
	const n = 10000
	start := time.Now()
	for i := 0; i < n; i++ {
		a.publishStatus()
	}
	t.Logf("publishStatus: %v and %.0f allocations per run loop step", time.Since(start)/n, allocs)
}

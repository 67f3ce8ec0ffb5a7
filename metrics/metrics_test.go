package metrics

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/hagent/hagent/control"
	"github.com/hagent/hagent/sessionsync"
)

func testStatus() *control.Status {
	return &control.Status{
		Node: "node-b", Serial: "SB", Role: "primary", VCluster: 1, UptimeS: 42,
		Members: []control.Member{
			{Node: "node-b", Serial: "SB", Self: true, Alive: true, MonitorUp: 1, MonitorTotal: 2},
			{Node: "node-a", Serial: "SA", Alive: false, LastHeardMs: 1500, LostBy: "carrier", LostWhy: "carrier down on ha1"},
		},
		HBDevs:     []control.HBDev{{Name: "ha1", Up: false, Carrier: false, RX: 10, TX: 12, BadAuth: 3, Replay: 1}},
		Interfaces: []control.VIface{{Name: "port1", Owned: true}},
		Sessions: &sessionsync.Status{Enabled: true, LocalFlows: 1000, Events: 5, Received: 40, Applied: 39, Errors: 1,
			Refused: map[string]uint64{"not_entitled": 3}, StatusMasked: 2,
			LagP50Ms: 0.8, LagP99Ms: 2.5, Peers: []sessionsync.PeerStatus{{Node: "node-a", SentFlows: 17, Queued: 2}}},
		Config: control.Config{SyncOn: true, InSync: true, Generation: 7,
			Channel: &control.SyncChannel{FramesSent: 5, FramesReceived: 4, Retransmits: 1, DroppedReplay: 2}},
	}
}

func TestExposition(t *testing.T) {
	e := New(func(context.Context) (*control.Status, error) { return testStatus(), nil }, "1.2.3")
	e.Failover("node-b is selected as the primary because it is the only healthy member (lost: node-a, carrier down on ha1)")
	e.Takeover(400 * time.Microsecond)

	// Prometheus' own linter: names, units, _total, help texts.
	if problems, err := testutil.GatherAndLint(e.reg); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %+v", err, problems)
	}
	want := `
# HELP hagent_role 1 for this node's current role in the vcluster, 0 for the others.
# TYPE hagent_role gauge
hagent_role{role="fault",vcluster="1"} 0
hagent_role{role="primary",vcluster="1"} 1
hagent_role{role="secondary",vcluster="1"} 0
hagent_role{role="starting",vcluster="1"} 0
# HELP hagent_hbdev_bad_auth_frames_total Frames whose authentication failed.
# TYPE hagent_hbdev_bad_auth_frames_total counter
hagent_hbdev_bad_auth_frames_total{hbdev="ha1"} 3
# HELP hagent_members Cluster members this node knows, itself included, by state.
# TYPE hagent_members gauge
hagent_members{state="alive"} 1
hagent_members{state="lost"} 1
# HELP hagent_config_generation Configuration generation of this node's tree.
# TYPE hagent_config_generation gauge
hagent_config_generation 7
# HELP hagent_sync_channel_dropped_frames_total Frames the configuration-sync channel dropped, by reason.
# TYPE hagent_sync_channel_dropped_frames_total counter
hagent_sync_channel_dropped_frames_total{reason="bad_auth"} 0
hagent_sync_channel_dropped_frames_total{reason="malformed"} 0
hagent_sync_channel_dropped_frames_total{reason="replay"} 2
`
	want += `
# HELP hagent_sessions_applied_flows_total Received flows written into the kernel table.
# TYPE hagent_sessions_applied_flows_total counter
hagent_sessions_applied_flows_total 39
# HELP hagent_sessions_sent_flows_total Flows sent to a peer.
# TYPE hagent_sessions_sent_flows_total counter
hagent_sessions_sent_flows_total{peer="node-a"} 17
# HELP hagent_sessions_refused_total Received messages and records refused before the table, by reason (not_entitled, out_of_scope, filtered, expectations_off, helper).
# TYPE hagent_sessions_refused_total counter
hagent_sessions_refused_total{reason="not_entitled"} 3
`
	if err := testutil.GatherAndCompare(e.reg, strings.NewReader(want), "hagent_sessions_applied_flows_total", "hagent_sessions_sent_flows_total", "hagent_sessions_refused_total", "hagent_role", "hagent_hbdev_bad_auth_frames_total",
		"hagent_members", "hagent_config_generation", "hagent_sync_channel_dropped_frames_total"); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(e.failovers.WithLabelValues("carrier")); got != 1 {
		t.Fatalf("failovers{carrier} = %v", got)
	}
	if got := testutil.ToFloat64(e.failovers.WithLabelValues("heartbeat")); got != 0 {
		t.Fatalf("failovers{heartbeat} = %v", got)
	}
	if n := testutil.CollectAndCount(e.takeover); n != 1 {
		t.Fatalf("takeover histogram: %d series", n)
	}

	// Over HTTP.
	srv, err := e.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	resp, err := http.Get("http://" + srv.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, w := range []string{`hagent_build_info{version="1.2.3"} 1`, `hagent_takeover_duration_seconds_bucket{le="0.0005"} 1`, "hagent_health_ok 0", "hagent_status_error 0"} {
		if !strings.Contains(string(body), w) {
			t.Errorf("exposition lacks %q:\n%s", w, body)
		}
	}
}

func TestStatusError(t *testing.T) {
	e := New(func(context.Context) (*control.Status, error) { return nil, errors.New("agent busy") }, "x")
	if err := testutil.GatherAndCompare(e.reg, strings.NewReader(`
# HELP hagent_status_error 1 when the agent did not answer the scrape's status request in time.
# TYPE hagent_status_error gauge
hagent_status_error 1
`), "hagent_status_error", "hagent_role"); err != nil {
		t.Fatal(err)
	}
}

func TestFailoverReason(t *testing.T) {
	for why, want := range map[string]string{
		"node-b is selected as the primary because it is the only healthy member (lost: node-a, no heartbeat for 1.2s)": "heartbeat",
		"node-b is selected as the primary because it is the only healthy member (lost: node-a, carrier down on ha1)":   "carrier",
		"node-b is selected as the primary because it is the only healthy member (stepping down or faulted: node-a)":    "handover",
		"node-b is selected as the primary because it has the most connected monitored interfaces":                      "monitor",
		"node-b is selected as the primary because it is the only member (hello_holddown 20s expired)":                  "alone",
		"node-b is selected as the primary because it has the largest value of priority":                                "election",
	} {
		if got := FailoverReason(why); got != want {
			t.Errorf("FailoverReason(%q) = %s, want %s", why, got, want)
		}
	}
}

func TestRolePerVCluster(t *testing.T) {
	st := testStatus()
	st.VClusters = []control.VCluster{{VCluster: 1, Role: "primary"}, {VCluster: 2, Role: "secondary"}}
	e := New(func(context.Context) (*control.Status, error) { return st, nil }, "x")
	if err := testutil.GatherAndCompare(e.reg, strings.NewReader(`
# HELP hagent_role 1 for this node's current role in the vcluster, 0 for the others.
# TYPE hagent_role gauge
hagent_role{role="fault",vcluster="1"} 0
hagent_role{role="primary",vcluster="1"} 1
hagent_role{role="secondary",vcluster="1"} 0
hagent_role{role="starting",vcluster="1"} 0
hagent_role{role="fault",vcluster="2"} 0
hagent_role{role="primary",vcluster="2"} 0
hagent_role{role="secondary",vcluster="2"} 1
hagent_role{role="starting",vcluster="2"} 0
`), "hagent_role"); err != nil {
		t.Fatal(err)
	}
}

// TestServerBounds: the metrics server has read-header, read, write and
// idle timeouts, and refuses a request header above MaxHeaderBytes (431)
// instead of reading up to Go's 1 MiB default.
func TestServerBounds(t *testing.T) {
	e := New(func(context.Context) (*control.Status, error) { return testStatus(), nil }, "1")
	s, err := e.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if h := s.srv; h.ReadHeaderTimeout != ReadHeaderTimeout || h.ReadTimeout != ReadTimeout ||
		h.WriteTimeout != WriteTimeout || h.IdleTimeout != IdleTimeout || h.MaxHeaderBytes != MaxHeaderBytes {
		t.Fatalf("server bounds: read header %v, read %v, write %v, idle %v, max header %d",
			h.ReadHeaderTimeout, h.ReadTimeout, h.WriteTimeout, h.IdleTimeout, h.MaxHeaderBytes)
	}
	req, _ := http.NewRequest("GET", "http://"+s.Addr().String()+"/metrics", nil)
	req.Header.Set("X-Big", strings.Repeat("x", 64<<10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("a 64 KiB header: %s, want 431", resp.Status)
	}
}

// TestInvalidLabelValue: a member name that is not valid UTF-8 (which the
// heartbeat decoder and the config no longer let in) costs its own label
// at most, never the other status metrics of the scrape.
func TestInvalidLabelValue(t *testing.T) {
	st := testStatus()
	st.Members[1].Node = "node-\xff"
	e := New(func(context.Context) (*control.Status, error) { return st, nil }, "1")
	n, err := testutil.GatherAndCount(e.reg, "hagent_role", "hagent_member_alive", "hagent_hbdev_rx_frames_total")
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	if n != 4+1+1 {
		t.Fatalf("%d role, member and hbdev metrics, want 6", n)
	}
}

// TestVerifyMetrics: the last verify's differences per primary, and those
// that persisted past the sync lag; a verify that could not run gives no
// series (not a false 0).
func TestVerifyMetrics(t *testing.T) {
	st := testStatus()
	st.Sessions.Verify = []sessionsync.VerifyResult{
		{Peer: "node-a", Compared: 10, Local: 9, Missing: 1, Differing: 2, Persistent: 1},
		{Peer: "node-c", Error: "node-c did not answer"},
	}
	e := New(func(context.Context) (*control.Status, error) { return st, nil }, "1.2.3")
	if problems, err := testutil.GatherAndLint(e.reg); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %+v", err, problems)
	}
	want := `
# HELP hagent_sessions_verify_differences Flows that differ between this member's table and the primary's at the last verify (missing, extra, differing; in the buckets examined).
# TYPE hagent_sessions_verify_differences gauge
hagent_sessions_verify_differences{peer="node-a"} 3
# HELP hagent_sessions_verify_persistent_differences Of them, flows that differed for longer than the sync lag (health WARN).
# TYPE hagent_sessions_verify_persistent_differences gauge
hagent_sessions_verify_persistent_differences{peer="node-a"} 1
`
	if err := testutil.GatherAndCompare(e.reg, strings.NewReader(want), "hagent_sessions_verify_differences", "hagent_sessions_verify_persistent_differences"); err != nil {
		t.Fatal(err)
	}
}

// TestCheckUp: hagent_check_up is 1 for a health check that counts as up,
// 0 for one that failed fall times.
func TestCheckUp(t *testing.T) {
	st := testStatus()
	st.Checks = []control.Check{{Name: "nginx", State: "up"}, {Name: "memory", State: "down"}}
	e := New(func(context.Context) (*control.Status, error) { return st, nil }, "x")
	if err := testutil.GatherAndCompare(e.reg, strings.NewReader(`
# HELP hagent_check_up 1 while the health check counts as up, 0 once it failed fall times in a row (until it passes rise times).
# TYPE hagent_check_up gauge
hagent_check_up{check="memory"} 0
hagent_check_up{check="nginx"} 1
`), "hagent_check_up"); err != nil {
		t.Fatal(err)
	}
}

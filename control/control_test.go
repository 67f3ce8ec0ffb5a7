package control

import (
	"bytes"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hagent/hagent/sessionsync"
)

func TestServerRoundTripAndMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "hagent.sock")
	srv, err := Listen(path, func(r Request) (any, error) {
		switch r.Cmd {
		case CmdFailoverStatus:
			return FailoverStatus{Set: true, Role: "secondary"}, nil
		}
		return nil, errors.New("unknown command " + r.Cmd)
	})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	defer srv.Close()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket mode %v, want 0600 socket", fi.Mode())
	}
	var fs FailoverStatus
	if err := Call(path, CmdFailoverStatus, &fs, time.Second); err != nil {
		t.Fatal(err)
	}
	if !fs.Set || fs.Role != "secondary" {
		t.Fatalf("got %+v", fs)
	}
	if err := Call(path, "nope", nil, time.Second); err == nil || !strings.Contains(err.Error(), "unknown command nope") {
		t.Fatalf("error %v", err)
	}
	// A second agent on the same socket is refused.
	if _, err := Listen(path, nil); err == nil || !strings.Contains(err.Error(), "another hagentd") {
		t.Fatalf("second Listen: %v", err)
	}
}

func TestNotRunning(t *testing.T) {
	dir := t.TempDir()
	err := Call(filepath.Join(dir, "none.sock"), CmdStatus, nil, time.Second)
	if !errors.Is(err, ErrNotRunning) {
		t.Fatalf("missing socket: %v", err)
	}
	// A stale socket file (agent died) also reads as not running, and a new
	// agent replaces it.
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if err := Call(stale, CmdStatus, nil, time.Second); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("stale socket: %v", err)
	}
	srv, err := Listen(stale, func(Request) (any, error) { return "ok", nil })
	if err != nil {
		t.Fatalf("replacing a stale socket: %v", err)
	}
	srv.Close()
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Fatal("Close left the socket file behind")
	}
}

func TestFormatStatus(t *testing.T) {
	now := time.Now()
	st := &Status{Node: "node-a", Serial: "SA", Role: "primary", GroupName: "lab", GroupID: 10, Mode: "a-p",
		Override: true, Priority: 200, UptimeS: 3723, Reason: "node-a is selected as the primary because it has the largest value of override priority",
		Members: []Member{
			{Node: "node-b", Serial: "SB", Role: "secondary", Alive: true, ConfigInSync: false, MonitorUp: 1, MonitorTotal: 1, LastHeardMs: 120},
			{Node: "node-a", Serial: "SA", Role: "primary", Self: true, Alive: true, ConfigInSync: true, MonitorUp: 1, MonitorTotal: 1},
		},
		HBDevs: []HBDev{{Name: "ha1", Up: true, RX: 5, TX: 6, BadAuth: 2}},
		Config: Config{SyncOn: true, LastError: "on_change failed", Channel: &SyncChannel{ActiveLink: "ha1", FramesSent: 9, FramesReceived: 8, Retransmits: 2}},
	}
	var b bytes.Buffer
	FormatStatus(&b, st, now)
	out := b.String()
	for _, want := range []string{
		"HA Health Status: OK",
		"Group Name: lab, Group ID: 10",
		"Primary selected using:",
		"largest value of override priority",
		"override: enable",
		"node-b(SB): out-of-sync",
		"node-a(SA): in-sync",
		"ha1:", "rx-pkts=5", "bad_auth=2",
		"Primary: node-a, SA, HA cluster index = 0",
		"Secondary: node-b, SB, HA cluster index = 1",
		"Cluster Uptime: 0 days 1:02:03",
		"sync channel: on ha1, frames tx 9 rx 8, retransmits 2",
		"sync error: on_change failed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
	st.Members[0].Alive = false
	b.Reset()
	FormatStatus(&b, st, now)
	if !strings.Contains(b.String(), "HA Health Status: ERROR") || !strings.Contains(b.String(), "node-b(SB) is lost") {
		t.Errorf("lost member not reported:\n%s", b.String())
	}
}

func TestFormatSessions(t *testing.T) {
	var b strings.Builder
	FormatSessions(&b, &sessionsync.Status{Enabled: false})
	if !strings.Contains(b.String(), "Session pickup: disable") {
		t.Fatalf("disabled:\n%s", b.String())
	}
	b.Reset()
	FormatSessions(&b, &sessionsync.Status{Enabled: true, Sending: true, LocalFlows: 12,
		Peers:        []sessionsync.PeerStatus{{Node: "node-b", Bulk: sessionsync.BulkStatus{State: "done", Sent: 10, Total: 10}, SentFlows: 12}},
		ErrorReasons: map[string]uint64{"file exists": 2}, Errors: 2, Problems: []string{"session sync to node-b stalled"},
		Channel: &sessionsync.ChannelStatus{ActiveLink: "ha1", DroppedBadAuth: 3,
			Links: []sessionsync.ChannelLink{{Name: "ha2", Up: false, Spread: true}, {Name: "ha3", Up: true, Alive: true, Spread: true, Tx: 7}}}})
	out := b.String()
	for _, want := range []string{"Session pickup: enable, sending (primary), health ERROR", "session sync to node-b stalled",
		"To node-b: bulk done 10/10", "refused: file exists: 2", "Channel: link ha1", "bad_auth 3", "ha2: down, load-balanced", "ha3: up, load-balanced, tx 7"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	b.Reset()
	FormatSessions(&b, &sessionsync.Status{Enabled: true, Sending: true, Mode: "fgsp", Echoes: 7, LearnedSent: 3,
		Peers:   []sessionsync.PeerStatus{{Node: "node-b", Heartbeat: "lost", SentFlows: 5}},
		Sources: []sessionsync.SourceStatus{{Node: "node-b", Copies: 4, Received: 9}}})
	out = b.String()
	for _, want := range []string{"mode fgsp", "To node-b (heartbeat lost)", "4 copies held, 9 records received",
		"not sent back 7, changes of learned flows sent 3"} {
		if !strings.Contains(out, want) {
			t.Errorf("fgsp: missing %q in:\n%s", want, out)
		}
	}
	// The receiver's refusals (sessionsync/trust.go).
	b.Reset()
	FormatSessions(&b, &sessionsync.Status{Enabled: true, Senders: []string{"node-a"}, RefusedTotal: 5, StatusMasked: 2, HelpersRemoved: 1, Held: 3,
		Refused: map[string]uint64{"not_entitled": 4, "filtered": 1}, LastRefusal: "message from node-c refused"})
	out = b.String()
	for _, want := range []string{"Trust: senders node-a; refused 5, status masked 2, helpers removed 1, held 3",
		"refused: filtered: 1", "refused: not_entitled: 4", "last refusal: message from node-c refused"} {
		if !strings.Contains(out, want) {
			t.Errorf("trust: missing %q in:\n%s", want, out)
		}
	}
}

func TestFormatStatusVClusters(t *testing.T) {
	st := &Status{Node: "node-a", Serial: "SA", Role: "primary", Mode: "a-p",
		Members: []Member{{Node: "node-a", Serial: "SA", Role: "primary", Self: true, Alive: true}},
		VClusters: []VCluster{
			{VCluster: 1, Role: "primary", Primary: "node-a", Priority: 200, Override: true,
				Members:    []Member{{Node: "node-a", Serial: "SA", Role: "primary", Priority: 200, Self: true, Alive: true}},
				Interfaces: []VIface{{Name: "port1", VMAC: "00:09:0f:09:0a:00", Owned: true}}},
			{VCluster: 2, Role: "secondary", Primary: "node-b", Priority: 100,
				Members: []Member{{Node: "node-a", Serial: "SA", Role: "secondary", Priority: 100, Self: true, Alive: true, MonitorUp: 0, MonitorTotal: 1},
					{Node: "node-b", Serial: "SB", Role: "primary", Priority: 200, Alive: true}},
				Monitor:    []Link{{Name: "port2", Up: false}},
				Interfaces: []VIface{{Name: "port2", VMAC: "00:09:0f:09:0a:20"}}},
		},
	}
	var b bytes.Buffer
	FormatStatus(&b, st, time.Now())
	out := b.String()
	for _, want := range []string{
		"vcluster 1: primary, priority 200, override enable, primary node-a",
		"vMAC port1: 00:09:0f:09:0a:00 (held)",
		"vcluster 2: secondary, priority 100, override disable, primary node-b",
		"Primary: node-b(SB), priority 200",
		"vMAC port2: 00:09:0f:09:0a:20 (not held)",
		"monitor port2: down",
		// vcluster 2's monitored link counts in the health.
		"HA Health Status: ERROR",
		"node-a(SA) has 1 of 1 monitored links of vcluster 2 down",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
	// One vcluster: no blocks (the output of before).
	st.VClusters = st.VClusters[:1]
	b.Reset()
	FormatStatus(&b, st, time.Now())
	if strings.Contains(b.String(), "vcluster 1:") {
		t.Errorf("a single vcluster printed a block:\n%s", b.String())
	}
}

func TestFormatHistoryVCluster(t *testing.T) {
	var b bytes.Buffer
	FormatHistory(&b, []Event{{Time: time.Now(), Kind: "role", Role: "primary", Previous: "secondary", VCluster: 2, Reason: "x"},
		{Time: time.Now(), Kind: "start", Reason: "hagentd started"}})
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "vcluster 2  secondary -> primary") || strings.Contains(lines[1], "vcluster") {
		t.Errorf("history:\n%s", b.String())
	}
}

// TestFormatVerify: in sync prints one line with the flows compared;
// differences name the primary, the counts and the first flows with their
// fields; a persistent difference makes `ha sessions` health WARN.
func TestFormatVerify(t *testing.T) {
	var b strings.Builder
	FormatVerify(&b, []sessionsync.VerifyResult{{Peer: "node-a", Compared: 1200, Local: 1200}}, 0)
	if got := b.String(); got != "verify: in sync (1200 flows compared)\n" {
		t.Fatalf("in sync: %q", got)
	}
	diff := sessionsync.VerifyResult{Peer: "node-a", Compared: 1200, Local: 1199, DifferingBuckets: 2, Missing: 1, Differing: 1, Persistent: 2,
		First: []sessionsync.VerifyDiff{{What: "differs", Flow: "proto 6 10.0.0.1:1 -> 10.0.0.2:80 zone 0", Fields: []string{"mark: here 00000001, on node-a 00000002"}},
			{What: "missing here", Flow: "proto 6 10.0.0.3:1 -> 10.0.0.2:80 zone 0"}}}
	b.Reset()
	FormatVerify(&b, []sessionsync.VerifyResult{diff, {Peer: "node-c", Error: "node-c did not answer"}}, 0)
	out := b.String()
	for _, want := range []string{"verify: with node-a: differs: 1200 flows there, 1199 here; 1 missing here, 0 extra here, 1 differing; 2 for longer than the sync lag",
		"    differs: proto 6 10.0.0.1:1 -> 10.0.0.2:80 zone 0\n        mark: here 00000001, on node-a 00000002",
		"    missing here: proto 6 10.0.0.3:1", "verify: with node-c: not compared: node-c did not answer"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	b.Reset()
	FormatSessions(&b, &sessionsync.Status{Enabled: true, Warnings: []string{"session table differs from node-a's for over 5s"},
		Verify: []sessionsync.VerifyResult{diff}})
	out = b.String()
	for _, want := range []string{"health WARN", "warning: session table differs from node-a's", "Last verify (", "differs: proto 6 10.0.0.1:1"} {
		if !strings.Contains(out, want) {
			t.Errorf("sessions: missing %q in:\n%s", want, out)
		}
	}
}

// TestFormatStatusChecks: the human status lists each health check with
// its state, last result, count and output tail.
func TestFormatStatusChecks(t *testing.T) {
	st := &Status{Node: "node-a", Serial: "SA", Role: "secondary",
		Checks: []Check{{Name: "nginx", Kind: "command", State: "down", Last: "fail", Count: 4, Output: "connection refused"},
			{Name: "memory", Kind: "memory", State: "up"}}}
	var b bytes.Buffer
	FormatStatus(&b, st, time.Now())
	for _, want := range []string{"Health checks:", `nginx (command): down, last fail x4: "connection refused"`, "memory (memory): up, last none x0"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status output lacks %q:\n%s", want, b.String())
		}
	}
}

// TestFormatStatusDamping: a rise held by monitor_holddown and a pending
// override_wait_time show in the human status.
func TestFormatStatusDamping(t *testing.T) {
	until := time.Date(2026, 1, 1, 10, 0, 1, 500e6, time.UTC)
	st := &Status{Node: "node-a", Serial: "SA", Role: "secondary", MonitorHeldUp: 2, MonitorHeldUntil: &until, OverrideWaitUntil: &until}
	var b bytes.Buffer
	FormatStatus(&b, st, time.Now())
	for _, want := range []string{"Monitor hold-down: 2 up counts from 10:00:01.500", "Override wait: takes the primary role at 10:00:01.500"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status output lacks %q:\n%s", want, b.String())
		}
	}
}

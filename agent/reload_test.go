package agent

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hagent/hagent/config"
	"github.com/hagent/hagent/heartbeat"
	"github.com/hagent/hagent/sessionsync"
)

// syncBuffer is a log output the test reads while the agent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// take returns what was written since the last take.
func (s *syncBuffer) take() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.b.String()
	s.b.Reset()
	return out
}

// otherValue returns a value of v's type that differs from v; slices and
// maps are new ones, so the running configuration is left as it is.
func otherValue(t *testing.T, path string, v reflect.Value) reflect.Value {
	t.Helper()
	if a, ok := v.Interface().(netip.Addr); ok { // node.mgmt.gateway
		if !a.IsValid() {
			return reflect.ValueOf(netip.MustParseAddr("192.0.2.1"))
		}
		return reflect.ValueOf(a.Next())
	}
	n := reflect.New(v.Type()).Elem()
	switch v.Kind() {
	case reflect.Bool:
		n.SetBool(!v.Bool())
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n.SetInt(v.Int() + 1)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n.SetUint(v.Uint() + 1)
	case reflect.String:
		n.SetString(v.String() + "x")
	case reflect.Slice:
		n = reflect.MakeSlice(v.Type(), v.Len()+1, v.Len()+1)
		reflect.Copy(n, v)
	case reflect.Map:
		n = reflect.MakeMap(v.Type())
		for it := v.MapRange(); it.Next(); {
			n.SetMapIndex(it.Key(), it.Value())
		}
		n.SetMapIndex(reflect.ValueOf("/x").Convert(v.Type().Key()), reflect.Zero(v.Type().Elem()))
	default:
		t.Fatalf("%s: no other value for a %s", path, v.Type())
	}
	return n
}

// field returns the value of key path in c.
func field(t *testing.T, c *config.Config, path string) reflect.Value {
	t.Helper()
	v, err := config.KeyField(c, path)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestReloadRestartKeys changes each key of config.Keys alone in a copy of
// the running configuration and reloads it: a key of class restart is
// reported (the return value, status restart_needed, one log line naming
// it) and keeps its running value; a key of class live is taken. Reloading
// the running configuration again clears restart_needed.
func TestReloadRestartKeys(t *testing.T) {
	logs := &syncBuffer{}
	log := hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Info})
	n := startNode(t, heartbeat.NewMemNetwork(), testConfig(t, "a", 200, false), func(o *Options) { o.Logger = log })
	running := *n.a.config()
	restart, live := 0, 0
	for _, k := range config.ReloadKeys() {
		c := running
		old := field(t, &running, k.Path)
		field(t, &c, k.Path).Set(otherValue(t, k.Path, old))
		logs.take()
		pending, err := n.a.Reload(context.Background(), &c)
		if err != nil {
			t.Fatal(err)
		}
		got := field(t, n.a.config(), k.Path)
		st := n.status(t)
		switch k.Reload {
		case config.ReloadRestart:
			restart++
			if !slices.Equal(pending, []string{k.Path}) {
				t.Errorf("%s changed: reload reports %v, want [%s]", k.Path, pending, k.Path)
			}
			if !reflect.DeepEqual(got.Interface(), old.Interface()) {
				t.Errorf("%s changed: running value %v, want the old %v", k.Path, got, old)
			}
			if !slices.Equal(st.RestartNeeded, []string{k.Path}) {
				t.Errorf("%s changed: status restart_needed %v", k.Path, st.RestartNeeded)
			}
			out := logs.take()
			if c := strings.Count(out, "restart needed"); c != 1 || !strings.Contains(out, `keys=["`+k.Path+`"]`) {
				t.Errorf("%s changed: %d log lines say restart needed, want 1 naming it:\n%s", k.Path, c, out)
			}
		case config.ReloadLive:
			live++
			if len(pending) != 0 || len(st.RestartNeeded) != 0 {
				t.Errorf("%s (live) changed: reload reports %v, status %v", k.Path, pending, st.RestartNeeded)
			}
			if reflect.DeepEqual(got.Interface(), old.Interface()) {
				t.Errorf("%s (live) changed: still the old value %v", k.Path, got)
			}
		}
		if pending, _ := n.a.Reload(context.Background(), &running); len(pending) != 0 || len(n.status(t).RestartNeeded) != 0 {
			t.Fatalf("%s back to the running value: reload still reports %v", k.Path, pending)
		}
	}
	t.Logf("%d restart keys, %d live keys", restart, live)
	if restart < 40 || live < 10 {
		t.Errorf("only %d restart and %d live keys compared", restart, live)
	}
}

// TestReloadLogLevel: log_level applies live, to the logger the agent was
// given (hagentd's) too.
func TestReloadLogLevel(t *testing.T) {
	log := hclog.New(&hclog.LoggerOptions{Output: &syncBuffer{}, Level: hclog.Info})
	n := startNode(t, heartbeat.NewMemNetwork(), testConfig(t, "a", 200, false), func(o *Options) { o.Logger = log })
	c := *n.a.config()
	c.LogLevel = "debug"
	if pending, err := n.a.Reload(context.Background(), &c); err != nil || len(pending) != 0 {
		t.Fatalf("reload: pending %v, err %v", pending, err)
	}
	if !log.IsDebug() {
		t.Errorf("log level %v after a reload to debug", log.GetLevel())
	}
}

// TestReloadModeAndSessions: a reload of the primary that changes
// cluster.mode and session pickup cannot apply them (the session engine
// and the mode are set up at start): both are reported as restart needed
// in status, the status shows the running mode, and session pickup goes on
// as it runs: a UDP flow (connectionless, which the reload turned off) is
// still copied.
func TestReloadModeAndSessions(t *testing.T) {
	a, b := startSessPair(t)
	c := *a.a.config()
	c.Cluster.Mode = config.ModeFGSP
	c.Cluster.SessionPickup.Connectionless = false
	pending, err := a.a.Reload(context.Background(), &c)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"cluster.mode", "cluster.session_pickup.connectionless"}
	if !slices.Equal(pending, want) {
		t.Errorf("reload reports %v, want %v", pending, want)
	}
	st := a.status(t)
	if !slices.Equal(st.RestartNeeded, want) {
		t.Errorf("status restart_needed %v, want %v", st.RestartNeeded, want)
	}
	if st.Mode != config.DefaultMode || a.a.sess.fgsp {
		t.Errorf("status mode %q (engine fgsp %v) after a reload that could not apply fgsp, want the running %q", st.Mode, a.a.sess.fgsp, config.DefaultMode)
	}
	if !hasEvent(&testNode{a: a.a}, "config", "restart needed to apply: [cluster.mode cluster.session_pickup.connectionless]") {
		t.Error("no history event names the keys waiting for a restart")
	}
	udp := testFlow(7)
	udp.Proto, udp.TCP = sessionsync.ProtoUDP, nil
	a.table.Put(testFlow(1))
	a.table.Put(udp)
	waitFor(t, 5*time.Second, func() error {
		for _, f := range []sessionsync.Flow{testFlow(1), udp} {
			if _, ok := b.table.Get(f.Key()); !ok {
				return fmt.Errorf("flow %d not copied to b", f.Proto)
			}
		}
		return nil
	})
}

// TestReloadSyncedSectionKeepsFileKeys: a cluster section synchronized from
// the primary after a SIGHUP does not make the node-local keys that wait
// for a restart disappear from status: the section replaces the cluster
// part of what this node wants, not its file.
func TestReloadSyncedSectionKeepsFileKeys(t *testing.T) {
	n := startNode(t, heartbeat.NewMemNetwork(), testConfig(t, "a", 200, false))
	c := *n.a.config()
	c.LogFormat = "json"
	if pending, _ := n.a.Reload(context.Background(), &c); !slices.Equal(pending, []string{"log_format"}) {
		t.Fatalf("log_format changed: reload reports %v", pending)
	}
	section, err := config.MarshalCluster(c.Cluster)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.a.applySyncedCluster(section); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the synchronized section applied", func() bool {
		k := 0
		for _, e := range n.a.hist.list() {
			if e.Kind == "config" {
				k++
			}
		}
		return k == 2
	})
	if got := n.status(t).RestartNeeded; !slices.Equal(got, []string{"log_format"}) {
		t.Errorf("after a synchronized section, status restart_needed %v, want [log_format] (the file still says json)", got)
	}
}

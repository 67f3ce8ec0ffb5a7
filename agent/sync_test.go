package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hagent/hagent/config"
	"github.com/hagent/hagent/control"
	"github.com/hagent/hagent/heartbeat"
)

func syncConfig(t *testing.T, name string, prio int, keyDir string, lost int) *config.Config {
	t.Helper()
	key := filepath.Join(keyDir, "key")
	text := fmt.Sprintf(`
control_socket: /tmp/unused.sock
node: {name: %s, serial: SN-%s, priority: %d}
cluster:
  group_id: 10
  password_file: %s
  hbdev: [{name: ha1, priority: 50}]
  hb_interval: 20ms
  hb_lost_threshold: %d
  hello_holddown: 200ms
  sync:
    paths: [/etc/app]
    period: 1s
    on_change: {/etc/app: "touch %s/on-change"}
`, name, name, prio, key, lost, keyDir)
	cfg, err := config.Parse(name+".yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestAgentConfigSync: two agents synchronize /etc/app over the control
// channel (an in-memory hb segment): the primary's file reaches the
// secondary, its on_change runs there, status and checksum say in-sync,
// and `ha synchronize` repairs a secondary's local edit.
func TestAgentConfigSync(t *testing.T) {
	keyDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(keyDir, "key"), []byte("k-k-k-k-k-k-k-k-k\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mem := heartbeat.NewMemNetwork()
	roots := map[string]string{}
	nodes := map[string]*Agent{}
	// b's cluster section differs (hb_lost_threshold): the primary's wins.
	for _, n := range []struct {
		name string
		prio int
		lost int
	}{{"a", 200, 4}, {"b", 100, 3}} {
		roots[n.name] = t.TempDir()
		nodes[n.name] = startSyncAgent(t, mem, syncConfig(t, n.name, n.prio, keyDir, n.lost), roots[n.name])
	}
	status := func(n string) *control.Status { return agentStatus(t, nodes[n]) }
	eventually(t, 3*time.Second, "a primary", func() bool {
		return status("a").Role == "primary" && status("b").Primary == "a"
	})
	want := []byte("rule 1\n")
	if err := os.WriteFile(filepath.Join(roots["a"], "etc/app/rules.conf"), want, 0o640); err != nil {
		t.Fatal(err)
	}
	got := filepath.Join(roots["b"], "etc/app/rules.conf")
	eventually(t, 5*time.Second, "file on b", func() bool {
		b, err := os.ReadFile(got)
		return err == nil && string(b) == string(want)
	})
	if fi, _ := os.Stat(got); fi.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v, want 0640", fi.Mode().Perm())
	}
	eventually(t, 5*time.Second, "on_change on b", func() bool {
		_, err := os.Stat(filepath.Join(keyDir, "on-change"))
		return err == nil
	})
	defer func() {
		if t.Failed() {
			for _, n := range []string{"a", "b"} {
				st := status(n)
				t.Logf("%s: %+v", n, st.Config)
				for _, m := range st.Members {
					t.Logf("  %s member %s insync %v sum %s", n, m.Node, m.ConfigInSync, m.ConfigSum)
				}
				v, _ := nodes[n].Handle(control.Request{Cmd: control.CmdChecksum})
				t.Logf("  %+v", v)
				fc, ferr := os.ReadFile(filepath.Join(roots[n], "etc/app/rules.conf"))
				t.Logf("  file on %s: %q %v", n, fc, ferr)
				h, _ := nodes[n].Handle(control.Request{Cmd: control.CmdHistory})
				for _, e := range h.([]Event) {
					t.Logf("  history %s %s", e.Kind, e.Reason)
				}
			}
		}
	}()
	eventually(t, 3*time.Second, "on_change in b's history", func() bool {
		h, _ := nodes["b"].Handle(control.Request{Cmd: control.CmdHistory})
		for _, e := range h.([]Event) {
			if e.Kind == "sync" && strings.Contains(e.Reason, "on_change") && strings.Contains(e.Reason, "ran in") {
				return true
			}
		}
		return false
	})
	eventually(t, 3*time.Second, "in sync", func() bool {
		sa, sb := status("a"), status("b")
		return sa.Config.InSync && sb.Config.InSync && sa.Config.Checksum == sb.Config.Checksum && sa.Config.Checksum != ""
	})
	if c := status("a").Config.Channel; c == nil || c.ActiveLink != "ha1" || c.FramesSent == 0 || c.FramesReceived == 0 {
		t.Fatalf("sync channel in status: %+v", c)
	}
	if st := status("b"); st.LostThresh != 4 {
		t.Fatalf("b runs hb_lost_threshold %d, want the primary's 4", st.LostThresh)
	}
	// Drift on the secondary: repaired by the primary (heartbeat-reported
	// checksum or the periodic compare), and recorded in b's history. A late
	// incremental push of the same file may overwrite the edit first (not a
	// repair, so no drift entry): edit again then.
	driftLogged := func() bool {
		h, _ := nodes["b"].Handle(control.Request{Cmd: control.CmdHistory})
		for _, e := range h.([]Event) {
			if e.Kind == "sync" && strings.HasPrefix(e.Reason, "drift: ") && strings.Contains(e.Reason, "/etc/app/rules.conf") {
				return true
			}
		}
		return false
	}
	for try := 0; try < 3 && !driftLogged(); try++ {
		if err := os.WriteFile(got, []byte("local edit\n"), 0o640); err != nil {
			t.Fatal(err)
		}
		eventually(t, 5*time.Second, "drift repaired", func() bool {
			b, _ := os.ReadFile(got)
			return string(b) == string(want)
		})
	}
	if !driftLogged() {
		t.Fatal("b's history never recorded the drift repair")
	}
	// A forced full sync answers with the checksum and leaves both equal.
	if err := os.WriteFile(got, []byte("another edit\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	v, err := nodes["a"].Handle(control.Request{Cmd: control.CmdSynchronize})
	if err != nil {
		t.Fatalf("synchronize: %v", err)
	}
	if !strings.Contains(v.(string), "synchronized") {
		t.Fatalf("synchronize said %q", v)
	}
	eventually(t, 3*time.Second, "repaired", func() bool {
		b, _ := os.ReadFile(got)
		return string(b) == string(want)
	})
	c, err := nodes["a"].Handle(control.Request{Cmd: control.CmdChecksum})
	if err != nil {
		t.Fatal(err)
	}
	cs := c.(*control.Checksums)
	if len(cs.Members) != 2 || cs.Members[0].Tree == "" || cs.Members[0].Paths["/etc/app/rules.conf"] == "" {
		t.Fatalf("checksums: %+v", cs)
	}
}

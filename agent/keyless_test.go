package agent

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hagent/hagent/config"
	"github.com/hagent/hagent/control"
	"github.com/hagent/hagent/heartbeat"
	"github.com/hagent/hagent/sessionsync"
)

// noAuthConfig is a node with cluster.auth: false, config sync of
// /etc/app and the given key file ("" for none), its hook primary set to
// hook. It is built with config.Parse when key is set and patched by hand
// otherwise: the API path that skips Load's checks.
func noAuthConfig(t *testing.T, name string, prio int, key, hook string) *config.Config {
	t.Helper()
	pf := "/placeholder/key"
	if key != "" {
		pf = key
	}
	text := fmt.Sprintf(`
control_socket: /tmp/unused.sock
node: {name: %s, serial: SN-%s, priority: %d}
cluster:
  group_id: 10
  auth: false
  password_file: %s
  hbdev: [{name: ha1, priority: 50}]
  hb_interval: 20ms
  hb_lost_threshold: 3
  hello_holddown: 200ms
  sync: {paths: [/etc/app], period: 1s}
  hooks: {primary: %q}
`, name, name, prio, pf, hook)
	cfg, err := config.Parse(name+".yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if key == "" {
		cfg.Cluster.PasswordFile = ""
	}
	return cfg
}

// TestKeylessChannelsRefused: a Config built through the API with
// auth: false and no key file (which config.Load refuses) does not start
// config sync or session pickup without a key: New fails, naming why.
func TestKeylessChannelsRefused(t *testing.T) {
	mem := heartbeat.NewMemNetwork()
	cfg := noAuthConfig(t, "a", 200, "", "")
	_, err := New(Options{Config: cfg, Network: &fakeNet{}, WatchLinks: (&fakeLinks{}).watch,
		Links:     []heartbeat.Link{mem.Link("hb", "a", "ha1")},
		SyncLinks: []heartbeat.Link{mem.Link("l2ep", "a", "ha1")},
		SyncRoot:  t.TempDir(), StateDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "configuration sync: cluster.password_file is not set: config sync and session pickup do not run without a key") {
		t.Fatalf("New with keyless config sync: %v", err)
	}
	t.Log(err)

	cfg = noAuthConfig(t, "b", 200, "", "")
	cfg.Cluster.Sync.Enabled = false
	cfg.Cluster.SessionPickup.Enabled = true
	_, err = New(Options{Config: cfg, Network: &fakeNet{}, WatchLinks: (&fakeLinks{}).watch,
		Links:        []heartbeat.Link{mem.Link("hb", "b", "ha1")},
		SessionLinks: []heartbeat.Link{mem.Link("sess", "b", "ha1")},
		SessionTable: sessionsync.NewMemTable(), StateDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "session pickup: cluster.password_file is not set") {
		t.Fatalf("New with keyless session pickup: %v", err)
	}
	t.Log(err)
}

// TestNoAuthHookPushNeedsKey: with cluster.auth: false a forged member
// wins the election (heartbeats are not authenticated) but its cluster
// section, carrying a hook command, is not applied by a member whose
// channel key it does not hold; with the same key (the control) it is.
func TestNoAuthHookPushNeedsKey(t *testing.T) {
	const hook = "touch /tmp/hagent-owned"
	for _, tc := range []struct {
		name    string
		sameKey bool
	}{{"same key (control)", true}, {"another key", false}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			keys := map[string]string{"a": filepath.Join(dir, "key-a"), "b": filepath.Join(dir, "key-b")}
			for k, v := range map[string]string{"a": "attacker-key-attacker-key\n", "b": "group-key-group-key-group\n"} {
				if err := os.WriteFile(keys[k], []byte(v), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if tc.sameKey {
				keys["a"] = keys["b"]
			}
			mem := heartbeat.NewMemNetwork()
			nodes := map[string]*Agent{}
			for _, n := range []struct {
				name, hook string
				prio       int
			}{{"a", hook, 250}, {"b", "", 100}} {
				nodes[n.name] = startSyncAgent(t, mem, noAuthConfig(t, n.name, n.prio, keys[n.name], n.hook), t.TempDir())
			}
			status := func(n string) *control.Status { return agentStatus(t, nodes[n]) }
			eventually(t, 3*time.Second, "a primary (unauthenticated heartbeats)", func() bool {
				return status("a").Role == "primary" && status("b").Primary == "a"
			})
			if tc.sameKey {
				eventually(t, 5*time.Second, "the hook applied on b", func() bool {
					return nodes["b"].config().Cluster.Hooks.Primary == hook
				})
				return
			}
			// b drops a's sync frames as unauthentic (by then a has pushed
			// its cluster section), or, were the channel keyless, applies
			// the hook.
			eventually(t, 5*time.Second, "b drops a's sync frames", func() bool {
				ch := status("b").Config.Channel
				return ch != nil && ch.DroppedBadAuth >= 3 || nodes["b"].config().Cluster.Hooks.Primary != ""
			})
			if got := nodes["b"].config().Cluster.Hooks.Primary; got != "" {
				t.Fatalf("b applied the hook %q pushed without the key", got)
			}
			t.Logf("b dropped %d frames as unauthentic; its hook stays empty", status("b").Config.Channel.DroppedBadAuth)
		})
	}
}

// TestNoAuthWarning: the start-up warning of auth: false says what
// hagentd --check's note says (config.NoAuthNote).
func TestNoAuthWarning(t *testing.T) {
	key := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(key, []byte(testKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var logBuf bytes.Buffer
	mem := heartbeat.NewMemNetwork()
	a, err := New(Options{Config: noAuthConfig(t, "a", 200, key, ""), Network: &fakeNet{}, WatchLinks: (&fakeLinks{}).watch,
		Logger:    hclog.New(&hclog.LoggerOptions{Output: &logBuf}),
		Links:     []heartbeat.Link{mem.Link("hb", "a", "ha1")},
		SyncLinks: []heartbeat.Link{mem.Link("l2ep", "a", "ha1")},
		SyncRoot:  t.TempDir(), StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = a.Run(ctx)
	if !strings.Contains(logBuf.String(), "HEARTBEAT AUTHENTICATION IS DISABLED: "+config.NoAuthNote) {
		t.Errorf("the log lacks the note:\n%s", logBuf.String())
	}
}

// startSyncAgent starts an agent with cfg on the in-memory segment mem,
// its config sync rooted at root (root/etc/app created), stopped at the
// end of the test.
func startSyncAgent(t *testing.T, mem *heartbeat.MemNetwork, cfg *config.Config, root string) *Agent {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(root, "etc/app"), 0o755); err != nil {
		t.Fatal(err)
	}
	name := cfg.Node.Name
	a, err := New(Options{Config: cfg, Network: &fakeNet{}, WatchLinks: (&fakeLinks{}).watch,
		Links:     []heartbeat.Link{mem.Link("hb", name, "ha1")},
		SyncLinks: []heartbeat.Link{mem.Link("l2ep", name, "ha1")},
		SyncRoot:  root, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = a.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return a
}

// agentStatus returns a's `ha status`.
func agentStatus(t *testing.T, a *Agent) *control.Status {
	t.Helper()
	v, err := a.Handle(control.Request{Cmd: control.CmdStatus})
	if err != nil {
		t.Fatal(err)
	}
	return v.(*control.Status)
}

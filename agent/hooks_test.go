package agent

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// gone reports whether pid no longer runs (absent, or a zombie).
func gone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && (f[0] == "Z" || f[0] == "X")
}

func readPID(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// TestHookTimeoutKillsGroup: at the timeout the hook's whole process group
// is killed, not only /bin/sh: a subshell still running with the hook, and
// a background process the hook left behind when its shell exited, are
// gone when the runner is done with the hook, and the files they would
// have written are not there.
func TestHookTimeoutKillsGroup(t *testing.T) {
	dir := t.TempDir()
	r := newHookRunner(hclog.NewNullLogger(), newHistory(16))
	defer r.close(time.Second)
	for _, tc := range []struct{ name, cmd string }{
		// The shell waits for its child and runs into the timeout.
		{"child", `(sleep 30; touch DIR/child.done) & echo $! > DIR/child.pid; wait`},
		// The shell exits at once; its background child, with its own
		// output, outlives it.
		{"leftover", `(sleep 30; touch DIR/leftover.done) >/dev/null 2>&1 & echo $! > DIR/leftover.pid`},
	} {
		r.exec(hookJob{cmd: strings.ReplaceAll(tc.cmd, "DIR", dir), role: "primary", timeout: 300 * time.Millisecond})
		pid := readPID(t, filepath.Join(dir, tc.name+".pid"))
		if !gone(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Errorf("%s: the hook's child %d still runs after the hook's timeout", tc.name, pid)
		}
	}
	evs := r.hist.list()
	if len(evs) != 2 || !strings.Contains(evs[0].Reason, "timed out") || !strings.Contains(evs[1].Reason, "background processes were killed") {
		t.Errorf("history: %+v", evs)
	}
}

// TestHookEnvironment: a hook's environment is PATH, the HAGENT_
// variables and what hooks.env names, nothing else of hagentd's.
func TestHookEnvironment(t *testing.T) {
	t.Setenv("SECRET_TOKEN", "do-not-leak")
	t.Setenv("LD_PRELOAD", "")
	t.Setenv("PASS_ME", "passed")
	t.Setenv("PATH", "/nonexistent:"+os.Getenv("PATH"))
	dir := t.TempDir()
	r := newHookRunner(hclog.NewNullLogger(), newHistory(16))
	defer r.close(time.Second)
	out := filepath.Join(dir, "env")
	r.exec(hookJob{cmd: "env > " + out, role: "primary", previous: "secondary", reason: "x; $(touch pwned)",
		node: "a", vcluster: 1, check: "nginx", timeout: 5 * time.Second, env: []string{"PASS_ME", "NOT_SET", "PATH", "HAGENT_ROLE"}})
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		k, v, _ := strings.Cut(l, "=")
		got[k] = v
	}
	// What /bin/sh itself exports.
	for _, k := range []string{"PWD", "OLDPWD", "SHLVL", "_"} {
		delete(got, k)
	}
	want := map[string]string{"PATH": hookPATH, "HAGENT_ROLE": "primary", "HAGENT_PREVIOUS_ROLE": "secondary",
		"HAGENT_REASON": "x; $(touch pwned)", "HAGENT_NODE": "a", "HAGENT_VCLUSTER": "1", "HAGENT_CHECK": "nginx", "PASS_ME": "passed"}
	var keys []string
	for k := range got {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if len(got) != len(want) {
		t.Errorf("hook environment has %v, want exactly %d variables", keys, len(want))
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s=%q, want %q", k, got[k], v)
		}
	}
}

package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheck: hagentd --check exits 2 naming file, line and key for a weak
// trust setup (no key with auth: false and sync or session pickup on, a
// loose or short key file, a sync path over the node's own files), and
// after "ok" prints what auth: false and the key mean. A daemon start
// refuses the same configurations before touching anything.
func TestCheck(t *testing.T) {
	dir := t.TempDir()
	state, runDir := filepath.Join(dir, "state"), filepath.Join(dir, "run")
	key := filepath.Join(dir, "key")
	if err := os.WriteFile(key, []byte("0123456789abcdef0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	loose := filepath.Join(dir, "loose")
	if err := os.WriteFile(loose, []byte("0123456789abcdef0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(loose, 0o644); err != nil {
		t.Fatal(err)
	}
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(short, []byte("abc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	const head = "node: {name: a, serial: SN-A}\ncluster:\n"
	const noAuth = "heartbeats are not authenticated; anyone on a heartbeat segment can forge a member, win the election and take the cluster addresses"
	const keyRoot = "the key in cluster.password_file is root on every member: whoever holds it can push files under sync.paths, hook commands"
	tests := []struct {
		name, body string
		code       int
		want, not  []string // in the output, whitespace-normalized; FILE is the config path
	}{
		{"auth off without key", "  auth: false\n  hbdev: [{name: ha1}]\n", 2,
			[]string{"FILE:3: cluster.auth: false without password_file: config sync would accept files and hook commands from anyone on the heartbeat segment"}, nil},
		{"auth off, session pickup without key", "  auth: false\n  hbdev: [{name: ha1}]\n  sync: {enabled: false}\n  session_pickup: {enabled: true}\n", 2,
			[]string{"FILE:3: cluster.auth: false without password_file: session pickup would accept connection-tracking entries"}, nil},
		{"loose key", "  password_file: " + loose + "\n  hbdev: [{name: ha1}]\n", 2,
			[]string{"FILE:3: cluster.password_file: " + loose + " has mode 0644", "chmod 600 " + loose}, nil},
		{"short key", "  password_file: " + short + "\n  hbdev: [{name: ha1}]\n", 2,
			[]string{"FILE:3: cluster.password_file: password file " + short + " holds 3 bytes, fewer than 16; make a good key with: (umask 077; head -c 32 /dev/urandom | base64 > " + short + ")"}, nil},
		{"sync path over all of them", "  password_file: " + key + "\n  hbdev: [{name: ha1}]\n  sync: {paths: [" + dir + "]}\n", 2,
			[]string{"FILE:5: cluster.sync.paths[0]: " + dir + " covers the configuration file FILE"}, nil},
		{"sync path inside the state dir", "  password_file: " + key + "\n  hbdev: [{name: ha1}]\n  sync: {paths: [" + state + "/x]}\n", 2,
			[]string{"FILE:5: cluster.sync.paths[0]: " + state + "/x covers the state directory " + state}, nil},
		{"sync path over the run dir", "  password_file: " + key + "\n  hbdev: [{name: ha1}]\n  sync: {paths: [" + runDir + "]}\n", 2,
			[]string{"FILE:5: cluster.sync.paths[0]: " + runDir + " covers the runtime directory " + runDir}, nil},
		{"auth off with a key", "  auth: false\n  password_file: " + key + "\n  hbdev: [{name: ha1}]\n", 0,
			[]string{"ok", "note: cluster.auth is false: " + noAuth, "config sync and session pickup still use the key in password_file", keyRoot}, nil},
		{"auth on", "  password_file: " + key + "\n  hbdev: [{name: ha1}]\n", 0,
			[]string{"ok", keyRoot}, []string{"cluster.auth is false"}},
		{"auth on, no channel", "  password_file: " + key + "\n  hbdev: [{name: ha1}]\n  sync: {enabled: false}\n", 0,
			[]string{"ok"}, []string{"note:"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, "c"+string(rune('a'+i))+".yaml")
			if err := os.WriteFile(path, []byte(head+tt.body), 0o600); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			code := run([]string{"-c", path, "--check", "--state-dir", state, "--run-dir", runDir}, &stdout, &stderr)
			out := strings.Join(strings.Fields(stdout.String()+stderr.String()), " ")
			if code != tt.code {
				t.Errorf("exit %d, want %d\n%s%s", code, tt.code, stdout.String(), stderr.String())
			}
			for _, w := range tt.want {
				if w = strings.ReplaceAll(w, "FILE", path); !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s%s", w, stdout.String(), stderr.String())
				}
			}
			for _, w := range tt.not {
				if strings.Contains(out, w) {
					t.Errorf("output has %q:\n%s%s", w, stdout.String(), stderr.String())
				}
			}
			t.Logf("exit %d\n%s%s", code, stdout.String(), stderr.String())
			if tt.code == 2 && code == 2 {
				if stdout.Len() > 0 {
					t.Errorf("refused, yet stdout has %q", stdout.String())
				}
				// The daemon refuses it too, before anything is touched.
				// (Run only when --check refused: a daemon that got past
				// the load would wait for ha1 forever.)
				stdout.Reset()
				stderr.Reset()
				if code := run([]string{"-c", path, "--state-dir", state, "--run-dir", runDir}, &stdout, &stderr); code != 2 {
					t.Errorf("hagentd without --check: exit %d, want 2\n%s", code, stderr.String())
				}
			}
		})
	}
}

// TestReleaseIgnoresKey: hagentd --release, run after any exit of the
// agent, does not refuse because of the key file (made loose, or
// removed, while the agent ran): it reads only what it puts back. The
// configuration has no data interface, so nothing is touched.
func TestReleaseIgnoresKey(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "key")
	if err := os.WriteFile(key, []byte("0123456789abcdef0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "hagent.yaml")
	if err := os.WriteFile(path, []byte("node: {name: a, serial: SN-A}\ncluster:\n  password_file: "+key+"\n  hbdev: [{name: ha1}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"-c", path, "--check"}, &stdout, &stderr); code != 2 {
		t.Fatalf("--check of a loose key: exit %d, want 2", code)
	}
	stderr.Reset()
	if code := run([]string{"-c", path, "--release", "--run-dir", filepath.Join(dir, "run")}, &stdout, &stderr); code != 0 {
		t.Errorf("--release: exit %d, want 0\n%s", code, stderr.String())
	}
}

//go:build unix

package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// keyConfig is a configuration whose line 3 is password_file: key.
func keyConfig(key string) string {
	return "cluster:\n  group_id: 7\n  password_file: " + key + "\n  hbdev: [{name: ha1}]\n"
}

// writeFile writes data to dir/name with perm (exactly: no umask) and
// returns the path.
func writeFile(t *testing.T, dir, name, data string, perm os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(data), perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, perm); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestKeyFileRules: the key file is refused, like ssh refuses a loose
// private key, unless it is a regular file (not a symbolic link) owned by
// root (or the euid) with no permission for group or others, holding at
// least MinKeyLen bytes; each refusal is a config error at
// FILE:3: cluster.password_file.
func TestKeyFileRules(t *testing.T) {
	withIdentity(t, "box1", testMachineID)
	dir := t.TempDir()
	good := writeFile(t, dir, "good", key16+"\n", 0o600)
	other := writeFile(t, dir, "other", key16+"\n", 0o600)
	chowned := os.Geteuid() == 0
	if chowned {
		if err := os.Chown(other, 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(good, link); err != nil {
		t.Fatal(err)
	}
	linkOther := filepath.Join(dir, "link-other")
	if err := os.Symlink(other, linkOther); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, key, want string // want "" means accepted
		needRoot        bool
	}{
		{name: "0600, 16 bytes", key: good},
		{name: "0400", key: writeFile(t, dir, "ro", key16, 0o400)},
		{name: "0644", key: writeFile(t, dir, "k644", key16+"\n", 0o644), want: "has mode 0644: group or others can read or write the key; like an ssh private key it must be private (chmod 600 "},
		{name: "0640", key: writeFile(t, dir, "k640", key16+"\n", 0o640), want: "has mode 0640: group or others"},
		{name: "0620", key: writeFile(t, dir, "k620", key16+"\n", 0o620), want: "has mode 0620"},
		{name: "0604", key: writeFile(t, dir, "k604", key16+"\n", 0o604), want: "has mode 0604"},
		{name: "other owner", key: other, want: "is owned by uid 65534; the key must be owned by root (chown root: ", needRoot: true},
		{name: "symlink", key: link, want: "is a symbolic link; point password_file at the key file itself"},
		{name: "symlink to another owner's key", key: linkOther, want: "is a symbolic link"},
		{name: "fifo", key: fifo, want: "is not a regular file"},
		{name: "short", key: writeFile(t, dir, "short", key16[1:]+"\r\n", 0o600), want: "holds 15 bytes, fewer than 16; make a good key with: (umask 077; head -c 32 /dev/urandom | base64 > "},
		{name: "3 bytes", key: writeFile(t, dir, "abc", "abc\n", 0o600), want: "holds 3 bytes, fewer than 16"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.needRoot && !chowned {
				t.Skip("needs root to chown")
			}
			file := writeFile(t, dir, "c"+string(rune('a'+i))+".yaml", keyConfig(tt.key), 0o600)
			c, err := Load(file)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				if k, err := c.Cluster.ChannelKey(); err != nil || string(k) != key16 {
					t.Errorf("ChannelKey = %q, %v", k, err)
				}
				return
			}
			var es *Errors
			if !errors.As(err, &es) || len(*es) != 1 {
				t.Fatalf("Load: %v; want one *Error", err)
			}
			e := (*es)[0]
			if e.File != file || e.Line != 3 || e.Key != "cluster.password_file" {
				t.Errorf("error at %s:%d %s, want %s:3 cluster.password_file", e.File, e.Line, e.Key, file)
			}
			if !strings.HasPrefix(e.Msg, tt.key+" ") && !strings.HasPrefix(e.Msg, "password file "+tt.key+" ") {
				t.Errorf("message %q does not name %s first", e.Msg, tt.key)
			}
			if !strings.Contains(e.Msg, tt.want) {
				t.Errorf("error:\n%v\nwant it to contain %q", err, tt.want)
			}
			t.Log(err)
			// The runtime reads refuse it too, not only Load.
			cl := Cluster{Auth: true, PasswordFile: tt.key}
			if _, err := cl.Password(); err == nil {
				t.Error("Password accepted it")
			}
			if _, err := cl.ChannelKey(); err == nil {
				t.Error("ChannelKey accepted it")
			}
		})
	}
}

// TestNoAuthNeedsKey: auth: false turns off heartbeat authentication only;
// config sync and session pickup (FGSP included) without a key are
// refused at the auth line, in a file and in a cluster section received
// from a peer.
func TestNoAuthNeedsKey(t *testing.T) {
	const syncWhy = "t.yaml:2: cluster.auth: false without password_file: config sync would accept files and hook commands from anyone on the heartbeat segment"
	const sessWhy = "t.yaml:2: cluster.auth: false without password_file: session pickup would accept connection-tracking entries from anyone on the heartbeat segment"
	tests := []struct {
		name, yaml string
		want       []string // nil: accepted
	}{
		{"sync by default", "cluster:\n  auth: false\n  hbdev: [{name: ha1}]\n  hooks: {primary: \"touch /tmp/owned\"}\n", []string{syncWhy}},
		{"sync explicit", "cluster:\n  auth: false\n  hbdev: [{name: ha1}]\n  sync: {enabled: true, paths: [/etc/app]}\n", []string{syncWhy}},
		{"session pickup", "cluster:\n  auth: false\n  hbdev: [{name: ha1}]\n  sync: {enabled: false}\n  session_pickup: {enabled: true}\n", []string{sessWhy}},
		{"fgsp sessions", "cluster:\n  auth: false\n  mode: fgsp\n  hbdev: [{name: ha1}]\n  sync: {enabled: false}\n  session_pickup: {enabled: true}\n", []string{sessWhy}},
		{"both", "cluster:\n  auth: false\n  hbdev: [{name: ha1}]\n  session_pickup: {enabled: true}\n", []string{syncWhy, sessWhy}},
		{"neither", "cluster:\n  auth: false\n  hbdev: [{name: ha1}]\n  sync: {enabled: false}\n", nil},
		{"with a key", "cluster:\n  auth: false\n  password_file: /etc/hagent/key\n  hbdev: [{name: ha1}]\n  session_pickup: {enabled: true}\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(tt.yaml))
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			var es *Errors
			if !errors.As(err, &es) || len(*es) != len(tt.want) {
				t.Fatalf("got %v, want %d errors", err, len(tt.want))
			}
			for i, w := range tt.want {
				if got := (*es)[i].Error(); !strings.HasPrefix(got, w) {
					t.Errorf("error %d:\n%s\nwant\n%s", i, got, w)
				}
			}
			t.Log(err)
			// A cluster section pushed by a peer is refused alike.
			section := strings.ReplaceAll(strings.TrimPrefix(tt.yaml, "cluster:\n"), "\n  ", "\n")
			section = strings.TrimPrefix(section, "  ")
			if _, err := ParseCluster("synced", []byte(section)); err == nil || !strings.Contains(err.Error(), "cluster.auth: false without password_file") {
				t.Errorf("ParseCluster of\n%s\naccepted it: %v", section, err)
			}
		})
	}
}

// TestChannelKeyWithoutAuth: with auth: false the heartbeat password is
// nil but the channels still get the key; without a key file they get an
// error, never an empty key.
func TestChannelKeyWithoutAuth(t *testing.T) {
	dir := t.TempDir()
	key := writeFile(t, dir, "key", key16+"\n", 0o600)
	c := Cluster{Auth: false, PasswordFile: key}
	if pw, err := c.Password(); pw != nil || err != nil {
		t.Errorf("Password = %q, %v; want nil, nil with auth off", pw, err)
	}
	if k, err := c.ChannelKey(); err != nil || string(k) != key16 {
		t.Errorf("ChannelKey = %q, %v; want the key", k, err)
	}
	c.PasswordFile = ""
	if k, err := c.ChannelKey(); err == nil || k != nil || !strings.Contains(err.Error(), "do not run without a key") {
		t.Errorf("ChannelKey without a file = %q, %v; want an error", k, err)
	}
	// Load: auth off with a good key and sync on is fine.
	withIdentity(t, "box1", testMachineID)
	file := writeFile(t, dir, "c.yaml", "cluster:\n  auth: false\n  password_file: "+key+"\n  hbdev: [{name: ha1}]\n", 0o600)
	cfg, err := Load(file)
	if err != nil {
		t.Fatal(err)
	}
	if k, err := cfg.Cluster.ChannelKey(); err != nil || string(k) != key16 {
		t.Errorf("loaded: ChannelKey = %q, %v", k, err)
	}
	// ... and a loose key is refused even though auth is off.
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(file); err == nil || !strings.Contains(err.Error(), ":3: cluster.password_file: "+key+" has mode 0644") {
		t.Errorf("loose key with auth off: %v", err)
	}
}

// TestSyncPathsCoverLocal: LoadLocal refuses a sync path that is, contains
// or lies inside the configuration file, the key file, the state
// directory or the runtime directory, written directly or through a
// symbolic link.
func TestSyncPathsCoverLocal(t *testing.T) {
	withIdentity(t, "box1", testMachineID)
	dir := t.TempDir()
	etc := filepath.Join(dir, "etc", "hagent")
	for _, d := range []string{etc, filepath.Join(dir, "etc", "app"), filepath.Join(dir, "state"), filepath.Join(dir, "run")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	key := writeFile(t, etc, "key", key16+"\n", 0o600)
	keyDir := filepath.Join(dir, "keys")
	if err := os.MkdirAll(keyDir, 0o700); err != nil {
		t.Fatal(err)
	}
	key2 := writeFile(t, keyDir, "key", key16+"\n", 0o600)
	link := filepath.Join(dir, "etc", "link")
	if err := os.Symlink(etc, link); err != nil {
		t.Fatal(err)
	}
	local := Local{StateDir: filepath.Join(dir, "state"), RunDir: filepath.Join(dir, "run")}
	cfgPath := filepath.Join(etc, "hagent.yaml")
	tests := []struct {
		name, key, path, want string // want "" means accepted
	}{
		{"other dir", key, filepath.Join(dir, "etc", "app"), ""},
		{"config dir", key, etc, "covers the configuration file " + cfgPath},
		{"config file", key2, cfgPath, "covers the configuration file " + cfgPath},
		{"key file", key, key, "covers the key file (cluster.password_file) " + key},
		{"key dir", key2, keyDir, "covers the key file (cluster.password_file) " + key2},
		{"state dir", key, local.StateDir, "covers the state directory " + local.StateDir},
		{"inside the state dir", key, filepath.Join(local.StateDir, "epoch"), "covers the state directory"},
		{"above the state dir", key2, dir, "covers the configuration file"},
		{"run dir", key, local.RunDir, "covers the runtime directory " + local.RunDir},
		{"through a symlink", key2, link, "covers the configuration file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := "cluster:\n  password_file: " + tt.key + "\n  hbdev: [{name: ha1}]\n  sync:\n    paths: [" + tt.path + "]\n"
			writeFile(t, etc, "hagent.yaml", cfg, 0o600)
			_, err := LoadLocal(cfgPath, local)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("LoadLocal: %v", err)
				}
				return
			}
			want := cfgPath + ":5: cluster.sync.paths[0]: " + filepath.Clean(tt.path) + " " + tt.want
			if err == nil || !strings.HasPrefix(err.Error(), want) {
				t.Fatalf("LoadLocal:\n%v\nwant\n%s...", err, want)
			}
			if !strings.Contains(err.Error(), "config sync would let a peer rewrite it") {
				t.Errorf("no reason given: %v", err)
			}
			t.Log(err)
		})
	}
}

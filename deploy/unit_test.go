package deploy

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hagent/hagent/config"
)

const unitFile = "systemd/hagent.service"

// unit is the [Service] section of a unit file: each key's values in order.
type unit map[string][]string

func parseUnit(t *testing.T, text string) unit {
	t.Helper()
	u := unit{}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if strings.HasPrefix(line, "[") {
			section = line
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("unit line %q has no =", line)
		}
		if section == "[Service]" {
			u[k] = append(u[k], v)
		}
	}
	return u
}

// last is the effective value of a single-valued key.
func (u unit) last(k string) string {
	if v := u[k]; len(v) > 0 {
		return v[len(v)-1]
	}
	return ""
}

// list is a list-valued key (space separated, "-" prefixes stripped).
func (u unit) list(k string) []string {
	var out []string
	for _, v := range u[k] {
		for _, f := range strings.Fields(v) {
			out = append(out, strings.TrimLeft(f, "-+"))
		}
	}
	return out
}

// under reports whether p is dir or inside it.
func under(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

// writable models systemd.exec(5): whether the service may create and
// rename files in directory dir. ProtectSystem=strict makes everything
// read-only but /dev, /proc, /sys, the ReadWritePaths= and the
// State/Runtime/Cache/Logs directories; full makes /usr, /boot, /efi and
// /etc read-only; true (yes) /usr, /boot, /efi. The most specific of
// ReadWritePaths= and ReadOnlyPaths= wins; PrivateTmp gives a writable
// /tmp and /var/tmp.
func (u unit) writable(dir string) bool {
	var ro []string
	switch u.last("ProtectSystem") {
	case "strict":
		ro = []string{"/"}
	case "full":
		ro = []string{"/usr", "/boot", "/efi", "/etc"}
	case "true", "yes":
		ro = []string{"/usr", "/boot", "/efi"}
	}
	ro = append(ro, u.list("ReadOnlyPaths")...)
	rw := u.list("ReadWritePaths")
	for _, d := range u.list("StateDirectory") {
		rw = append(rw, "/var/lib/"+d)
	}
	for _, d := range u.list("RuntimeDirectory") {
		rw = append(rw, "/run/"+d)
	}
	if u.last("PrivateTmp") == "yes" || u.last("PrivateTmp") == "true" {
		rw = append(rw, "/tmp", "/var/tmp")
	}
	best, isRW := -1, true
	for _, d := range ro {
		if under(dir, d) && len(d) > best {
			best, isRW = len(d), false
		}
	}
	for _, d := range rw {
		if under(dir, d) && len(d) >= best {
			best, isRW = len(d), true
		}
	}
	return isRW
}

// syncPaths are the sync paths of the shipped and example configurations.
func syncPaths(t *testing.T) []string {
	t.Helper()
	paths := []string{"/etc/nftables.conf"} // the README's example
	for _, f := range []string{"hagent.yaml", "../config/testdata/example.yaml"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		key := filepath.Join(t.TempDir(), "key")
		if err := os.WriteFile(key, []byte("k-k-k-k-k-k-k-k-k\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		text := strings.ReplaceAll(string(b), "/etc/hagent/key", key)
		cfg, err := config.Parse(f, []byte(text))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		paths = append(paths, cfg.Cluster.Sync.Paths...)
	}
	return paths
}

// unwritable returns the sync paths (and hagentd's state and runtime
// directories) that the service could not write under u.
func (u unit) unwritable(paths []string) []string {
	var bad []string
	for _, p := range paths {
		dir := filepath.Dir(p) // a file is replaced by a rename in its directory
		if !strings.Contains(filepath.Base(p), ".") {
			dir = p // a directory (scripts/) is written inside
		}
		if !u.writable(dir) {
			bad = append(bad, p)
		}
	}
	for _, d := range []string{"/var/lib/hagent", "/run/hagent"} {
		if !u.writable(d) {
			bad = append(bad, d)
		}
	}
	return bad
}

// TestUnitSyncPathsWritable fails if a sync path of the shipped or example
// configuration, or hagentd's state directory, would be read-only under
// the shipped unit — and checks that the model catches ProtectSystem=full
// (issue 9: /etc read-only, sync never applied under systemd).
func TestUnitSyncPathsWritable(t *testing.T) {
	b, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	u := parseUnit(t, string(b))
	paths := syncPaths(t)
	if bad := u.unwritable(paths); len(bad) > 0 {
		t.Fatalf("read-only under %s: %v", unitFile, bad)
	}
	if u.writable("/usr/sbin") || u.writable("/boot") || u.writable("/var/lib/dpkg") {
		t.Fatal("the unit leaves the system writable: /usr, /boot or /var are writable")
	}
	if got := u.last("StateDirectory"); got != "hagent" {
		t.Fatalf("StateDirectory=%q, want hagent (persistent epochs and sync generation)", got)
	}
	for _, tc := range []struct{ name, edit string }{
		{"the unit of before: ProtectSystem=full", strings.Replace(strings.Replace(string(b), "ProtectSystem=strict", "ProtectSystem=full", 1), "ReadWritePaths=/etc", "", 1)},
		{"no ReadWritePaths", strings.Replace(string(b), "ReadWritePaths=/etc", "", 1)},
		{"no StateDirectory", strings.Replace(string(b), "StateDirectory=hagent", "", 1)},
	} {
		if bad := parseUnit(t, tc.edit).unwritable(paths); len(bad) == 0 {
			t.Errorf("%s: the model finds every path writable", tc.name)
		}
	}
	// The flags in ExecStart are the directories the unit creates.
	exec := u.last("ExecStart")
	if !strings.Contains(exec, "--state-dir /var/lib/hagent") || !strings.Contains(exec, "--run-dir /run/hagent") {
		t.Errorf("ExecStart=%s does not pass the unit's directories", exec)
	}
	// After a crash the leftover vMACs go at once, with the permanent MACs
	// of the run directory, which an automatic restart keeps.
	if post := u.last("ExecStopPost"); !strings.Contains(post, "--release") || !strings.Contains(post, "--run-dir /run/hagent") {
		t.Errorf("ExecStopPost=%q, want hagentd --release with the unit's run directory", post)
	}
	if got := u.last("RuntimeDirectoryPreserve"); got != "restart" {
		t.Errorf("RuntimeDirectoryPreserve=%q, want restart (the permanent MACs survive a crash and its restart)", got)
	}
}

// TestUnitVerify runs systemd-analyze verify (Debian's systemd package) on
// the unit, with the binary paths pointed at the built hagentd.
func TestUnitVerify(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed (apt-get install systemd)")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "hagentd")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/hagentd").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	b, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "hagent.service")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(b), "/usr/sbin/hagentd", bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sa, "verify", "--man=no", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	// And it can fail: an unknown key is reported.
	if err := os.WriteFile(path, append(b, []byte("\n[Service]\nProtectSystm=strict\n")...), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, _ := exec.Command(sa, "verify", "--man=no", path).CombinedOutput(); !strings.Contains(string(out), "ProtectSystm") {
		t.Fatalf("a misspelt key passed verify:\n%s", out)
	}
}

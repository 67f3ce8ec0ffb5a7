package deploy

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/hagent/hagent/config"
)

// The Debian package's tests run on the .deb that `make debtest` builds
// and names in HAGENT_DEB; HAGENT_VERSION is the version its binaries
// must print.

// debFiles is the package's file list (dpkg -L), directories left out.
var debFiles = []string{
	"/etc/hagent/hagent.yaml",
	"/lib/systemd/system/hagent.service",
	"/usr/lib/tmpfiles.d/hagent.conf",
	"/usr/sbin/agentctl",
	"/usr/sbin/hagentd",
	"/usr/share/bash-completion/completions/agentctl",
	"/usr/share/doc/hagent/README.md",
	"/usr/share/doc/hagent/changelog.gz",
	"/usr/share/doc/hagent/copyright",
	"/usr/share/man/man5/hagent.yaml.5.gz",
	"/usr/share/man/man8/agentctl.8.gz",
	"/usr/share/man/man8/hagentd.8.gz",
}

// debDirs are directories the package must own.
var debDirs = []string{"/etc/hagent", "/var/lib/hagent"}

func debPath(t *testing.T) string {
	t.Helper()
	deb := os.Getenv("HAGENT_DEB")
	if deb == "" {
		t.Skip("HAGENT_DEB is not set: `make debtest` builds the package and runs these tests")
	}
	if _, err := os.Stat(deb); err != nil {
		t.Fatal(err)
	}
	return deb
}

func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (.ci/run installs it with apt-get)", tool)
		}
	}
}

// run runs a command and returns its combined output; it fails the test
// when the exit status is not want.
func run(t *testing.T, want int, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8", "DEBIAN_FRONTEND=noninteractive")
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if code != want {
		t.Fatalf("%s %s: exit %d, want %d\n%s", name, strings.Join(args, " "), code, want, out)
	}
	return string(out)
}

// lintianErrors runs lintian and returns its error and warning tags.
func lintianErrors(t *testing.T, deb string) (errs, warns []string) {
	t.Helper()
	out, _ := exec.Command("lintian", "--pedantic", "-I", "-E", deb).CombinedOutput()
	for _, l := range strings.Split(string(out), "\n") {
		switch {
		case strings.HasPrefix(l, "E: "):
			errs = append(errs, l)
		case strings.HasPrefix(l, "W: "), strings.HasPrefix(l, "I: "), strings.HasPrefix(l, "P: "):
			warns = append(warns, l)
		}
	}
	return errs, warns
}

// TestDebLintian: lintian reports no error on the package, and does on a
// copy without its copyright file (so the check can fail).
func TestDebLintian(t *testing.T) {
	deb := debPath(t)
	need(t, "lintian", "dpkg-deb")
	errs, warns := lintianErrors(t, deb)
	for _, w := range warns {
		t.Logf("lintian: %s", w)
	}
	if len(errs) > 0 {
		t.Errorf("lintian errors:\n%s", strings.Join(errs, "\n"))
	}

	tree := filepath.Join(t.TempDir(), "tree")
	run(t, 0, "dpkg-deb", "-R", deb, tree)
	if err := os.Remove(filepath.Join(tree, "usr/share/doc/hagent/copyright")); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "bad.deb")
	run(t, 0, "dpkg-deb", "--root-owner-group", "-b", tree, bad)
	errs, _ = lintianErrors(t, bad)
	if !slices.ContainsFunc(errs, func(e string) bool { return strings.Contains(e, "no-copyright-file") }) {
		t.Errorf("lintian found no error in a package without a copyright file: %v", errs)
	}
}

// dpkgRoot is a temporary root that dpkg installs into. The maintainer
// scripts run outside it with DPKG_ROOT set (--force-script-chrootless),
// which they honour: they touch nothing of the running system.
type dpkgRoot struct {
	t    *testing.T
	root string
}

func newDpkgRoot(t *testing.T) *dpkgRoot {
	if os.Geteuid() != 0 {
		t.Skip("installing into a temporary root needs root (dpkg --root); run `sudo make debtest`")
	}
	need(t, "dpkg", "dpkg-deb", "dpkg-query")
	root := t.TempDir()
	admin := filepath.Join(root, "var/lib/dpkg")
	for _, d := range []string{"info", "updates", "triggers"} {
		if err := os.MkdirAll(filepath.Join(admin, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"status", "available"} {
		if err := os.WriteFile(filepath.Join(admin, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return &dpkgRoot{t: t, root: root}
}

func (r *dpkgRoot) dpkg(args ...string) string {
	r.t.Helper()
	args = append([]string{"--root=" + r.root, "--force-script-chrootless", "--log=/dev/null"}, args...)
	return run(r.t, 0, "dpkg", args...)
}

func (r *dpkgRoot) path(p string) string { return filepath.Join(r.root, p) }

func (r *dpkgRoot) read(p string) string {
	r.t.Helper()
	b, err := os.ReadFile(r.path(p))
	if err != nil {
		r.t.Fatal(err)
	}
	return string(b)
}

func (r *dpkgRoot) exists(p string) bool {
	_, err := os.Lstat(r.path(p))
	return err == nil
}

// TestDebInstall installs the package into a temporary root and checks
// the file list, the conffile, the binaries' version, the shipped
// configuration's --check, the man pages' keys, a reinstall and an
// upgrade with a local edit, then remove and purge.
func TestDebInstall(t *testing.T) {
	deb := debPath(t)
	r := newDpkgRoot(t)
	t.Log(r.dpkg("-i", deb))

	// The file list, and the directories the package owns.
	var files []string
	listed := strings.Split(strings.TrimSpace(r.dpkg("-L", "hagent")), "\n")
	for _, f := range listed {
		fi, err := os.Lstat(r.path(f))
		switch {
		case err != nil:
			t.Errorf("dpkg -L lists %s, which is not installed: %v", f, err)
		case !fi.IsDir():
			files = append(files, f)
		}
	}
	slices.Sort(files)
	if !slices.Equal(files, debFiles) {
		t.Errorf("installed files:\n  %s\nwant:\n  %s", strings.Join(files, "\n  "), strings.Join(debFiles, "\n  "))
	}
	for _, d := range debDirs {
		if !slices.Contains(listed, d) {
			t.Errorf("the package does not own %s", d)
		}
	}
	for _, f := range []string{"/usr/sbin/hagentd", "/usr/sbin/agentctl"} {
		if fi, err := os.Stat(r.path(f)); err != nil || fi.Mode().Perm() != 0o755 {
			t.Errorf("%s: mode %v, %v; want 0755", f, fi.Mode(), err)
		}
	}
	conf := run(t, 0, "dpkg-query", "--root="+r.root, "-W", "-f=${Conffiles}", "hagent")
	if !strings.Contains(conf, "/etc/hagent/hagent.yaml ") {
		t.Errorf("conffiles = %q, want /etc/hagent/hagent.yaml", conf)
	}
	if !r.exists("/run/hagent") {
		t.Error("postinst did not make /run/hagent (tmpfiles.d)")
	}

	// Both binaries print the version make built them with.
	for _, bin := range []string{"hagentd", "agentctl"} {
		out := strings.TrimSpace(run(t, 0, r.path("/usr/sbin/"+bin), "--version"))
		want := bin + " " + os.Getenv("HAGENT_VERSION")
		if os.Getenv("HAGENT_VERSION") == "" {
			want = bin + " "
		}
		if !strings.HasPrefix(out, want) || strings.Contains(out, "-dev") {
			t.Errorf("%s --version = %q, want %q", bin, out, want)
		}
	}

	// The unit starts the installed binary.
	unit := r.read("/lib/systemd/system/hagent.service")
	for _, m := range regexp.MustCompile(`(?m)^Exec\w+=[-@:+!]*(\S+)`).FindAllStringSubmatch(unit, -1) {
		if m[1] != "/bin/kill" && !slices.Contains(debFiles, m[1]) {
			t.Errorf("hagent.service runs %s, which the package does not ship", m[1])
		}
	}

	// hagentd --check of the shipped configuration names what is missing.
	shipped := r.path("/etc/hagent/hagent.yaml")
	out := run(t, 2, r.path("/usr/sbin/hagentd"), "-c", shipped, "--check")
	checkMissing(t, out)

	// hagent.yaml(5) lists every key of config.Keys, and no other.
	page := gunzip(t, r.path("/usr/share/man/man5/hagent.yaml.5.gz"))
	entries := regexp.MustCompile(`(?m)^\.TP\n\\fB(.+?)\\fR \(\\fI`).FindAllStringSubmatch(page, -1)
	var got, want []string
	for _, e := range entries {
		got = append(got, strings.ReplaceAll(e[1], `\-`, "-"))
	}
	for _, k := range config.Keys {
		want = append(want, k.Path)
	}
	if !slices.Equal(got, want) {
		t.Errorf("installed hagent.yaml(5) keys:\n%v\nwant config.Keys:\n%v", got, want)
	}
	for _, p := range []string{"man8/hagentd.8.gz", "man8/agentctl.8.gz"} {
		if page := gunzip(t, r.path("/usr/share/man/"+p)); !strings.Contains(page, `\-\-version`) {
			t.Errorf("%s does not document --version", p)
		}
	}

	// A reinstall keeps a local edit of the conffile, and so does an
	// upgrade whose conffile did not change.
	edited := r.read("/etc/hagent/hagent.yaml") + "# local edit\n"
	if err := os.WriteFile(shipped, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	r.dpkg("-i", deb)
	if r.read("/etc/hagent/hagent.yaml") != edited {
		t.Error("a reinstall overwrote the edited conffile")
	}
	r.dpkg("-i", bumpVersion(t, deb, "+upgrade", ""))
	if r.read("/etc/hagent/hagent.yaml") != edited {
		t.Error("an upgrade overwrote the edited conffile")
	}
	if v := run(t, 0, "dpkg-query", "--root="+r.root, "-W", "-f=${Version}", "hagent"); !strings.HasSuffix(v, "+upgrade") {
		t.Errorf("after the upgrade, version %q", v)
	}
	// An upgrade whose conffile changed too: dpkg would ask; as apt's
	// usual answer (confdef, confold) it keeps the edit and puts the
	// package's new file beside it.
	r.dpkg("--force-confdef", "--force-confold", "-i", bumpVersion(t, deb, "+upgrade2", "# new in the package\n"))
	if r.read("/etc/hagent/hagent.yaml") != edited {
		t.Error("an upgrade with a changed conffile overwrote the edited one")
	}
	if !strings.HasSuffix(r.read("/etc/hagent/hagent.yaml.dpkg-dist"), "# new in the package\n") {
		t.Error("the package's new conffile is not in hagent.yaml.dpkg-dist")
	}

	// remove keeps the configuration and the state; purge deletes them.
	state := r.path("/var/lib/hagent/epoch")
	if err := os.WriteFile(state, []byte("7\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(r.path("/etc/hagent/key"), []byte("secret-secret-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r.dpkg("-r", "hagent")
	for _, p := range []string{"/usr/sbin/hagentd", "/lib/systemd/system/hagent.service"} {
		if r.exists(p) {
			t.Errorf("remove left %s", p)
		}
	}
	for _, p := range []string{"/etc/hagent/hagent.yaml", "/etc/hagent/key", "/var/lib/hagent/epoch"} {
		if !r.exists(p) {
			t.Errorf("remove deleted %s", p)
		}
	}
	r.dpkg("-P", "hagent")
	for _, p := range []string{"/etc/hagent", "/var/lib/hagent"} {
		if r.exists(p) {
			t.Errorf("purge left %s", p)
		}
	}
}

// checkMissing checks the --check output of the shipped configuration:
// exactly the two things an unconfigured cluster lacks.
func checkMissing(t *testing.T, out string) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	want := []string{"cluster.password_file: required when auth is true", "cluster.hbdev: at least one hbdev is required"}
	if len(lines) != len(want) {
		t.Errorf("--check of the shipped configuration:\n%s\nwant %d errors: %v", out, len(want), want)
		return
	}
	for i, w := range want {
		if !strings.Contains(lines[i], w) {
			t.Errorf("--check line %d = %q, want %q", i+1, lines[i], w)
		}
	}
}

func gunzip(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(z)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// bumpVersion returns a copy of deb whose version has suffix appended and
// whose /etc/hagent/hagent.yaml has conf appended.
func bumpVersion(t *testing.T, deb, suffix, conf string) string {
	t.Helper()
	tree := filepath.Join(t.TempDir(), "tree")
	run(t, 0, "dpkg-deb", "-R", deb, tree)
	control := filepath.Join(tree, "DEBIAN/control")
	b, err := os.ReadFile(control)
	if err != nil {
		t.Fatal(err)
	}
	b = regexp.MustCompile(`(?m)^(Version: .*)$`).ReplaceAll(b, []byte("${1}"+suffix))
	if err := os.WriteFile(control, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if conf != "" {
		f, err := os.OpenFile(filepath.Join(tree, "etc/hagent/hagent.yaml"), os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteString(conf); err != nil {
			t.Fatal(err)
		}
		f.Close()
		// md5sums lists the conffile; dpkg-deb -b does not check it.
	}
	out := filepath.Join(t.TempDir(), "hagent"+suffix+".deb")
	run(t, 0, "dpkg-deb", "--root-owner-group", "-b", tree, out)
	return out
}

// TestShippedConfig checks the package's /etc/hagent/hagent.yaml without
// installing it: as shipped, --check names what is missing; with its
// cluster: section uncommented (the key pointed at a temporary file), it
// is a valid configuration.
func TestShippedConfig(t *testing.T) {
	b, err := os.ReadFile("deb/hagent.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, err = config.Parse("deb/hagent.yaml", b)
	if err == nil {
		t.Fatal("the shipped configuration is valid as it is; its cluster: must be commented out")
	}
	checkMissing(t, err.Error())

	var lines []string
	in := false
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "# cluster:") {
			in = true
		}
		if in {
			l = strings.TrimPrefix(strings.TrimPrefix(l, "#"), " ")
		}
		lines = append(lines, l)
	}
	if !in {
		t.Fatal("no commented cluster: section")
	}
	key := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(key, []byte("secret-secret-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(strings.Join(lines, "\n"), "/etc/hagent/key", key)
	if _, err := config.Parse("uncommented", []byte(text)); err != nil {
		t.Errorf("the shipped configuration with cluster: uncommented is invalid:\n%v\n%s", err, text)
	}
	if !bytes.Contains(b, []byte("hagent.yaml(5)")) {
		t.Error("the shipped configuration does not point to hagent.yaml(5)")
	}
}

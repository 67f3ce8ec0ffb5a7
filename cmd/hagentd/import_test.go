package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hagent/hagent/internal/kaimport"
)

// TestImportKeepalived: `hagentd import keepalived FILE` prints a
// configuration that `hagentd --check` accepts (with the key file in
// place), and lists on standard error what it left out with the file and
// line; a bad invocation is a usage error (2) and a missing file 1.
func TestImportKeepalived(t *testing.T) {
	dir := t.TempDir()
	var stdout, stderr bytes.Buffer
	fixture := "../../internal/kaimport/testdata/pair.conf"
	if code := run([]string{"import", "keepalived", fixture}, &stdout, &stderr); code != 0 {
		t.Fatalf("import: exit %d, stderr %s", code, stderr.String())
	}
	if want := fixture + ":58: virtual_server: LVS load balancing is out of scope"; !strings.Contains(stderr.String(), want) {
		t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
	}
	key := filepath.Join(dir, "key")
	if err := os.WriteFile(key, []byte("0123456789abcdef0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "hagent.yaml")
	if err := os.WriteFile(path, []byte(strings.Replace(stdout.String(), kaimport.KeyFile, key, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	stdout.Reset()
	stderr.Reset()
	if code := run([]string{"-c", path, "--check", "--state-dir", filepath.Join(dir, "state"), "--run-dir", filepath.Join(dir, "run")}, &stdout, &stderr); code != 0 {
		t.Fatalf("--check of the imported configuration: exit %d\n%s%s", code, stdout.String(), stderr.String())
	}
	if code := run([]string{"import", "vrrpd"}, &stdout, &stderr); code != 2 {
		t.Errorf("import vrrpd: exit %d, want 2", code)
	}
	if code := run([]string{"import", "keepalived", filepath.Join(dir, "absent")}, &stdout, &stderr); code != 1 {
		t.Errorf("import of a missing file: exit %d, want 1", code)
	}
}

package kaimport

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/hagent/hagent/config"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// parseWithKey checks that out is a configuration hagentd --check would
// accept: config.Parse with the password file pointing to a real key.
func parseWithKey(t *testing.T, name, out string) error {
	t.Helper()
	key := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(key, []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := config.Parse(name, []byte(strings.Replace(out, KeyFile, key, 1)))
	return err
}

func notesText(ns []Note) string {
	var b strings.Builder
	for _, n := range ns {
		b.WriteString(n.String() + "\n")
	}
	return b.String()
}

// TestGolden converts the fixtures of testdata/ and compares the YAML
// (NAME.yaml.golden) and the notes (NAME.notes.golden); each YAML must
// pass config validation. go test -update rewrites the goldens.
func TestGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.conf")
	if len(files) < 2 {
		t.Fatalf("fixtures: %v", files)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".conf")
		t.Run(name, func(t *testing.T) {
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			res, err := Convert(string(src))
			got := []byte("error: " + errString(err) + "\n")
			var notes []byte
			if err == nil {
				got, notes = []byte(res.YAML), []byte(notesText(res.Notes))
				if perr := parseWithKey(t, name+".yaml", res.YAML); perr != nil {
					t.Errorf("converted %s does not validate: %v\n%s", f, perr, res.YAML)
				}
			}
			for suffix, data := range map[string][]byte{".yaml.golden": got, ".notes.golden": notes} {
				path := filepath.Join("testdata", name+suffix)
				if err != nil && suffix == ".notes.golden" {
					continue
				}
				if *update {
					if werr := os.WriteFile(path, data, 0o644); werr != nil {
						t.Fatal(werr)
					}
					continue
				}
				want, rerr := os.ReadFile(path)
				if rerr != nil {
					t.Fatalf("%v (go test -update writes it)", rerr)
				}
				if !bytes.Equal(data, want) {
					t.Errorf("%s differs (go test -update rewrites it):\n--- got\n%s--- want\n%s", path, data, want)
				}
			}
		})
	}
}

func errString(err error) string {
	if err == nil {
		return "none"
	}
	return err.Error()
}

// debianSamples is where Debian's keepalived package puts its sample
// configurations; they are read there, not copied (keepalived is GPL).
const debianSamples = "/usr/share/doc/keepalived/samples"

// TestDebianSamples converts every keepalived.conf sample of Debian's
// package: none fails to parse; one with a vrrp_instance gives a
// configuration that validates; one with LVS sections says they are out
// of scope, at each of their lines; every note has a line of the file.
// Skipped when the package is not installed.
func TestDebianSamples(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(debianSamples, "keepalived.conf.*"))
	if len(files) == 0 {
		t.Skipf("no samples in %s (apt-get install keepalived)", debianSamples)
	}
	vrrp := 0
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		res, err := Convert(string(src))
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		lines := strings.Split(string(src), "\n")
		for i, l := range lines {
			w := strings.Fields(l)
			if len(w) > 0 && (w[0] == "virtual_server" || w[0] == "virtual_server_group") && !hasNote(res.Notes, i+1, "out of scope") {
				t.Errorf("%s:%d: %s not reported as out of scope", f, i+1, w[0])
			}
		}
		for _, n := range res.Notes {
			if n.Line < 0 || n.Line > len(lines) || n.Line == 0 && !strings.Contains(n.Msg, "no vrrp_instance") {
				t.Errorf("%s: note without a line of the file: %s", f, n)
			}
		}
		if !strings.Contains(string(src), "vrrp_instance") {
			if !hasNote(res.Notes, 0, "no vrrp_instance") {
				t.Errorf("%s: no instance, and no note saying so", f)
			}
			continue
		}
		vrrp++
		if err := parseWithKey(t, filepath.Base(f), res.YAML); err != nil {
			t.Errorf("%s: converted configuration does not validate: %v\n%s", f, err, res.YAML)
		}
		t.Logf("%s: %d notes", filepath.Base(f), len(res.Notes))
	}
	if vrrp == 0 {
		t.Errorf("no VRRP sample among %d files", len(files))
	}
}

func hasNote(ns []Note, line int, sub string) bool {
	for _, n := range ns {
		if n.Line == line && strings.Contains(n.Msg, sub) {
			return true
		}
	}
	return false
}

// TestParseErrors: unbalanced braces and too deep nesting are errors with
// a line, never a panic.
func TestParseErrors(t *testing.T) {
	for src, want := range map[string]string{
		"a {\n b\n":                      "line 1: a { is never closed",
		"a\n}\n":                         "line 2: } without a block to close",
		strings.Repeat("x {\n", 40):      "nested deeper than 32",
		"s \"unterminated {\n":           "", // the quote ends at the line's end; { inside is a word
		"a { b { c } } # } comment !{\n": "",
	} {
		_, err := Parse(src)
		if got := errString(err); want == "" && err != nil || want != "" && !strings.Contains(got, want) {
			t.Errorf("Parse(%q): %s, want %q", src, got, want)
		}
	}
}

// FuzzParse: Convert never panics, and what it converts without error is
// a configuration whose text parses as YAML (config.Parse may still
// reject a value it did not check, such as an interface name).
func FuzzParse(f *testing.F) {
	for _, p := range []string{"testdata/pair.conf", "testdata/unicast.conf", "testdata/broken.conf"} {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(string(b))
		}
	}
	f.Add("vrrp_instance X { virtual_ipaddress { ::1 dev \"a b\" } priority 300 advert_int 1e9 }")
	f.Add("}{\"!#")
	f.Fuzz(func(t *testing.T, src string) {
		res, err := Convert(src)
		if err != nil {
			return
		}
		var doc map[string]any
		if err := yaml.Unmarshal([]byte(res.YAML), &doc); err != nil {
			t.Fatalf("output of %q is not YAML: %v\n%s", src, err, res.YAML)
		}
	})
}

// TestCheckable: a vrrp_script becomes a cluster.checks item only when a
// check can express it; the others are written commented with a note.
func TestCheckable(t *testing.T) {
	ok := script{name: "chk_web", command: "/usr/bin/curl -fs http://127.0.0.1/", interval: 2 * time.Second, fall: 3, rise: 2}
	for _, tc := range []struct {
		name string
		edit func(*script)
		want bool
	}{
		{"plain", func(*script) {}, true},
		{"name with a space", func(s *script) { s.name = "chk web" }, false},
		{"name too long", func(s *script) { s.name = strings.Repeat("c", 33) }, false},
		{"no script", func(s *script) { s.command = " " }, false},
		{"unbalanced quote", func(s *script) { s.command = `/bin/check "web` }, false},
		{"interval too short", func(s *script) { s.interval = 50 * time.Millisecond }, false},
		{"timeout too long", func(s *script) { s.timeout = 2 * time.Minute }, false},
		{"fall above 100", func(s *script) { s.fall = 101 }, false},
	} {
		s := ok
		tc.edit(&s)
		if why := checkable(&s); (why == "") != tc.want {
			t.Errorf("%s: checkable = %q, want ok %v", tc.name, why, tc.want)
		}
	}
}

// TestNotUTF8Refused: a file with bytes that are not UTF-8 is refused
// naming the line (its command could not be written into hagent.yaml as
// it is; the fuzz seed f733ee72… is the notify command that broke the
// output).
func TestNotUTF8Refused(t *testing.T) {
	_, err := Convert("vrrp_instance VI_1 {\n  notify_backup \"/bin/x\x84\"\n}\n")
	if err == nil || err.Error() != "line 2: not valid UTF-8" {
		t.Fatalf("Convert: %v, want line 2: not valid UTF-8", err)
	}
}

package main

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/hagent/hagent/config"
	"github.com/hagent/hagent/internal/cli"
)

var testPage = page{version: "1.2.3", debVersion: "1.2.3", date: "2026-12-02"}

func gen(name string) string {
	var b strings.Builder
	generators[name](&b, testPage)
	return b.String()
}

// keyLine matches the tag line of a key entry in hagent.yaml(5).
var keyLine = regexp.MustCompile(`^\\fB(.+?)\\fR \(\\fI(.+?)\\fR\)$`)

// pageKeys returns the keys hagent.yaml(5) documents, in page order, with
// the text of each entry.
func pageKeys(t *testing.T, text string) (keys []string, entries map[string]string) {
	t.Helper()
	entries = map[string]string{}
	lines := strings.Split(text, "\n")
	for i := 0; i+1 < len(lines); i++ {
		if lines[i] != ".TP" {
			continue
		}
		m := keyLine.FindStringSubmatch(lines[i+1])
		if m == nil {
			continue
		}
		k := unroff(m[1])
		keys = append(keys, k)
		var body []string
		for j := i + 2; j < len(lines) && !strings.HasPrefix(lines[j], ".TP") && !strings.HasPrefix(lines[j], ".S"); j++ {
			body = append(body, unroff(lines[j]))
		}
		entries[k] = strings.Join(body, " ")
	}
	return keys, entries
}

// TestConfigPageKeys fails when hagent.yaml(5) lacks a key of config.Keys
// (which the config tests hold to the decoder) or lists one it does not
// have, or leaves out a default or a range.
func TestConfigPageKeys(t *testing.T) {
	keys, entries := pageKeys(t, gen("hagent.yaml.5"))
	var want []string
	for _, k := range config.Keys {
		want = append(want, k.Path)
		e, ok := entries[k.Path]
		if !ok {
			continue
		}
		if k.Default != "" && !strings.Contains(e, "Default: "+k.Default+".") {
			t.Errorf("%s: the page does not give the default %s: %q", k.Path, k.Default, e)
		}
		if k.Range != "" && !strings.Contains(e, "Range: "+k.Range+".") {
			t.Errorf("%s: the page does not give the range %s: %q", k.Path, k.Range, e)
		}
		if r := reloadFact(k.Reload); k.Reload != config.ReloadPerKey && (r == "" || !strings.Contains(e, r)) {
			t.Errorf("%s: the page does not say what a reload does (%q): %q", k.Path, k.Reload, e)
		}
	}
	if strings.Join(keys, "\n") != strings.Join(want, "\n") {
		t.Errorf("hagent.yaml(5) keys:\n%s\nwant config.Keys:\n%s", strings.Join(keys, " "), strings.Join(want, " "))
	}
	if len(keys) < 50 {
		t.Errorf("only %d keys found in the page", len(keys))
	}
}

// TestOptionPages checks that every flag of the binaries, and every
// agentctl command, is in the pages.
func TestOptionPages(t *testing.T) {
	for _, tt := range []struct {
		page string
		fs   *flag.FlagSet
	}{{"hagentd.8", hagentdFlags()}, {"agentctl.8", agentctlFlags()}} {
		text := gen(tt.page)
		n := 0
		tt.fs.VisitAll(func(f *flag.Flag) {
			spec, _ := flagSpec(f)
			if !strings.Contains(text, ".TP\n"+spec+"\n") {
				t.Errorf("%s: no entry for -%s (%s)", tt.page, f.Name, spec)
			}
			n++
		})
		if n < 3 {
			t.Errorf("%s: only %d flags", tt.page, n)
		}
		if !strings.Contains(text, `"hagent 1.2.3"`) {
			t.Errorf("%s: no version in the header", tt.page)
		}
	}
	text := gen("agentctl.8")
	for _, c := range cli.AgentctlCommands {
		if !strings.Contains(text, `.TP`+"\n"+`\fBha `+roff(c.Name)+`\fR`) {
			t.Errorf("agentctl.8: no entry for ha %s", c.Name)
		}
	}
	if !strings.Contains(gen("hagentd.8"), `\fB\-\-state\-dir\fR \fIdir\fR`) {
		t.Error("hagentd.8: --state-dir is not written as expected")
	}
}

func TestExampleParses(t *testing.T) {
	if _, err := config.Parse("example", []byte(example)); err != nil {
		t.Fatal(err)
	}
}

// TestManWarnings formats every page as lintian does and fails on any
// warning of groff or man.
func TestManWarnings(t *testing.T) {
	if _, err := exec.LookPath("man"); err != nil {
		t.Skip("man is not installed (apt-get install man-db); the page syntax is not checked")
	}
	dir := t.TempDir()
	if err := write(dir, testPage); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"hagentd.8", "agentctl.8", "hagent.yaml.5"} {
		cmd := exec.Command("man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", filepath.Join(dir, name))
		cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8", "MANROFFSEQ=", "MANWIDTH=80")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil || stderr.Len() > 0 {
			t.Errorf("%s: %v\n%s", name, err, stderr.String())
		}
	}
}

func TestRoff(t *testing.T) {
	for in, want := range map[string]string{
		`a-b`:     `a\-b`,
		`.x`:      `\&.x`,
		`'x`:      `\&'x`,
		`c:\path`: `c:\epath`,
	} {
		if got := roff(in); got != want {
			t.Errorf("roff(%q) = %q, want %q", in, got, want)
		}
		if got := unroff(roff(in)); got != in {
			t.Errorf("unroff(roff(%q)) = %q", in, got)
		}
	}
}

// TestCompletion runs the completion function in bash.
func TestCompletion(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash is not installed")
	}
	script := filepath.Join(t.TempDir(), "agentctl")
	if err := os.WriteFile(script, []byte(gen("agentctl.bash")), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ line, want string }{
		{"agentctl ", "ha"},
		{"agentctl --t", "--timeout"},
		{"agentctl -s /run/x ", "ha"},
		{"agentctl ha ", "checksum exposure failover history sessions status synchronize"},
		{"agentctl ha fa", "failover"},
		{"agentctl -timeout 3s ha failover ", "set unset status --json"},
		{"agentctl ha status -", "--json"},
		{"agentctl ha synchronize ", ""},
	} {
		words := strings.Fields(tt.line)
		if strings.HasSuffix(tt.line, " ") {
			words = append(words, "")
		}
		var quoted []string
		for _, w := range words {
			quoted = append(quoted, "'"+w+"'")
		}
		prog := ". " + script + "\nCOMP_WORDS=(" + strings.Join(quoted, " ") + ")\nCOMP_CWORD=" +
			strconv.Itoa(len(words)-1) + "\n_agentctl\necho \"${COMPREPLY[*]}\"\n"
		out, err := exec.Command(bash, "--norc", "-c", prog).CombinedOutput()
		if err != nil {
			t.Fatalf("%q: %v\n%s", tt.line, err, out)
		}
		if got := strings.TrimSpace(string(out)); got != tt.want {
			t.Errorf("completing %q: got %q, want %q", tt.line, got, tt.want)
		}
	}
}

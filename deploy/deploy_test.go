// Package deploy holds hagent's deployment files: the systemd unit, an
// example configuration, the netns lab script, a containerlab topology and
// the Debian packaging (deb/, built by `make deb`; the man pages come from
// gen/). Its tests check that they stay valid; the package's own tests
// (deb_test.go) run under `make debtest`.
package deploy

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"

	"github.com/hagent/hagent/config"
)

// TestContainerlabSchema validates the topology against containerlab's
// schema, and checks that a broken topology fails (the check can fail).
func TestContainerlabSchema(t *testing.T) {
	c := jsonschema.NewCompiler()
	sch, err := c.Compile("containerlab/clab.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	load := func(text []byte) any {
		var v any
		if err := yaml.Unmarshal(text, &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	topo, err := os.ReadFile("containerlab/hagent.clab.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := sch.Validate(load(topo)); err != nil {
		t.Fatalf("hagent.clab.yml: %v", err)
	}
	bad := strings.Replace(string(topo), "endpoints:", "endpoint:", 1)
	if err := sch.Validate(load([]byte(bad))); err == nil {
		t.Fatal("a topology with a misspelt key validated")
	}
}

// TestConfigs checks the example and lab configurations with the real
// loader (the password file pointed at a temporary key).
func TestConfigs(t *testing.T) {
	key := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(key, []byte("secret-secret-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The lab's key is long enough; its copy is made 0600 root by the
	// topology's cmd (git keeps no owner, and 0644).
	if b, err := os.ReadFile("containerlab/key"); err != nil || len(bytes.TrimRight(b, "\r\n")) < config.MinKeyLen {
		t.Errorf("containerlab/key: %d bytes, %v; want at least %d", len(bytes.TrimRight(b, "\r\n")), err, config.MinKeyLen)
	}
	files, _ := filepath.Glob("containerlab/node-*.yaml")
	files = append(files, "hagent.yaml")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		text := strings.ReplaceAll(string(b), "/etc/hagent/key", key)
		// Load, not Parse: the key file is checked too.
		tmp := filepath.Join(t.TempDir(), filepath.Base(f))
		if err := os.WriteFile(tmp, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Load(tmp)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if len(cfg.Cluster.HBDevs) == 0 || cfg.Node.Name == "" {
			t.Errorf("%s: incomplete: %+v", f, cfg.Node)
		}
	}
}

// TestGrafanaDashboard checks that the dashboard is valid JSON and queries
// only metrics the exporter has (the names in metrics/metrics.go).
func TestGrafanaDashboard(t *testing.T) {
	b, err := os.ReadFile("grafana/hagent-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Targets []struct{ Expr string } `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("../metrics/metrics.go")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`hagent_[a-z0-9_]+`)
	n := 0
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			for _, name := range re.FindAllString(tg.Expr, -1) {
				n++
				base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_count"), "_sum")
				if !strings.Contains(string(src), `"`+base+`"`) {
					t.Errorf("the dashboard queries %s, which the exporter does not have", name)
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("no metric in the dashboard")
	}
}

// TestCloudHook runs the example cloud hook with a logger stand-in: as
// primary it says which API calls it would make, as secondary none.
func TestCloudHook(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "log")
	if err := os.WriteFile(filepath.Join(dir, "logger"), []byte("#!/bin/sh\nshift 2\necho \"$*\" >> "+log+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	run := func(role string) string {
		os.Remove(log)
		cmd := exec.Command("sh", "hooks/cloud-takeover.sh")
		cmd.Env = append(os.Environ(), "PATH="+dir+":"+os.Getenv("PATH"), "HAGENT_ROLE="+role,
			"HAGENT_PREVIOUS_ROLE=secondary", "HAGENT_REASON=test", "HAGENT_NODE=node-b")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", role, err, out)
		}
		b, _ := os.ReadFile(log)
		return string(b)
	}
	if got := run("primary"); !strings.Contains(got, "would call: aws ec2 assign-private-ip-addresses") {
		t.Fatalf("primary: %q", got)
	}
	if got := run("secondary"); strings.Contains(got, "would call") {
		t.Fatalf("secondary: %q", got)
	}
}

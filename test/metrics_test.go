package test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hagent/hagent/test/lab"
)

// scrape GETs /metrics of addr from inside n's namespace.
func scrape(t *testing.T, n *lab.Node, addr string) string {
	t.Helper()
	var conn net.Conn
	if err := lab.InNS(n.NS, func() error {
		var err error
		conn, err = net.DialTimeout("tcp", addr, 2*time.Second)
		return err
	}); err != nil {
		t.Fatalf("scrape %s on %s: %v", addr, n.Name, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "GET /metrics HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", addr)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("scrape: %d %v", resp.StatusCode, err)
	}
	return string(b)
}

// metric returns the value of the sample named exactly line (name and
// labels as exposed), or "" when absent.
func metric(text, series string) string {
	for _, l := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			return v
		}
	}
	return ""
}

// TestMetrics scrapes node-b's endpoint before and after a crash failover,
// checks the exposition with promtool, and checks that node-a without
// metrics_listen has no TCP socket and lists none.
func TestMetrics(t *testing.T) {
	_, a, b := twoNodes(t)
	const addr = "127.0.0.1:9650"
	pb := params(100, false)
	pb.MetricsListen = addr
	start(t, a, params(200, false))
	start(t, b, pb)
	eventually(t, 10*time.Second, "initial election", func() error { return agree("node-a", a, b) })
	before := scrape(t, b, addr)
	if v := metric(before, `hagent_role{role="secondary",vcluster="1"}`); v != "1" {
		t.Fatalf("node-b secondary: hagent_role = %q\n%s", v, before)
	}
	if v := metric(before, `hagent_member_alive{node="node-a",serial="FGVM00001000"}`); v != "1" {
		t.Fatalf("node-a alive: %q", v)
	}

	a.Crash()
	eventually(t, 5*time.Second, "node-b primary", func() error {
		if r := b.Role(); r != "primary" {
			return fmt.Errorf("node-b is %q", r)
		}
		return nil
	})
	after := scrape(t, b, addr)
	for series, want := range map[string]string{
		`hagent_role{role="primary",vcluster="1"}`:                 "1",
		`hagent_role{role="secondary",vcluster="1"}`:               "0",
		`hagent_failovers_total{reason="heartbeat"}`:               "1",
		`hagent_member_alive{node="node-a",serial="FGVM00001000"}`: "0",
		`hagent_takeover_duration_seconds_count`:                   "1",
		`hagent_vmac_held{interface="port1"}`:                      "1",
		`hagent_members{state="lost"}`:                             "1",
		`hagent_health_ok`:                                         "0",
		`hagent_status_error`:                                      "0",
		`hagent_config_sync_enabled`:                               "1",
	} {
		if got := metric(after, series); got != want {
			t.Errorf("after the failover %s = %q, want %s", series, got, want)
		}
	}
	if promtool, err := exec.LookPath("promtool"); err != nil {
		t.Log("promtool not installed (apt-get install prometheus; .ci/run installs it): exposition not linted")
	} else {
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = bytes.NewReader([]byte(after))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
	}
	exp, err := b.Ctl("ha", "exposure")
	if err != nil || !strings.Contains(exp, addr) || !strings.Contains(exp, "Prometheus") {
		t.Errorf("ha exposure on node-b does not list the endpoint: %v\n%s", err, exp)
	}
	if ss, _ := lab.Exec(b.NS, "ss", "-H", "-l", "-n", "-t"); !strings.Contains(ss, addr) {
		t.Errorf("node-b: no TCP listener on %s: %q", addr, ss)
	}
	if err := a.Revive(); err != nil {
		t.Fatal(err)
	}
	start(t, a, params(200, false))
	if ss, _ := lab.Exec(a.NS, "ss", "-H", "-l", "-n", "-t"); strings.TrimSpace(ss) != "" {
		t.Errorf("node-a without metrics_listen listens on TCP: %q", ss)
	}
	if exp, _ := a.Ctl("ha", "exposure"); strings.Contains(exp, "tcp") {
		t.Errorf("node-a's exposure lists a TCP socket:\n%s", exp)
	}
}

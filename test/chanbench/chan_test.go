package chanbench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hagent/hagent/heartbeat"
	"github.com/hagent/hagent/l2chan"
	"github.com/hagent/hagent/test/lab"
)

const (
	ethSync    = 0x8893 // eth_type.l2ep
	ethSession = 0x8892 // eth_type.session
)

// pair is a two-node lab with one veth hbdev (ha1) between them.
func newLab(t *testing.T) *lab.Lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, AF_PACKET); run as root or via make test")
	}
	l, err := lab.New(lab.Spec{Nodes: []string{"node-a", "node-b"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	return l
}

// open starts a channel for node on ha1 in its namespace.
func open(t *testing.T, l *lab.Lab, node string, eth uint16, label string) *l2chan.Channel {
	t.Helper()
	var link heartbeat.Link
	err := lab.InNS(l.Nodes[node].NS, func() (err error) {
		link, err = heartbeat.DialLink("ha1", eth)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg := l2chan.DefaultConfig()
	cfg.Self, cfg.GroupID, cfg.Password, cfg.Label = node, 10, []byte("bench-secret"), label
	cfg.Links = []heartbeat.Link{link}
	cfg.AdmitAll = true // no heartbeats here to admit the peer
	c, err := l2chan.New(cfg)
	if err != nil {
		link.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestChannelEthertypes(t *testing.T) {
	l := newLab(t)
	type inst struct {
		tag  string
		a, b *l2chan.Channel
	}
	insts := []inst{
		{"sync", open(t, l, "node-a", ethSync, "hagent-sync-v1"), open(t, l, "node-b", ethSync, "hagent-sync-v1")},
		{"session", open(t, l, "node-a", ethSession, "hagent-session-v1"), open(t, l, "node-b", ethSession, "hagent-session-v1")},
	}
	const msgs = 50
	errc := make(chan error, 4)
	for _, in := range insts {
		for _, dir := range []struct {
			from *l2chan.Channel
			to   string
		}{{in.a, "node-b"}, {in.b, "node-a"}} {
			go func() {
				for i := 0; i < msgs; i++ {
					m := fmt.Appendf(nil, "%s %d %s", in.tag, i, bytes.Repeat([]byte{'x'}, 5000))
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					err := dir.from.Send(ctx, dir.to, m)
					cancel()
					if err != nil {
						errc <- fmt.Errorf("%s to %s: %w", in.tag, dir.to, err)
						return
					}
				}
				errc <- nil
			}()
		}
	}
	for _, in := range insts {
		for _, c := range []*l2chan.Channel{in.a, in.b} {
			for i := 0; i < msgs; i++ {
				select {
				case m := <-c.Recv():
					if want := fmt.Sprintf("%s %d ", in.tag, i); !strings.HasPrefix(string(m.Data), want) {
						t.Fatalf("%s instance got %.20q, want prefix %q", in.tag, m.Data, want)
					}
				case <-time.After(10 * time.Second):
					t.Fatalf("%s instance: message %d missing", in.tag, i)
				}
			}
		}
	}
	for i := 0; i < 4; i++ {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	for _, in := range insts {
		for _, c := range []*l2chan.Channel{in.a, in.b} {
			st := c.Stats()
			if st.DroppedAuth != 0 || st.DroppedMalformed != 0 || st.DroppedReplay != 0 {
				t.Errorf("%s instance saw foreign frames: %+v", in.tag, st)
			}
		}
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// Run is one measured bulk transfer.
type Run struct {
	Bytes       int64   `json:"bytes"`
	Seconds     float64 `json:"seconds"`
	MBps        float64 `json:"mb_per_s"` // 10^6 bytes per second
	FramesSent  uint64  `json:"frames_sent"`
	FramesPerS  float64 `json:"frames_per_s"`
	Retransmits uint64  `json:"retransmits"`
	RetransPct  float64 `json:"retransmit_pct"`
	CPUSeconds  float64 `json:"cpu_s"`
	CPUPer100MB float64 `json:"cpu_s_per_100mb"`
}

func cpuNow() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

func TestChannelBench(t *testing.T) {
	if os.Getenv("HAGENT_BENCH") == "" {
		t.Skip("set HAGENT_BENCH=1 (make bench)")
	}
	l := newLab(t)
	a := open(t, l, "node-a", ethSync, "hagent-sync-v1")
	b := open(t, l, "node-b", ethSync, "hagent-sync-v1")
	total := int64(envInt("HAGENT_CHAN_BENCH_MB", 256)) << 20
	const msgSize = 16 << 20
	msg := make([]byte, msgSize)
	for i := range msg {
		msg[i] = byte(i * 7)
	}
	// Warm up: learn the epochs and the RTT.
	if err := a.Send(context.Background(), "node-b", []byte("warm up")); err != nil {
		t.Fatal(err)
	}
	<-b.Recv()
	var runs []Run
	for r := 0; r < envInt("HAGENT_CHAN_BENCH_REPS", 3); r++ {
		st0, cpu0, start := a.Stats(), cpuNow(), time.Now()
		n := int(total / msgSize)
		got := make(chan error, 1)
		go func() {
			for i := 0; i < n; i++ {
				m, ok := <-b.Recv()
				if !ok || len(m.Data) != msgSize {
					got <- fmt.Errorf("message %d: %d bytes", i, len(m.Data))
					return
				}
			}
			got <- nil
		}()
		errc := make(chan error, n)
		for i := 0; i < n; i++ { // queued back to back: one stream
			go func() { errc <- a.Send(context.Background(), "node-b", msg) }()
		}
		for i := 0; i < n; i++ {
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
		}
		if err := <-got; err != nil {
			t.Fatal(err)
		}
		d, cpu, st := time.Since(start).Seconds(), cpuNow()-cpu0, a.Stats()
		run := Run{Bytes: total, Seconds: d, MBps: float64(total) / d / 1e6,
			FramesSent: st.FramesSent - st0.FramesSent, Retransmits: st.Retransmits - st0.Retransmits, CPUSeconds: cpu}
		run.FramesPerS = float64(run.FramesSent) / d
		run.RetransPct = 100 * float64(run.Retransmits) / float64(run.FramesSent)
		run.CPUPer100MB = cpu / (float64(total) / 100e6)
		t.Logf("run %d: %d MiB in %.2fs = %.1f MB/s, %.0f frames/s, retransmits %d (%.2f %%), CPU %.2fs (%.2f s per 100 MB)",
			r+1, total>>20, d, run.MBps, run.FramesPerS, run.Retransmits, run.RetransPct, cpu, run.CPUPer100MB)
		runs = append(runs, run)
	}
	writeReport(t, runs, a.Stats(), b.Stats())
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s[len(s)/2]
}

func writeReport(t *testing.T, runs []Run, sa, sb l2chan.Stats) {
	pick := func(f func(Run) float64) float64 {
		var xs []float64
		for _, r := range runs {
			xs = append(xs, f(r))
		}
		return median(xs)
	}
	var md strings.Builder
	fmt.Fprintf(&md, "Channel (l2chan) over a veth hbdev, 1500 MTU, one bulk transfer of %d MiB per run, %d runs (medians):\n\n", runs[0].Bytes>>20, len(runs))
	md.WriteString("| MB/s | frames/s | retransmit % | CPU s per 100 MB (both ends) |\n|---:|---:|---:|---:|\n")
	fmt.Fprintf(&md, "| %.1f | %.0f | %.2f | %.2f |\n",
		pick(func(r Run) float64 { return r.MBps }), pick(func(r Run) float64 { return r.FramesPerS }),
		pick(func(r Run) float64 { return r.RetransPct }), pick(func(r Run) float64 { return r.CPUPer100MB }))
	fmt.Print("\n" + md.String() + "\n")
	t.Logf("sender stats %+v", sa)
	t.Logf("receiver stats %+v", sb)
	out := filepath.Join(lab.RepoRoot(), "bench-results")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	j, _ := json.MarshalIndent(map[string]any{"date": time.Now().UTC().Format(time.RFC3339), "runs": runs}, "", "  ")
	_ = os.WriteFile(filepath.Join(out, "channel.json"), j, 0o644)
	_ = os.WriteFile(filepath.Join(out, "channel.md"), []byte(md.String()), 0o644)
}

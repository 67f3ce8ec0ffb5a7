package bench

import (
	"encoding/json"
	"fmt"
	"html"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Scenario names.
const (
	Crash       = "crash"        // SIGKILL and every link of the primary down
	Graceful    = "graceful"     // SIGTERM to the primary's agent
	FailoverSet = "failover-set" // `agentctl ha failover set` on the primary (hagent only)
	Link        = "link"         // the primary's monitored data link down
	// CrashDirect is Crash over direct heartbeat cables (hagent: hbdev
	// direct: true; keepalived: adverts on the same cable).
	CrashDirect = "crash, direct hb"
	// CrashUnicast is Crash with the heartbeats in UDP across a routed hop
	// (unicast_hb), beside the L2 rows.
	CrashUnicast = "crash, unicast hb"
)

// Sample is one failover as the client saw it. Times are relative to the
// moment the fault was injected.
type Sample struct {
	OutageMs  float64 `json:"outage_ms"` // longest stretch of unanswered probes
	Recovered bool    `json:"recovered"`
	Lost      int     `json:"lost"`
	// Agent-side timings (hagent only; zero when unknown): fault →
	// the new primary's decision, and decision → first gratuitous ARP.
	DecisionMs float64 `json:"decision_ms,omitempty"`
	TakeoverUs int64   `json:"takeover_us,omitempty"`
	// OutageStartMs and OutageEndMs place the outage relative to the fault.
	OutageStartMs float64 `json:"outage_start_ms"`
	OutageEndMs   float64 `json:"outage_end_ms"`
}

// Series is the samples of one system in one row.
type Series struct {
	Samples []Sample `json:"samples"`
	Errors  []string `json:"errors,omitempty"` // repetitions that could not be measured
}

// Outages returns the outages of the recovered samples in ms; a sample
// that never recovered counts as +Inf.
func (s *Series) Outages() []float64 {
	var out []float64
	for _, x := range s.Samples {
		if x.Recovered {
			out = append(out, x.OutageMs)
		} else {
			out = append(out, math.Inf(1))
		}
	}
	return out
}

// Median returns the median outage in ms (NaN without samples).
func (s *Series) Median() float64 { return Median(s.Outages()) }

// Max returns the largest outage in ms (NaN without samples).
func (s *Series) Max() float64 { return Max(s.Outages()) }

// TakeoverUs returns the takeover-path timings reported by the agent.
func (s *Series) TakeoverUs() []float64 {
	var out []float64
	for _, x := range s.Samples {
		if x.TakeoverUs > 0 {
			out = append(out, float64(x.TakeoverUs))
		}
	}
	return out
}

// runs is the number of samples, with the failed repetitions if any.
func (s *Series) runs() string {
	r := fmt.Sprint(len(s.Samples))
	if len(s.Errors) > 0 {
		r += fmt.Sprintf(" (+%d failed)", len(s.Errors))
	}
	return r
}

// Row is one line of the results table: one scenario at one timer setting.
type Row struct {
	Scenario  string        `json:"scenario"`
	Interval  time.Duration `json:"interval_ns"` // hb_interval = advert_int
	Threshold int           `json:"threshold"`   // hagent's hb_lost_threshold
	HAgent    Series        `json:"hagent"`
	// Keepalived is the counterpart at the same interval (nil: none, as
	// for failover-set).
	Keepalived *Series `json:"keepalived,omitempty"`
}

// Label names the row, e.g. "crash 200ms×3".
func (r *Row) Label() string {
	if r.Scenario == Crash || r.Scenario == CrashDirect || r.Scenario == CrashUnicast {
		return fmt.Sprintf("%s %s×%d", r.Scenario, fmtDur(r.Interval), r.Threshold)
	}
	return fmt.Sprintf("%s %s", r.Scenario, fmtDur(r.Interval))
}

// Floor is hagent's detection floor for a crash (hb_interval ×
// hb_lost_threshold); zero for the other scenarios, which have none.
func (r *Row) Floor() time.Duration {
	if r.Scenario != Crash {
		return 0
	}
	return r.Interval * time.Duration(r.Threshold)
}

// Ratio is hagent's median outage over keepalived's (NaN without a
// counterpart).
func (r *Row) Ratio() float64 {
	if r.Keepalived == nil {
		return math.NaN()
	}
	return r.HAgent.Median() / r.Keepalived.Median()
}

// FloorRatio is hagent's median crash outage over the detection floor.
func (r *Row) FloorRatio() float64 {
	f := r.Floor()
	if f == 0 {
		return math.NaN()
	}
	return r.HAgent.Median() / ms(f)
}

// Goal is one target of issue 6 and whether the benchmark reached it.
type Goal struct {
	Name   string `json:"name"`
	Target string `json:"target"`
	Value  string `json:"value"`
	// Status is PASS, MISS or NOT RUN.
	Status string `json:"status"`
}

// Resource is one process group's footprint at the idle setting.
type Resource struct {
	System  string  `json:"system"` // hagent or keepalived
	Node    string  `json:"node"`
	Role    string  `json:"role"`
	PIDs    []int   `json:"pids"`
	RSSKB   int64   `json:"rss_kb"`      // VmRSS summed over the processes
	CPUPct  float64 `json:"cpu_percent"` // of one core over the window
	Window  float64 `json:"window_s"`
	Setting string  `json:"setting"`
}

// Report is everything a benchmark run produced.
type Report struct {
	Started   time.Time  `json:"started"`
	Duration  float64    `json:"duration_s"`
	Host      string     `json:"host"`
	CPUs      int        `json:"cpus"`
	Quick     bool       `json:"quick"`
	ProbeMs   float64    `json:"probe_interval_ms"`
	Rows      []*Row     `json:"rows"`
	Goals     []Goal     `json:"goals"`
	Resources []Resource `json:"resources"`
	Notes     []string   `json:"notes,omitempty"`
}

// Median returns the median of xs (NaN when empty).
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// Max returns the largest of xs (NaN when empty).
func Max(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	m := xs[0]
	for _, x := range xs[1:] {
		if x > m {
			m = x
		}
	}
	return m
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func fmtDur(d time.Duration) string {
	if d >= time.Second && d%time.Second == 0 {
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return fmt.Sprintf("%gms", ms(d))
}

func fmtMs(x float64) string {
	switch {
	case math.IsNaN(x):
		return "–"
	case math.IsInf(x, 1):
		return "no recovery"
	case x < 10:
		return fmt.Sprintf("%.1f ms", x)
	default:
		return fmt.Sprintf("%.0f ms", x)
	}
}

func fmtRatio(x float64) string {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return "–"
	}
	return fmt.Sprintf("%.2f", x)
}

func fmtUs(xs []float64) string {
	if len(xs) == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f / %.0f µs", Median(xs), Max(xs))
}

// Markdown renders the report: the outage table, the goals, the resources.
func (r *Report) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# hagent failover benchmark\n\n")
	fmt.Fprintf(&b, "%s on %s (%d CPUs), %.0f s, client probe every %g ms", r.Started.Format(time.RFC3339), r.Host, r.CPUs, r.Duration, r.ProbeMs)
	if r.Quick {
		b.WriteString(", QUICK mode (reduced repetitions: not valid for the goals)")
	}
	b.WriteString(".\nRuns: hagent/keepalived repetitions measured (failed ones: see results.json). Outage: longest stretch of unanswered probes. Ratio: hagent median / keepalived median. Floor: hb_interval × hb_lost_threshold (crash only).\n\n")
	b.WriteString("| scenario | interval×threshold | runs | hagent median | hagent max | keepalived median | keepalived max | ratio | floor | ratio to floor | takeover path median / max |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, row := range r.Rows {
		thr := fmtDur(row.Interval)
		if row.Threshold > 0 {
			thr += fmt.Sprintf("×%d", row.Threshold)
		}
		km, kx, runs := "–", "–", row.HAgent.runs()
		if row.Keepalived != nil {
			km, kx = fmtMs(row.Keepalived.Median()), fmtMs(row.Keepalived.Max())
			runs += "/" + row.Keepalived.runs()
		}
		floor := "–"
		if f := row.Floor(); f > 0 {
			floor = fmtMs(ms(f))
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			row.Scenario, thr, runs, fmtMs(row.HAgent.Median()), fmtMs(row.HAgent.Max()), km, kx,
			fmtRatio(row.Ratio()), floor, fmtRatio(row.FloorRatio()), fmtUs(row.HAgent.TakeoverUs()))
	}
	if len(r.Goals) > 0 {
		b.WriteString("\n## Goals (issue 6)\n\n| goal | target | measured | status |\n|---|---|---|---|\n")
		for _, g := range r.Goals {
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", g.Name, g.Target, g.Value, g.Status)
		}
	}
	if len(r.Resources) > 0 {
		b.WriteString("\n## Resources (idle cluster)\n\n| system | node | role | setting | pids | RSS | CPU (one core) |\n|---|---|---|---|---|---|---|\n")
		for _, x := range r.Resources {
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %v | %.1f MB | %.3f %% over %.0f s |\n",
				x.System, x.Node, x.Role, x.Setting, x.PIDs, float64(x.RSSKB)/1024, x.CPUPct, x.Window)
		}
	}
	if len(r.Notes) > 0 {
		b.WriteString("\n## Notes\n\n")
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	return b.String()
}

// SVG writes a chart of the outages: one line per row with hagent's and
// keepalived's median as bars and their maximum as a tick, on a log scale,
// and the detection floor as a grey mark.
func (r *Report) SVG(w io.Writer) error {
	const (
		left, right, top, rowH, barH = 190.0, 30.0, 50.0, 34.0, 11.0
		width                        = 960.0
		lo, hi                       = 0.5, 20000.0 // ms
	)
	plotW := width - left - right
	height := top + rowH*float64(len(r.Rows)) + 40
	x := func(v float64) float64 {
		if math.IsNaN(v) {
			return left
		}
		if math.IsInf(v, 1) || v > hi {
			v = hi
		}
		if v < lo {
			v = lo
		}
		return left + plotW*math.Log10(v/lo)/math.Log10(hi/lo)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%.0f" y="20" font-size="15" font-weight="bold">Failover outage seen by the client (ms, log scale; bar = median, tick = max)</text>`+"\n", left)
	fmt.Fprintf(&b, `<rect x="%.0f" y="28" width="12" height="10" fill="#1f77b4"/><text x="%.0f" y="37">hagent</text>`+"\n", left, left+16)
	fmt.Fprintf(&b, `<rect x="%.0f" y="28" width="12" height="10" fill="#ff7f0e"/><text x="%.0f" y="37">keepalived</text>`+"\n", left+80, left+96)
	fmt.Fprintf(&b, `<rect x="%.0f" y="28" width="3" height="10" fill="#888"/><text x="%.0f" y="37">detection floor</text>`+"\n", left+190, left+198)
	bottom := top + rowH*float64(len(r.Rows))
	for _, g := range []float64{1, 10, 100, 1000, 10000} {
		gx := x(g)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#ddd"/>`+"\n", gx, top-4, gx, bottom)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle" fill="#555">%g</text>`+"\n", gx, bottom+16, g)
	}
	for i, row := range r.Rows {
		y := top + rowH*float64(i)
		fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end">%s</text>`+"\n", left-8, y+rowH/2+4, html.EscapeString(row.Label()))
		bar := func(s *Series, yy float64, color string) {
			med, mx := s.Median(), s.Max()
			if math.IsNaN(med) {
				return
			}
			fmt.Fprintf(&b, `<rect x="%.0f" y="%.1f" width="%.1f" height="%.0f" fill="%s"><title>%s: median %s, max %s</title></rect>`+"\n",
				left, yy, x(med)-left, barH, color, html.EscapeString(row.Label()), fmtMs(med), fmtMs(mx))
			fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2"/>`+"\n", x(mx), yy-2, x(mx), yy+barH+2, color)
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="10" fill="#333">%s</text>`+"\n", x(mx)+4, yy+barH-1, fmtMs(med))
		}
		bar(&row.HAgent, y+4, "#1f77b4")
		if row.Keepalived != nil {
			bar(row.Keepalived, y+4+barH+2, "#ff7f0e")
		}
		if f := row.Floor(); f > 0 {
			fx := x(ms(f))
			fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#888" stroke-width="3"/>`+"\n", fx, y+2, fx, y+rowH-4)
		}
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// Write stores results.md, results.json and outages.svg in dir.
func (r *Report) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte(r.Markdown()), 0o644); err != nil {
		return err
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(js, '\n'), 0o644); err != nil {
		return err
	}
	var svg strings.Builder
	if err := r.SVG(&svg); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "outages.svg"), []byte(svg.String()), 0o644)
}

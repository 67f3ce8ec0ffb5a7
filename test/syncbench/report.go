package syncbench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Latency is the change-to-applied latency of one system.
type Latency struct {
	System  string    `json:"system"`
	How     string    `json:"how"`        // what one sample measures
	Samples []float64 `json:"samples_ms"` // in the order taken
	Errors  []string  `json:"errors,omitempty"`
}

// P50 returns the median latency in ms.
func (l *Latency) P50() float64 { return Percentile(l.Samples, 50) }

// P99 returns the 99th percentile latency in ms.
func (l *Latency) P99() float64 { return Percentile(l.Samples, 99) }

// Max returns the largest latency in ms.
func (l *Latency) Max() float64 { return Percentile(l.Samples, 100) }

// FullSync is the full-tree transfer of one system.
type FullSync struct {
	System string    `json:"system"`
	How    string    `json:"how"`
	RunsS  []float64 `json:"runs_s"` // seconds per repetition
	Errors []string  `json:"errors,omitempty"`
}

// Median returns the median duration in seconds.
func (f *FullSync) Median() float64 { return Percentile(f.RunsS, 50) }

// Report is the whole benchmark result.
type Report struct {
	Date    string     `json:"date"`
	Host    string     `json:"host"`
	Files   int        `json:"files"`
	Bytes   int64      `json:"bytes"`
	Changes int        `json:"changes"`
	Latency []Latency  `json:"latency"`
	Full    []FullSync `json:"full_sync"`
	Notes   []string   `json:"notes,omitempty"`
}

// Percentile returns the p-th percentile (nearest rank, p in 0..100) of xs,
// NaN for no samples.
func Percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	rank = min(max(rank, 1), len(s))
	return s[rank-1]
}

// ratio returns x/base formatted as "3.2×", "–" when undefined.
func ratio(x, base float64) string {
	if base <= 0 || math.IsNaN(x) || math.IsNaN(base) || math.IsInf(x, 0) {
		return "–"
	}
	return fmt.Sprintf("%.2f×", x/base)
}

func num(x float64, format string) string {
	if math.IsNaN(x) {
		return "–"
	}
	return fmt.Sprintf(format, x)
}

// Markdown writes the tables. Ratios are the system's figure divided by
// hagent's (the first entry of each table): above 1, hagent is faster.
func (r *Report) Markdown(w io.Writer) {
	fmt.Fprintf(w, "# Configuration sync benchmark\n\n%s, %s\n\n", r.Date, r.Host)
	fmt.Fprintf(w, "## Change-to-applied latency, one small file, %d changes\n\n", r.Changes)
	fmt.Fprintln(w, "| system | p50 | p99 | max | p50 ÷ hagent | p99 ÷ hagent | samples |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|")
	var base *Latency
	for i := range r.Latency {
		l := &r.Latency[i]
		if i == 0 {
			base = l
		}
		n := fmt.Sprint(len(l.Samples))
		if len(l.Errors) > 0 {
			n += fmt.Sprintf(" (+%d failed)", len(l.Errors))
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s |\n", l.System,
			num(l.P50(), "%.1f ms"), num(l.P99(), "%.1f ms"), num(l.Max(), "%.1f ms"),
			ratio(l.P50(), base.P50()), ratio(l.P99(), base.P99()), n)
	}
	fmt.Fprintf(w, "\n## Full sync, %d files / %.0f MiB onto an empty directory\n\n", r.Files, float64(r.Bytes)/(1<<20))
	fmt.Fprintln(w, "| system | median time | throughput | files/s | time ÷ hagent | runs |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---|")
	var fbase *FullSync
	for i := range r.Full {
		f := &r.Full[i]
		if i == 0 {
			fbase = f
		}
		med := f.Median()
		runs := make([]string, len(f.RunsS))
		for j, x := range f.RunsS {
			runs[j] = fmt.Sprintf("%.2f", x)
		}
		rs := strings.Join(runs, ", ") + " s"
		if len(f.Errors) > 0 {
			rs += fmt.Sprintf(" (+%d failed)", len(f.Errors))
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", f.System, num(med, "%.2f s"),
			num(float64(r.Bytes)/(1<<20)/med, "%.1f MiB/s"), num(float64(r.Files)/med, "%.0f"),
			ratio(med, fbase.Median()), rs)
	}
	fmt.Fprintln(w, "\nWhat each row measures:")
	fmt.Fprintln(w)
	for _, l := range r.Latency {
		fmt.Fprintf(w, "- latency, %s: %s\n", l.System, l.How)
	}
	for _, f := range r.Full {
		fmt.Fprintf(w, "- full sync, %s: %s\n", f.System, f.How)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "- %s\n", n)
	}
	for _, l := range r.Latency {
		for _, e := range l.Errors {
			fmt.Fprintf(w, "- error, %s: %s\n", l.System, e)
		}
	}
	for _, f := range r.Full {
		for _, e := range f.Errors {
			fmt.Fprintf(w, "- error, %s: %s\n", f.System, e)
		}
	}
}

// Write writes sync.md and sync.json into dir.
func (r *Report) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var md strings.Builder
	r.Markdown(&md)
	if err := os.WriteFile(filepath.Join(dir, "sync.md"), []byte(md.String()), 0o644); err != nil {
		return err
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "sync.json"), append(js, '\n'), 0o644)
}

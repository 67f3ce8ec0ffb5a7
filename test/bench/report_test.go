package bench

import (
	"encoding/json"
	"encoding/xml"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestStats(t *testing.T) {
	for _, tc := range []struct {
		name     string
		in       []float64
		med, max float64
	}{
		{"empty", nil, math.NaN(), math.NaN()},
		{"one", []float64{3}, 3, 3},
		{"odd", []float64{5, 1, 3}, 3, 5},
		{"even", []float64{4, 1, 3, 2}, 2.5, 4},
		{"inf", []float64{1, math.Inf(1), 2}, 2, math.Inf(1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			same := func(a, b float64) bool { return a == b || (math.IsNaN(a) && math.IsNaN(b)) }
			if m := Median(tc.in); !same(m, tc.med) {
				t.Errorf("Median = %v, want %v", m, tc.med)
			}
			if m := Max(tc.in); !same(m, tc.max) {
				t.Errorf("Max = %v, want %v", m, tc.max)
			}
		})
	}
}

func sampleReport() *Report {
	s := func(out ...float64) Series {
		var x Series
		for _, o := range out {
			x.Samples = append(x.Samples, Sample{OutageMs: o, Recovered: true, TakeoverUs: 800})
		}
		return x
	}
	ka := s(700, 680, 720)
	return &Report{
		Started: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Host: "h", CPUs: 2, ProbeMs: 1,
		Rows: []*Row{
			{Scenario: Crash, Interval: 200 * time.Millisecond, Threshold: 3, HAgent: s(650, 610, 640), Keepalived: &ka},
			{Scenario: FailoverSet, Interval: 10 * time.Millisecond, HAgent: s(0, 1, 0)},
		},
		Goals:     []Goal{{Name: "g", Target: "< 1", Value: "2", Status: "MISS"}},
		Resources: []Resource{{System: "hagent", Node: "node-a", RSSKB: 10240, CPUPct: 0.1, Window: 20}},
	}
}

func TestRowFigures(t *testing.T) {
	r := sampleReport()
	crash := r.Rows[0]
	if got := crash.Label(); got != "crash 200ms×3" {
		t.Errorf("Label = %q", got)
	}
	if got := crash.Floor(); got != 600*time.Millisecond {
		t.Errorf("Floor = %v", got)
	}
	if got := crash.Ratio(); math.Abs(got-640.0/700) > 1e-9 {
		t.Errorf("Ratio = %v", got)
	}
	if got := crash.FloorRatio(); math.Abs(got-640.0/600) > 1e-9 {
		t.Errorf("FloorRatio = %v", got)
	}
	fs := r.Rows[1]
	if fs.Floor() != 0 || !math.IsNaN(fs.Ratio()) || !math.IsNaN(fs.FloorRatio()) {
		t.Errorf("failover-set row: floor %v ratio %v floor ratio %v", fs.Floor(), fs.Ratio(), fs.FloorRatio())
	}
	unrec := Series{Samples: []Sample{{OutageMs: 5, Recovered: false}}}
	if !math.IsInf(unrec.Max(), 1) {
		t.Errorf("an unrecovered sample must count as infinite, got %v", unrec.Max())
	}
}

func TestMarkdown(t *testing.T) {
	md := sampleReport().Markdown()
	for _, want := range []string{
		"| crash | 200ms×3 | 3/3 | 640 ms | 650 ms | 700 ms | 720 ms | 0.91 | 600 ms | 1.07 | 800 / 800 µs |",
		"| failover-set | 10ms | 3 | 0.0 ms | 1.0 ms | – | – | – | – | – | 800 / 800 µs |",
		"| g | < 1 | 2 | MISS |",
		"| hagent | node-a |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	if err := sampleReport().Write(dir); err != nil {
		t.Fatal(err)
	}
	svg, err := os.ReadFile(filepath.Join(dir, "outages.svg"))
	if err != nil {
		t.Fatal(err)
	}
	// Well-formed XML with one bar per series (3 series) plus 3 legend boxes
	// and the background.
	dec := xml.NewDecoder(strings.NewReader(string(svg)))
	rects := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			if err.Error() != "EOF" {
				t.Fatalf("svg is not well-formed: %v", err)
			}
			break
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "rect" {
			rects++
		}
	}
	if rects != 1+3+3 {
		t.Errorf("svg has %d rects, want 7", rects)
	}
	js, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Rows) != 2 || back.Rows[0].Keepalived == nil || len(back.Rows[0].HAgent.Samples) != 3 {
		t.Errorf("results.json round trip lost data: %+v", back.Rows)
	}
	if _, err := os.Stat(filepath.Join(dir, "results.md")); err != nil {
		t.Error(err)
	}
}

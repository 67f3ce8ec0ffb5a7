package syncbench

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPercentile(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 3, 10, 9, 8, 7, 6}
	for _, tc := range []struct {
		p    float64
		want float64
	}{
		{0, 1}, {10, 1}, {50, 5}, {51, 6}, {90, 9}, {99, 10}, {100, 10},
	} {
		if got := Percentile(xs, tc.p); got != tc.want {
			t.Errorf("Percentile(p%v) = %v, want %v", tc.p, got, tc.want)
		}
	}
	if !math.IsNaN(Percentile(nil, 50)) {
		t.Error("Percentile of no samples is not NaN")
	}
	if xs[0] != 5 {
		t.Error("Percentile sorted its input in place")
	}
}

func TestReport(t *testing.T) {
	r := &Report{Date: "2026-01-01", Host: "test", Files: 10, Bytes: 10 << 20, Changes: 4,
		Latency: []Latency{
			{System: "hagent", How: "h", Samples: []float64{10, 20, 30, 40}},
			{System: "rsync", How: "r", Samples: []float64{100, 200, 300, 400}, Errors: []string{"boom"}},
		},
		Full: []FullSync{
			{System: "hagent", How: "h", RunsS: []float64{2, 1, 3}},
			{System: "rsync", How: "r", RunsS: []float64{4}},
		},
		Notes: []string{"a note"},
	}
	var b strings.Builder
	r.Markdown(&b)
	md := b.String()
	for _, want := range []string{
		"| hagent | 20.0 ms | 40.0 ms | 40.0 ms | 1.00× | 1.00× | 4 |",
		"| rsync | 200.0 ms | 400.0 ms | 400.0 ms | 10.00× | 10.00× | 4 (+1 failed) |",
		"| hagent | 2.00 s | 5.0 MiB/s | 5 | 1.00× | 2.00, 1.00, 3.00 s |",
		"| rsync | 4.00 s | 2.5 MiB/s | 2 | 2.00× | 4.00 s |",
		"- a note", "- error, rsync: boom",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	dir := t.TempDir()
	if err := r.Write(dir); err != nil {
		t.Fatal(err)
	}
	js, err := os.ReadFile(filepath.Join(dir, "sync.json"))
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatal(err)
	}
	if back.Latency[1].Samples[3] != 400 || back.Full[0].RunsS[2] != 3 {
		t.Fatalf("JSON round trip lost data: %+v", back)
	}
	if _, err := os.Stat(filepath.Join(dir, "sync.md")); err != nil {
		t.Fatal(err)
	}
}

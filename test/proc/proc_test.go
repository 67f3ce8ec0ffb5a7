package proc

import (
	"os"
	"testing"
)

func TestParseStatTicks(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"123 (hagentd) S 1 2 3 4 5 6 7 8 9 10 40 2 0 0", 42, true},
		{"123 (a b) c) R 1 2 3 4 5 6 7 8 9 10 7 3 0 0", 10, true},
		{"123 (x) S 1 2", 0, false},
		{"garbage", 0, false},
	} {
		got, err := parseStatTicks(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseStatTicks(%q) = %d, %v; want %d ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
	if ticks, err := CPUTicks(os.Getpid()); err != nil || ticks < 0 {
		t.Errorf("CPUTicks(self) = %d, %v", ticks, err)
	}
	if rss, err := RSSKB(os.Getpid()); err != nil || rss <= 0 {
		t.Errorf("RSSKB(self) = %d, %v", rss, err)
	}
}

package vmac

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestPollCarrierDebounce drives PollCarrier with a fake sysfs: a flap
// shorter than the debounce is not reported, a longer loss is, after the
// debounce, and the carrier's return at the next sample.
func TestPollCarrierDebounce(t *testing.T) {
	dir := t.TempDir()
	old := sysClassNet
	sysClassNet = dir
	t.Cleanup(func() { sysClassNet = old })
	if err := os.MkdirAll(filepath.Join(dir, "ha1"), 0o755); err != nil {
		t.Fatal(err)
	}
	set := func(v string) {
		if err := os.WriteFile(filepath.Join(dir, "ha1", "carrier"), []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	type ev struct {
		up bool
		at time.Time
	}
	var mu sync.Mutex
	var evs []ev
	got := func() []ev { mu.Lock(); defer mu.Unlock(); return append([]ev(nil), evs...) }
	set("1")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	const debounce = 50 * time.Millisecond
	go func() {
		done <- PollCarrier(ctx, []string{"ha1", "missing0"}, time.Millisecond, debounce, func(name string, up bool) {
			if name == "missing0" {
				if up {
					t.Error("a missing interface reported up")
				}
				return
			}
			mu.Lock()
			evs = append(evs, ev{up, time.Now()})
			mu.Unlock()
		})
	}()
	defer func() { cancel(); <-done }()
	wait := func(n int) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Second)
		for len(got()) < n {
			if time.Now().After(deadline) {
				t.Fatalf("events %v, want %d", got(), n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	wait(1)
	if e := got(); !e[0].up {
		t.Fatalf("first report %v", e)
	}
	// A flap of ~10ms is not reported. The flap's real length is the
	// scheduler's: one that lasted debounce/2 or more (a loaded machine)
	// proves nothing either way, and is made again.
	for try := 0; ; try++ {
		before := len(got())
		t0 := time.Now()
		set("0")
		time.Sleep(10 * time.Millisecond)
		set("1")
		flap := time.Since(t0)
		time.Sleep(3 * debounce)
		if flap >= debounce/2 {
			if try == 20 {
				t.Fatalf("no flap shorter than %v in 20 tries", debounce/2)
			}
			continue
		}
		if e := got(); len(e) != before {
			t.Fatalf("a %v flap was reported (debounce %v): %v", flap.Round(time.Millisecond), debounce, e)
		}
		break
	}
	base := len(got())
	lost := time.Now()
	set("0")
	wait(base + 1)
	if e := got()[base]; e.up || e.at.Sub(lost) < debounce {
		t.Fatalf("loss reported %v after it began (debounce %v): %v", e.at.Sub(lost), debounce, got())
	}
	set("1")
	wait(base + 2)
	if e := got(); !e[base+1].up {
		t.Fatalf("return not reported: %v", e)
	}
}

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
	set("0") // a flap of ~10ms: not reported
	time.Sleep(10 * time.Millisecond)
	set("1")
	time.Sleep(3 * debounce)
	if e := got(); len(e) != 1 {
		t.Fatalf("a 10ms flap was reported (debounce %v): %v", debounce, e)
	}
	lost := time.Now()
	set("0")
	wait(2)
	e := got()
	if e[1].up || e[1].at.Sub(lost) < debounce {
		t.Fatalf("loss reported %v after it began (debounce %v): %v", e[1].at.Sub(lost), debounce, e)
	}
	set("1")
	wait(3)
	if e := got(); !e[2].up {
		t.Fatalf("return not reported: %v", e)
	}
}

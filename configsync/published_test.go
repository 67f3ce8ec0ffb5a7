package configsync

import (
	"reflect"
	"testing"
	"time"

	"github.com/hagent/hagent/internal/testutil"
)

// TestChecksumDoesNotWaitForTheSyncer: the agent reads Checksum and
// Generation for every heartbeat. The syncer holds its mutex across the
// fsync of its state file; on a busy disk that took hundreds of
// milliseconds, every heartbeat waited, and the chaos campaign saw all
// three members declare each other lost at once (issue 14). The values
// must come without the mutex, and still follow every change.
func TestChecksumDoesNotWaitForTheSyncer(t *testing.T) {
	_, a, b := pair(t, 0, func(c *SyncConfig) { c.Period = time.Hour })
	testutil.Eventually(t, 10*time.Second, "initial sync", inSync(a, b))
	gen := a.s.Generation()
	a.write(t, "/etc/nft.conf", "table inet filter {}\n", 0o644)
	testutil.Eventually(t, 10*time.Second, "the change is published", func() bool {
		return a.s.Generation() > gen && a.s.Checksum() == b.s.Checksum()
	})

	a.s.mu.Lock() // a slow fsync under the mutex
	done := make(chan struct{})
	go func() {
		_ = a.s.Checksum()
		_ = a.s.Generation()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Second):
		a.s.mu.Unlock()
		t.Fatal("Checksum/Generation waited for the syncer's mutex")
	}
	a.s.mu.Unlock()
	st := a.s.Status()
	if st.Checksum != a.s.Checksum() || st.Generation != a.s.Generation() {
		t.Errorf("published %x/%d, status %x/%d", a.s.Checksum(), a.s.Generation(), st.Checksum, st.Generation)
	}
}

// TestNotePeerChecksumFastPath: the agent's run goroutine notes every
// heartbeat's checksum. A repeat of an agreeing note must not wait for the
// syncer's mutex; a note that disagrees, or one after the tree changed,
// still takes it.
func TestNotePeerChecksumFastPath(t *testing.T) {
	_, a, b := pair(t, 0, func(c *SyncConfig) { c.Period = time.Hour })
	testutil.Eventually(t, 10*time.Second, "initial sync", inSync(a, b))
	sum, gen := a.s.Checksum(), a.s.Generation()
	a.s.NotePeerChecksum("node-b", sum, gen) // agrees: remembered
	// note reports whether a note returns while the mutex is held; the
	// mutex is released before it returns.
	note := func(sum [32]byte, gen uint64) bool {
		a.s.mu.Lock()
		done := make(chan struct{})
		go func() { a.s.NotePeerChecksum("node-b", sum, gen); close(done) }()
		select {
		case <-done:
			a.s.mu.Unlock()
			return true
		case <-time.After(300 * time.Millisecond):
		}
		a.s.mu.Unlock()
		<-done
		return false
	}
	if !note(sum, gen) {
		t.Fatal("a repeated agreeing note waited for the syncer's mutex")
	}
	other := sum
	other[0] ^= 1
	if note(other, gen) {
		t.Fatal("a disagreeing note did not take the mutex")
	}
	if note(sum, gen) {
		t.Fatal("an agreeing note after a disagreeing one skipped the mutex")
	}
	a.write(t, "/etc/nft.conf", "table inet filter {}\n", 0o644)
	testutil.Eventually(t, 10*time.Second, "the change is published", func() bool { return a.s.Generation() > gen })
	if note(sum, gen) {
		t.Fatal("a note against an older published tree skipped the mutex")
	}
}

// TestManifestCurrent: repairPeer skips its rescan only for a manifest
// from a scan that began after the watcher followed the tree and after
// its last event; a live watcher records a change as an event.
func TestManifestCurrent(t *testing.T) {
	_, a, _ := pair(t, 0)
	testutil.Eventually(t, 5*time.Second, "the watcher follows the tree", func() bool { return a.s.watchSince.Load() != 0 })
	// (A primary that is still catching up keeps its manifest: retry.)
	testutil.Eventually(t, 5*time.Second, "a scan after the watcher started and after its last event is current", func() bool {
		a.s.rescan()
		return a.s.manifestCurrent()
	})
	before := a.s.lastEvent.Load()
	a.write(t, "/etc/app/new.conf", "x", 0o644)
	testutil.Eventually(t, 5*time.Second, "the watcher saw the change", func() bool { return a.s.lastEvent.Load() > before })
	for _, c := range []struct {
		name                        string
		watchSince, lastEvent, from int64
		want                        bool
	}{
		{"no watcher", 0, 1, 10, false},
		{"scan before the watcher started", 5, 1, 4, false},
		{"event after the scan began", 1, 11, 10, false},
		{"scan after the watcher and the last event", 1, 9, 10, true},
		{"manifest not from a scan", 1, 0, 0, false},
	} {
		a.s.scanMu.Lock() // no rescan meanwhile
		a.s.watchSince.Store(c.watchSince)
		a.s.lastEvent.Store(c.lastEvent)
		a.s.mu.Lock()
		a.s.scannedFrom = c.from
		a.s.mu.Unlock()
		if got := a.s.manifestCurrent(); got != c.want {
			t.Errorf("%s: current = %v, want %v", c.name, got, c.want)
		}
		a.s.scanMu.Unlock()
	}
}

// TestSummary: Summary is Status without this node's own path list.
func TestSummary(t *testing.T) {
	_, a, b := pair(t, 0)
	a.write(t, "/etc/app/x.conf", "x", 0o644)
	testutil.Eventually(t, 5*time.Second, "in sync", inSync(a, b))
	full, sum := a.s.Status(), a.s.Summary()
	if len(full.Members[0].Paths) == 0 {
		t.Fatal("Status lists no paths of its own tree")
	}
	if sum.Members[0].Paths != nil {
		t.Errorf("Summary lists %d paths of its own tree", len(sum.Members[0].Paths))
	}
	full.Members[0].Paths = nil
	if !reflect.DeepEqual(full, sum) {
		t.Errorf("Summary differs from Status beyond the path list:\n%+v\n%+v", sum, full)
	}
}

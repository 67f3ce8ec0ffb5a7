package configsync

import (
	"testing"
	"time"
)

// TestChecksumDoesNotWaitForTheSyncer: the agent reads Checksum and
// Generation for every heartbeat. The syncer holds its mutex across the
// fsync of its state file; on a busy disk that took hundreds of
// milliseconds, every heartbeat waited, and the chaos campaign saw all
// three members declare each other lost at once (issue 14). The values
// must come without the mutex, and still follow every change.
func TestChecksumDoesNotWaitForTheSyncer(t *testing.T) {
	_, a, b := pair(t, 0, func(c *SyncConfig) { c.Period = time.Hour })
	eventually(t, 10*time.Second, "initial sync", inSync(a, b))
	gen := a.s.Generation()
	a.write(t, "/etc/nft.conf", "table inet filter {}\n", 0o644)
	eventually(t, 10*time.Second, "the change is published", func() bool {
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
	eventually(t, 10*time.Second, "initial sync", inSync(a, b))
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
	eventually(t, 10*time.Second, "the change is published", func() bool { return a.s.Generation() > gen })
	if note(sum, gen) {
		t.Fatal("a note against an older published tree skipped the mutex")
	}
}

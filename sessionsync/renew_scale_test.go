package sessionsync

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hagent/hagent/heartbeat"
)

// renewTableFlows is the table of the renewal's scale tests: ~1 s of
// renewal at renewRate, far more than the agent's wait covers.
const renewTableFlows = 50000

// loneRenewer is a running primary without peers on a MemTable of
// renewTableFlows TCP flows; its history entries go to events.
func loneRenewer(t *testing.T) (*member, chan string) {
	t.Helper()
	events := make(chan string, 16)
	a := newMember(t, heartbeat.NewMemNetwork(), "node-a", func(c *Config) {
		c.Refresh = time.Hour
		c.Event = func(msg string) {
			if strings.HasPrefix(msg, "test:") {
				events <- msg
			}
		}
	})
	a.e.SetRole(true, nil)
	for i := range renewTableFlows {
		a.table.Put(flowN(ProtoTCP, i))
	}
	return a, events
}

// TestRenewCoversTable: a renewal whose caller stops waiting (the agent
// waits 200 ms, before it announces) goes on in the background until
// every flow of the table is renewed. Control: the same renewal stopped
// at the caller's deadline, as it was, leaves most of the table with its
// old window (at renewRate, 200 ms are ~10 000 flows).
func TestRenewCoversTable(t *testing.T) {
	t.Run("background", func(t *testing.T) {
		a, events := loneRenewer(t)
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		renewed, total, err := a.e.Renew(ctx, "test")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("measured: Renew returned after %v (%d of %d reported)", time.Since(start).Round(time.Millisecond), renewed, total)
		eventually(t, 60*time.Second, func() error {
			if n := a.table.Renewed(); n != renewTableFlows {
				return fmt.Errorf("%d of %d flows renewed", n, renewTableFlows)
			}
			return nil
		})
		msg := <-events
		if want := fmt.Sprintf("%d of %d flows renewed", renewTableFlows, renewTableFlows); !strings.Contains(msg, want) {
			t.Fatalf("history %q, want %q", msg, want)
		}
		if n := a.e.Status().Renewed; n != renewTableFlows {
			t.Fatalf("status renewed %d, want %d", n, renewTableFlows)
		}
		t.Logf("measured: %s (the whole table, %v after the call)", msg, time.Since(start).Round(time.Millisecond))
	})
	t.Run("control: stopped at the deadline", func(t *testing.T) {
		a, events := loneRenewer(t)
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		renewed, total, err := a.e.renewNow(func() bool { return ctx.Err() == nil }, "test", true, a.e.owned)
		if err != nil {
			t.Fatal(err)
		}
		<-events
		// The rate bounds how many a deadline of 200 ms lets through,
		// however fast the table: at most one chunk past 200 ms' worth.
		if limit := renewRate/5 + renewChunk; renewed > limit || a.table.Renewed() != renewed {
			t.Fatalf("the old deadline renewed %d of %d (table %d), want at most %d", renewed, total, a.table.Renewed(), limit)
		}
		t.Logf("measured: the old deadline (200 ms) renewed %d of %d flows", renewed, total)
	})
}

// TestRenewStopsAtRoleChange: a background renewal stops at its next
// chunk when the node lets the role go (its entries are not a primary's
// any more: KeepFlows takes over), and when a newer renewal starts (which
// dumps the table afresh and covers it alone).
func TestRenewStopsAtRoleChange(t *testing.T) {
	for _, c := range []struct {
		name string
		stop func(a *member)
	}{
		{"demotion", func(a *member) { a.e.SetRole(false, nil) }},
		{"newer renewal", func(a *member) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			_, _, _ = a.e.Renew(ctx, "newer")
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			a, events := loneRenewer(t)
			ctx, cancel := context.WithCancel(context.Background())
			cancel() // the caller does not wait
			if _, _, err := a.e.Renew(ctx, "test"); err != nil {
				t.Fatal(err)
			}
			c.stop(a)
			msg := <-events
			if !strings.Contains(msg, "stopped") {
				t.Fatalf("history %q: the renewal was not stopped", msg)
			}
			t.Logf("measured: %s", msg)
		})
	}
}

package sessionsync

import (
	"context"
	"testing"
	"time"
)

// TestKernelRenewBesideBulk: a renewal's dump does not wait for a bulk
// copy's, which holds its dump while it sends (here: a Dump held in its
// callback). At a million flows that wait was the whole bulk copy, a
// minute on the loaded lab machine, with the windows the renewal is for
// stale meanwhile (TestSessionBenchMillion). Renew runs with a 10 s wait:
// behind the held Dump it would return 0 renewed.
func TestKernelRenewBesideBulk(t *testing.T) {
	inNetns(t, func(t *testing.T) {
		k, err := OpenKernel()
		if err != nil {
			t.Fatal(err)
		}
		defer k.Close()
		recs := []Record{{Op: OpUpsert, Flow: tcpFlow(1)}, {Op: OpUpsert, Flow: tcpFlow(2)}, {Op: OpUpsert, Flow: tcpFlow(3)}}
		for i, err := range k.Apply(recs) {
			if err != nil {
				t.Fatalf("record %d: %v", i, err)
			}
		}
		held, release := make(chan struct{}), make(chan struct{})
		bulk := make(chan error, 1)
		go func() {
			first := true
			bulk <- k.Dump(func(*Flow) {
				if first {
					first = false
					close(held)
					<-release
				}
			})
		}()
		<-held
		e := renewEngine(t, k)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		renewed, total, err := e.Renew(ctx, "test")
		close(release)
		if err != nil || renewed != 3 || total != 3 {
			t.Fatalf("Renew beside a held bulk dump: %d of %d renewed, %v; want 3 of 3", renewed, total, err)
		}
		if err := <-bulk; err != nil {
			t.Fatalf("the bulk copy's dump: %v", err)
		}
	})
}

package test

// The TCP sequence adjustment of a NAT helper's connection across a
// failover: a real FTP session (vsftpd, Python's ftplib) in active mode
// through the masquerading pair.

import (
	"crypto/sha256"
	"fmt"
	"testing"
	"time"

	"github.com/hagent/hagent/sessionsync"
	"github.com/hagent/hagent/test/lab"
)

// TestFTPSeqAdjFailover: the client logs in and downloads a file in
// active mode; node-a's FTP helper rewrites its PORT command from the
// client's address (10,9,0,10) to the WAN cluster address (10,9,2,100),
// one byte longer, and every later packet of the control connection is
// translated by the sequence adjustment that set. node-a fails (a crash,
// a graceful stop); the next download over the same control connection
// goes through node-b, which must translate the same way: its copy of
// the connection carries node-a's adjustment (sessionsync's seqadj
// extension). Without it the server reads the next command shifted by a
// byte and the download fails or times out.
func TestFTPSeqAdjFailover(t *testing.T) {
	for _, how := range []string{"crash", "stop"} {
		t.Run(how, func(t *testing.T) {
			l, a, b := firewallPairWith(t, "session_pickup: {enabled: true, expectation: true}\nsync: {enabled: false}")
			if err := l.SetupFTPHelper(); err != nil {
				t.Fatal(err)
			}
			v, err := l.StartVsftpd(256 << 10)
			if err != nil {
				t.Fatal(err)
			}
			defer v.Stop()
			want := fmt.Sprintf("%x %d", sha256.Sum256(v.Data), len(v.Data))
			// The bulk copy is done before the session starts: what node-b
			// learns of it comes from node-a's events.
			eventually(t, 10*time.Second, "node-b's bulk copy", func() error {
				if !sessionsOf(t, b).BulkDone {
					return fmt.Errorf("not done")
				}
				return nil
			})
			s, err := l.StartFTPClient(v.File, false)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if line, err := s.Line(20 * time.Second); err != nil || line != "before "+want {
				t.Fatalf("the download before the failover: %q, %v (want %q)", line, err, "before "+want)
			}
			ctlA := controlFlow(t, a)
			if ctlA == nil || ctlA.SeqAdj == nil {
				t.Fatalf("node-a's control connection has no sequence adjustment (%+v): the PORT rewrite kept the payload's length, the test cannot tell", ctlA)
			}
			// Not fatal: the download below shows what a copy without it does.
			var ctlB *sessionsync.Flow
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
				if ctlB = controlFlow(t, b); ctlB != nil && ctlB.SeqAdj != nil && *ctlB.SeqAdj == *ctlA.SeqAdj {
					break
				}
			}
			if ctlB == nil || ctlB.SeqAdj == nil || *ctlB.SeqAdj != *ctlA.SeqAdj {
				t.Errorf("node-b's copy of the control connection: %+v; node-a's adjustment %+v", ctlB, *ctlA.SeqAdj)
			}
			t.Logf("measured: node-a's adjustment %+v, node-b's copy %+v", *ctlA.SeqAdj, seqAdjOf(ctlB))
			start := time.Now()
			if how == "crash" {
				a.Crash()
			} else if err := a.Stop(10 * time.Second); err != nil {
				t.Fatal(err)
			}
			eventually(t, 10*time.Second, "node-b takes over", func() error {
				if r := b.Role(); r != "primary" {
					return fmt.Errorf("node-b is %q", r)
				}
				return nil
			})
			if err := s.Again(); err != nil {
				t.Fatal(err)
			}
			line, err := s.Line(20 * time.Second)
			t.Logf("measured: active FTP download after the %s of the primary, on the same control connection: %q %v (%s after the failure)", how, line, err, time.Since(start).Round(time.Millisecond))
			if err != nil || line != "after "+want {
				t.Errorf("the download after the failover: %q, %v (want %q)", line, err, "after "+want)
				t.Logf("node-b sessions: %s", mustCtl(b, "ha", "sessions"))
			}
			if c := controlFlow(t, b); c != nil {
				t.Logf("node-b's control connection after the download: adjustment %+v", seqAdjOf(c))
			}
		})
	}
}

// controlFlow is a node's entry of the client's FTP control connection.
func controlFlow(t *testing.T, n *lab.Node) *sessionsync.Flow {
	t.Helper()
	fs, err := n.Flows()
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range fs {
		if f.Proto == sessionsync.ProtoTCP && f.Orig.DstPort == 21 && f.Orig.Src.String() == lab.ClientIPv4 {
			return &fs[i]
		}
	}
	return nil
}

func seqAdjOf(f *sessionsync.Flow) any {
	if f == nil || f.SeqAdj == nil {
		return nil
	}
	return *f.SeqAdj
}

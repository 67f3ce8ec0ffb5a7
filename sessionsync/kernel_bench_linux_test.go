package sessionsync

import (
	"net/netip"
	"testing"
	"time"
)

// TestKernelApplyRate measures creates per second into the kernel table,
// NATed and not, in batches as the receiver applies them.
func TestKernelApplyRate(t *testing.T) {
	inNetns(t, func(t *testing.T) {
		k, err := OpenKernel()
		if err != nil {
			t.Fatal(err)
		}
		defer k.Close()
		for _, nat := range []bool{false, true} {
			const n = 20000
			recs := make([]Record, n)
			for i := range recs {
				f := tcpFlow(0)
				f.Orig.Src = netip.AddrFrom4([4]byte{10, 8, byte(i >> 8), byte(i)})
				if nat {
					f.Orig.Src = netip.AddrFrom4([4]byte{10, 7, byte(i >> 8), byte(i)})
					f.Reply.DstPort = uint16(10000 + i)
				} else {
					f.Reply.Dst, f.Reply.DstPort = f.Orig.Src, f.Orig.SrcPort
				}
				recs[i] = Record{Op: OpUpsert, Flow: f}
			}
			start := time.Now()
			for i := 0; i < n; i += 1024 {
				for j, err := range k.Apply(recs[i:min(i+1024, n)]) {
					if err != nil {
						t.Fatalf("%d: %v", i+j, err)
					}
				}
			}
			d := time.Since(start)
			t.Logf("measured: %d creates (nat %v) in %v: %.0f flows/s", n, nat, d.Round(time.Millisecond), n/d.Seconds())
		}
	})
}

// TestKernelDumpRate measures a dump of the table.
func TestKernelDumpRate(t *testing.T) {
	inNetns(t, func(t *testing.T) {
		k, err := OpenKernel()
		if err != nil {
			t.Fatal(err)
		}
		defer k.Close()
		const n = 50000
		recs := make([]Record, n)
		for i := range recs {
			f := tcpFlow(0)
			f.Orig.Src = netip.AddrFrom4([4]byte{10, 8, byte(i >> 8), byte(i)})
			f.Reply.Dst, f.Reply.DstPort = f.Orig.Src, f.Orig.SrcPort
			recs[i] = Record{Op: OpUpsert, Flow: f}
		}
		k.Apply(recs)
		start := time.Now()
		c := 0
		if err := k.Dump(func(*Flow) { c++ }); err != nil {
			t.Fatal(err)
		}
		d := time.Since(start)
		t.Logf("measured: dump of %d flows in %v: %.0f flows/s", c, d.Round(time.Millisecond), float64(c)/d.Seconds())
		if c != n {
			t.Fatalf("dumped %d, want %d", c, n)
		}
	})
}

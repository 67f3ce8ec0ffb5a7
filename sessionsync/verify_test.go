package sessionsync

import (
	"context"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hagent/hagent/heartbeat"
	"github.com/hagent/hagent/l2chan"
)

// verifyPair starts node-a (primary, n flows) and node-b, whose only
// address is 10.9.9.9, and waits for node-b's bulk copy.
func verifyPair(t *testing.T, n int) (a, b *member) {
	t.Helper()
	nw := heartbeat.NewMemNetwork()
	noAddrs := func(c *Config) {
		c.LocalAddrs = func() []netip.Addr { return nil }
		c.VerifyInterval = -1 // the tests run the rounds
	}
	a = newMember(t, nw, "node-a", noAddrs)
	b = newMember(t, nw, "node-b", func(c *Config) {
		noAddrs(c)
		c.LocalAddrs = func() []netip.Addr { return []netip.Addr{netip.MustParseAddr("10.9.9.9")} }
	})
	for i := 0; i < n; i++ {
		a.table.Put(flowN(ProtoTCP, i))
	}
	v6 := flowN(ProtoTCP, 1)
	v6.Orig.Src, v6.Orig.Dst = netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")
	v6.Reply.Src, v6.Reply.Dst = v6.Orig.Dst, v6.Orig.Src
	v6.Labels = make([]byte, 16)
	v6.Labels[3] = 7
	v6.Helper = "ftp"
	a.table.Put(v6)
	b.e.SetSenders(Senders{"node-a": nil})
	a.e.SetRole(true, []string{"node-b"})
	eventually(t, 60*time.Second, func() error {
		if !b.e.BulkDone() {
			return fmt.Errorf("no bulk copy yet")
		}
		return sameKeys(a.table, b.table, nil)
	})
	return a, b
}

func verifyOne(t *testing.T, m *member) VerifyResult {
	t.Helper()
	res, err := m.e.Verify(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || res[0].Peer != "node-a" || res[0].Error != "" {
		t.Fatalf("results %+v, want one of node-a", res)
	}
	return res[0]
}

// TestVerifyInSync: identical tables verify in sync, whatever the flows
// each side leaves out (node-b's own flows, a flow of node-b's address on
// node-a); the cost on the channel is printed. Fails when the digest
// takes a field a copy does not carry (the timeout), or when either side
// counts its own flows.
func TestVerifyInSync(t *testing.T) {
	a, b := verifyPair(t, 2000)
	// Timeouts differ between a flow and its copy: not compared.
	f := flowN(ProtoTCP, 5)
	f.Timeout = 7
	b.table.Put(f)
	// node-b's own flow (its address), and one on node-a to node-b.
	own := flowN(ProtoTCP, 60000)
	own.Orig.Src, own.Reply.Dst = netip.MustParseAddr("10.9.9.9"), netip.MustParseAddr("10.9.9.9")
	b.table.Put(own)
	toB := flowN(ProtoTCP, 60001)
	toB.Orig.Dst, toB.Reply.Src = netip.MustParseAddr("10.9.9.9"), netip.MustParseAddr("10.9.9.9")
	a.table.Put(toB)
	eventually(t, 5*time.Second, func() error {
		if _, ok := b.table.Get(toB.Key()); !ok {
			return fmt.Errorf("toB not copied yet")
		}
		return nil
	})
	b.table.Remove(toB.Key()) // node-b's side of it is its own
	r := verifyOne(t, b)
	if !r.InSync() || r.Compared != 2001 || r.Local != 2001 {
		t.Fatalf("%+v, want in sync over 2001 flows", r)
	}
	t.Logf("verify of %d flows in sync: %d bytes on the channel", r.Compared, r.Bytes)
	if st := b.e.Status(); len(st.Verify) != 1 || !st.Verify[0].InSync() || len(st.Warnings) != 0 {
		t.Fatalf("status verify %+v warnings %v", st.Verify, st.Warnings)
	}
	// On the primary there is nobody to compare with.
	if _, err := a.e.Verify(context.Background()); err == nil {
		t.Fatal("the primary verified against nobody")
	}
}

// TestVerifyNamesDifferences: a flow missing here, one extra here and one
// whose mark differs are each named, the last with its field. Fails
// without the comparison (a table with holes verifies in sync) or when a
// field is left out of the digest.
func TestVerifyNamesDifferences(t *testing.T) {
	a, b := verifyPair(t, 2000)
	missing, changed := flowN(ProtoTCP, 10), flowN(ProtoTCP, 20)
	b.table.Remove(missing.Key())
	extra := flowN(ProtoTCP, 3000)
	b.table.Put(extra)
	changed.Mark = 0xbeef
	b.table.Put(changed)
	r := verifyOne(t, b)
	t.Logf("%+v", r)
	if r.InSync() || r.Missing != 1 || r.Extra != 1 || r.Differing != 1 || r.Compared != 2001 || r.Local != 2001 {
		t.Fatalf("%+v, want 1 missing, 1 extra, 1 differing of 2001", r)
	}
	found := map[string]VerifyDiff{}
	for _, d := range r.First {
		found[d.What] = d
	}
	if d := found["missing here"]; d.Flow != missing.String() {
		t.Errorf("missing: %+v, want %s", d, missing.String())
	}
	if d := found["extra here"]; d.Flow != extra.String() {
		t.Errorf("extra: %+v, want %s", d, extra.String())
	}
	if d := found["differs"]; d.Flow != changed.String() || len(d.Fields) != 1 || !strings.HasPrefix(d.Fields[0], "mark: here 0000beef, on node-a 00000014") {
		t.Errorf("differs: %+v, want %s with its mark", d, changed.String())
	}
	if r.First[0].What != "differs" {
		t.Errorf("first difference %+v, want the differing flow first", r.First[0])
	}
	t.Logf("verify with 3 differences: %d bytes on the channel", r.Bytes)
	// Each field is compared: a helper, labels, the reply tuple, the
	// status a copy carries, the TCP state, the sequence adjustment (one
	// flow each).
	b.table.Put(flowN(ProtoTCP, 20))
	want := map[string]string{}
	for i, mod := range []struct {
		field string
		mod   func(*Flow)
	}{
		{"helper", func(f *Flow) { f.Helper = "sip" }},
		{"labels", func(f *Flow) { f.Labels = make([]byte, 16); f.Labels[0] = 1 }},
		{"reply tuple (NAT)", func(f *Flow) { f.Reply.DstPort++ }},
		{"status", func(f *Flow) { f.Status &^= StatusAssured }},
		{"tcp state", func(f *Flow) { f.TCP = &TCPInfo{State: TCPSynSent} }},
		{"seqadj", func(f *Flow) { f.SeqAdj = &[2]SeqAdj{{CorrectionPos: 5, OffsetAfter: 3}} }},
	} {
		f := flowN(ProtoTCP, 30+i)
		mod.mod(&f)
		b.table.Put(f)
		want[f.String()] = mod.field
	}
	time.Sleep(verifyMinInterval) // node-a's bound between two verifies
	r = verifyOne(t, b)
	if r.Differing != 6 {
		t.Fatalf("%+v: want 6 differing", r)
	}
	for _, d := range r.First {
		if d.What == "differs" && (len(d.Fields) != 1 || !strings.HasPrefix(d.Fields[0], want[d.Flow]+":")) {
			t.Errorf("%s: fields %v, want %s", d.Flow, d.Fields, want[d.Flow])
		}
	}
	_ = a
}

// TestVerifyPersistentDifferenceWarns: a difference seen by background
// rounds longer than the sync lag apart makes a warning (health WARN) and
// counts as persistent; one seen once (a flow in flight) does not; the
// warning goes once the tables agree. Fails without the tracking (no
// warning) or when every difference warns at once.
func TestVerifyPersistentDifferenceWarns(t *testing.T) {
	_, b := verifyPair(t, 100)
	ctx := context.Background()
	t0 := time.Unix(2_000_000, 0)
	f := flowN(ProtoTCP, 50)
	f.Mark = 99
	b.table.Put(f)
	// While a bulk copy is under way nothing is judged.
	b.e.recvMu.Lock()
	b.e.recv["node-a"].inBulk = true
	b.e.recvMu.Unlock()
	if b.e.verifyRound(ctx, t0) || len(b.e.Status().Verify) != 0 {
		t.Fatal("a round ran during a bulk copy")
	}
	b.e.recvMu.Lock()
	b.e.recv["node-a"].inBulk = false
	b.e.recvMu.Unlock()
	if !b.e.verifyRound(ctx, t0) {
		t.Fatal("the first round saw no difference")
	}
	if st := b.e.Status(); len(st.Warnings) != 0 || st.Verify[0].Persistent != 0 || st.Verify[0].Differing != 1 {
		t.Fatalf("warnings %v verify %+v after one round: a difference in flight must not warn", st.Warnings, st.Verify)
	}
	b.e.verifyRound(ctx, t0.Add(b.e.verifyLag()))
	st := b.e.Status()
	if len(st.Warnings) != 1 || !strings.Contains(st.Warnings[0], "session table differs from node-a's") || st.Verify[0].Persistent != 1 {
		t.Fatalf("warnings %v verify %+v, want the persistent difference", st.Warnings, st.Verify)
	}
	t.Log(st.Warnings[0])
	// Another flow differs now, the first agrees again: new, no warning.
	b.table.Put(flowN(ProtoTCP, 50))
	g := flowN(ProtoTCP, 51)
	g.Mark = 98
	b.table.Put(g)
	b.e.verifyRound(ctx, t0.Add(2*b.e.verifyLag()))
	if st := b.e.Status(); len(st.Warnings) != 0 || st.Verify[0].Persistent != 0 {
		t.Fatalf("warnings %v verify %+v: a new difference warned", st.Warnings, st.Verify)
	}
	b.table.Put(flowN(ProtoTCP, 51))
	b.e.verifyRound(ctx, t0.Add(3*b.e.verifyLag()))
	if st := b.e.Status(); len(st.Warnings) != 0 || !st.Verify[0].InSync() {
		t.Fatalf("warnings %v verify %+v once in sync", st.Warnings, st.Verify)
	}
}

// TestVerifyCost: a table of 100 000 flows (20 000 under the race
// detector), one differing, verifies with little traffic (the bucket
// answer, one bucket's keys, one record). Printed, and bounded: far below
// the table's bulk copy.
func TestVerifyCost(t *testing.T) {
	if testing.Short() {
		t.Skip("100 000 flows")
	}
	n := 100_000
	if raceOn {
		n = 20_000
	}
	a, b := verifyPair(t, n)
	f := flowN(ProtoTCP, 777)
	f.Mark = 1
	b.table.Put(f)
	r := verifyOne(t, b)
	// flowN(2313), flowN(67849) are of node-b's address: its own, not
	// compared.
	want := 0
	nb := map[netip.Addr]bool{netip.MustParseAddr("10.9.9.9"): true}
	_ = a.table.Dump(func(f *Flow) {
		if !touches(f, nb) {
			want++
		}
	})
	if r.Differing != 1 || r.Compared != want || len(r.First) != 1 || len(r.First[0].Fields) != 1 {
		t.Fatalf("%+v", r)
	}
	t.Logf("verify of %d flows, one differing: %d bytes on the channel", r.Compared, r.Bytes)
	if r.Bytes > 64<<10 {
		t.Fatalf("%d bytes, want under 64 KiB", r.Bytes)
	}
}

// TestVerifyFieldsCoverFlow: every field of Flow is either digested
// (verifyFields: changing it changes the digest) or listed here as not
// compared, with its reason in verify.go. A field added to Flow fails this
// test until it is put in one or the other.
func TestVerifyFieldsCoverFlow(t *testing.T) {
	notCompared := map[string]bool{
		"Timeout": true, // counts down on each side
	}
	key := map[string]bool{"Proto": true, "Orig": true, "Zone": true}
	base := flowN(ProtoTCP, 1)
	base.Labels = make([]byte, 16)
	base.Helper = "ftp"
	var buf []byte
	_, _, d0 := flowDigest(&base, &buf)
	ft := reflect.TypeFor[Flow]()
	for i := range ft.NumField() {
		name := ft.Field(i).Name
		if notCompared[name] {
			continue
		}
		f := base
		f.Labels = append([]byte(nil), base.Labels...)
		tcp := *base.TCP
		f.TCP = &tcp
		v := reflect.ValueOf(&f).Elem().Field(i)
		switch name {
		case "Orig", "Reply":
			tu := v.Addr().Interface().(*Tuple)
			tu.SrcPort++
		case "Labels":
			f.Labels[15] = 1
		case "TCP":
			f.TCP.State = TCPSynSent
		case "Helper":
			f.Helper = "sip"
		case "Status":
			f.Status ^= StatusSeenReply
		case "SeqAdj":
			f.SeqAdj = &[2]SeqAdj{{CorrectionPos: 1}}
		case "SynProxy":
			f.SynProxy = &SynProxy{ISN: 1}
		case "SCTP":
			f.SCTP = &SCTPInfo{State: 1}
		case "DCCP":
			f.DCCP = &DCCPInfo{Role: 1}
		case "Master":
			k := base.Key()
			f.Master = &k
		default:
			switch v.Kind() {
			case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
				v.SetUint(v.Uint() + 1)
			default:
				t.Errorf("Flow.%s: add it to verifyFields (verify.go) or to notCompared here", name)
				continue
			}
		}
		_, kb, d := flowDigest(&f, &buf)
		_, kb0, _ := flowDigest(&base, &buf)
		if d == d0 && !(key[name] && kb != kb0) {
			t.Errorf("Flow.%s changes no digest: add it to verifyFields (verify.go) or to notCompared here", name)
		}
	}
}

// verifySeeds are one message of each verify kind and level.
func verifySeeds() [][]byte {
	k := flowN(ProtoTCP, 1).Key()
	v6 := flowN(ProtoTCP, 2)
	v6.Orig.Src, v6.Orig.Dst = netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")
	v6.Reply.Src, v6.Reply.Dst = v6.Orig.Dst, v6.Orig.Src
	k6 := v6.Key()
	kb := string(appendVerifyKey(nil, &k))
	kb6 := string(appendVerifyKey(nil, &k6))
	f := flowN(ProtoTCP, 3)
	f.Helper, f.Labels = "ftp", make([]byte, 16)
	var ans verifyMsg
	ans.reply, ans.total = true, 2
	ans.count[7], ans.sum[7] = 2, 99
	msgs := []*verifyMsg{
		{level: verifyLevelBuckets, addrs: []netip.Addr{netip.MustParseAddr("10.9.9.9"), netip.MustParseAddr("2001:db8::9")}},
		{level: verifyLevelFlows, bucket: 7, from: 1024},
		{level: verifyLevelRecords, keys: []Key{k, k6}},
		&ans,
		{reply: true, level: verifyLevelFlows, bucket: 7, more: true, entries: []verifyEntry{{kb, 1}, {kb6, 2}}},
		{reply: true, level: verifyLevelRecords, recs: []*Flow{&f, nil}},
		{reply: true, level: verifyLevelBuckets, status: verifyBusy},
	}
	var out [][]byte
	for i, m := range msgs {
		m.id = uint32(i + 1)
		b, err := m.appendBinary(nil)
		if err != nil {
			panic(err)
		}
		out = append(out, b)
	}
	return out
}

// TestVerifyCodec: each verify message decodes to what was encoded, and
// every truncation of it is refused.
func TestVerifyCodec(t *testing.T) {
	for _, b := range verifySeeds() {
		var v verifyMsg
		if err := v.unmarshal(b); err != nil {
			t.Fatalf("%x: %v", b, err)
		}
		again, err := v.appendBinary(nil)
		if err != nil || string(again) != string(b) {
			t.Fatalf("%x re-encodes as %x (%v)", b, again, err)
		}
		for n := range len(b) {
			var w verifyMsg
			if w.unmarshal(b[:n]) == nil {
				t.Fatalf("%x: its first %d bytes decode", b, n)
			}
		}
	}
}

// FuzzVerifyDecode: any input decodes or is refused, never a panic; what
// decodes re-encodes to itself; allocation is bounded by the input; and
// the engine's receive path takes it (as a request queued or dropped, an
// answer that matches no request).
func FuzzVerifyDecode(f *testing.F) {
	for _, b := range verifySeeds() {
		f.Add(b)
	}
	f.Add([]byte("SS\x01\x05\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x07"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var v verifyMsg
		if err := v.unmarshal(data); err == nil {
			if len(v.entries)*16 > len(data) || len(v.keys)*16 > len(data) || len(v.recs) > len(data) {
				t.Fatalf("decoded more than the input holds: %d entries %d keys %d records of %d bytes", len(v.entries), len(v.keys), len(v.recs), len(data))
			}
			b, err := v.appendBinary(nil)
			if err != nil {
				t.Fatalf("decoded %x does not re-encode: %v", data, err)
			}
			var w verifyMsg
			if err := w.unmarshal(b); err != nil {
				t.Fatalf("re-encoded %x does not decode: %v", b, err)
			}
		}
		r := newReceiver(t, nil)
		r.e.handle(l2chan.Message{From: "node-a", Data: data}, &r.m)
	})
}

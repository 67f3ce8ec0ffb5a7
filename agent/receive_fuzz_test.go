package agent

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hagent/hagent/cluster"
	"github.com/hagent/hagent/config"
	"github.com/hagent/hagent/heartbeat"
)

// The whole heartbeat receive path, fuzzed: bytes arriving on an hbdev go
// through the receiver (a.receive: decode, authentication, replay guard,
// epoch hints), the run goroutine's step (a.stepFrame: serial conflicts,
// carrier bookkeeping, the election machines of both vclusters, peer
// epochs), the actions (process: vMAC take and release on fake networks;
// no hooks are configured, so none runs) and the status view, with time
// advances (a.tick, as the run loop's timer) and carrier changes between
// the frames. Everything runs synchronously in the fuzzing goroutine on a
// fake clock: the receiver reads a scriptLink, which returns ErrClosed
// once its queue is empty, so a.receive returns after each delivery.
//
// The input is a configuration byte and then a program of operations
// (fuzzOp*): raw bytes, frames built from fuzzed fields and signed with
// the group key (so they pass authentication), such frames with bytes
// patched in and re-signed (strings the encoder refuses, broken TLVs),
// forged frames (bad tag, other key), time advances, carrier changes.
// After every operation the invariants of checkInvariants hold; after a
// forged frame on an authenticating node the election state is what it
// was (checkForgedChangesNothing).

// The unicast heartbeat (udplink) is one more heartbeat.Link to a.receive;
// its own receive side (datagrams in, frames out) is udplink's FuzzRecv.

// Operations of the fuzz program (the low bits of an op byte).
const (
	fuzzOpRaw     = iota // raw bytes on a link
	fuzzOpFrame          // a valid signed frame from fuzzed fields
	fuzzOpPatched        // a valid frame with fuzzed bytes patched in, re-signed
	fuzzOpForged         // a frame with a bad tag (or the wrong key)
	fuzzOpTime           // the clock moves on; the run loop's tick
	fuzzOpCarrier        // an hbdev's carrier changes
	fuzzOpBody           // fuzzed bytes under a valid header and tag
	fuzzOpDup            // a valid frame on every hbdev (duplicates)
	fuzzOps
)

// Configuration bits (the first input byte).
const (
	fuzzCfgNoAuth = 1 << iota // cluster.auth: false
	fuzzCfgVC2                // cluster.vcluster2
	fuzzCfgDirect             // ha1 is a direct hbdev (carrier detection)
	fuzzCfgSync               // configuration sync (its channel admits the senders heard)
	fuzzCfgs
)

// fuzzMaxSteps bounds one program, so that an iteration stays around a
// millisecond (a few at most).
const fuzzMaxSteps = 64

// fuzzGroup is the fuzzed node's group; its key is testKey, which signs
// the program's frames; fuzzOtherKey signs forgeries.
var (
	fuzzGroup    = uint16(10)
	fuzzOtherKey = []byte("not-the-group-key-at-all")
)

// scriptLink is a heartbeat.Link whose Recv returns the queued frames,
// then ErrClosed (so a.receive returns); Send discards.
type scriptLink struct {
	name  string
	hw    net.HardwareAddr
	queue [][]byte
	from  net.HardwareAddr
	sent  int
}

func (l *scriptLink) Name() string                   { return l.name }
func (l *scriptLink) HardwareAddr() net.HardwareAddr { return l.hw }
func (l *scriptLink) Send(b []byte) error            { l.sent++; return nil }
func (l *scriptLink) Close() error                   { return nil }
func (l *scriptLink) Recv(buf []byte) (int, net.HardwareAddr, error) {
	if len(l.queue) == 0 {
		return 0, nil, heartbeat.ErrClosed
	}
	b := l.queue[0]
	l.queue = l.queue[1:]
	return copy(buf, b), l.from, nil
}

// fuzzConfigs are the node configurations, by configuration bits; built
// once per process (the agent does not modify its *config.Config).
func fuzzConfigs(tb testing.TB) [fuzzCfgs]*config.Config {
	dir := tb.TempDir()
	key := filepath.Join(dir, "key")
	if err := os.WriteFile(key, []byte(testKey+"\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	var out [fuzzCfgs]*config.Config
	for bits := range fuzzCfgs {
		text := fmt.Sprintf(`
control_socket: %s/sock
node: {name: a, serial: SN-a, priority: 150, override: %v, vcluster2: {priority: 100}}
cluster:
  group_id: %d
  auth: %v
  password_file: %s
  hbdev: [{name: ha1, priority: 50, direct: %v}, {name: ha2, priority: 40}]
  hb_interval: 20ms
  hb_lost_threshold: 3
  hello_holddown: 100ms
  carrier_debounce: 30ms
  monitor: [port1]
  sync: {enabled: %v, paths: [/etc/app], period: 1s}
`, dir, bits&fuzzCfgVC2 != 0, fuzzGroup, bits&fuzzCfgNoAuth == 0, key, bits&fuzzCfgDirect != 0, bits&fuzzCfgSync != 0)
		if bits&fuzzCfgVC2 != 0 {
			text += "  vcluster2: {enabled: true, monitor: [port2]}\n"
		}
		cfg, err := config.Parse("fuzz.yaml", []byte(text))
		if err != nil {
			tb.Fatalf("configuration %d: %v", bits, err)
		}
		out[bits] = cfg
	}
	return out
}

// fuzzReader hands out the program's bytes; past the end it gives zeros.
type fuzzReader struct{ b []byte }

func (r *fuzzReader) more() bool { return len(r.b) > 0 }

func (r *fuzzReader) byte() byte {
	if len(r.b) == 0 {
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *fuzzReader) bytes(n int) []byte {
	n = min(n, len(r.b))
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *fuzzReader) u64() uint64 {
	var b [8]byte
	copy(b[:], r.bytes(8))
	return binary.BigEndian.Uint64(b[:])
}

// fuzzHarness is one fuzzed agent and what the program needs around it.
type fuzzHarness struct {
	t      *testing.T
	a      *Agent
	auth   bool
	key    []byte // HMAC key of the group (nil without auth)
	links  []*scriptLink
	nets   []*fakeNet
	clock  time.Time
	codec  *heartbeat.Codec // the group's, as a peer signs
	forger *heartbeat.Codec // another key
	epoch  uint64           // the node's epoch after the last step
}

func newFuzzHarness(t *testing.T, cfg *config.Config, syncRoot string) *fuzzHarness {
	h := &fuzzHarness{t: t, auth: cfg.Cluster.Auth, clock: time.Unix(1_700_000_000, 0)}
	var pw []byte
	if h.auth {
		pw = []byte(testKey)
		h.key = heartbeat.DeriveKey(pw, fuzzGroup)
	}
	h.codec = heartbeat.NewCodec(pw, fuzzGroup)
	h.forger = heartbeat.NewCodec(fuzzOtherKey, fuzzGroup)
	var links []heartbeat.Link
	for i, hb := range cfg.Cluster.HBDevs {
		l := &scriptLink{name: hb.Name, hw: net.HardwareAddr{0x02, 0, 0, 0, 0, byte(0x10 + i)},
			from: net.HardwareAddr{0x02, 0, 0, 0, 0, 0xbb}}
		h.links = append(h.links, l)
		links = append(links, l)
	}
	h.nets = []*fakeNet{{}, {}}
	o := Options{Config: cfg, Links: links, Network: h.nets[0], Network2: h.nets[1],
		Now: func() time.Time { return h.clock }}
	if cfg.Cluster.Sync.Enabled {
		// The channel hears nothing (its link is closed at once): what
		// is fuzzed is what heartbeats tell it (Admit, peer checksums,
		// restarts).
		o.SyncLinks = []heartbeat.Link{&scriptLink{name: "ha1", hw: net.HardwareAddr{0x02, 0, 0, 0, 0, 0x20}}}
		o.SyncRoot = syncRoot
	}
	a, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	h.a = a
	h.epoch = a.epoch
	return h
}

func (h *fuzzHarness) close() {
	if h.a.sync != nil {
		h.a.sync.ch.Close()
	}
	h.a.hooks.close(time.Second)
	h.a.state.wait()
}

// deliver puts b on link i and runs the receiver, then the run loop's
// step of every frame it queued and the actions.
func (h *fuzzHarness) deliver(i int, bs ...[]byte) {
	l := h.links[i%len(h.links)]
	l.queue = append(l.queue, bs...)
	h.a.receive(h.t.Context(), i%len(h.links), h.a.links[i%len(h.links)])
	h.a.drainRx()
	h.after(false)
}

// after is the tail of the run loop's iteration.
func (h *fuzzHarness) after(fired bool) {
	h.a.process()
	h.a.updateSessions()
	if fired {
		h.a.updateSync()
	}
	h.a.publishStatus()
}

// fuzzSerial is the serial a program picks with sel: the node's own (a
// conflict), one of three peers, or one of 128 generated ones (past every
// bound). The node name is "n<sel>".
func fuzzSerial(sel byte) string {
	switch sel % 8 {
	case 0:
		return "SN-a" // this node's
	case 1, 2, 3:
		return fmt.Sprintf("SN-%c", 'b'+sel%8-1)
	default:
		return fmt.Sprintf("S%d", sel)
	}
}

func (h *fuzzHarness) nodeID(sel byte) heartbeat.NodeID {
	switch sel % 4 {
	case 0:
		return heartbeat.NodeID{}
	case 1:
		return h.a.nodeID
	default:
		return heartbeat.NodeID{0x02, 0, 0, 0, sel >> 4, sel}
	}
}

// epochOf picks an epoch: small, near the node's own (for hints), or at
// the top of the range (saturation).
func (h *fuzzHarness) epochOf(r *fuzzReader) uint64 {
	switch sel := r.byte(); sel % 4 {
	case 0:
		return uint64(sel >> 2)
	case 1:
		return h.a.epoch + uint64(sel>>2) - 8
	case 2:
		return math.MaxUint64 - uint64(sel>>2)
	default:
		return r.u64()
	}
}

// frame builds a heartbeat from fuzzed fields.
func (h *fuzzHarness) frame(r *fuzzReader) heartbeat.Frame {
	sel := r.byte()
	f := heartbeat.Frame{
		GroupID: fuzzGroup, VCluster: 1 + r.byte()%3%2, // mostly vcluster 1
		Role: r.byte() % 6, Flags: heartbeat.Flags(r.byte()) & (heartbeat.FlagOverride | heartbeat.FlagFailoverSet | heartbeat.FlagLeaving),
		Priority: r.byte(), MonitorUp: r.byte() % 4, MonitorTotal: r.byte() % 4,
		Uptime: uint64(r.byte()) * 100, Epoch: h.epochOf(r), Seq: uint64(r.byte()),
		Serial: fuzzSerial(sel), Node: fmt.Sprintf("n%d", sel), NodeID: h.nodeID(r.byte()),
		Takeovers: uint64(r.byte() % 4),
	}
	if p := r.byte(); p%3 != 0 {
		f.Primary = fuzzSerial(p)
	}
	f.NumHints = r.byte() % (heartbeat.MaxHints + 1)
	for i := range f.Hints[:f.NumHints] {
		f.Hints[i] = heartbeat.EpochHint{NodeID: h.nodeID(r.byte()), Epoch: h.epochOf(r)}
	}
	if v := r.byte(); v&1 != 0 {
		f.HasVC2 = true
		f.VC2 = heartbeat.VClusterState{VCluster: 2 - v>>1%4/3, Role: v >> 3 % 5, Priority: r.byte(),
			Flags:     heartbeat.Flags(v>>6) & (heartbeat.FlagOverride | heartbeat.FlagFailoverSet),
			MonitorUp: 1, MonitorTotal: 1, Uptime: uint64(r.byte()) * 100, Takeovers: uint64(v >> 7)}
		if v&2 != 0 {
			f.VC2.Primary = fuzzSerial(v)
		}
	}
	return f
}

// encode encodes f with the group's codec; nil if f does not encode
// (role 0: the program then sends nothing).
func (h *fuzzHarness) encode(f *heartbeat.Frame) []byte {
	b, err := h.codec.Append(nil, f)
	if err != nil {
		return nil
	}
	return b
}

// seal rewrites b's header (magic, version, group, length, the
// authentication flag) around whatever its body holds and signs it as the
// group would: a frame whose body the receiver parses after its tag
// verified.
func (h *fuzzHarness) seal(body []byte) []byte {
	const header, tag = 8, sha256.Size
	b := make([]byte, max(len(body), header), max(len(body), header)+tag)
	copy(b, body)
	b[0], b[1], b[2] = 'H', 'A', heartbeat.ProtocolVersion
	b[3] &^= byte(heartbeat.FlagUnauthenticated)
	if !h.auth {
		b[3] |= byte(heartbeat.FlagUnauthenticated)
	}
	binary.BigEndian.PutUint16(b[4:], fuzzGroup)
	binary.BigEndian.PutUint16(b[6:], uint16(len(b)+tag))
	if !h.auth {
		return append(b, make([]byte, tag)...)
	}
	m := hmac.New(sha256.New, h.key)
	m.Write(b)
	return m.Sum(b)
}

// electionState is what a forged frame must not change: the election, the
// peers known, the node's epoch, the replay windows, the vMACs.
type electionState struct {
	Status     []cluster.Status
	PeerEpochs map[heartbeat.Peer]uint64
	Epoch      uint64
	Guard      int
	Hints      [heartbeat.MaxHints]heartbeat.EpochHint
	Nets       [2][4]any
	Heard      int
	Conflicts  int
}

func (h *fuzzHarness) electionState() electionState {
	a := h.a
	s := electionState{PeerEpochs: cloneMap(a.peerEpochs), Epoch: a.epoch, Guard: a.guard.Len(),
		Heard: len(a.cstate.heardOn), Conflicts: len(a.conf.self) + len(a.conf.peer)}
	a.guard.Hints(&s.Hints)
	for _, v := range a.vcs {
		s.Status = append(s.Status, v.m.Status())
	}
	for i, n := range h.nets {
		o, t, r, an := n.counts()
		s.Nets[i] = [4]any{o, t, r, an}
	}
	return s
}

func cloneMap[K comparable, V any](m map[K]V) map[K]V {
	out := make(map[K]V, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// checkInvariants fails the fuzz input if the agent broke a rule of the
// receive path after step (a description for the failure).
func (h *fuzzHarness) checkInvariants(step string) {
	t, a := h.t, h.a
	t.Helper()
	if n := len(a.hist.list()); n > a.hist.max {
		t.Fatalf("%s: history holds %d entries, over its cap %d", step, n, a.hist.max)
	}
	a.sendMu.Lock()
	e := a.epoch
	a.sendMu.Unlock()
	if e < h.epoch {
		t.Fatalf("%s: the node's epoch went down from %d to %d", step, h.epoch, e)
	}
	h.epoch = e
	if n := a.guard.Len(); n > heartbeat.MaxTrackedSerials {
		t.Fatalf("%s: the replay guard tracks %d senders", step, n)
	}
	for what, n := range map[string][2]int{
		"peer epochs":        {len(a.peerEpochs), maxSenders},
		"carrier heard-on":   {len(a.cstate.heardOn), maxSenders},
		"carrier names":      {len(a.cstate.names), maxSenders},
		"carrier alive":      {len(a.cstate.alive), maxSenders},
		"carrier lost-at":    {len(a.cstate.lostAt), maxSenders},
		"state peers":        {len(a.state.knownPeers()), heartbeat.MaxTrackedSerials},
		"own-serial senders": {len(a.conf.self), maxConflictIDs},
		"conflict serials":   {len(a.conf.peer), maxConflictSerials},
	} {
		if n[0] > n[1] {
			t.Fatalf("%s: %s: %d entries, over %d (unbounded per sender)", step, what, n[0], n[1])
		}
	}
	for _, m := range a.conf.peer {
		if len(m) > maxConflictIDs {
			t.Fatalf("%s: %d node ids tracked for one serial", step, len(m))
		}
	}
	for _, v := range a.vcs {
		st := v.m.Status()
		if len(st.Members) > config.MaxMembers(a.config().Cluster.Mode) {
			t.Fatalf("%s: vcluster %d has %d members", step, v.id, len(st.Members))
		}
		for _, m := range st.Members {
			for _, s := range []string{m.Name, m.Serial, m.Primary} {
				if !heartbeat.ValidString(s) {
					t.Fatalf("%s: member with the invalid string %q", step, s)
				}
			}
		}
		// The vMAC is held exactly when the vcluster is primary.
		if net := v.net.(*fakeNet); net.Owned() != (st.Role == cluster.RolePrimary) {
			t.Fatalf("%s: vcluster %d is %s but owns the vMAC: %v", step, v.id, st.Role, net.Owned())
		}
	}
	for p := range a.peerEpochs {
		if !heartbeat.ValidString(p.Serial) {
			t.Fatalf("%s: peer epoch kept for the invalid serial %q", step, p.Serial)
		}
	}
	for _, n := range a.cstate.names {
		if !heartbeat.ValidString(n) {
			t.Fatalf("%s: carrier state names the invalid node %q", step, n)
		}
	}
}

// checkForgedChangesNothing runs one forged delivery and fails the input
// if it changed anything but counters, the wire problems and their
// history entries.
func (h *fuzzHarness) checkForgedChangesNothing(link int, b []byte) {
	before := h.electionState()
	h.deliver(link, b)
	if after := h.electionState(); !reflect.DeepEqual(before, after) {
		h.t.Fatalf("a frame with a bad tag changed the election state:\nbefore %+v\nafter  %+v", before, after)
	}
}

// run interprets one program.
func (h *fuzzHarness) run(prog []byte) {
	r := &fuzzReader{b: prog}
	for step := 0; step < fuzzMaxSteps && r.more(); step++ {
		op := r.byte()
		link := int(op>>4) % len(h.links)
		name := fmt.Sprintf("step %d (op %d)", step, op%fuzzOps)
		switch op % fuzzOps {
		case fuzzOpRaw:
			h.deliver(link, slices.Clone(r.bytes(int(r.byte()))))
		case fuzzOpFrame:
			f := h.frame(r)
			if b := h.encode(&f); b != nil {
				h.deliver(link, b)
			}
		case fuzzOpPatched:
			f := h.frame(r)
			b := h.encode(&f)
			if b == nil {
				break
			}
			b = b[:len(b)-sha256.Size]
			at := int(r.byte()) % len(b)
			copy(b[at:], r.bytes(int(r.byte()%8)+1))
			h.deliver(link, h.seal(b))
		case fuzzOpForged:
			f := h.frame(r)
			var b []byte
			if op&8 != 0 {
				b, _ = h.forger.Append(nil, &f)
			} else if b = h.encode(&f); b != nil {
				b[len(b)-1-int(r.byte())%sha256.Size] ^= 1 << (r.byte() % 8)
			}
			if b == nil {
				break
			}
			if h.auth {
				h.checkForgedChangesNothing(link, b)
			} else {
				h.deliver(link, b)
			}
		case fuzzOpTime:
			h.clock = h.clock.Add(time.Duration(r.byte()) * 2 * time.Millisecond)
			h.a.drainRx()
			h.a.tick(h.clock)
			h.after(true)
		case fuzzOpCarrier:
			h.a.linkChanged(linkEvent{name: h.links[link].name, up: op&8 != 0, debounced: r.byte()&1 != 0})
			h.after(false)
		case fuzzOpBody:
			h.deliver(link, h.seal(r.bytes(int(r.byte())+8)))
		case fuzzOpDup:
			f := h.frame(r)
			if b := h.encode(&f); b != nil {
				for i := range h.links {
					h.deliver(i, b)
				}
			}
		}
		h.checkInvariants(name)
	}
	// The operator's view of it all must build and hold clean strings.
	st := h.a.status()
	for _, m := range st.Members {
		if !heartbeat.ValidString(m.Node) || !heartbeat.ValidString(m.Serial) {
			h.t.Fatalf("status shows the member %q (%q)", m.Node, m.Serial)
		}
	}
}

// fuzzProgram assembles a seed: the configuration byte, then operations.
func fuzzProgram(cfg byte, ops ...[]byte) []byte {
	return append([]byte{cfg}, slices.Concat(ops...)...)
}

// fuzzFrameOp is a fuzzOpFrame (or another frame-building op) with its
// fields in program order: sender selector, vcluster, role, flags,
// priority, monitor up/total, uptime, epoch selector, seq, node id
// selector, takeovers, primary selector, hints, vcluster-2 byte.
func fuzzFrameOp(op, sender, role, prio, epochSel, seq, idSel byte, hints ...byte) []byte {
	b := []byte{op, sender, 0, role, 0, prio, 1, 1, 10, epochSel, seq, idSel, 0, 1, byte(len(hints) / 2)}
	b = append(b, hints...)
	return append(b, 0)
}

// FuzzReceivePath drives a whole in-memory agent with a program of
// heartbeats, forgeries and time (see the comment at the top of the file).
func FuzzReceivePath(f *testing.F) {
	// Seeds: each a small scenario that reaches one part of the path.
	peerB := func(seq byte) []byte { return fuzzFrameOp(fuzzOpFrame, 1, 3, 200, 4*3+0, seq, 2) } // SN-b, primary, prio 200, epoch 3, node id 02:..
	tick := func(ms2 byte) []byte { return []byte{fuzzOpTime, ms2} }
	// 1. Hello, then the node takes over (holddown 100 ms) on silence.
	f.Add(fuzzProgram(0, tick(60), tick(60)))
	// 2. A primary peer with a higher priority: this node stays secondary,
	// then takes over when the peer falls silent.
	f.Add(fuzzProgram(0, peerB(1), tick(10), peerB(2), tick(60), peerB(3), tick(100), tick(100)))
	// 3. The same without authentication, and with vcluster 2.
	f.Add(fuzzProgram(fuzzCfgNoAuth|fuzzCfgVC2, peerB(1), tick(60), peerB(2), tick(60)))
	// 4. A hint that this node's epoch is known above its own (1 = own+k-8
	// selector: 4*k+1), and one at 2^64-1 (selector 2: top of the range).
	f.Add(fuzzProgram(0, fuzzFrameOp(fuzzOpFrame, 1, 2, 100, 0, 1, 2, 1, 4*20+1, 1, 2)))
	// 5. Forged frames: a flipped tag bit and another key (op|8), which
	// must change nothing.
	f.Add(fuzzProgram(0, peerB(1), fuzzFrameOp(fuzzOpForged, 1, 3, 250, 4*9, 9, 2), []byte{0, 3},
		fuzzFrameOp(fuzzOpForged|8, 2, 3, 250, 4*9, 1, 3)))
	// 6. The node's own serial from another node id (a serial conflict),
	// and a peer heard on both hbdevs of a direct setup, then carrier loss.
	f.Add(fuzzProgram(fuzzCfgDirect, fuzzFrameOp(fuzzOpFrame, 0, 2, 100, 4, 1, 3), fuzzFrameOp(fuzzOpDup, 1, 3, 200, 4, 1, 2),
		[]byte{fuzzOpCarrier, 1}, tick(20)))
	// 7. Many invented senders (serial selector ≥ 4 gives S<n>).
	var many [][]byte
	for i := range byte(40) {
		many = append(many, fuzzFrameOp(fuzzOpFrame, 4+8*i, 2, i, 4*i, 1, 2+4*i))
	}
	f.Add(fuzzProgram(0, many...))
	// 8. Patched strings (a control byte in the node name at offset 80),
	// and a raw body under a valid tag.
	f.Add(fuzzProgram(0, fuzzFrameOp(fuzzOpPatched, 1, 2, 100, 4, 1, 2), []byte{80, 0, 0x07},
		[]byte{fuzzOpBody, 72}, make([]byte, 80)))
	// 9. Raw garbage and a truncated frame.
	f.Add(fuzzProgram(0, []byte{fuzzOpRaw, 8, 'H', 'A', 1, 0, 0, 10, 0, 200}))
	// 10. Configuration sync: a peer heard, then restarted (a higher
	// epoch) while known.
	f.Add(fuzzProgram(fuzzCfgSync, peerB(1), fuzzFrameOp(fuzzOpFrame, 1, 3, 200, 4*9, 1, 2), tick(60)))

	cfgs := fuzzConfigs(f)
	root := f.TempDir()
	f.Fuzz(func(t *testing.T, prog []byte) {
		if len(prog) == 0 {
			return
		}
		h := newFuzzHarness(t, cfgs[prog[0]%fuzzCfgs], root)
		defer h.close()
		h.run(prog[1:])
	})
}

// TestReceivePathHarness: the fuzz harness drives the real election: a
// silent segment makes the node primary after the hello holddown; a
// signed heartbeat of a higher-priority primary makes it secondary and
// release the vMAC; a forged one would not have.
func TestReceivePathHarness(t *testing.T) {
	cfgs := fuzzConfigs(t)
	h := newFuzzHarness(t, cfgs[0], t.TempDir())
	defer h.close()
	h.run([]byte{fuzzOpTime, 60, fuzzOpTime, 60})
	if r := h.a.m.Role(); r != cluster.RolePrimary || !h.nets[0].Owned() {
		t.Fatalf("alone after the holddown: role %s, vMAC owned %v", r, h.nets[0].Owned())
	}
	forged := fuzzFrameOp(fuzzOpForged, 1, 3, 250, 4*3, 1, 2)
	h.run(append(forged, 0, 0))
	if r := h.a.m.Role(); r != cluster.RolePrimary {
		t.Fatalf("after a forged primary heartbeat: role %s", r)
	}
	h.run(fuzzFrameOp(fuzzOpFrame, 1, 3, 250, 4*3, 1, 2))
	if r := h.a.m.Role(); r != cluster.RoleSecondary || h.nets[0].Owned() {
		t.Fatalf("after a signed heartbeat of a primary with priority 250: role %s, vMAC owned %v", r, h.nets[0].Owned())
	}
	if st := h.a.m.Status(); len(st.Members) != 2 || st.Members[1].Serial != "SN-b" && st.Members[0].Serial != "SN-b" {
		t.Fatalf("members %+v, want this node and SN-b", st.Members)
	}
}

// TestReceiveManySendersBounded: authentic heartbeats from 200 invented
// (serial, node id) pairs within one detection time leave at most
// maxSenders epochs and carrier entries, maxConflictSerials serials and
// maxConflictIDs node ids per serial. Before the bounds each sender stayed
// for good (a map entry per frame for a key holder, or for anyone on the
// segment with cluster.auth: false).
func TestReceiveManySendersBounded(t *testing.T) {
	cfgs := fuzzConfigs(t)
	for _, bits := range []byte{0, fuzzCfgNoAuth} {
		h := newFuzzHarness(t, cfgs[bits], t.TempDir())
		var prog []byte
		for i := range 200 {
			// Serial S<n> (selector ≥ 4), a node id of its own, and this
			// node's serial under other node ids every 5th frame.
			sel := byte(i) | 4
			if i%5 == 0 {
				sel = 0
			}
			prog = append(prog, fuzzFrameOp(fuzzOpFrame, sel, 2, 100, 4, byte(i), byte(2+4*(i%64)))...)
			prog[len(prog)-5] = byte(i) // the node id differs per frame too
		}
		h.run(prog[:len(prog)/2])
		h.run(prog[len(prog)/2:]) // checkInvariants after every frame
		t.Logf("auth=%v: %d peer epochs, %d carrier entries, %d conflict serials, %d own-serial node ids",
			h.auth, len(h.a.peerEpochs), len(h.a.cstate.heardOn), len(h.a.conf.peer), len(h.a.conf.self))
		h.close()
	}
}

// TestStatePeersBoundedAtTopEpoch: the persisted peer epochs stay at
// heartbeat.MaxTrackedSerials when every sender's epoch is 2^64-1 (found
// by FuzzReceivePath: the eviction looked for an epoch strictly below
// 2^64-1, found none, and kept every sender).
func TestStatePeersBoundedAtTopEpoch(t *testing.T) {
	s := openState("", nil)
	for i := range 3 * heartbeat.MaxTrackedSerials {
		s.notePeer(heartbeat.Peer{Serial: fmt.Sprintf("S%d", i)}, math.MaxUint64)
	}
	s.wait()
	if n := len(s.knownPeers()); n > heartbeat.MaxTrackedSerials {
		t.Fatalf("%d peer epochs persisted, over %d", n, heartbeat.MaxTrackedSerials)
	}
}

// TestStateSavesCoalesce: 1 000 new peer epochs and raised epochs of
// this node, arriving while the state file is being written, cost one
// more write (of the latest state), not one goroutine and one write each.
func TestStateSavesCoalesce(t *testing.T) {
	s := openState(t.TempDir(), hclog.NewNullLogger())
	var writes atomic.Int32
	started, release := make(chan struct{}), make(chan struct{})
	s.write = func(path string, b []byte) error {
		if writes.Add(1) == 1 {
			close(started)
			<-release // the disk is slow: everything below arrives meanwhile
		}
		return os.WriteFile(path, b, 0o600)
	}
	peer := heartbeat.Peer{Serial: "SN-b"}
	s.notePeer(peer, 1)
	<-started
	for i := range uint64(1000) {
		s.notePeer(peer, 2+i)
		s.raiseEpoch(10 + i)
	}
	close(release)
	s.wait()
	if n := writes.Load(); n != 2 {
		t.Fatalf("%d writes of the state file, want 2 (the first, then the latest state once)", n)
	}
	again := openState(filepath.Dir(s.path), hclog.NewNullLogger())
	if e := again.knownPeers()[peer]; e != 1001 || again.epoch != 1009 {
		t.Fatalf("the file holds epoch %d of the peer and %d of this node, want 1001 and 1009", e, again.epoch)
	}
}

// TestConflictFloodHistoryBounded: 60 authentic heartbeats, half with this
// node's serial and half with a peer's, each under a new node id, write
// one history entry per kind of serial conflict, not one per frame (31
// before the limit), and leave the node's takeover in the history.
func TestConflictFloodHistoryBounded(t *testing.T) {
	cfgs := fuzzConfigs(t)
	h := newFuzzHarness(t, cfgs[0], t.TempDir())
	defer h.close()
	h.run([]byte{fuzzOpTime, 60, fuzzOpTime, 60}) // primary: a takeover entry
	var prog []byte
	for i := range 60 {
		sel := byte(0) // this node's serial
		if i%2 == 1 {
			sel = 1 // SN-b's
		}
		prog = append(prog, fuzzFrameOp(fuzzOpFrame, sel, 2, 100, 4, byte(i), byte(2+4*i))...)
	}
	h.run(prog)
	health, takeover := 0, 0
	for _, e := range h.a.hist.list() {
		switch e.Kind {
		case "health":
			health++
		case "takeover":
			takeover++
		}
	}
	if health > 2 || takeover != 1 {
		t.Fatalf("%d health entries (want at most 2: one per kind of conflict), %d takeovers (want 1)", health, takeover)
	}
}

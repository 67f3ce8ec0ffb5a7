package heartbeat

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
)

const testGroup = 10

var testPassword = []byte("correct horse battery staple")

// testFrame returns a frame whose every field is set to a distinct,
// non-zero value, so a field lost on the wire shows up in a comparison.
func testFrame() Frame {
	f := Frame{
		Version:      ProtocolVersion,
		GroupID:      testGroup,
		VCluster:     2,
		Role:         3,
		Flags:        FlagOverride | FlagLeaving,
		Priority:     200,
		MonitorUp:    3,
		MonitorTotal: 4,
		Uptime:       0x0102030405060708,
		Epoch:        0x1122334455667788,
		Seq:          0x8877665544332211,
		ConfigGen:    0xa0b0c0d0e0f00102,
		Node:         "node-a",
		Serial:       "FGVM01TM19000001",
		Primary:      "node-b",
	}
	for i := range f.ConfigSum {
		f.ConfigSum[i] = byte(0xe0 ^ i)
	}
	return f
}

// seal recomputes the length field and tag of a raw frame b for codec c
// keyed with testPassword, so tests can craft authentic frames with
// arbitrary content.
func seal(t testing.TB, c *Codec, b []byte) []byte {
	t.Helper()
	return sealWith(c, testPassword, b)
}

// sealWith is seal for codecs keyed with password.
func sealWith(c *Codec, password, b []byte) []byte {
	b = append([]byte(nil), b...)
	binary.BigEndian.PutUint16(b[6:8], uint16(len(b)))
	body := b[:len(b)-tagLen]
	if c.auth {
		mac := hmac.New(sha256.New, DeriveKey(password, c.groupID))
		mac.Write(body)
		copy(b[len(body):], mac.Sum(nil))
	} else {
		clear(b[len(body):])
	}
	return b
}

// withExtension inserts raw extension bytes before the tag of frame b and
// reseals it for c keyed with testPassword.
func withExtension(t testing.TB, c *Codec, b, ext []byte) []byte {
	t.Helper()
	return withExtensionWith(c, testPassword, b, ext)
}

func withExtensionWith(c *Codec, password, b, ext []byte) []byte {
	body := b[:len(b)-tagLen]
	out := append(append(append([]byte(nil), body...), ext...), make([]byte, tagLen)...)
	return sealWith(c, password, out)
}

func mustAppend(t testing.TB, c *Codec, f Frame) []byte {
	t.Helper()
	b, err := c.Append(nil, &f)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	return b
}

func TestRoundTrip(t *testing.T) {
	long := strings.Repeat("x", MaxStringLen)
	minimal := Frame{GroupID: testGroup, Role: 1, Serial: "s"}
	maximal := testFrame()
	maximal.Node, maximal.Serial, maximal.Primary = long, strings.Repeat("y", MaxStringLen), strings.Repeat("z", MaxStringLen)
	maximal.Flags = 0xff
	allOnes := testFrame()
	allOnes.VCluster, allOnes.Role, allOnes.Priority, allOnes.MonitorUp, allOnes.MonitorTotal = 255, 255, 255, 255, 255
	allOnes.Uptime, allOnes.Epoch, allOnes.Seq, allOnes.ConfigGen = ^uint64(0), ^uint64(0), ^uint64(0), ^uint64(0)
	allOnes.GroupID = 0xffff
	group0 := testFrame()
	group0.GroupID = 0

	frames := []struct {
		name string
		f    Frame
	}{
		{"every field set", testFrame()},
		{"minimal", minimal},
		{"maximal strings and flags", maximal},
		{"all ones", allOnes},
		{"group 0", group0},
	}
	for _, fr := range frames {
		for _, auth := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/auth=%v", fr.name, auth), func(t *testing.T) {
				var pw []byte
				if auth {
					pw = testPassword
				}
				c := NewCodec(pw, fr.f.GroupID)
				b := mustAppend(t, c, fr.f)
				if len(b) > MaxFrameLen {
					t.Errorf("frame is %d bytes, more than MaxFrameLen %d", len(b), MaxFrameLen)
				}
				var got Frame
				if err := c.Decode(b, &got); err != nil {
					t.Fatalf("Decode: %v", err)
				}
				want := fr.f
				want.Version = ProtocolVersion
				want.Flags &^= FlagUnauthenticated
				if !auth {
					want.Flags |= FlagUnauthenticated
				}
				if got != want {
					t.Errorf("round trip:\n got %+v\nwant %+v", got, want)
				}
				// The unauthenticated helpers agree with the codec.
				var u Frame
				if err := u.UnmarshalBinary(b); err != nil || u != want {
					t.Errorf("UnmarshalBinary = %v, %+v", err, u)
				}
			})
		}
	}
}

// TestRoundTripEachField changes one field at a time, so that a field the
// encoder forgets (or puts at another field's offset) is caught even when
// the two values happen to coincide.
func TestRoundTripEachField(t *testing.T) {
	c := NewCodec(testPassword, testGroup)
	muts := map[string]func(*Frame){
		"VCluster":     func(f *Frame) { f.VCluster = 1 },
		"Role":         func(f *Frame) { f.Role = 4 },
		"Flags":        func(f *Frame) { f.Flags = FlagFailoverSet },
		"Priority":     func(f *Frame) { f.Priority = 7 },
		"MonitorUp":    func(f *Frame) { f.MonitorUp = 9 },
		"MonitorTotal": func(f *Frame) { f.MonitorTotal = 11 },
		"Uptime":       func(f *Frame) { f.Uptime = 42 },
		"Epoch":        func(f *Frame) { f.Epoch = 43 },
		"Seq":          func(f *Frame) { f.Seq = 44 },
		"ConfigGen":    func(f *Frame) { f.ConfigGen = 45 },
		"ConfigSum":    func(f *Frame) { f.ConfigSum[31] = 0x5a },
		"Node":         func(f *Frame) { f.Node = "n" },
		"Serial":       func(f *Frame) { f.Serial = "other-serial" },
		"Primary":      func(f *Frame) { f.Primary = "" },
	}
	base := testFrame()
	baseWire := mustAppend(t, c, base)
	for name, mut := range muts {
		t.Run(name, func(t *testing.T) {
			f := testFrame()
			mut(&f)
			if f == base {
				t.Fatal("mutation changed nothing")
			}
			b := mustAppend(t, c, f)
			if bytes.Equal(b, baseWire) {
				t.Fatal("field is not on the wire")
			}
			var got Frame
			if err := c.Decode(b, &got); err != nil {
				t.Fatal(err)
			}
			if got != f {
				t.Errorf("got %+v\nwant %+v", got, f)
			}
		})
	}
}

func TestAppendKeepsPrefix(t *testing.T) {
	c := NewCodec(testPassword, testGroup)
	f := testFrame()
	prefix := []byte("prefix")
	b, err := c.Append(append([]byte(nil), prefix...), &f)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, prefix) {
		t.Fatalf("prefix lost: %q", b[:len(prefix)])
	}
	if want := mustAppend(t, c, f); !bytes.Equal(b[len(prefix):], want) {
		t.Error("appended frame differs from a fresh one")
	}
}

func TestAppendErrors(t *testing.T) {
	c := NewCodec(testPassword, testGroup)
	tests := []struct {
		name string
		mut  func(*Frame)
		want error
	}{
		{"other group", func(f *Frame) { f.GroupID = testGroup + 1 }, ErrWrongGroup},
		{"version 2", func(f *Frame) { f.Version = 2 }, ErrVersion},
		{"long node", func(f *Frame) { f.Node = strings.Repeat("n", MaxStringLen+1) }, ErrMalformed},
		{"long serial", func(f *Frame) { f.Serial = strings.Repeat("s", MaxStringLen+1) }, ErrMalformed},
		{"long primary", func(f *Frame) { f.Primary = strings.Repeat("p", MaxStringLen+1) }, ErrMalformed},
		{"empty serial", func(f *Frame) { f.Serial = "" }, ErrMalformed},
		{"role 0", func(f *Frame) { f.Role = 0 }, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := testFrame()
			tt.mut(&f)
			dst := []byte{1, 2, 3}
			b, err := c.Append(dst, &f)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if !bytes.Equal(b, dst) {
				t.Errorf("dst changed on error: %x", b)
			}
		})
	}
}

// TestAppendSetsAuthFlag checks that the codec, not the caller, decides
// FlagUnauthenticated.
func TestAppendSetsAuthFlag(t *testing.T) {
	f := testFrame()
	f.Flags |= FlagUnauthenticated
	b := mustAppend(t, NewCodec(testPassword, testGroup), f)
	if Flags(b[3])&FlagUnauthenticated != 0 {
		t.Error("authenticating codec sent FlagUnauthenticated")
	}
	f.Flags &^= FlagUnauthenticated
	b = mustAppend(t, NewCodec(nil, testGroup), f)
	if Flags(b[3])&FlagUnauthenticated == 0 {
		t.Error("unauthenticated codec did not set FlagUnauthenticated")
	}
	if !bytes.Equal(b[len(b)-tagLen:], make([]byte, tagLen)) {
		t.Error("unauthenticated tag is not zero")
	}
}

func TestDecodeErrors(t *testing.T) {
	auth := NewCodec(testPassword, testGroup)
	unauth := NewCodec(nil, testGroup)
	f := testFrame()
	good := mustAppend(t, auth, f)
	goodUnauth := mustAppend(t, unauth, f)

	edit := func(b []byte, fn func([]byte)) []byte {
		b = append([]byte(nil), b...)
		fn(b)
		return b
	}
	var (
		other      = testFrame()
		otherGroup []byte
	)
	other.GroupID = testGroup + 1
	otherGroup = mustAppend(t, NewCodec(testPassword, testGroup+1), other)
	body := good[:len(good)-tagLen]

	tests := []struct {
		name  string
		codec *Codec
		in    []byte
		want  error // nil: must decode
	}{
		{"valid", auth, good, nil},
		{"valid unauthenticated", unauth, goodUnauth, nil},
		{"link padding ignored", auth, append(append([]byte(nil), good...), 0, 0, 0, 0), nil},
		{"empty", auth, nil, io.ErrUnexpectedEOF},
		{"wrong key", NewCodec([]byte("wrong password"), testGroup), good, ErrBadAuth},
		{"empty password is not no password", NewCodec([]byte{}, testGroup), good, ErrBadAuth},
		{"wrong group", auth, otherGroup, ErrWrongGroup},
		{"flipped tag bit", auth, edit(good, func(b []byte) { b[len(b)-1] ^= 1 }), ErrBadAuth},
		{"flipped body bit", auth, edit(good, func(b []byte) { b[40] ^= 0x80 }), ErrBadAuth},
		{"bad magic", auth, edit(good, func(b []byte) { b[0] = 'X' }), ErrMalformed},
		{"version 0", auth, seal(t, auth, edit(good, func(b []byte) { b[2] = 0 })), ErrVersion},
		{"version 2", auth, seal(t, auth, edit(good, func(b []byte) { b[2] = 2 })), ErrVersion},
		{"version 255", auth, edit(good, func(b []byte) { b[2] = 255 }), ErrVersion},
		{"length below minimum", auth, edit(good, func(b []byte) { binary.BigEndian.PutUint16(b[6:8], minLen-1) }), ErrMalformed},
		{"length beyond data", auth, edit(good, func(b []byte) { binary.BigEndian.PutUint16(b[6:8], uint16(len(b)+1)) }), io.ErrUnexpectedEOF},
		{"huge length", auth, edit(good, func(b []byte) { binary.BigEndian.PutUint16(b[6:8], 0xffff) }), io.ErrUnexpectedEOF},
		{"unauthenticated frame, authenticating codec", auth, goodUnauth, ErrBadAuth},
		{"authenticated frame, unauthenticated codec", unauth, good, ErrBadAuth},
		{"unauthenticated flag on signed frame", auth, edit(good, func(b []byte) { b[3] |= byte(FlagUnauthenticated) }), ErrBadAuth},
		{"unauthenticated frame with a tag", unauth, edit(goodUnauth, func(b []byte) { b[len(b)-5] = 1 }), ErrBadAuth},
		{"authentic, node too long", auth, seal(t, auth, edit(good, func(b []byte) { b[13] = MaxStringLen + 1 })), ErrMalformed},
		{"authentic, strings overrun", auth, seal(t, auth, edit(good, func(b []byte) { b[15] = MaxStringLen })), ErrMalformed},
		{"authentic, empty serial", auth, seal(t, auth, edit(good, func(b []byte) { b[13] += b[14]; b[14] = 0 })), ErrMalformed},
		{"authentic, role 0", auth, seal(t, auth, edit(good, func(b []byte) { b[9] = 0 })), ErrMalformed},
		{"unknown extension skipped", auth, withExtension(t, auth, good, []byte{0x7f, 3, 'a', 'b', 'c', 0x80, 0}), nil},
		{"extension type 0", auth, withExtension(t, auth, good, []byte{0, 1, 'a'}), ErrMalformed},
		{"extension overruns", auth, withExtension(t, auth, good, []byte{1, 5, 'a'}), ErrMalformed},
		{"extension header cut", auth, withExtension(t, auth, good, []byte{1}), ErrMalformed},
		{"extension is authenticated", auth, edit(withExtension(t, auth, good, []byte{1, 1, 'a'}), func(b []byte) { b[len(body)+2] = 'b' }), ErrBadAuth},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got Frame
			err := tt.codec.Decode(tt.in, &got)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Decode: %v", err)
				}
				want := f
				want.Flags |= Flags(tt.in[3]) & FlagUnauthenticated
				if got != want {
					t.Errorf("got %+v\nwant %+v", got, want)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("Decode = %v, want %v", err, tt.want)
			}
		})
	}
}

// TestDecodeTruncated cuts a frame (with an extension) at every length.
func TestDecodeTruncated(t *testing.T) {
	for _, pw := range [][]byte{testPassword, nil} {
		c := NewCodec(pw, testGroup)
		b := withExtension(t, c, mustAppend(t, c, testFrame()), []byte{9, 2, 'h', 'i'})
		for n := 0; n < len(b); n++ {
			var f Frame
			if err := c.Decode(b[:n], &f); !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("auth=%v, %d of %d bytes: err = %v, want io.ErrUnexpectedEOF", pw != nil, n, len(b), err)
			}
		}
		var f Frame
		if err := c.Decode(b, &f); err != nil {
			t.Errorf("auth=%v, whole frame: %v", pw != nil, err)
		}
	}
}

// TestDecodeEveryBitFlip flips each bit of an authentic frame: every flip
// must be rejected, and flips past the header must be ErrBadAuth.
func TestDecodeEveryBitFlip(t *testing.T) {
	c := NewCodec(testPassword, testGroup)
	good := mustAppend(t, c, testFrame())
	b := make([]byte, len(good))
	for i := range len(good) * 8 {
		copy(b, good)
		b[i/8] ^= 1 << (i % 8)
		var f Frame
		err := c.Decode(b, &f)
		if err == nil {
			t.Errorf("bit %d (byte %d) flipped: accepted", i, i/8)
			continue
		}
		if i/8 >= headerLen && !errors.Is(err, ErrBadAuth) {
			t.Errorf("bit %d (byte %d) flipped: err = %v, want ErrBadAuth", i, i/8, err)
		}
	}
}

// TestDeriveKey checks DeriveKey against RFC 5869 computed by hand with
// HMAC-SHA256, and that keys separate groups and passwords.
func TestDeriveKey(t *testing.T) {
	rfc5869 := func(password []byte, group uint16) []byte {
		ext := hmac.New(sha256.New, []byte("hagent-heartbeat-v1"))
		ext.Write(password)
		prk := ext.Sum(nil)
		exp := hmac.New(sha256.New, prk)
		exp.Write([]byte("group"))
		exp.Write([]byte{byte(group >> 8), byte(group)})
		exp.Write([]byte{1})
		return exp.Sum(nil)
	}
	tests := []struct {
		password []byte
		group    uint16
	}{
		{testPassword, testGroup},
		{[]byte("x"), 0},
		{[]byte{}, 1023},
		{bytes.Repeat([]byte{0xaa}, 200), 0x1234},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		got := DeriveKey(tt.password, tt.group)
		if len(got) != KeyLen {
			t.Fatalf("key length %d", len(got))
		}
		if want := rfc5869(tt.password, tt.group); !bytes.Equal(got, want) {
			t.Errorf("DeriveKey(%q, %d) = %x, want %x", tt.password, tt.group, got, want)
		}
		seen[string(got)] = true
	}
	if len(seen) != len(tests) {
		t.Error("distinct inputs gave equal keys")
	}
	if bytes.Equal(DeriveKey(testPassword, 1), DeriveKey(testPassword, 256)) {
		t.Error("group id bytes not both used")
	}
}

func TestCodecAllocs(t *testing.T) {
	for _, pw := range [][]byte{testPassword, nil} {
		c := NewCodec(pw, testGroup)
		f := testFrame()
		buf := make([]byte, 0, MaxFrameLen)
		var err error
		if n := testing.AllocsPerRun(100, func() { buf, err = c.Append(buf[:0], &f) }); n != 0 || err != nil {
			t.Errorf("auth=%v: Append: %v allocs/op, err %v", pw != nil, n, err)
		}
		var g Frame
		if n := testing.AllocsPerRun(100, func() { err = c.Decode(buf, &g) }); n != 0 || err != nil {
			t.Errorf("auth=%v: Decode into a warm Frame: %v allocs/op, err %v", pw != nil, n, err)
		}
		bad := append([]byte(nil), buf...)
		bad[len(bad)-1] ^= 1
		if n := testing.AllocsPerRun(100, func() { err = c.Decode(bad, &g) }); n != 0 || err == nil {
			t.Errorf("auth=%v: rejecting: %v allocs/op, err %v", pw != nil, n, err)
		}
	}
}

// TestCodecConcurrent shares one codec between senders and receivers; run
// with -race.
func TestCodecConcurrent(t *testing.T) {
	c := NewCodec(testPassword, testGroup)
	wire := make(chan []byte, 64)
	var wg sync.WaitGroup
	const n = 300
	for s := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f := testFrame()
			for i := range n {
				f.Seq = uint64(s*n + i)
				b, err := c.Append(nil, &f)
				if err != nil {
					t.Error(err)
					return
				}
				wire <- b
			}
		}()
	}
	go func() { wg.Wait(); close(wire) }()
	var rwg sync.WaitGroup
	seqs := make([]map[uint64]bool, 2)
	for r := range 2 {
		seqs[r] = map[uint64]bool{}
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			var f Frame
			for b := range wire {
				if err := c.Decode(b, &f); err != nil {
					t.Error(err)
					return
				}
				seqs[r][f.Seq] = true
			}
		}()
	}
	rwg.Wait()
	if got := len(seqs[0]) + len(seqs[1]); got != 2*n {
		t.Errorf("decoded %d frames, want %d", got, 2*n)
	}
}

// TestProtocolDocVector checks that the test vector in docs/protocol.md is
// what the code produces, keeping the document and the wire format in step.
func TestProtocolDocVector(t *testing.T) {
	doc, err := os.ReadFile("../docs/protocol.md")
	if err != nil {
		t.Skipf("protocol document not found: %v", err)
	}
	key := DeriveKey([]byte("s3cret"), 10)
	if !bytes.Contains(doc, []byte("key = "+hex.EncodeToString(key))) {
		t.Errorf("docs/protocol.md lacks the key %x", key)
	}
	f := Frame{
		GroupID: 10, VCluster: 1, Role: 3, Flags: FlagOverride, Priority: 200,
		MonitorUp: 2, MonitorTotal: 2, Uptime: 3600000, Epoch: 1735689600000000000,
		Seq: 42, ConfigGen: 7, Node: "node-a", Serial: "A0001", Primary: "node-a",
	}
	for i := range f.ConfigSum {
		f.ConfigSum[i] = byte(i)
	}
	wire := mustAppend(t, NewCodec([]byte("s3cret"), 10), f)
	if dump := hex.Dump(wire); !bytes.Contains(doc, []byte(dump)) {
		t.Errorf("docs/protocol.md lacks the frame dump:\n%s", dump)
	}
	if !bytes.Contains(doc, []byte(fmt.Sprintf("%d bytes:", len(wire)))) {
		t.Errorf("docs/protocol.md does not give the length %d", len(wire))
	}
}

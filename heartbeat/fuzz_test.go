package heartbeat

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/gopacket/gopacket"
)

var updateSeeds = flag.Bool("update-seeds", false, "rewrite testdata/fuzz/FuzzUnmarshal from fuzzSeeds")

// Fuzz codecs: the seeds are sealed with fuzzPassword for group testGroup.
// The fuzzer cannot forge tags, so the unauthenticated codec is what lets it
// explore the body parser; the authenticated one checks the tag path.
var fuzzPassword = []byte("fuzz-password")

// FuzzUnmarshal feeds arbitrary bytes to every decoder of the package.
// None may panic; when Codec.Decode accepts an input, re-encoding the frame
// must succeed and decode to the same frame.
func FuzzUnmarshal(f *testing.F) {
	codecs := []*Codec{NewCodec(fuzzPassword, testGroup), NewCodec(nil, testGroup)}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, c := range codecs {
			var fr Frame
			if err := c.Decode(b, &fr); err != nil {
				continue
			}
			checkStrings(t, &fr)
			wire, err := c.Append(nil, &fr)
			if err != nil {
				t.Fatalf("auth=%v: decoded %+v but Append failed: %v", c.auth, fr, err)
			}
			var again Frame
			if err := c.Decode(wire, &again); err != nil {
				t.Fatalf("auth=%v: re-encoded frame does not decode: %v", c.auth, err)
			}
			if again != fr {
				t.Fatalf("auth=%v: round trip changed the frame:\n got %+v\nwant %+v", c.auth, again, fr)
			}
		}
		var fr Frame
		if fr.UnmarshalBinary(b) == nil {
			checkStrings(t, &fr)
		}
		var hb Heartbeat
		_ = hb.DecodeFromBytes(b, gopacket.NilDecodeFeedback)
		_, _, _ = Peek(b)
		var g ReplayGuard
		if len(b) >= 48 {
			_ = g.Check(string(b[:8]), binary.BigEndian.Uint64(b[16:]), binary.BigEndian.Uint64(b[24:]))
			_ = g.Check(string(b[:8]), binary.BigEndian.Uint64(b[32:]), binary.BigEndian.Uint64(b[40:]))
		}
	})
}

// checkStrings fails t unless every string of a decoded frame is printable
// UTF-8 of at most MaxStringLen bytes (ValidString).
func checkStrings(t *testing.T, fr *Frame) {
	t.Helper()
	for _, s := range []string{fr.Node, fr.Serial, fr.Primary, fr.VC2.Primary} {
		if !ValidString(s) {
			t.Fatalf("decoded a frame with the string %q", s)
		}
	}
}

// fuzzSeed is one annotated seed corpus entry. want is what the
// authenticating fuzz codec returns for it (nil: accepted).
type fuzzSeed struct {
	name, note string
	want       error
	data       func(t testing.TB) []byte
}

func fuzzSeeds() []fuzzSeed {
	auth := NewCodec(fuzzPassword, testGroup)
	unauth := NewCodec(nil, testGroup)
	valid := func(t testing.TB) []byte { return mustAppend(t, auth, testFrame()) }
	edit := func(fn func([]byte) []byte) func(testing.TB) []byte {
		return func(t testing.TB) []byte { return fn(append([]byte(nil), valid(t)...)) }
	}
	return []fuzzSeed{
		{"valid", "authentic frame, every field set (key fuzz-password, group 10)", nil, valid},
		{"valid-minimal", "authentic frame, shortest possible (1-byte serial)", nil,
			func(t testing.TB) []byte { return mustAppend(t, auth, Frame{GroupID: testGroup, Role: 2, Serial: "s"}) }},
		{"valid-extensions", "authentic frame with two unknown extension TLVs", nil,
			func(t testing.TB) []byte {
				return withExtensionWith(auth, fuzzPassword, valid(t), []byte{0x10, 2, 0xbe, 0xef, 0xfe, 0})
			}},
		{"valid-node-id-hints", "authentic frame with a node id and two epoch hints (TLVs 1 and 2)", nil,
			func(t testing.TB) []byte { return mustAppend(t, auth, extFrame()) }},
		{"valid-17-hints", "authentic frame with 17 epoch hints: 16 are read (a cluster of 16 in mode fgsp), the 17th skipped", nil,
			func(t testing.TB) []byte {
				return withExtensionWith(auth, fuzzPassword, valid(t), moreHints(MaxHints+1))
			}},
		{"valid-vcluster2", "authentic frame with vcluster 2's state (TLV 3)", nil,
			func(t testing.TB) []byte { return mustAppend(t, auth, vc2Frame()) }},
		{"valid-takeovers", "authentic frame with takeover counts of both vclusters (TLVs 4 and 5)", nil,
			func(t testing.TB) []byte { return mustAppend(t, auth, tkFrame()) }},
		{"bad-takeovers-length-sealed", "takeover count TLV of 7 bytes, resealed: authentic but malformed", ErrMalformed,
			func(t testing.TB) []byte {
				return withExtensionWith(auth, fuzzPassword, valid(t), append([]byte{4, 7}, make([]byte, 7)...))
			}},
		{"bad-vcluster-takeovers-length-sealed", "vcluster 2 takeover count TLV of 9 bytes, resealed: authentic but malformed", ErrMalformed,
			func(t testing.TB) []byte {
				return withExtensionWith(auth, fuzzPassword, mustAppend(t, auth, vc2Frame()), append([]byte{5, 9}, make([]byte, 9)...))
			}},
		{"bad-vcluster-short-sealed", "vcluster TLV of 13 bytes, resealed: authentic but malformed", ErrMalformed,
			func(t testing.TB) []byte {
				return withExtensionWith(auth, fuzzPassword, valid(t), append([]byte{3, 13}, make([]byte, 13)...))
			}},
		{"bad-vcluster-role-sealed", "vcluster TLV with role 0, resealed: authentic but malformed", ErrMalformed,
			func(t testing.TB) []byte {
				return withExtensionWith(auth, fuzzPassword, valid(t), append([]byte{3, 14, 2, 0}, make([]byte, 12)...))
			}},
		{"bad-node-id-length-sealed", "node id TLV of 5 bytes, resealed: authentic but malformed", ErrMalformed,
			func(t testing.TB) []byte {
				return withExtensionWith(auth, fuzzPassword, valid(t), []byte{1, 5, 2, 0, 0, 0, 1})
			}},
		{"valid-padded", "authentic frame followed by link padding", nil,
			edit(func(b []byte) []byte { return append(b, make([]byte, 20)...) })},
		{"unauthenticated", "frame of a codec with auth disabled (FlagUnauthenticated, zero tag)", ErrBadAuth,
			func(t testing.TB) []byte { return mustAppend(t, unauth, testFrame()) }},
		{"truncated-header", "first 5 bytes only", io.ErrUnexpectedEOF,
			edit(func(b []byte) []byte { return b[:5] })},
		{"truncated-tag", "last tag byte missing", io.ErrUnexpectedEOF,
			edit(func(b []byte) []byte { return b[:len(b)-1] })},
		{"bad-tag", "last tag byte flipped", ErrBadAuth,
			edit(func(b []byte) []byte { b[len(b)-1] ^= 0xff; return b })},
		{"bad-magic", "magic XA", ErrMalformed,
			edit(func(b []byte) []byte { b[0] = 'X'; return b })},
		{"version-2", "unknown major version", ErrVersion,
			edit(func(b []byte) []byte { b[2] = 2; return b })},
		{"wrong-group", "group id 11", ErrWrongGroup,
			edit(func(b []byte) []byte { b[5] = 11; return b })},
		{"huge-length", "length field 0xffff", io.ErrUnexpectedEOF,
			edit(func(b []byte) []byte { b[6], b[7] = 0xff, 0xff; return b })},
		{"tiny-length", "length field below the minimum", ErrMalformed,
			edit(func(b []byte) []byte { b[6], b[7] = 0, 10; return b })},
		{"huge-string-lengths", "node/serial/primary lengths 255 (tag not resealed)", ErrBadAuth,
			edit(func(b []byte) []byte { b[13], b[14], b[15] = 255, 255, 255; return b })},
		{"huge-string-lengths-sealed", "node length 255, resealed: authentic but malformed", ErrMalformed,
			edit(func(b []byte) []byte { b[13] = 255; return sealWith(auth, fuzzPassword, b) })},
		{"bad-node-utf8-sealed", "node name with an invalid UTF-8 byte, resealed: authentic but malformed", ErrMalformed,
			edit(func(b []byte) []byte { b[fixedLen] = 0xff; return sealWith(auth, fuzzPassword, b) })},
		{"control-serial-sealed", "serial with an escape character, resealed: authentic but malformed", ErrMalformed,
			edit(func(b []byte) []byte { b[fixedLen+int(b[13])] = 0x1b; return sealWith(auth, fuzzPassword, b) })},
		{"broken-extension-sealed", "extension TLV overrunning the frame, resealed", ErrMalformed,
			func(t testing.TB) []byte { return withExtensionWith(auth, fuzzPassword, valid(t), []byte{7, 200, 1}) }},
	}
}

const seedDir = "testdata/fuzz/FuzzUnmarshal"

// TestFuzzSeeds checks that the checked-in seed corpus is exactly what
// fuzzSeeds describes, and that each seed meets its annotation. Run with
// -update-seeds to rewrite the files.
func TestFuzzSeeds(t *testing.T) {
	seeds := fuzzSeeds()
	auth := NewCodec(fuzzPassword, testGroup)
	for _, s := range seeds {
		data := s.data(t)
		var f Frame
		err := auth.Decode(data, &f)
		if (s.want == nil) != (err == nil) || (s.want != nil && !errors.Is(err, s.want)) {
			t.Errorf("seed %s: Decode = %v, want %v", s.name, err, s.want)
		}
		want := fmt.Sprintf("go test fuzz v1\n[]byte(%s) // %s; want %s\n", strconv.Quote(string(data)), s.note, errName(s.want))
		path := filepath.Join(seedDir, s.name)
		if *updateSeeds {
			if err := os.MkdirAll(seedDir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("seed %s: %v (run go test -run TestFuzzSeeds -update-seeds)", s.name, err)
			continue
		}
		if !bytes.Equal(got, []byte(want)) {
			t.Errorf("seed %s is stale (run go test -run TestFuzzSeeds -update-seeds)", s.name)
		}
	}
}

func errName(err error) string {
	if err == nil {
		return "accepted"
	}
	return strings.TrimPrefix(err.Error(), "heartbeat: ")
}

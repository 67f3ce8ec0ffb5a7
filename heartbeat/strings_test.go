package heartbeat

import (
	"errors"
	"strings"
	"testing"
)

// badStrings are names a sender must not get into logs, terminals, hook
// environments or Prometheus labels.
var badStrings = []struct{ name, s string }{
	{"invalid UTF-8", "node\xff"},
	{"truncated rune", "node\xc3"},
	{"newline", "node\nFAKE LOG LINE"},
	{"escape", "node\x1b[2J"},
	{"NUL", "no\x00de"},
	{"DEL", "node\x7f"},
	{"C1 control", "node\u0085"},
	{"line separator", "node\u2028"},
	{"bidi override", "node\u202e"},
}

// rawFrame encodes f with the unauthenticated codec, bypassing Append's
// string check: the strings are written as they are, then sealed for c.
func rawFrame(c *Codec, f Frame) []byte {
	n := fixedLen + len(f.Node) + len(f.Serial) + len(f.Primary) + f.extLen() + tagLen
	b := make([]byte, n)
	f.put(b, n, 0)
	return sealWith(c, testPassword, b)
}

// TestDecodeRejectsBadStrings: an authentic frame whose node name, serial,
// primary or vcluster-2 primary is not printable UTF-8 is dropped as
// malformed; Append refuses to send one; clean text, including non-ASCII
// letters and an ASCII space, passes.
func TestDecodeRejectsBadStrings(t *testing.T) {
	c := NewCodec(testPassword, testGroup)
	for _, bs := range badStrings {
		for _, field := range []string{"node", "serial", "primary", "vc2-primary"} {
			f := testFrame()
			f.Flags = 0
			switch field {
			case "node":
				f.Node = bs.s
			case "serial":
				f.Serial = bs.s
			case "primary":
				f.Primary = bs.s
			case "vc2-primary":
				f.HasVC2, f.VC2 = true, VClusterState{VCluster: 2, Role: 2, Primary: bs.s}
			}
			var got Frame
			if err := c.Decode(rawFrame(c, f), &got); !errors.Is(err, ErrMalformed) {
				t.Errorf("%s in %s: Decode = %v, want ErrMalformed", bs.name, field, err)
			}
			if _, err := c.Append(nil, &f); !errors.Is(err, ErrMalformed) {
				t.Errorf("%s in %s: Append = %v, want ErrMalformed", bs.name, field, err)
			}
		}
		if ValidString(bs.s) {
			t.Errorf("ValidString(%q) = true", bs.s)
		}
	}
	for _, ok := range []string{"", "node-a", "nœud-ü", "名前", "a b", strings.Repeat("é", MaxStringLen/2)} {
		if !ValidString(ok) {
			t.Errorf("ValidString(%q) = false", ok)
		}
	}
	if ValidString(strings.Repeat("é", MaxStringLen/2+1)) {
		t.Error("a string over MaxStringLen bytes is valid")
	}
	good := testFrame()
	good.Node = "nœud ü"
	var got Frame
	if err := c.Decode(mustAppend(t, c, good), &got); err != nil || got.Node != good.Node {
		t.Errorf("clean non-ASCII name: Decode = %v, node %q", err, got.Node)
	}
}

package sessionsync

import (
	"net/netip"
	"reflect"
	"testing"
)

// TestSetKeyHasNoPointers: the key of a receiver's sets of copies holds
// no pointer, so the garbage collector does not mark a million of them
// (keyset.go). A netip.Addr in it (a pointer for its zone) fails this.
func TestSetKeyHasNoPointers(t *testing.T) {
	var walk func(reflect.Type, string)
	walk = func(ty reflect.Type, path string) {
		switch ty.Kind() {
		case reflect.Struct:
			for i := range ty.NumField() {
				walk(ty.Field(i).Type, path+"."+ty.Field(i).Name)
			}
		case reflect.Array:
			walk(ty.Elem(), path+"[]")
		case reflect.Pointer, reflect.Map, reflect.Slice, reflect.String, reflect.Interface, reflect.Chan, reflect.Func, reflect.UnsafePointer:
			t.Errorf("setKey%s is a %s: the collector scans every key of the set", path, ty.Kind())
		}
	}
	walk(reflect.TypeOf(setKey{}), "")
}

// TestKeySetRoundTrip: a key comes out of the set as it went in, IPv4,
// IPv6, IPv4-mapped IPv6 and the zero address alike, and keys differing
// in one field are distinct entries.
func TestKeySetRoundTrip(t *testing.T) {
	v4, v6, mapped := netip.MustParseAddr("10.9.0.10"), netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("::ffff:10.9.0.10")
	keys := []Key{
		{Proto: ProtoTCP, Orig: Tuple{Src: v4, Dst: netip.MustParseAddr("10.9.2.10"), SrcPort: 1, DstPort: 2}},
		{Proto: ProtoTCP, Orig: Tuple{Src: v6, Dst: netip.MustParseAddr("2001:db8::2"), SrcPort: 1, DstPort: 2}},
		{Proto: ProtoTCP, Orig: Tuple{Src: mapped, Dst: v4, SrcPort: 1, DstPort: 2}},
		{Zone: 7, Proto: ProtoUDP, Orig: Tuple{Src: v4, Dst: v4, SrcPort: 1, DstPort: 2}},
		{Proto: ProtoUDP, Orig: Tuple{Src: v4, Dst: v4, SrcPort: 1, DstPort: 2}},
		{Proto: ProtoUDP, Orig: Tuple{Src: v4, Dst: v4, SrcPort: 2, DstPort: 1}},
		{Proto: ProtoICMP},
	}
	s := keySet{}
	for _, k := range keys {
		if s.has(k) {
			t.Fatalf("%+v found before it was added", k)
		}
		s.add(k)
	}
	if len(s) != len(keys) {
		t.Fatalf("%d entries for %d distinct keys", len(s), len(keys))
	}
	got := map[Key]bool{}
	for sk := range s {
		got[sk.key()] = true
	}
	for _, k := range keys {
		if !got[k] || !s.has(k) {
			t.Fatalf("%+v did not come back out of the set (%v)", k, got)
		}
		s.del(k)
	}
	if len(s) != 0 {
		t.Fatalf("%d entries left after deleting every key", len(s))
	}
}

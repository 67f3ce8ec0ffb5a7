package configsync

import (
	"encoding/json"
	"testing"
)

// TestDecodeSizeOverflow: four content entries of 2^62 bytes add up to 0
// in an int64; the message carries no content. The decoder must refuse it
// (before, it accepted it and contents panicked on a slice bound).
func TestDecodeSizeOverflow(t *testing.T) {
	var h syncHeader
	for _, p := range []string{"/etc/a", "/etc/b", "/etc/c", "/etc/d"} {
		h.Entries = append(h.Entries, Entry{Path: p, Kind: KindFile, Size: 1 << 62})
	}
	for _, kind := range []msgKind{msgPush, msgPullResp} {
		b, err := encodeSyncMsg(kind, &h, nil)
		if err != nil {
			t.Fatal(err)
		}
		m, err := decodeSyncMsg("x", b)
		if err == nil {
			m.contents() // panicked before the fix
			t.Fatalf("%s with sizes summing to 0 (mod 2^64) accepted", kind)
		}
	}
}

// TestDecodeRefusesBadEntries: entries no scan produces are refused by
// the decoder, before any store sees them.
func TestDecodeRefusesBadEntries(t *testing.T) {
	for name, e := range map[string]Entry{
		"no kind":        {Path: "/etc/a"},
		"relative":       {Path: "etc/a", Kind: KindDir},
		"unclean":        {Path: "/etc/../a", Kind: KindDir},
		"cluster path":   {Path: ClusterPath, Kind: KindFile},
		"cluster kind":   {Path: "/etc/a", Kind: KindCluster},
		"negative size":  {Path: "/etc/a", Kind: KindDir, Size: -1},
		"mode bits":      {Path: "/etc/a", Kind: KindDir, Mode: 0o40755},
		"uid":            {Path: "/etc/a", Kind: KindDir, UID: 1 << 40},
		"gid":            {Path: "/etc/a", Kind: KindDir, GID: -2},
		"nul in path":    {Path: "/etc/a\x00b", Kind: KindDir},
		"manifest entry": {Path: "/etc/../../x", Kind: KindFile},
	} {
		for _, kind := range []msgKind{msgPush, msgManifestResp, msgPullResp} {
			h := syncHeader{Entries: []Entry{e}}
			j, _ := json.Marshal(&h)
			if e.Kind == kindInvalid {
				j = []byte(`{"id":1,"entries":[{"path":"/etc/a","mode":0,"uid":0,"gid":0,"size":0}]}`)
			}
			b := append([]byte{byte(kind), 0, 0, 0, byte(len(j))}, j...)
			if _, err := decodeSyncMsg("x", b); err == nil {
				t.Errorf("%s: %s entry %+v accepted", name, kind, e)
			}
		}
	}
}

package configsync

import "testing"

// FuzzSyncMsg checks the sync message decoder never panics and that the
// content it splits matches what the entries announce.
func FuzzSyncMsg(f *testing.F) {
	h := syncHeader{ID: 1, Gen: 2, Entries: []Entry{{Path: "/etc/a", Kind: KindFile, Size: 3}}}
	b, _ := encodeSyncMsg(msgPush, &h, []byte("abc"))
	f.Add(b)                                 // valid push
	f.Add(b[:len(b)-1])                      // content one byte short
	f.Add([]byte{5, 0, 0, 0, 2, '{', '}'})   // empty push
	f.Add([]byte{5, 0xff, 0xff, 0xff, 0xff}) // header length beyond the message
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeSyncMsg("node-a", b)
		if err != nil {
			return
		}
		if m.kind == msgPush || m.kind == msgPullResp {
			for i, c := range m.contents() {
				if e := m.hdr.Entries[i]; carriesContent(e.Kind) && int64(len(c)) != e.Size {
					t.Fatalf("entry %d: %d bytes for size %d", i, len(c), e.Size)
				}
			}
		}
	})
}

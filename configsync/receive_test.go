package configsync

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/hagent/hagent/l2chan"
)

func fileEntry(p, content string) Entry {
	return Entry{Path: p, Kind: KindFile, Mode: 0o644, UID: -1, GID: -1, Size: int64(len(content)),
		SHA256: sha256.Sum256([]byte(content))}
}

// captureTransport records what the syncer sends.
type captureTransport struct {
	mu   sync.Mutex
	sent []*syncMsg
}

func (c *captureTransport) Send(_ context.Context, peer string, b []byte) error {
	m, err := decodeSyncMsg(peer, b)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.sent = append(c.sent, m)
	c.mu.Unlock()
	return nil
}

func (c *captureTransport) Recv() <-chan l2chan.Message { return nil }

func (c *captureTransport) take() []*syncMsg {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.sent
	c.sent = nil
	return s
}

// receiveFixture is a secondary "b" of primary "p" over root/etc/app,
// with a directory outside the root and root/etc/app/link -> outside; it
// handles messages synchronously (receive, applyPush, serve).
type receiveFixture struct {
	base, root, outside string
	s                   *Syncer
	tr                  *captureTransport
}

func newReceiveFixture(tb testing.TB, base string) *receiveFixture {
	tb.Helper()
	f := &receiveFixture{base: base, root: filepath.Join(base, "root"), outside: filepath.Join(base, "outside"), tr: &captureTransport{}}
	for _, d := range []string{f.root + "/etc/app/d", f.outside} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	writeFile(tb, f.root+"/etc/app/d/conf", "mine\n", 0o644)
	writeFile(tb, f.outside+"/shadow", "secret\n", 0o600)
	os.Symlink(f.outside, f.root+"/etc/app/link")
	cfg := LabSyncConfig()
	cfg.Self, cfg.Root, cfg.Paths, cfg.Transport = "b", f.root, []string{"/etc/app"}, f.tr
	s, err := NewSyncer(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	s.grace = 0
	s.SetRole(false, []string{"p"})
	f.s = s
	return f
}

// handle passes one message from peer through the receive path.
func (f *receiveFixture) handle(from string, b []byte) []*syncMsg {
	ctx := context.Background()
	f.s.receive(ctx, l2chan.Message{From: from, Data: b},
		func(ctx context.Context, m *syncMsg) bool { f.s.applyPush(ctx, m); return true },
		func(m *syncMsg) { f.s.serve(ctx, m) })
	return f.tr.take()
}

// outsideState describes everything below base but outside root.
func (f *receiveFixture) outsideState(tb testing.TB) string {
	out := ""
	filepath.WalkDir(f.base, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == f.root {
			return filepath.SkipDir
		}
		fi, _ := os.Lstat(p)
		b, _ := os.ReadFile(p)
		out += fmt.Sprintf("%s %v %x\n", p, fi.Mode(), sha256.Sum256(b))
		return nil
	})
	return out
}

func mustEncode(tb testing.TB, kind msgKind, h *syncHeader, blob []byte) []byte {
	b, err := encodeSyncMsg(kind, h, blob)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// TestServeOnlyToEntitled: manifests, pulled content and generations are
// answered to this node's primary only, pushes accepted from it only; a
// file below a symlinked directory is not served even to it.
func TestServeOnlyToEntitled(t *testing.T) {
	f := newReceiveFixture(t, t.TempDir())
	pull := mustEncode(t, msgPullReq, &syncHeader{ID: 1, Paths: []string{"/etc/app/d/conf", "/etc/app/link/shadow"}}, nil)
	for _, r := range f.handle("x", pull) {
		if len(r.hdr.Entries) > 0 || len(r.blob) > 0 {
			t.Errorf("pull from a non-primary answered with %d entries: %q", len(r.hdr.Entries), r.blob)
		}
	}
	for _, r := range f.handle("x", mustEncode(t, msgManifestReq, &syncHeader{ID: 2}, nil)) {
		if len(r.hdr.Entries) > 0 {
			t.Errorf("manifest sent to a non-primary: %d entries", len(r.hdr.Entries))
		}
	}
	c := "intruder\n"
	push := mustEncode(t, msgPush, &syncHeader{ID: 3, Gen: 9, Entries: []Entry{fileEntry("/etc/app/d/conf", c)}}, []byte(c))
	f.handle("x", push)
	if b, _ := os.ReadFile(f.root + "/etc/app/d/conf"); string(b) != "mine\n" {
		t.Errorf("push from a non-primary applied: %q", b)
	}
	if got := f.s.Status().Refused; got < 3 {
		t.Errorf("refused = %d, want >= 3", got)
	}
	var got *syncMsg
	for _, r := range f.handle("p", pull) {
		if r.kind == msgPullResp {
			got = r
		}
	}
	if got == nil || len(got.hdr.Entries) != 1 || string(got.blob) != "mine\n" {
		t.Fatalf("pull from the primary: %+v", got)
	}
}

// FuzzReceive drives the whole receive path of a secondary (decode,
// entitlement, apply of pushes, answers to requests) with messages from
// its primary "p" or another member "x", on a temporary root holding a
// symlink to a directory outside it: no input may panic or change
// anything outside the root.
func FuzzReceive(f *testing.F) {
	file := func(p, c string) Entry { return fileEntry(p, c) }
	dir := Entry{Path: "/etc/app/n", Kind: KindDir, Mode: 0o777, UID: -1, GID: -1}
	link := Entry{Path: "/etc/app/l2", Kind: KindSymlink, Size: 4, SHA256: sha256.Sum256([]byte("/tmp")), UID: -1, GID: -1}
	seeds := []struct {
		from byte
		kind msgKind
		h    syncHeader
		blob string
	}{
		{0, msgPush, syncHeader{ID: 1, Gen: 2, Entries: []Entry{file("/etc/app/a", "abc")}}, "abc"},
		{0, msgPush, syncHeader{ID: 1, Gen: 3, Entries: []Entry{dir, file("/etc/app/n/f", "x")}}, "x"},
		{0, msgPush, syncHeader{ID: 1, Gen: 4, Entries: []Entry{link}}, "/tmp"},
		{0, msgPush, syncHeader{ID: 1, Gen: 5, Entries: []Entry{file("/etc/app/link/evil", "e")}}, "e"},
		{0, msgPush, syncHeader{ID: 1, Gen: 6, Entries: []Entry{{Path: "/etc/app/link", Kind: KindDir, Mode: 0o777, UID: -1, GID: -1}}}, ""},
		{0, msgPush, syncHeader{ID: 1, Gen: 7, Deleted: []string{"/etc/app/link/shadow", "/etc/app/d"}}, ""},
		{1, msgPush, syncHeader{ID: 1, Gen: 8, Entries: []Entry{file("/etc/app/a", "zz")}}, "zz"},
		{0, msgPullReq, syncHeader{ID: 2, Paths: []string{"/etc/app/link/shadow", "/etc/app/d/conf"}}, ""},
		{1, msgPullReq, syncHeader{ID: 2, Paths: []string{"/etc/app/d/conf"}}, ""},
		{0, msgManifestReq, syncHeader{ID: 3}, ""},
		{0, msgGenReq, syncHeader{ID: 4}, ""},
		{0, msgSyncReq, syncHeader{ID: 5}, ""},
		{0, msgPushAck, syncHeader{ID: 6}, ""},
	}
	for _, s := range seeds {
		b, _ := encodeSyncMsg(s.kind, &s.h, []byte(s.blob))
		f.Add(s.from, b)
	}
	var h syncHeader
	for range 4 {
		h.Entries = append(h.Entries, Entry{Path: "/etc/app/a", Kind: KindFile, Size: 1 << 62})
	}
	b, _ := encodeSyncMsg(msgPush, &h, nil)
	f.Add(byte(0), b) // sizes that overflow to 0
	base := f.TempDir()
	var fx *receiveFixture
	var want string
	f.Fuzz(func(t *testing.T, from byte, data []byte) {
		if fx == nil {
			fx = newReceiveFixture(t, base)
			want = fx.outsideState(t)
		}
		peer := "p"
		if from&1 != 0 {
			peer = "x"
		}
		fx.handle(peer, data)
		if got := fx.outsideState(t); got != want {
			t.Fatalf("outside the root changed:\n%s\nwas\n%s", got, want)
		}
		// The link to outside comes back for the next input.
		if fi, err := os.Lstat(fx.root + "/etc/app/link"); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			os.RemoveAll(fx.root + "/etc/app/link")
			os.MkdirAll(fx.root+"/etc/app", 0o755)
			os.Symlink(fx.outside, fx.root+"/etc/app/link")
		}
	})
}

// TestMembersBounded: heartbeats naming ever new members keep at most
// maxTrackedMembers members' state, and never forget the primary.
func TestMembersBounded(t *testing.T) {
	f := newReceiveFixture(t, t.TempDir())
	f.s.NotePeerChecksum("p", [32]byte{1}, 1)
	for i := range 1000 {
		f.s.NotePeerChecksum(fmt.Sprintf("n%d", i), [32]byte{byte(i)}, uint64(i))
	}
	f.s.mu.Lock()
	n, primary := len(f.s.members), f.s.members["p"]
	f.s.mu.Unlock()
	noted := 0
	f.s.noted.Range(func(any, any) bool { noted++; return true })
	if n > maxTrackedMembers || noted > maxTrackedMembers || primary == nil {
		t.Fatalf("%d members, %d noted (bound %d), primary kept: %v", n, noted, maxTrackedMembers, primary != nil)
	}
}

// TestRequestsBounded: requests beyond maxServing at once are dropped and
// counted, not given a goroutine each; a push from a member that is not
// the primary is not even queued.
func TestRequestsBounded(t *testing.T) {
	f := newReceiveFixture(t, t.TempDir())
	ctx := context.Background()
	served := 0
	req := mustEncode(t, msgManifestReq, &syncHeader{ID: 1}, nil)
	for range 100 {
		f.s.receive(ctx, l2chan.Message{From: "p", Data: req}, f.s.queuePush, func(*syncMsg) { served++ })
	}
	if served != maxServing || f.s.refused.Load() != 100-maxServing {
		t.Fatalf("served %d, refused %d of 100; want %d served at once", served, f.s.refused.Load(), maxServing)
	}
	c := "x"
	push := mustEncode(t, msgPush, &syncHeader{ID: 2, Entries: []Entry{fileEntry("/etc/app/a", c)}}, []byte(c))
	queued := 0
	for range 3 * applyQLen {
		f.s.receive(ctx, l2chan.Message{From: "x", Data: push}, func(context.Context, *syncMsg) bool { queued++; return true }, nil)
	}
	if queued != 0 {
		t.Fatalf("%d pushes from a non-primary queued", queued)
	}
}

// TestPullAnswerOncePerPath: a pull naming one path many times gets its
// content once, not once per mention.
func TestPullAnswerOncePerPath(t *testing.T) {
	f := newReceiveFixture(t, t.TempDir())
	paths := make([]string, 1000)
	for i := range paths {
		paths[i] = "/etc/app/d/conf"
	}
	for _, r := range f.handle("p", mustEncode(t, msgPullReq, &syncHeader{ID: 1, Paths: paths}, nil)) {
		if r.kind == msgPullResp && (len(r.hdr.Entries) != 1 || len(r.blob) != len("mine\n")) {
			t.Fatalf("pull answer: %d entries, %d bytes", len(r.hdr.Entries), len(r.blob))
		}
	}
}

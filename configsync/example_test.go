package configsync_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hagent/hagent/configsync"
	"github.com/hagent/hagent/heartbeat"
	"github.com/hagent/hagent/l2chan"
)

// Example wires an l2chan.Channel and a Syncer the way the agent does.
// Links come from heartbeat.DialLink(ifname, 0x8893) in the daemon.
func Example() {
	var links []heartbeat.Link // e.g. ha1, ha2 in priority order
	if len(links) == 0 {
		fmt.Println("no hbdev links in this example")
		return
	}
	ch, err := l2chan.New(l2chan.Config{
		Self: "node-a", GroupID: 10, Password: []byte("secret"), Links: links,
		Label: configsync.ChannelLabel,
	})
	if err != nil {
		panic(err)
	}
	defer ch.Close()
	s, err := configsync.NewSyncer(configsync.SyncConfig{
		Self:      "node-a",
		Paths:     []string{"/etc/nftables.conf"},
		OnChange:  map[string]string{"/etc/nftables.conf": "nft -f /etc/nftables.conf"},
		Period:    time.Minute,
		Transport: ch,
	})
	if err != nil {
		panic(err)
	}
	s.SetRole(true, []string{"node-b"}) // from the election
	go s.Run(context.Background())
	// Output: no hbdev links in this example
}

// ExampleWriteFileAtomic replaces a file so readers never see it torn.
func ExampleWriteFileAtomic() {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	p := filepath.Join(dir, "nftables.conf")
	if err := configsync.WriteFileAtomic(p, []byte("flush ruleset\n"), 0o640, -1, -1); err != nil {
		panic(err)
	}
	fi, _ := os.Stat(p)
	fmt.Println(fi.Mode().Perm())
	// Output: -rw-r-----
}

// ExampleDiff lists what turns one manifest into another.
func ExampleDiff() {
	a := configsync.NewManifest([]configsync.Entry{
		{Path: "/etc/a", Kind: configsync.KindFile, Mode: 0o644},
		{Path: "/etc/b", Kind: configsync.KindFile, Mode: 0o644},
	})
	b := configsync.NewManifest([]configsync.Entry{
		{Path: "/etc/b", Kind: configsync.KindFile, Mode: 0o600},
		{Path: "/etc/c", Kind: configsync.KindDir, Mode: 0o755},
	})
	for _, c := range configsync.Diff(a, b) {
		fmt.Println(c.Op, c.Path)
	}
	// Output:
	// deleted /etc/a
	// modified /etc/b
	// new /etc/c
}

package config

import (
	"fmt"
	"strings"
	"testing"
)

// TestUnicastPeersPerMode: unicast_hb.peers lists every member, so it
// takes up to 4 addresses in mode a-p and up to 16 in mode fgsp; one more
// is one error naming the file, the line and the key.
func TestUnicastPeersPerMode(t *testing.T) {
	withIdentity(t, "box1", testMachineID)
	peers := func(n int) string {
		s := make([]string, n)
		for i := range s {
			s[i] = fmt.Sprintf("10.99.%d.1", i+1)
		}
		return "[" + strings.Join(s, ", ") + "]"
	}
	doc := func(mode string, n int) string {
		return "cluster:\n  password_file: /k\n  mode: " + mode + "\n  hbdev: []\n  unicast_hb:\n    enabled: true\n    peers: " + peers(n) + "\n"
	}
	for _, tc := range []struct {
		mode string
		n    int
		want string // "" accepted
	}{
		{"a-p", 4, ""},
		{"a-p", 5, "t.yaml:7: cluster.unicast_hb.peers: 5 addresses; a cluster in mode a-p has at most 4 members (16 in mode fgsp)"},
		{"fgsp", 5, ""},
		{"fgsp", 16, ""},
		{"fgsp", 17, "t.yaml:7: cluster.unicast_hb.peers: 17 peers; at most 16 allowed"},
	} {
		t.Run(fmt.Sprintf("%s %d", tc.mode, tc.n), func(t *testing.T) {
			c, err := Parse("t.yaml", []byte(doc(tc.mode, tc.n)))
			if tc.want == "" {
				if err != nil {
					t.Fatalf("unexpected error:\n%v", err)
				}
				if len(c.Cluster.UnicastHB.Peers) != tc.n || MaxMembers(c.Cluster.Mode) < tc.n {
					t.Fatalf("%d peers, limit %d", len(c.Cluster.UnicastHB.Peers), MaxMembers(c.Cluster.Mode))
				}
				return
			}
			if err == nil || err.Error() != tc.want {
				t.Fatalf("error:\n%v\nwant\n%s", err, tc.want)
			}
		})
	}
}

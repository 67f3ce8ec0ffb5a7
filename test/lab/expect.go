package lab

import (
	"fmt"
	"os/exec"
	"strings"

	"github.com/hagent/hagent/sessionsync"
)

// FTPHelperRules assigns the kernel's FTP helper to connections to TCP
// port 21 (the kernel attaches helpers only where the ruleset says so).
const FTPHelperRules = `table inet helpers {
	ct helper ftp-std { type "ftp" protocol tcp; }
	chain pre { type filter hook prerouting priority filter; tcp dport 21 ct helper set "ftp-std"; }
}
`

// SetupFTPHelper loads FTPHelperRules on every node.
func (l *Lab) SetupFTPHelper() error {
	for _, n := range l.Nodes {
		cmd := exec.Command("ip", "netns", "exec", n.NS, "nft", "-f", "-")
		cmd.Stdin = strings.NewReader(FTPHelperRules)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("nft helpers on %s: %v: %s", n.Name, err, out)
		}
	}
	return nil
}

// Expectations returns the expectations of a node's kernel table.
func (n *Node) Expectations() ([]sessionsync.Expect, error) {
	var out []sessionsync.Expect
	err := InNS(n.NS, func() error {
		k, err := sessionsync.OpenKernel()
		if err != nil {
			return err
		}
		defer k.Close()
		return k.DumpExpect(func(x *sessionsync.Expect) { out = append(out, *x) })
	})
	return out, err
}

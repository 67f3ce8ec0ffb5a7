package sessionsync

import (
	"os"
	"strconv"
	"strings"
)

// KernelHelper reports whether this kernel has the connection-tracking
// helper name: its module (nf_conntrack_<name>, "-" as "_"; the H.323
// helpers' is nf_conntrack_h323) is loaded or built in (/sys/module).
// It is the agent's Config.Helpers: a copy may carry a helper only if
// this node could have attached it to its own traffic; a name of another
// helper, or of none the kernel knows (a userspace helper, a made-up
// name), is removed from the copy.
func KernelHelper(name string) bool {
	if name == "" || len(name) > MaxHelperName || strings.ContainsAny(name, "/.") && !h323[name] {
		return false
	}
	mod := "nf_conntrack_" + strings.ReplaceAll(name, "-", "_")
	if h323[name] {
		mod = "nf_conntrack_h323"
	}
	_, err := os.Stat("/sys/module/" + mod)
	return err == nil
}

// h323 are the names of the helpers of nf_conntrack_h323.
var h323 = map[string]bool{"H.245": true, "Q.931": true, "RAS": true}

// KernelMaxFlows returns this kernel's nf_conntrack_max (0 when it cannot
// be read): the bound of the sender's bookkeeping (Config.MaxTracked).
func KernelMaxFlows() int {
	b, err := os.ReadFile("/proc/sys/net/netfilter/nf_conntrack_max")
	if err != nil {
		return 0
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n <= 0 {
		return 0
	}
	return n
}

package vmac

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hagent/hagent/internal/paths"
)

// Defaults applied by NewManager to zero Config fields; they are the
// defaults of the configuration keys arps and arps_interval.
const (
	DefaultARPs        = 5
	DefaultARPInterval = 8 * time.Second
	DefaultStateDir    = paths.RunDir
)

// StateFile is the name of the file, inside Config.StateDir, that remembers
// the permanent MAC of every data interface so that a node that crashed while
// holding the vMAC can restore it.
const StateFile = "vmac-perm.json"

// ErrNotOwned is returned by Announce when the Manager does not hold the
// virtual MACs (Take has not been called since the last Release or Reset).
var ErrNotOwned = errors.New("vmac: virtual MACs not owned by this node")

// Interface is one data interface of the vcluster and the cluster addresses
// it carries while this node is primary.
type Interface struct {
	// Name is the interface name, e.g. "port1".
	Name string
	// Prefixes are the cluster addresses with their prefix length, e.g.
	// 10.9.0.100/24 and 2001:db8::100/64. The address part is the address
	// added to the interface; it need not be the network address.
	Prefixes []netip.Prefix
}

// Config configures a Manager.
type Config struct {
	// GroupID is the HA group id, 0-1023.
	GroupID int
	// VCluster is the virtual cluster, 1 or 2.
	VCluster int
	// Interfaces are the data interfaces (at most MaxInterfaces). Their
	// vMAC index is their position sorted by name, whatever the order here.
	Interfaces []Interface
	// ARPs is the number of gratuitous ARPs (and unsolicited NAs) sent per
	// address on Take: the first at once, the rest every ARPInterval.
	// Zero means DefaultARPs.
	ARPs int
	// ARPInterval is the time between two rounds of announcements.
	// Zero means DefaultARPInterval.
	ARPInterval time.Duration
	// StateDir is where the permanent MACs are remembered across crashes
	// (file StateFile). Empty means DefaultStateDir.
	StateDir string
	// Logger receives one line per state change; nil discards.
	Logger hclog.Logger
}

// normalize validates cfg and returns a copy with defaults applied and the
// interfaces sorted by name.
func (cfg Config) normalize() (Config, map[string]net.HardwareAddr, error) {
	if cfg.ARPs < 0 {
		return cfg, nil, fmt.Errorf("vmac: arps %d must not be negative", cfg.ARPs)
	}
	if cfg.ARPs == 0 {
		cfg.ARPs = DefaultARPs
	}
	if cfg.ARPInterval < 0 {
		return cfg, nil, fmt.Errorf("vmac: arp interval %v must not be negative", cfg.ARPInterval)
	}
	if cfg.ARPInterval == 0 {
		cfg.ARPInterval = DefaultARPInterval
	}
	if cfg.StateDir == "" {
		cfg.StateDir = DefaultStateDir
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if len(cfg.Interfaces) == 0 {
		return cfg, nil, errors.New("vmac: no data interfaces")
	}
	names := make([]string, len(cfg.Interfaces))
	for i, ifc := range cfg.Interfaces {
		names[i] = ifc.Name
		for _, p := range ifc.Prefixes {
			if !p.IsValid() || p.Addr().Zone() != "" || p.Addr().Is4In6() {
				return cfg, nil, fmt.Errorf("vmac: interface %s: invalid address %v", ifc.Name, p)
			}
			if p.Addr().IsMulticast() || p.Addr().IsUnspecified() {
				return cfg, nil, fmt.Errorf("vmac: interface %s: %v is not a unicast address", ifc.Name, p)
			}
		}
	}
	macs, err := Assign(names, cfg.GroupID, cfg.VCluster)
	if err != nil {
		return cfg, nil, err
	}
	sorted := append([]Interface(nil), cfg.Interfaces...)
	sortInterfaces(sorted)
	cfg.Interfaces = sorted
	return cfg, macs, nil
}

func sortInterfaces(ifs []Interface) {
	slices.SortFunc(ifs, func(a, b Interface) int { return strings.Compare(a.Name, b.Name) })
}

// TakeReport carries the timestamps of one Take, for the agent's history.
// A phase that did not happen (for example no address to announce) leaves
// its field zero.
type TakeReport struct {
	// Start is when Take was entered.
	Start time.Time
	// MACSet is when every interface had its vMAC.
	MACSet time.Time
	// AddrsAdded is when every cluster address was added.
	AddrsAdded time.Time
	// FirstGARP is when the first gratuitous ARP (or unsolicited NA) was
	// handed to the kernel.
	FirstGARP time.Time
	// AnnounceErr reports announcements of the first round that could not
	// be sent (e.g. a data link is down). It does not fail the Take: the
	// vMACs and addresses are in place and later rounds try again.
	AnnounceErr error
}

// IfaceStatus describes one data interface as the kernel shows it now.
type IfaceStatus struct {
	// Name is the interface name.
	Name string
	// VMAC is the interface's virtual MAC.
	VMAC net.HardwareAddr
	// PermMAC is the MAC restored when this node releases the vMAC.
	PermMAC net.HardwareAddr
	// Owned reports whether the interface's current MAC is the vMAC.
	Owned bool
	// Addresses are the cluster addresses currently present on the interface.
	Addresses []netip.Prefix
	// Restores counts the times the Manager put the vMAC or a cluster
	// address back on the interface after something else had changed or
	// removed it while this node held them (Manager.Guard).
	Restores uint64
}

// Bounds of Guard: it restores at once up to GuardBurst times in a row,
// then once per GuardRefill, so that something that keeps deleting an
// address or setting a MAC (a network manager that considers them its own,
// a script) meets at most 1/GuardRefill restores a second, each a few
// netlink requests and one announcement round, instead of a storm.
const (
	GuardBurst  = 10
	GuardRefill = 250 * time.Millisecond
)

// Restored is what one Restore put back on one interface.
type Restored struct {
	// Interface is the data interface.
	Interface string
	// Found is the MAC found on the interface instead of the vMAC; nil
	// when the vMAC was in place.
	Found net.HardwareAddr
	// VMAC is the vMAC set again (when Found is set).
	VMAC net.HardwareAddr
	// Addresses are the cluster addresses added again.
	Addresses []netip.Prefix
}

// String says what was put back, for logs and history: "port1: vMAC
// 00:09:0f:09:0a:00 set again (found 02:00:00:00:00:01), 10.9.0.100/24
// added again".
func (r Restored) String() string {
	var parts []string
	if r.Found != nil {
		parts = append(parts, fmt.Sprintf("vMAC %s set again (found %s)", r.VMAC, r.Found))
	}
	for _, p := range r.Addresses {
		parts = append(parts, p.String()+" added again")
	}
	if len(parts) == 0 {
		return r.Interface + ": nothing"
	}
	return r.Interface + ": " + strings.Join(parts, ", ")
}

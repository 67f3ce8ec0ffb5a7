package agent

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/hagent/hagent/config"
)

// TestMgmtIgnore: session pickup never copies a flow of a management
// address: each is added to the ignore prefixes as a host prefix, beside
// the configured ones, and nothing is added without a management
// interface.
func TestMgmtIgnore(t *testing.T) {
	cfg := config.Default()
	cfg.Cluster.SessionPickup.Ignore = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
	cfg.Node.Mgmt.Addresses = []netip.Prefix{netip.MustParsePrefix("10.8.0.11/24"), netip.MustParsePrefix("2001:db8:8::11/64")}
	if got := mgmtIgnore(&cfg); !slices.Equal(got, cfg.Cluster.SessionPickup.Ignore) {
		t.Fatalf("without mgmt_interface: %v", got)
	}
	cfg.Cluster.MgmtInterface = "mgmt"
	want := []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("10.8.0.11/32"), netip.MustParsePrefix("2001:db8:8::11/128")}
	if got := mgmtIgnore(&cfg); !slices.Equal(got, want) {
		t.Fatalf("mgmtIgnore = %v, want %v", got, want)
	}
	if len(cfg.Cluster.SessionPickup.Ignore) != 1 {
		t.Fatalf("the configured list was changed: %v", cfg.Cluster.SessionPickup.Ignore)
	}
}

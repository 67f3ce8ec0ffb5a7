//go:build !linux

package vmac

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"time"
)

var errNotImplemented = fmt.Errorf("vmac: not implemented on %s (needs Linux netlink and AF_PACKET)", runtime.GOOS)

// Manager owns the virtual MACs and cluster addresses of one vcluster's data
// interfaces. It is only implemented on Linux.
type Manager struct{}

// NewManager returns an error: the Manager is only implemented on Linux.
func NewManager(cfg Config) (*Manager, error) { return nil, errNotImplemented }

// Take returns an error: the Manager is only implemented on Linux.
func (m *Manager) Take() (TakeReport, error) { return TakeReport{}, errNotImplemented }

// Announce returns an error: the Manager is only implemented on Linux.
func (m *Manager) Announce() error { return errNotImplemented }

// Release returns an error: the Manager is only implemented on Linux.
func (m *Manager) Release() error { return errNotImplemented }

// Reset returns an error: the Manager is only implemented on Linux.
func (m *Manager) Reset() error { return errNotImplemented }

// Owned reports false: the Manager is only implemented on Linux.
func (m *Manager) Owned() bool { return false }

// Status returns nothing: the Manager is only implemented on Linux.
func (m *Manager) Status() []IfaceStatus { return nil }

// Close returns nil; there is nothing to close.
func (m *Manager) Close() error { return nil }

// Restore returns an error: the Manager is only implemented on Linux.
func (m *Manager) Restore() ([]Restored, error) { return nil, errNotImplemented }

// Guard returns an error: the Manager is only implemented on Linux.
func (m *Manager) Guard(ctx context.Context, report func([]Restored, error)) error {
	return errNotImplemented
}

// WatchLinks returns an error: link watching is only implemented on Linux.
func WatchLinks(ctx context.Context, names []string, fn func(name string, up bool)) error {
	return errNotImplemented
}

// ARPProber is not implemented outside Linux.
type ARPProber struct{}

// NewARPProber returns an error outside Linux.
func NewARPProber(ifname string) (*ARPProber, error) { return nil, errNotImplemented }

// Probe is not implemented outside Linux.
func (p *ARPProber) Probe(target netip.Addr, timeout time.Duration) (bool, error) {
	return false, errNotImplemented
}

// Close does nothing outside Linux.
func (p *ARPProber) Close() error { return nil }

// PollCarrier returns an error: carrier polling is only implemented on Linux.
func PollCarrier(ctx context.Context, names []string, every, debounce time.Duration, fn func(name string, up bool)) error {
	return errNotImplemented
}

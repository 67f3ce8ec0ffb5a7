package vmac

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
)

// stateV1 is the content of StateFile: interface name → permanent MAC.
type stateV1 struct {
	Version  int               `json:"version"`
	PermMACs map[string]string `json:"perm_macs"`
}

// readState returns the permanent MACs remembered in dir. A missing file is
// an empty state, not an error; entries that do not parse are skipped.
func readState(dir string) (map[string]net.HardwareAddr, error) {
	b, err := os.ReadFile(filepath.Join(dir, StateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]net.HardwareAddr{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("vmac: read state: %w", err)
	}
	var st stateV1
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("vmac: state file %s: %w", filepath.Join(dir, StateFile), err)
	}
	out := make(map[string]net.HardwareAddr, len(st.PermMACs))
	for name, s := range st.PermMACs {
		mac, err := net.ParseMAC(s)
		if err != nil || len(mac) != 6 {
			continue
		}
		out[name] = mac
	}
	return out, nil
}

// writeState merges macs into the state file in dir, atomically (temporary
// file, fsync, rename), keeping entries of other interfaces.
func writeState(dir string, macs map[string]net.HardwareAddr) error {
	old, err := readState(dir)
	if err != nil {
		// A corrupt file is replaced rather than blocking start-up.
		old = map[string]net.HardwareAddr{}
	}
	st := stateV1{Version: 1, PermMACs: map[string]string{}}
	for name, mac := range old {
		st.PermMACs[name] = mac.String()
	}
	for name, mac := range macs {
		st.PermMACs[name] = mac.String()
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("vmac: state dir: %w", err)
	}
	f, err := os.CreateTemp(dir, StateFile+".tmp*")
	if err != nil {
		return fmt.Errorf("vmac: write state: %w", err)
	}
	tmp := f.Name()
	_, werr := f.Write(append(b, '\n'))
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp, filepath.Join(dir, StateFile))
	}
	if werr != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("vmac: write state: %w", werr)
	}
	return nil
}

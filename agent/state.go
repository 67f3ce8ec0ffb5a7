package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sync"

	"github.com/hashicorp/go-hclog"

	"github.com/hagent/hagent/configsync"
	"github.com/hagent/hagent/heartbeat"
)

// stateFileName is the agent's persistent state inside the state directory.
const stateFileName = "agent-state.json"

// persistedState is what survives restarts and reboots: this node's last
// epoch (heartbeat and control channel), and the latest epoch accepted from
// each peer, so that frames captured before a restart stay replays after
// it.
type persistedState struct {
	Epoch uint64       `json:"epoch"`
	Peers []peerRecord `json:"peers,omitempty"`
}

type peerRecord struct {
	Serial string `json:"serial"`
	NodeID string `json:"node_id,omitempty"`
	Epoch  uint64 `json:"epoch"`
}

// stateStore keeps persistedState in a file, written atomically and
// fsynced (configsync.WriteFileAtomic). A missing or corrupt file is logged
// and replaced, never fatal; an empty directory keeps the state in memory.
type stateStore struct {
	log  hclog.Logger
	path string // "" = memory only

	mu    sync.Mutex
	epoch uint64
	peers map[heartbeat.Peer]uint64
	wg    sync.WaitGroup
	// dirty: a change waits for the saver; saving: the saver goroutine
	// runs (saveLater).
	dirty, saving bool
	// write writes the file's bytes (tests replace it); nil is
	// writeStateFile.
	write func(path string, b []byte) error
}

// openState reads the state file in dir (creating dir if needed).
func openState(dir string, log hclog.Logger) *stateStore {
	s := &stateStore{log: log, peers: map[heartbeat.Peer]uint64{}}
	if dir == "" {
		return s
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		log.Error("state directory unusable: epochs are not persisted (a reboot with a clock behind relies on the peers' epoch hints)", "dir", dir, "error", err)
		return s
	}
	s.path = filepath.Join(dir, stateFileName)
	b, err := os.ReadFile(s.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		log.Info("no state file yet: first start on this node", "file", s.path)
		return s
	case err != nil:
		log.Error("cannot read the state file; starting from the clock", "file", s.path, "error", err)
		return s
	}
	var st persistedState
	if err := json.Unmarshal(b, &st); err != nil {
		log.Error("state file is corrupt; starting from the clock (it is rewritten)", "file", s.path, "error", err)
		return s
	}
	s.epoch = st.Epoch
	for _, p := range st.Peers {
		key := heartbeat.Peer{Serial: p.Serial}
		if p.NodeID != "" {
			mac, err := net.ParseMAC(p.NodeID)
			if err != nil || len(mac) != 6 {
				log.Warn("state file: ignoring a peer with a bad node id", "serial", p.Serial, "node_id", p.NodeID)
				continue
			}
			copy(key.NodeID[:], mac)
		}
		if p.Serial == "" || len(p.Serial) > heartbeat.MaxStringLen {
			continue
		}
		s.peers[key] = p.Epoch
	}
	return s
}

// startEpoch returns this run's epoch, max(previous + 1, wall) with wall
// the clock in unix nanoseconds, and persists it before it is used.
func (s *stateStore) startEpoch(wall uint64) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.epoch = max(raisedEpoch(s.epoch), wall) // saturates: a stored 2^64-1 stays, never wraps to 0
	s.saveLocked()
	return s.epoch
}

// raiseEpoch persists e as this node's epoch if it is larger, in the
// background (the receiver that read the hint must not wait for a disk;
// should the node die before the write, its next start raises its epoch
// again from the same hint).
func (s *stateStore) raiseEpoch(e uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e > s.epoch {
		s.epoch = e
		s.saveLater()
	}
}

// knownPeers returns the persisted peer epochs.
func (s *stateStore) knownPeers() map[heartbeat.Peer]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[heartbeat.Peer]uint64, len(s.peers))
	for k, v := range s.peers {
		out[k] = v
	}
	return out
}

// notePeer records a peer's new epoch and saves it in the background (a
// peer restart must not wait for a disk).
func (s *stateStore) notePeer(p heartbeat.Peer, epoch uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.peers[p]; ok && old >= epoch {
		return
	}
	s.peers[p] = epoch
	if len(s.peers) > heartbeat.MaxTrackedSerials {
		// Forget the oldest epoch: a member long gone. Ties count too:
		// with every epoch at 2^64-1 (a key holder's senders) a strict
		// "below the lowest so far" found no victim and the table grew
		// by one per sender (TestStatePeersBoundedAtTopEpoch).
		var victim heartbeat.Peer
		found := false
		var lowest uint64
		for k, v := range s.peers {
			if !found || v < lowest {
				victim, lowest, found = k, v, true
			}
		}
		delete(s.peers, victim)
	}
	s.saveLater()
}

// saveLater has the state written in the background (s.mu held). One
// saver goroutine at a time writes the latest state, and a change made
// while it writes is written once after it: heartbeats that carry a new
// epoch at every frame (a key holder, or anyone on the segment with
// cluster.auth: false) cost a flag, not a goroutine and an fsync each.
// Before, each change started a goroutine that waited for the lock and
// wrote the file: 5 000 such frames left 5 000 goroutines and 56 s of
// writes queued (TestStateSavesCoalesce).
func (s *stateStore) saveLater() {
	if s.path == "" {
		return
	}
	s.dirty = true
	if s.saving {
		return
	}
	s.saving = true
	s.wg.Add(1)
	go s.saver()
}

// saver writes the state until no change waits, outside the lock: the
// run goroutine and the receivers never wait for the disk.
func (s *stateStore) saver() {
	defer s.wg.Done()
	s.mu.Lock()
	for s.dirty {
		s.dirty = false
		b, err := s.encodeLocked()
		s.mu.Unlock()
		if err == nil {
			err = s.writeFile(b)
		}
		if err != nil {
			s.log.Error("cannot save the state file", "file", s.path, "error", fmt.Sprint(err))
		}
		s.mu.Lock()
	}
	s.saving = false
	s.mu.Unlock()
}

// wait waits for background saves.
func (s *stateStore) wait() { s.wg.Wait() }

// saveLocked writes the state now (s.mu held): at start, before the
// epoch is used.
func (s *stateStore) saveLocked() {
	if s.path == "" {
		return
	}
	b, err := s.encodeLocked()
	if err == nil {
		err = s.writeFile(b)
	}
	if err != nil {
		s.log.Error("cannot save the state file", "file", s.path, "error", fmt.Sprint(err))
	}
}

// encodeLocked is the state file's content (s.mu held).
func (s *stateStore) encodeLocked() ([]byte, error) {
	st := persistedState{Epoch: s.epoch}
	for k, v := range s.peers {
		r := peerRecord{Serial: k.Serial, Epoch: v}
		if !k.NodeID.IsZero() {
			r.NodeID = k.NodeID.String()
		}
		st.Peers = append(st.Peers, r)
	}
	return json.Marshal(st)
}

func (s *stateStore) writeFile(b []byte) error {
	if s.write != nil {
		return s.write(s.path, b)
	}
	return configsync.WriteFileAtomic(s.path, b, 0o600, -1, -1)
}

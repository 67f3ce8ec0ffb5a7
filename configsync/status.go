package configsync

import (
	"fmt"
	"slices"
	"time"
)

// Role names used in SyncStatus.
const (
	RoleStarting  = "starting"
	RolePrimary   = "primary"
	RoleSecondary = "secondary"
)

// CommandStatus is the last run of an on_change command (or of
// ApplyCluster, shown as command "ApplyCluster").
type CommandStatus struct {
	Command    string        `json:"command"`
	Paths      []string      `json:"paths"`
	LastRun    time.Time     `json:"last_run"`
	Duration   time.Duration `json:"duration_ns"`
	ExitCode   int           `json:"exit_code"`
	OK         bool          `json:"ok"`
	Error      string        `json:"error,omitempty"`
	StderrTail string        `json:"stderr_tail,omitempty"`
	// contentKey identifies the content the command ran for: a failed
	// command is not run again for the same content.
	contentKey Digest
}

// PathStatus is the state of one synchronized path.
type PathStatus struct {
	Path   string    `json:"path"`
	Kind   EntryKind `json:"kind"`
	Mode   string    `json:"mode,omitempty"`
	UID    int       `json:"uid"`
	GID    int       `json:"gid"`
	Size   int64     `json:"size"`
	SHA256 Digest    `json:"sha256"`
}

// MemberStatus is what this node knows of one member's configuration.
type MemberStatus struct {
	Node       string `json:"node"`
	Self       bool   `json:"self,omitempty"`
	Checksum   Digest `json:"checksum"`
	Generation uint64 `json:"generation"`
	// InSync: the member's checksum equals this node's.
	InSync    bool      `json:"in_sync"`
	LastSync  time.Time `json:"last_sync,omitzero"`
	LastHeard time.Time `json:"last_heard,omitzero"`
	// Paths as of the last manifest exchange (own paths for Self).
	Paths     []PathStatus `json:"paths,omitempty"`
	LastError string       `json:"last_error,omitempty"`
	// OnChange lists the member's failing on_change commands.
	OnChange []CommandStatus `json:"on_change,omitempty"`
}

// SyncStatus is the configuration-sync state shown by `agentctl ha status`
// and `agentctl ha checksum`.
type SyncStatus struct {
	Node       string `json:"node"`
	Role       string `json:"role"`
	Primary    string `json:"primary,omitempty"`
	Checksum   Digest `json:"checksum"`
	Generation uint64 `json:"generation"`
	// InSync: every known member has this node's checksum.
	InSync        bool   `json:"in_sync"`
	LastScanError string `json:"last_scan_error,omitempty"`
	// LastApplyError: applying what the primary sent failed last time.
	LastApplyError string         `json:"last_apply_error,omitempty"`
	Members        []MemberStatus `json:"members"`
	// OnChange lists this node's on_change runs.
	OnChange []CommandStatus `json:"on_change,omitempty"`
	// Refused counts the messages dropped or refused since start:
	// undecodable, from a member not entitled to send them, or beyond
	// the bound of requests served at once (maxServing).
	Refused uint64 `json:"refused,omitempty"`
}

func pathStatuses(m Manifest) []PathStatus {
	out := make([]PathStatus, 0, len(m.Entries))
	for _, e := range m.Entries {
		ps := PathStatus{Path: e.Path, Kind: e.Kind, UID: e.UID, GID: e.GID, Size: e.Size, SHA256: e.SHA256}
		if e.Kind == KindFile || e.Kind == KindDir {
			ps.Mode = fmt.Sprintf("%04o", e.Mode)
		}
		out = append(out, ps)
	}
	return out
}

// Status returns this node's view of the configuration of every member,
// with the path list of this node's own tree.
func (s *Syncer) Status() SyncStatus { return s.status(true) }

// Summary is Status without this node's own path list (Members[0].Paths
// is nil): what `ha status` needs, at every call, without building a
// record per synchronized path (10 000 of them in a large tree) under the
// syncer's lock.
func (s *Syncer) Summary() SyncStatus { return s.status(false) }

func (s *Syncer) status(withPaths bool) SyncStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := SyncStatus{
		Node: s.cfg.Self, Role: s.role, Checksum: s.checksum, Generation: s.gen,
		LastScanError: s.scanErr, LastApplyError: s.applyErr, InSync: true,
		Refused: s.refused.Load(),
	}
	if s.role != RoleStarting {
		st.Primary = s.primary
	}
	self := MemberStatus{Node: s.cfg.Self, Self: true, Checksum: s.checksum, Generation: s.gen, InSync: true}
	if withPaths {
		self.Paths = pathStatuses(s.manifest)
	}
	st.Members = append(st.Members, self)
	names := make([]string, 0, len(s.members))
	for n := range s.members {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		m := s.members[n]
		if n == s.cfg.Self {
			continue
		}
		relevant := slices.Contains(s.peers, n) || n == s.primary
		ms := MemberStatus{
			Node: n, Checksum: m.checksum, Generation: m.gen, InSync: m.known && m.checksum == s.checksum,
			LastSync: m.lastSync, LastHeard: m.lastHeard, Paths: m.paths, LastError: m.lastErr,
			OnChange: slices.Clone(m.onChange),
		}
		if relevant && !ms.InSync {
			st.InSync = false
		}
		st.Members = append(st.Members, ms)
	}
	for _, p := range s.peers {
		if s.members[p] == nil {
			st.Members = append(st.Members, MemberStatus{Node: p})
			st.InSync = false
		}
	}
	cmds := make([]string, 0, len(s.commands))
	for c := range s.commands {
		cmds = append(cmds, c)
	}
	slices.Sort(cmds)
	for _, c := range cmds {
		st.OnChange = append(st.OnChange, *s.commands[c])
	}
	return st
}

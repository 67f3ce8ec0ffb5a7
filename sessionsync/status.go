package sessionsync

import (
	"fmt"
	"sort"
	"time"
)

// BulkStatus is the progress of one bulk copy.
type BulkStatus struct {
	// State is "pending", "running", "done" or "failed" ("" never ran).
	State string `json:"state"`
	Gen   uint32 `json:"gen"`
	// Sent is the number of flows sent (sender) or applied (receiver);
	// Total the flows of the copy (known once the dump is read, or at its
	// end on the receiver).
	Sent     int           `json:"sent"`
	Total    int           `json:"total"`
	Started  time.Time     `json:"started,omitzero"`
	Done     time.Time     `json:"done,omitzero"`
	Duration time.Duration `json:"duration_ns"`
}

// PeerStatus is the sender's view of one peer.
type PeerStatus struct {
	Node string     `json:"node"`
	Bulk BulkStatus `json:"bulk"`
	// Queued is the number of records not sent yet; LagMs the age of the
	// oldest of them.
	Queued      int     `json:"queued"`
	LagMs       float64 `json:"lag_ms"`
	SentFlows   uint64  `json:"sent_flows"`
	SentMsgs    uint64  `json:"sent_messages"`
	LastError   string  `json:"last_error,omitempty"`
	LastErrorAt string  `json:"last_error_at,omitempty"`
	// Live is false for a peer not copied to any more (it was lost):
	// its counters are kept.
	Live bool `json:"live"`
	// Heartbeat is the peer's health as the election sees it ("alive",
	// "lost"); set by the agent, "" when unknown.
	Heartbeat string `json:"heartbeat,omitempty"`
}

// SourceStatus is the receiver's view of one sender.
type SourceStatus struct {
	Node string     `json:"node"`
	Bulk BulkStatus `json:"bulk"`
	// Copies is the number of flows this node holds for the sender.
	Copies int `json:"copies"`
	// Received is the number of records received from the sender (flows
	// learned from it, updates and deletes included).
	Received uint64 `json:"received_flows"`
}

// ChannelStatus are the counters of the session channel (l2chan.Stats).
type ChannelStatus struct {
	ActiveLink       string `json:"active_link"`
	FramesSent       uint64 `json:"frames_sent"`
	FramesReceived   uint64 `json:"frames_received"`
	Retransmits      uint64 `json:"retransmits"`
	Failovers        uint64 `json:"failovers"`
	DroppedBadAuth   uint64 `json:"dropped_bad_auth"`
	DroppedReplay    uint64 `json:"dropped_replay"`
	DroppedMalformed uint64 `json:"dropped_malformed"`
	// Links are the channel's links (sync_dev first, then the hbdevs):
	// their state and frame counters.
	Links []ChannelLink `json:"links,omitempty"`
}

// ChannelLink is one link of the session channel.
type ChannelLink struct {
	Name  string `json:"name"`
	Up    bool   `json:"up"`
	Alive bool   `json:"alive"`
	// Spread is true for a sync_dev of a load-balanced group (2 or more).
	Spread bool   `json:"spread"`
	Tx     uint64 `json:"tx"`
	Rx     uint64 `json:"rx"`
}

// Status is a snapshot of an engine (agentctl ha sessions).
type Status struct {
	Enabled bool `json:"enabled"`
	// Mode is "a-p" (the primary sends, the others apply) or "fgsp"
	// (every member sends and applies).
	Mode string `json:"mode,omitempty"`
	// Sending is true while this node is primary and copies its flows.
	Sending bool `json:"sending"`
	// LocalFlows is the number of flows in the local kernel table (-1
	// when it could not be read).
	LocalFlows int            `json:"local_flows"`
	Peers      []PeerStatus   `json:"peers"`
	Sources    []SourceStatus `json:"sources"`

	Events      uint64 `json:"events"`
	Filtered    uint64 `json:"filtered"`
	Overruns    uint64 `json:"overruns"`
	Refreshed   uint64 `json:"refreshed"`
	Overflows   uint64 `json:"queue_overflows"`
	Delayed     int    `json:"delayed"`
	Unsupported uint64 `json:"unsupported"`
	// Renewed counts the flows replaced by fresh copies of themselves
	// (Engine.Renew, Engine.KeepFlows).
	Renewed uint64 `json:"renewed"`
	// Echoes counts events of flows applied from a peer that were not
	// sent back (fgsp); LearnedSent the changes of learned flows made by
	// this member's traffic, which were.
	Echoes      uint64 `json:"echoes_not_sent,omitempty"`
	LearnedSent uint64 `json:"learned_updates_sent,omitempty"`
	// Defer is FGSP defer's hold (session_pickup.defer); nil when off.
	Defer *DeferStatus `json:"defer,omitempty"`
	// ExpectSent counts expectation records queued to the peers (creations
	// and removals); ExpectApplied those received and applied here.
	ExpectSent    uint64 `json:"expectations_sent"`
	ExpectApplied uint64 `json:"expectations_applied"`

	Messages  uint64 `json:"received_messages"`
	Received  uint64 `json:"received_flows"`
	Applied   uint64 `json:"applied"`
	Errors    uint64 `json:"errors"`
	Malformed uint64 `json:"malformed"`
	Swept     uint64 `json:"stale_removed"`
	// SweepsSkipped counts peers' bulk copies that ended while this node
	// was primary: its table is its own traffic and is not swept.
	SweepsSkipped uint64 `json:"sweeps_skipped_as_primary,omitempty"`
	// Refused counts, by reason (trust.go: not_entitled, out_of_scope,
	// filtered, expectations_off, helper), the messages and records
	// refused before reaching the table; RefusedTotal is their sum.
	Refused      map[string]uint64 `json:"refused,omitempty"`
	RefusedTotal uint64            `json:"refused_total"`
	// StatusMasked counts received records whose status carried bits no
	// sender's kernel reports (DYING, TEMPLATE, undefined; every bit
	// outside CopyStatus is cleared from every copy); HelpersRemoved those
	// whose helper this node does not allow (applied without it).
	StatusMasked   uint64 `json:"status_masked"`
	HelpersRemoved uint64 `json:"helpers_removed"`
	// Held is the number of messages held from peers not entitled (yet);
	// Senders the peers entitled to send now (null: every peer, the
	// library default).
	Held        int      `json:"held_unentitled"`
	Senders     []string `json:"senders"`
	LastRefusal string   `json:"last_refusal,omitempty"`
	BookEvicted uint64   `json:"bookkeeping_evicted,omitempty"`
	// ExtensionsLost counts, by extension ("seqadj", "synproxy",
	// "master"), received flows applied without one they carried
	// (Kernel.ExtensionsLost: a related connection whose master is not in
	// this table is created unrelated).
	ExtensionsLost map[string]uint64 `json:"extensions_not_recreated,omitempty"`
	// ErrorReasons counts refused flows by reason (errno).
	ErrorReasons map[string]uint64 `json:"error_reasons,omitempty"`
	LastError    string            `json:"last_error,omitempty"`
	LastErrorAt  string            `json:"last_error_at,omitempty"`
	// Replication lag: event on the sender to applied here (the sender's
	// clock), over the last 1024 messages.
	LagP50Ms  float64 `json:"lag_p50_ms"`
	LagP99Ms  float64 `json:"lag_p99_ms"`
	LagLastMs float64 `json:"lag_last_ms"`
	// BulkDone is true once a complete bulk copy was received.
	BulkDone bool `json:"bulk_done"`
	// Channel are the counters of the session channel (forged, replayed
	// and malformed frames among them).
	Channel *ChannelStatus `json:"channel,omitempty"`
	// Holding is true while a returning override member holds back
	// waiting for its bulk copy.
	Holding bool `json:"holding,omitempty"`
	// Problems are what makes the health ERROR.
	Problems    []string `json:"problems,omitempty"`
	ListenError string   `json:"listen_error,omitempty"`
	// Warnings make the health WARN: a table that differs from its
	// primary's for longer than the sync lag (verify.go). Verify are the
	// latest comparisons with the primary; VerifyDropped counts verify
	// messages dropped (requests while one was answered or too soon,
	// stray and malformed answers).
	Warnings      []string       `json:"warnings,omitempty"`
	Verify        []VerifyResult `json:"verify,omitempty"`
	VerifyDropped uint64         `json:"verify_dropped,omitempty"`
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// Status returns a snapshot.
func (e *Engine) Status() Status {
	now := e.cfg.Now()
	st := Status{Enabled: true, LocalFlows: -1, Mode: "a-p"}
	if e.cfg.Symmetric {
		st.Mode = "fgsp"
	}
	if n, err := e.cfg.Table.Count(); err == nil {
		st.LocalFlows = n
	}
	e.mu.Lock()
	st.Sending = e.primary
	st.Events, st.Filtered, st.Overruns, st.Refreshed, st.Overflows = e.c.events, e.c.filtered, e.c.overruns, e.c.refreshed, e.c.overflows
	st.Unsupported, st.ExpectSent = e.c.unsupported, e.c.expectSent
	st.Echoes, st.LearnedSent = e.c.echoes, e.c.learnedSent
	st.Renewed = e.c.renewed
	st.BookEvicted = e.c.bookEvicted
	for name, g := range e.gone {
		if _, live := e.peers[name]; !live && e.cfg.Symmetric { // a-p: only the members copied to now
			st.Peers = append(st.Peers, PeerStatus{Node: name, SentFlows: g[0], SentMsgs: g[1]})
		}
	}
	st.Delayed = len(e.pending)
	st.ListenError = e.listenErr
	for _, p := range e.peers {
		var g [2]uint64
		if e.cfg.Symmetric {
			g = e.gone[p.name] // fgsp: counters kept across a loss of the peer
		}
		ps := PeerStatus{Node: p.name, Bulk: p.bulk, Queued: len(p.queue), SentFlows: g[0] + p.sentRecs, SentMsgs: g[1] + p.sentMsgs, LastError: p.lastErr, Live: true}
		if len(p.queue) > 0 {
			ps.LagMs = ms(now.Sub(time.Unix(0, p.queueOldest)))
		}
		if !p.lastErrAt.IsZero() {
			ps.LastErrorAt = p.lastErrAt.Format(time.RFC3339Nano)
		}
		st.Peers = append(st.Peers, ps)
		busy := (!p.busySince.IsZero() && now.Sub(p.busySince) > e.cfg.StallAfter) || p.bulk.State == "running"
		if busy && now.Sub(p.lastProgress) > e.cfg.StallAfter {
			st.Problems = append(st.Problems, fmt.Sprintf("session sync to %s stalled: nothing acknowledged for %s (%d flows queued)",
				p.name, now.Sub(p.lastProgress).Round(time.Second), len(p.queue)))
		} else if p.lastErr != "" && now.Sub(p.lastErrAt) < 2*e.cfg.StallAfter {
			st.Problems = append(st.Problems, fmt.Sprintf("session sync to %s failing: %s", p.name, p.lastErr))
		}
	}
	e.mu.Unlock()
	if st.ListenError != "" {
		st.Problems = append(st.Problems, "session sync: conntrack events stopped: "+st.ListenError)
	}
	sort.Slice(st.Peers, func(i, j int) bool { return st.Peers[i].Node < st.Peers[j].Node })

	e.recvMu.Lock()
	st.Messages, st.Received, st.Applied, st.Errors = e.rc.messages, e.rc.records, e.rc.applied, e.rc.errors
	st.Malformed, st.Swept, st.BulkDone = e.rc.malformed, e.rc.swept, e.rc.bulkDone
	st.SweepsSkipped = e.rc.sweepsSkipped
	st.ExpectApplied = e.rc.expectApplied
	if len(e.rc.refused) > 0 {
		st.Refused = map[string]uint64{}
		for k, v := range e.rc.refused {
			st.Refused[k] = v
			st.RefusedTotal += v
		}
	}
	st.StatusMasked, st.HelpersRemoved, st.LastRefusal = e.rc.statusMasked, e.rc.helpersRemoved, e.rc.lastRefusal
	if len(e.rc.reasons) > 0 {
		st.ErrorReasons = map[string]uint64{}
		for k, v := range e.rc.reasons {
			st.ErrorReasons[k] = v
		}
	}
	st.LastError = e.rc.lastErr
	if !e.rc.lastErrAt.IsZero() {
		st.LastErrorAt = e.rc.lastErrAt.Format(time.RFC3339Nano)
		if now.Sub(e.rc.lastErrAt) < 2*e.cfg.StallAfter {
			st.Problems = append(st.Problems, "session sync: applying received flows fails: "+e.rc.lastErr)
		}
	}
	p50, p99, last := e.lat.quantiles()
	st.LagP50Ms, st.LagP99Ms, st.LagLastMs = ms(p50), ms(p99), ms(last)
	for _, rs := range e.recv {
		st.Sources = append(st.Sources, SourceStatus{Node: rs.from, Bulk: rs.bulk, Copies: len(rs.applied), Received: rs.received})
	}
	e.recvMu.Unlock()
	sort.Slice(st.Sources, func(i, j int) bool { return st.Sources[i].Node < st.Sources[j].Node })
	if x, ok := e.cfg.Table.(interface{ ExtensionsLost() map[string]uint64 }); ok {
		st.ExtensionsLost = x.ExtensionsLost()
	}
	st.Held = int(e.heldN.Load())
	st.Senders = e.senderNames(now)
	e.verifyStatus(&st)
	return st
}

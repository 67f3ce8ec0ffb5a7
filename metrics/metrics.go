// Package metrics exposes an agent's state to Prometheus (text exposition
// over HTTP, github.com/prometheus/client_golang).
//
// Most metrics are read at scrape time from the same status object that
// `agentctl ha status --json` prints, so a scrape and a status never
// disagree: role per vcluster, members, per-hbdev heartbeat counters,
// health, configuration sync and its channel. Two are recorded when they
// happen, because a scrape would miss them: failovers by reason and the
// takeover duration (decision → first gratuitous ARP) histogram. Session
// pickup's counters and lag come from the same status.
//
// Names follow Prometheus conventions: the hagent_ prefix, base units
// (seconds), _total for counters.
package metrics

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hagent/hagent/control"
)

// StatusFunc returns the agent's current status (control.Status).
type StatusFunc func(ctx context.Context) (*control.Status, error)

// Exporter holds the registry of one agent.
type Exporter struct {
	reg       *prometheus.Registry
	failovers *prometheus.CounterVec
	takeover  prometheus.Histogram
	status    StatusFunc
}

// Roles are the values of the role label of hagent_role.
var Roles = []string{"starting", "secondary", "primary", "fault"}

// New returns an exporter reading status at every scrape; version labels
// hagent_build_info.
func New(status StatusFunc, version string) *Exporter {
	e := &Exporter{
		reg:    prometheus.NewRegistry(),
		status: status,
		failovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hagent_failovers_total",
			Help: "Times this node became primary, by what decided it: heartbeat (a peer lost by the lost threshold), carrier (by a direct hbdev's carrier), handover (a peer left gracefully or stepped down), monitor (monitored links or pingserver), alone (no peer after hello_holddown), election (priority, uptime, serial).",
		}, []string{"reason"}),
		takeover: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "hagent_takeover_duration_seconds",
			Help:    "Time from the decision to become primary to the first gratuitous ARP sent.",
			Buckets: []float64{50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3},
		}),
	}
	for _, r := range FailoverReasons {
		e.failovers.WithLabelValues(r) // present from the start, at 0
	}
	e.reg.MustRegister(e.failovers, e.takeover, &statusCollector{e: e})
	e.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "hagent_build_info", Help: "Always 1; the version label is hagentd's.",
		ConstLabels: prometheus.Labels{"version": version},
	}, func() float64 { return 1 }))
	return e
}

// FailoverReasons are the values of hagent_failovers_total's reason label.
var FailoverReasons = []string{"heartbeat", "carrier", "handover", "monitor", "alone", "election"}

// FailoverReason classifies the reason of a role change to primary (as
// the election words it) into one of FailoverReasons.
func FailoverReason(why string) string {
	switch {
	case strings.Contains(why, "carrier down"):
		return "carrier"
	case strings.Contains(why, "no heartbeat"):
		return "heartbeat"
	case strings.Contains(why, "stepping down or faulted"), strings.Contains(why, "leaving"), strings.Contains(why, "handed"):
		return "handover"
	case strings.Contains(why, "monitored"):
		return "monitor"
	case strings.Contains(why, "only member"):
		return "alone"
	}
	return "election"
}

// Failover counts one change of this node to primary, with the election's
// reason.
func (e *Exporter) Failover(why string) { e.failovers.WithLabelValues(FailoverReason(why)).Inc() }

// Takeover records the time from a decision to the first gratuitous ARP.
func (e *Exporter) Takeover(d time.Duration) { e.takeover.Observe(d.Seconds()) }

// Handler serves the exposition.
func (e *Exporter) Handler() http.Handler {
	return promhttp.HandlerFor(e.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// Server serves /metrics on one listener.
type Server struct {
	ln  net.Listener
	srv *http.Server
}

// Bounds of the metrics server: a client that opens connections and
// sends nothing, sends slowly, reads slowly or keeps idle connections
// holds each for at most these times, and a request's header at most
// MaxHeaderBytes (TestServerBounds). A scrape reads a status snapshot and
// answers in milliseconds; these only cut off clients that misbehave.
const (
	ReadHeaderTimeout = 5 * time.Second
	ReadTimeout       = 10 * time.Second
	WriteTimeout      = 10 * time.Second
	IdleTimeout       = 60 * time.Second
	MaxHeaderBytes    = 8 << 10
)

// Listen binds addr (host:port) and serves e's metrics at /metrics.
func (e *Exporter) Listen(addr string) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", e.Handler())
	s := &Server{ln: ln, srv: &http.Server{Handler: mux, ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout: ReadTimeout, WriteTimeout: WriteTimeout, IdleTimeout: IdleTimeout, MaxHeaderBytes: MaxHeaderBytes}}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops serving.
func (s *Server) Close() error {
	err := s.srv.Close()
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// statusCollector turns one status into metrics at each scrape.
type statusCollector struct{ e *Exporter }

var (
	descRole         = prometheus.NewDesc("hagent_role", "1 for this node's current role in the vcluster, 0 for the others.", []string{"vcluster", "role"}, nil)
	descHealth       = prometheus.NewDesc("hagent_health_ok", "1 when `agentctl ha status` says HA Health Status: OK.", nil, nil)
	descProblems     = prometheus.NewDesc("hagent_health_problems", "Number of problems that make the health ERROR.", nil, nil)
	descWarnings     = prometheus.NewDesc("hagent_health_warnings", "Number of warnings (another group or protocol version on an hbdev).", nil, nil)
	descUptime       = prometheus.NewDesc("hagent_ha_uptime_seconds", "This node's HA uptime (reset by a monitored-link failure).", nil, nil)
	descMembers      = prometheus.NewDesc("hagent_members", "Cluster members this node knows, itself included, by state.", []string{"state"}, nil)
	descMemberAlive  = prometheus.NewDesc("hagent_member_alive", "1 while a peer is heard within the lost threshold.", []string{"node", "serial"}, nil)
	descMemberHeard  = prometheus.NewDesc("hagent_member_last_heard_seconds", "Time since a peer's last heartbeat.", []string{"node", "serial"}, nil)
	descMonitorUp    = prometheus.NewDesc("hagent_monitored_links_up", "Monitored links (and pingserver targets) of this node that are up.", nil, nil)
	descMonitorTotal = prometheus.NewDesc("hagent_monitored_links", "Monitored links (and pingserver targets) of this node.", nil, nil)
	descHBUp         = prometheus.NewDesc("hagent_hbdev_up", "1 when the hbdev has carrier and a valid heartbeat was heard within the lost threshold.", []string{"hbdev"}, nil)
	descHBCarrier    = prometheus.NewDesc("hagent_hbdev_carrier", "1 when the hbdev has carrier.", []string{"hbdev"}, nil)
	descHBRx         = prometheus.NewDesc("hagent_hbdev_rx_frames_total", "Valid heartbeats received (a copy on a second hbdev included).", []string{"hbdev"}, nil)
	descHBTx         = prometheus.NewDesc("hagent_hbdev_tx_frames_total", "Heartbeats sent.", []string{"hbdev"}, nil)
	descHBDropped    = prometheus.NewDesc("hagent_hbdev_dropped_frames_total", "Frames dropped: malformed, another group or vcluster, queue full.", []string{"hbdev"}, nil)
	descHBBadAuth    = prometheus.NewDesc("hagent_hbdev_bad_auth_frames_total", "Frames whose authentication failed.", []string{"hbdev"}, nil)
	descHBReplay     = prometheus.NewDesc("hagent_hbdev_replayed_frames_total", "Authentic frames of an old epoch or sequence (replays).", []string{"hbdev"}, nil)
	descHBTxErr      = prometheus.NewDesc("hagent_hbdev_tx_errors_total", "Heartbeats the hbdev did not accept.", []string{"hbdev"}, nil)
	descVMACHeld     = prometheus.NewDesc("hagent_vmac_held", "1 while the data interface carries its virtual MAC.", []string{"interface"}, nil)
	descVMACRestores = prometheus.NewDesc("hagent_vmac_restores_total", "Times the primary put the virtual MAC or a cluster address back after something else removed or changed it.", []string{"interface"}, nil)
	descSyncOn       = prometheus.NewDesc("hagent_config_sync_enabled", "1 when configuration sync runs.", nil, nil)
	descInSync       = prometheus.NewDesc("hagent_config_in_sync", "1 when every live member has this node's configuration checksum.", nil, nil)
	descGeneration   = prometheus.NewDesc("hagent_config_generation", "Configuration generation of this node's tree.", nil, nil)
	descChanTx       = prometheus.NewDesc("hagent_sync_channel_frames_sent_total", "Frames the configuration-sync channel sent.", nil, nil)
	descChanRx       = prometheus.NewDesc("hagent_sync_channel_frames_received_total", "Valid frames the configuration-sync channel received.", nil, nil)
	descChanRetrans  = prometheus.NewDesc("hagent_sync_channel_retransmits_total", "Fragments the configuration-sync channel sent again.", nil, nil)
	descChanFailover = prometheus.NewDesc("hagent_sync_channel_link_failovers_total", "Changes of the hbdev the configuration-sync channel uses.", nil, nil)
	descChanDropped  = prometheus.NewDesc("hagent_sync_channel_dropped_frames_total", "Frames the configuration-sync channel dropped, by reason.", []string{"reason"}, nil)
	descSessOn       = prometheus.NewDesc("hagent_sessions_enabled", "1 when session pickup runs.", nil, nil)
	descSessLocal    = prometheus.NewDesc("hagent_sessions_local_flows", "Flows in this node's kernel connection-tracking table.", nil, nil)
	descSessEvents   = prometheus.NewDesc("hagent_sessions_events_total", "Connection-tracking events read (sender).", nil, nil)
	descSessOverruns = prometheus.NewDesc("hagent_sessions_event_overruns_total", "Event socket overruns (ENOBUFS), each repaired by a dump.", nil, nil)
	descSessSent     = prometheus.NewDesc("hagent_sessions_sent_flows_total", "Flows sent to a peer.", []string{"peer"}, nil)
	descSessQueued   = prometheus.NewDesc("hagent_sessions_queued_flows", "Flows queued for a peer, not sent yet.", []string{"peer"}, nil)
	descSessRecv     = prometheus.NewDesc("hagent_sessions_received_flows_total", "Flows received from peers.", nil, nil)
	descSessApplied  = prometheus.NewDesc("hagent_sessions_applied_flows_total", "Received flows written into the kernel table.", nil, nil)
	descSessErrors   = prometheus.NewDesc("hagent_sessions_apply_errors_total", "Received flows the kernel refused.", nil, nil)
	descSessLagP50   = prometheus.NewDesc("hagent_sessions_lag_p50_seconds", "Median replication lag, event on the sender to applied here, over the last 1024 messages.", nil, nil)
	descSessLagP99   = prometheus.NewDesc("hagent_sessions_lag_p99_seconds", "99th percentile of the replication lag over the last 1024 messages.", nil, nil)
	descSessCopies   = prometheus.NewDesc("hagent_sessions_copies", "Flows this node holds for a sender.", []string{"peer"}, nil)
	descSessRefused  = prometheus.NewDesc("hagent_sessions_refused_total", "Received messages and records refused before the table, by reason (not_entitled, out_of_scope, filtered, expectations_off, helper).", []string{"reason"}, nil)
	descSessMasked   = prometheus.NewDesc("hagent_sessions_status_masked_total", "Received records whose status carried bits a copy may not (cleared).", nil, nil)
	descSessVerify   = prometheus.NewDesc("hagent_sessions_verify_differences", "Flows that differ between this member's table and the primary's at the last verify (missing, extra, differing; in the buckets examined).", []string{"peer"}, nil)
	descSessVerifyP  = prometheus.NewDesc("hagent_sessions_verify_persistent_differences", "Of them, flows that differed for longer than the sync lag (health WARN).", []string{"peer"}, nil)
	descCheckUp      = prometheus.NewDesc("hagent_check_up", "1 while the health check counts as up, 0 once it failed fall times in a row (until it passes rise times).", []string{"check"}, nil)
	descScrapeErr    = prometheus.NewDesc("hagent_status_error", "1 when the agent did not answer the scrape's status request in time.", nil, nil)
)

// constMetric sends one metric. Label values are made valid UTF-8 first
// (invalid bytes become U+FFFD): a label value that is not would fail the
// metric, and with MustNewConstMetric panic the whole status collection,
// so one odd name would hide every status metric (TestInvalidLabelValue).
// Names are validated where they come in (config, heartbeat decoder);
// this is the last line.
func constMetric(ch chan<- prometheus.Metric, d *prometheus.Desc, t prometheus.ValueType, v float64, labels []string) {
	for i, l := range labels {
		if !utf8.ValidString(l) {
			labels[i] = strings.ToValidUTF8(l, "\uFFFD")
		}
	}
	if m, err := prometheus.NewConstMetric(d, t, v, labels...); err == nil {
		ch <- m
	}
}

func (c *statusCollector) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (c *statusCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := c.e.status(ctx)
	if err != nil || st == nil {
		ch <- prometheus.MustNewConstMetric(descScrapeErr, prometheus.GaugeValue, 1)
		return
	}
	ch <- prometheus.MustNewConstMetric(descScrapeErr, prometheus.GaugeValue, 0)
	g := func(d *prometheus.Desc, v float64, l ...string) { constMetric(ch, d, prometheus.GaugeValue, v, l) }
	cnt := func(d *prometheus.Desc, v uint64, l ...string) {
		constMetric(ch, d, prometheus.CounterValue, float64(v), l)
	}
	vc := strconv.Itoa(st.VCluster)
	for _, r := range Roles {
		g(descRole, b2f(st.Role == r), vc, r)
	}
	for i, v := range st.VClusters { // the first is st.Role, above
		if i == 0 {
			continue
		}
		for _, r := range Roles {
			g(descRole, b2f(v.Role == r), strconv.Itoa(v.VCluster), r)
		}
	}
	health, problems := control.HealthOf(st)
	g(descHealth, b2f(health == "OK"))
	g(descProblems, float64(len(problems)))
	g(descWarnings, float64(len(st.Warnings)))
	g(descUptime, float64(st.UptimeS))
	alive, lost := 0, 0
	for _, m := range st.Members {
		if m.Self {
			g(descMonitorUp, float64(m.MonitorUp))
			g(descMonitorTotal, float64(m.MonitorTotal))
			alive++
			continue
		}
		if m.Alive {
			alive++
		} else {
			lost++
		}
		g(descMemberAlive, b2f(m.Alive), m.Node, m.Serial)
		g(descMemberHeard, float64(m.LastHeardMs)/1000, m.Node, m.Serial)
	}
	g(descMembers, float64(alive), "alive")
	g(descMembers, float64(lost), "lost")
	for _, h := range st.HBDevs {
		g(descHBUp, b2f(h.Up), h.Name)
		g(descHBCarrier, b2f(h.Carrier), h.Name)
		cnt(descHBRx, h.RX, h.Name)
		cnt(descHBTx, h.TX, h.Name)
		cnt(descHBDropped, h.Dropped, h.Name)
		cnt(descHBBadAuth, h.BadAuth, h.Name)
		cnt(descHBReplay, h.Replay, h.Name)
		cnt(descHBTxErr, h.TXErrors, h.Name)
	}
	for _, i := range st.Interfaces {
		g(descVMACHeld, b2f(i.Owned), i.Name)
		cnt(descVMACRestores, i.Restores, i.Name)
	}
	for _, c := range st.Checks {
		g(descCheckUp, b2f(c.State == "up"), c.Name)
	}
	g(descSyncOn, b2f(st.Config.SyncOn))
	if st.Config.SyncOn {
		g(descInSync, b2f(st.Config.InSync))
		g(descGeneration, float64(st.Config.Generation))
	}
	if ss := st.Sessions; ss != nil {
		g(descSessOn, b2f(ss.Enabled))
		if ss.Enabled {
			g(descSessLocal, float64(ss.LocalFlows))
			cnt(descSessEvents, ss.Events)
			cnt(descSessOverruns, ss.Overruns)
			cnt(descSessRecv, ss.Received)
			cnt(descSessApplied, ss.Applied)
			cnt(descSessErrors, ss.Errors)
			cnt(descSessMasked, ss.StatusMasked)
			for r, n := range ss.Refused {
				cnt(descSessRefused, n, r)
			}
			g(descSessLagP50, ss.LagP50Ms/1000)
			g(descSessLagP99, ss.LagP99Ms/1000)
			collectDefer(g, cnt, ss.Defer) // defer.go
			for _, p := range ss.Peers {
				cnt(descSessSent, p.SentFlows, p.Node)
				g(descSessQueued, float64(p.Queued), p.Node)
			}
			for _, src := range ss.Sources {
				g(descSessCopies, float64(src.Copies), src.Node)
			}
			for _, r := range ss.Verify {
				if r.Error == "" {
					g(descSessVerify, float64(r.Differences()), r.Peer)
					g(descSessVerifyP, float64(r.Persistent), r.Peer)
				}
			}
		}
	}
	if chn := st.Config.Channel; chn != nil {
		cnt(descChanTx, chn.FramesSent)
		cnt(descChanRx, chn.FramesReceived)
		cnt(descChanRetrans, chn.Retransmits)
		cnt(descChanFailover, chn.Failovers)
		cnt(descChanDropped, chn.DroppedBadAuth, "bad_auth")
		cnt(descChanDropped, chn.DroppedReplay, "replay")
		cnt(descChanDropped, chn.DroppedMalformed, "malformed")
	}
}

// Package bench is hagent's failover benchmark and soak test, run in the
// netns lab of package lab: hagent and keepalived (VRRPv3) side by side in
// the same topology and the same run, at matched timer settings, for a
// crash (SIGKILL and every link down), a graceful stop (SIGTERM, and
// `agentctl ha failover set` for hagent) and a monitored data link going
// down. A client probes the cluster address every millisecond; the longest
// stretch without an answer is the outage.
//
// TestBench (HAGENT_BENCH=1, `make bench`) prints a table of median and
// maximum outages, the ratio to keepalived and to hagent's detection floor
// (hb_interval × hb_lost_threshold), the takeover path from the agent's
// history, the goals of issue 6 as PASS/MISS, resident memory and idle CPU;
// it writes bench-results/results.md, results.json and outages.svg at the
// repository root. HAGENT_BENCH_QUICK=1 runs a reduced matrix.
//
// TestSoak (HAGENT_SOAK=1, `make soak`) runs a 10 ms × 3 cluster in
// realtime mode for HAGENT_SOAK_DURATION (default 10m) with both cores
// loaded by CPU hogs while the client probes, and fails on any role change.
//
// Both skip unless their variable is set, so `make test` only runs the
// report renderer's unit tests here. The non-test code of the package is
// the report: statistics, the Markdown table and the SVG chart.
package bench

package chaos

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// Report prints the seed, the event log, every violation with the faults
// around it, and the summary table.
func Report(w io.Writer, cfg Config, res *Result) {
	r := res.Record
	applied, skipped := 0, 0
	for _, f := range r.Faults {
		if f.Skipped == "" {
			applied++
		} else {
			skipped++
		}
	}
	fmt.Fprintf(w, "\n==> chaos campaign: seed %d, duration %s (ran %s), %d nodes, hb %s × %d (detection %s)\n",
		cfg.Seed, cfg.Duration, r.End.Sub(r.Start).Round(time.Second), len(r.Nodes), r.Interval, cfg.Threshold, r.Detect)
	fmt.Fprintf(w, "    replay: sudo make chaos SEED=%d DURATION=%s\n", cfg.Seed, cfg.Duration)
	fmt.Fprintf(w, "    %d rounds, %d faults applied, %d skipped; %d TCP connections, %d probes\n\n",
		len(res.Schedule.Rounds), applied, skipped, cfg.Conns, len(r.Probe))
	fmt.Fprintf(w, "==> event log (time since the start; the node and its role when hit)\n")
	for _, f := range r.Faults {
		fmt.Fprintln(w, "  "+eventLine(r, f))
	}
	for _, g := range r.Exits {
		if !g.Expected {
			fmt.Fprintf(w, "  %s  UNEXPECTED EXIT of %s: %s\n", clock(r, g.At), g.Node, firstLine(g.Err))
		}
	}
	var bad []Check
	for _, c := range res.Checks {
		if len(c.Violations) > 0 {
			bad = append(bad, c)
		}
	}
	if len(bad) > 0 {
		fmt.Fprintf(w, "\n==> violations (with the faults active from 3 s before to 1 s after)\n")
		for _, c := range bad {
			for i, v := range c.Violations {
				if i == 20 || (c.Info && i == 3) {
					fmt.Fprintf(w, "  %s: … %d more\n", c.Name, len(c.Violations)-i)
					break
				}
				fmt.Fprintf(w, "  %s  %s: %s\n", clock(r, v.At), c.Name, v.Detail)
				for _, f := range around(r, v.At, 3*time.Second, time.Second) {
					fmt.Fprintf(w, "        around: %s\n", eventLine(r, f))
				}
			}
		}
	}
	excused := 0
	for _, c := range res.Checks {
		excused += len(c.Excused)
	}
	if excused > 0 || len(r.Stalls) > 0 {
		fmt.Fprintf(w, "\n==> machine stalls (netlink changes or this process's wake-ups late by %s or more): %d\n", stallMin, len(r.Stalls))
		for _, st := range r.Stalls {
			fmt.Fprintf(w, "  %s  %s stalled %s\n", clock(r, st.From), st.What, ms(st.To.Sub(st.From)))
		}
		for _, c := range res.Checks {
			for _, v := range c.Excused {
				fmt.Fprintf(w, "  excused %s  %s: %s (%s)\n", clock(r, v.At), c.Name, v.Detail, v.Excused)
			}
		}
	}
	fmt.Fprintf(w, "\n==> summary: seed %d\n", cfg.Seed)
	fmt.Fprintf(w, "| invariant | rule | checked | violations | excused (machine stall) | measured |\n|---|---|---|---|---|---|\n")
	for _, c := range res.Checks {
		v := fmt.Sprint(len(c.Violations))
		if c.Info {
			v += " (info)"
		}
		fmt.Fprintf(w, "| %s | %s | %d | %s | %d | %s |\n", c.Name, c.Rule, c.Checked, v, len(c.Excused), c.Measured)
	}
	fmt.Fprintf(w, "\nfaults by kind:")
	for _, k := range Kinds {
		n := 0
		for _, f := range r.Faults {
			if f.Kind == k && f.Skipped == "" {
				n++
			}
		}
		fmt.Fprintf(w, " %s %d,", k, n)
	}
	fmt.Fprintf(w, " vMAC taken %d times\n", r.moves())
	verdict := "PASS"
	if res.Failed() {
		verdict = "FAIL"
	}
	fmt.Fprintf(w, "result: %s (seed %d)\n", verdict, cfg.Seed)
}

func eventLine(r *Record, f *FaultRec) string {
	if f.Skipped != "" {
		return fmt.Sprintf("%s  r%-3d %-9s %s: skipped (%s)", clock(r, f.Start), f.Round, f.Kind, f.Target, f.Skipped)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s  r%-3d %-9s %s (%s)", clock(r, f.Start), f.Round, f.Kind, f.Node, f.Role)
	switch f.Kind {
	case HBLoss:
		fmt.Fprintf(&b, " %d%%", f.Pct)
	case Reload:
	default:
		fmt.Fprintf(&b, " for %s", f.Dur.Round(time.Millisecond))
	}
	fmt.Fprintf(&b, ", healed %s", clock(r, f.End))
	if f.Note != "" {
		b.WriteString("; " + firstLine(f.Note))
	}
	return b.String()
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

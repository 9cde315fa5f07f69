package report

import (
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
)

// WriteTable prints the report for a person.
func (rep *Report) WriteTable(w io.Writer) {
	rep.writeHeading(w)
	rep.writeModes(w)
	rep.writeFlows(w)
	rep.writePaths(w)
	fmt.Fprintln(w)
	for _, r := range rep.Modes {
		r.writeFindings(w)
	}
	for _, p := range rep.Problems {
		fmt.Fprintf(w, "PROBLEM: %s\n", p)
	}
	if rep.Valid {
		fmt.Fprintf(w, "result: valid (%.0f s)\n", rep.Config.ElapsedS)
	} else {
		fmt.Fprintf(w, "result: INVALID (%.0f s)\n", rep.Config.ElapsedS)
	}
}

// writeHeading says what ran, where.
func (rep *Report) writeHeading(w io.Writer) {
	c := rep.Config
	where := "on this machine"
	if c.InVM {
		where = "in the VM"
	}
	if c.RouterKernel != "" {
		where = "on this machine, the router in a VM with kernel " + c.RouterKernel
	}
	vpn := ""
	if c.VPN != "" {
		vpn = ", VPN " + c.VPN
	}
	rounds := ""
	if c.Rounds > 1 {
		rounds = fmt.Sprintf(" in %d rounds", c.Rounds)
	}
	fmt.Fprintf(w, "\n%s at %g Mbit/s%s%s, %d bulk flows inside + %d outside, %gs per mode%s (+%gs warm-up), kernel %s %s\n\n",
		c.Qdisc, c.RateMbit, vpn, c.topology(), c.InnerFlows, c.OuterFlows, c.DurationS, rounds, c.OmitS, c.Kernel, where)
}

// topology names the outer path when it is not the default one: IPv4,
// the NAT, the on-link client.
func (c Config) topology() string {
	var parts []string
	if c.Outer == "ipv4" {
		parts = append(parts, "outer IPv4")
	}
	if c.NAT {
		parts = append(parts, "the client behind a NAT44")
	}
	if c.OnLink {
		delay := "the kernel's proxy_delay"
		if c.ProxyDelayS != nil {
			delay = fmt.Sprintf("proxy_delay %g s", *c.ProxyDelayS)
		}
		parts = append(parts, "the client on-link (proxy NDP, "+delay+")")
	}
	if len(parts) == 0 {
		return ""
	}
	return ", " + strings.Join(parts, ", ")
}

// writeModes prints one line per mode.
func (rep *Report) writeModes(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "mode\tstatus\tMbit/s\ttunnel share (expected)\tJain\tflows seen\tinner probe ms p50/p90/p99\touter probe ms p50/p90/p99\tidle p50 ms in/out\twire p99 ms\tlatency: inner-outer q ms (rounds)\t")
	for _, r := range rep.Modes {
		if r.Status == StatusSkipped || r.Status == StatusFailed {
			fmt.Fprintf(tw, "%s\t%s\t(see below)\t\t\t\t\t\t\t\t\t\n", r.label(), r.Status)
			continue
		}
		flows := "-"
		if r.Qdisc != nil && r.Qdisc.Kind != "pfifo" {
			flows = fmt.Sprint(r.Qdisc.MaxFlows)
		}
		wireDelay := "-"
		if len(r.Wire) > 0 {
			wireDelay = fmt.Sprintf("<%g", float64(r.WireDelayP99Ms))
		}
		idle := "-"
		if r.InnerIdle != nil && r.OuterIdle != nil {
			idle = fmt.Sprintf("%.1f / %.1f", float64(r.InnerIdle.Median), float64(r.OuterIdle.Median))
		}
		fmt.Fprintf(tw, "%s\t%s\t%.1f\t%.2f (%.2f)\t%.3f\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r.label(), r.Status,
			float64(r.TotalMbit), float64(r.TunnelShare), float64(r.ExpectedShare), float64(r.Jain), flows,
			latencyCell(r.InnerProbe), latencyCell(r.OuterProbe), idle, wireDelay, verdictCell(r))
	}
	tw.Flush()
}

// writeFlows prints every bulk flow's goodput.
func (rep *Report) writeFlows(w io.Writer) {
	fmt.Fprintln(w, "\nper-flow goodput, Mbit/s (inside | outside):")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, r := range rep.Modes {
		if len(r.Flows) == 0 {
			continue
		}
		var in, out []string
		for _, f := range r.Flows {
			cell := fmt.Sprintf("%.2f", f.GoodputMbit)
			if f.Path == "inner" {
				in = append(in, cell)
			} else {
				out = append(out, cell)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t|\t%s\t\n", r.label(), strings.Join(in, " "), strings.Join(out, " "))
	}
	tw.Flush()
}

// writeFindings prints why the row is not ok, its notes, and for the
// spread mode its targets.
func (r ModeResult) writeFindings(w io.Writer) {
	for _, s := range r.Reasons {
		fmt.Fprintf(w, "%s: %s: %s\n", r.Mode, strings.ToUpper(r.Status), s)
	}
	for _, s := range r.Notes {
		fmt.Fprintf(w, "%s: %s\n", r.Mode, s)
	}
	r.writeHostShare(w)
	if n := r.Neighbours; n != nil {
		fmt.Fprintf(w, "%s: the router's neighbour table on the client link held %d entries after the mode, %d of them addresses of the client's range (%s)\n",
			r.label(), n.Entries, n.InRange, states(n.States))
	}
	if r.Mode != "spread" || r.Status != StatusOK {
		return
	}
	words := map[string]string{"met": "met", "not met": "NOT met", "inconclusive": "INCONCLUSIVE (the host was too busy to tell)"}
	status, ok := words[r.Targets.Latency]
	if !ok || r.Targets.Latency == "met" && !r.Targets.Met {
		status = "NOT met"
	}
	fmt.Fprintf(w, "spread: targets (inner probe within %g ms of the outer, Jain >= %g) %s: %s, p99 gap %.1f ms, Jain %.3f\n",
		targetGapMs, TargetJain, status, r.latencyWords(), float64(r.Targets.P99GapMs), float64(r.Jain))
	if r.Verdict != nil && r.Verdict.Advice != "" && r.Verdict.Status != "met" {
		fmt.Fprintf(w, "spread: %s\n", r.Verdict.Advice)
	}
	if idle := float64(r.Targets.IdleGapMs); !math.IsNaN(idle) {
		fmt.Fprintf(w, "spread: with no load the tunnel itself added %.1f ms to the round trip (idle medians); under load the inner probe's p99 rose %.1f ms more than the outer's\n",
			idle, float64(r.Targets.LoadP99GapMs))
	}
}

// states lists neighbour states with their counts, in name order.
func states(m map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%d %s", m[k], k))
	}
	return strings.Join(parts, ", ")
}

func latencyCell(p ProbeSummary) string {
	if p.Samples == 0 {
		return "no replies"
	}
	cell := fmt.Sprintf("%.1f / %.1f / %.1f", float64(p.Median), float64(p.P90), float64(p.P99))
	if p.Lost > 0 {
		cell += fmt.Sprintf(" (%.1f%% lost)", p.LossPercent)
	}
	return cell
}

// verdictCell is the row's latency verdict with the spread of the
// rounds' gaps at the target quantile: "met 0.3 (0.1..0.5)".
func verdictCell(r ModeResult) string {
	if r.Verdict == nil {
		return r.Targets.Latency
	}
	return fmt.Sprintf("%s %.1f (%.1f..%.1f)", r.Targets.Latency, float64(r.Verdict.GapQMedianMs),
		float64(r.Verdict.GapQMinMs), float64(r.Verdict.GapQMaxMs))
}

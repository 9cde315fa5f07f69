package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
)

// Status of a mode's row.
const (
	statusOK      = "ok"      // measured, and the measurement means what it says
	statusInvalid = "invalid" // measured, but a check says the result must not be used
	statusSkipped = "skipped" // not run here (its tunnel is not available)
	statusFailed  = "failed"  // could not be measured (a tool or the setup failed)
)

// Targets of the spreading tunnel (the acceptance figures).
const (
	targetP99GapMs = 2.0  // inner probe p99 at most this much above the outer probe's
	targetJain     = 0.95 // over all bulk flows
)

// outerProbeLossNote is the outer probe's loss, in percent, above which a
// flow-queueing row says the probe likely shared a queue with a bulk flow.
// Alone in its queue a sparse probe loses nothing; fq_codel has 1024
// buckets, so with ten flows about one mode in a hundred puts the probe in
// a bulk flow's bucket, and its latencies then say nothing of the tunnel.
const outerProbeLossNote = 2.0

// wireDelayNoteMs is the wire's p99 queueing delay above which the
// report warns that its latencies carry the testbed's own delay.
const wireDelayNoteMs = 5.0

// report is everything one experiment measured; it is written as JSON.
type report struct {
	Config reportConfig `json:"config"`
	Modes  []modeResult `json:"modes"`
	// Valid is true when every mode that ran is ok and nothing casts
	// doubt on the whole run.
	Valid    bool     `json:"valid"`
	Problems []string `json:"problems,omitempty"`
}

type reportConfig struct {
	Qdisc           string  `json:"qdisc"`
	RateMbit        float64 `json:"rate_mbit"`
	DurationS       float64 `json:"duration_s"`
	OmitS           float64 `json:"warmup_s"`
	InnerFlows      int     `json:"inner_flows"`
	OuterFlows      int     `json:"outer_flows"`
	ProbeIntervalMs float64 `json:"probe_interval_ms"`
	Wire            string  `json:"wire"`
	WireKind        string  `json:"wire_kind"`
	// RouterVM: the router ran in a VM, linked to the hosts by QEMU's
	// network cards, and Wire and WireKind did not apply.
	RouterVM bool   `json:"router_vm,omitempty"`
	VPN      string `json:"vpn,omitempty"` // of the one-flow and spread modes
	Kernel   string `json:"kernel"`
	InVM     bool   `json:"in_vm"`
	// RouterKernel is the router VM's kernel when only the router runs
	// in a VM (then Kernel is the hosts').
	RouterKernel string  `json:"router_kernel,omitempty"`
	Started      string  `json:"started"`
	ElapsedS     float64 `json:"elapsed_s"`
}

// modeResult is one row: one mode measured.
type modeResult struct {
	Mode        string   `json:"mode"`
	Description string   `json:"description"`
	Status      string   `json:"status"`
	Reasons     []string `json:"reasons,omitempty"` // why it is not ok
	Notes       []string `json:"notes,omitempty"`

	Flows     []flowResult `json:"flows,omitempty"`
	TotalMbit number       `json:"total_mbit"`
	// Jain is Jain's fairness index over all bulk flows, inside and out.
	Jain number `json:"jain"`
	// TunnelShare is the inner flows' part of all bulk goodput.
	TunnelShare number `json:"tunnel_share"`
	// ExpectedShare is TunnelShare if the router is fair to what it can
	// tell apart: one outer flow's part 1/(M+1) for a tunnel it sees as
	// one flow, N/(N+M) otherwise.
	ExpectedShare number `json:"expected_share"`

	InnerProbe probeSummary `json:"inner_probe"`
	OuterProbe probeSummary `json:"outer_probe"`
	// InnerIdle and OuterIdle are the probes before the load (-idle):
	// each path's own delay with no queue. The difference of their
	// medians is what the tunnel's two ends cost a round trip.
	InnerIdle *probeSummary `json:"inner_probe_idle,omitempty"`
	OuterIdle *probeSummary `json:"outer_probe_idle,omitempty"`

	Qdisc        *qdiscStats `json:"qdisc,omitempty"`         // the router towards the server: the bulk flows' bottleneck
	ReverseQdisc *qdiscStats `json:"reverse_qdisc,omitempty"` // the router towards the client: ACKs and probe replies
	Wire         []wireStats `json:"wire,omitempty"`
	// WireDelayP99Ms bounds the 99th percentile of the time frames waited
	// for the wire (the worst wire's): what the testbed itself added to
	// the latencies when the machine was short of CPU.
	WireDelayP99Ms number `json:"wire_delay_p99_ms"`
	// TunnelCounters are the tunnel's own counters at the end of the
	// load, by end (client, server), as the tunnel reports them.
	TunnelCounters map[string]json.RawMessage `json:"tunnel_counters,omitempty"`
	Targets        targets                    `json:"targets"`
	ElapsedS       float64                    `json:"elapsed_s"`
}

// probeSummary is one latency probe: the summary and every sample.
type probeSummary struct {
	latencySummary
	RTTms []float64 `json:"rtt_ms"`
}

func newProbeSummary(p probeResult) probeSummary {
	return probeSummary{latencySummary: summarize(p.RTTms, p.Lost), RTTms: p.RTTms}
}

// targets compares a row with the spreading tunnel's acceptance figures.
type targets struct {
	P99GapMs number `json:"p99_gap_ms"` // inner probe p99 minus outer probe p99
	// IdleGapMs is the inner probe's idle median minus the outer's: the
	// tunnel's own delay. LoadP99GapMs is P99GapMs less IdleGapMs: how
	// much more the load delayed the inner probe than the outer one.
	// Both are NaN when the idle probes did not run.
	IdleGapMs    number `json:"idle_gap_ms"`
	LoadP99GapMs number `json:"load_p99_gap_ms"`
	Met          bool   `json:"met"` // both of the below
	// LatencyMet: the gap is at most targetP99GapMs. JainMet: Jain's
	// index is at least targetJain.
	LatencyMet bool `json:"latency_met"`
	JainMet    bool `json:"jain_met"`
}

// measure computes the row's figures from its flows and probes, and
// checks that they mean something.
func (r *modeResult) measure(cfg *config, m mode) {
	var inner, total float64
	goodputs := make([]float64, len(r.Flows))
	for i, f := range r.Flows {
		goodputs[i] = f.GoodputMbit
		total += f.GoodputMbit
		if f.Path == "inner" {
			inner += f.GoodputMbit
		}
	}
	r.TotalMbit = number(total)
	r.Jain = number(jain(goodputs))
	r.TunnelShare = number(math.NaN())
	if total > 0 {
		r.TunnelShare = number(inner / total)
	}
	n, mOut := float64(cfg.InnerFlows), float64(cfg.OuterFlows)
	oneFlow, fair := 1/(mOut+1), n/(n+mOut)
	r.ExpectedShare = number(fair)
	if m.Squeezed {
		r.ExpectedShare = number(oneFlow)
	}
	r.Targets.P99GapMs = r.InnerProbe.P99 - r.OuterProbe.P99
	r.Targets.IdleGapMs, r.Targets.LoadP99GapMs = number(math.NaN()), number(math.NaN())
	if r.InnerIdle != nil && r.OuterIdle != nil && r.InnerIdle.Samples > 0 && r.OuterIdle.Samples > 0 {
		r.Targets.IdleGapMs = r.InnerIdle.Median - r.OuterIdle.Median
		r.Targets.LoadP99GapMs = r.Targets.P99GapMs - r.Targets.IdleGapMs
	}
	r.Targets.LatencyMet = float64(r.Targets.P99GapMs) <= targetP99GapMs
	if cfg.Qdisc != qdiscFIFO && r.OuterProbe.Samples > 0 && r.OuterProbe.LossPercent > outerProbeLossNote {
		// A gap measured against a probe that waited in a bulk
		// flow's queue proves nothing, however small.
		r.Targets.LatencyMet = false
		r.Notes = append(r.Notes, fmt.Sprintf("the outer probe lost %.1f%% of its round trips, which a sparse flow alone in its queue does not: it most likely shared the router's queue with a bulk flow (a hash collision: fq_codel has 1024 buckets), so this row's latency comparison proves nothing; run again",
			r.OuterProbe.LossPercent))
	}
	r.Targets.JainMet = float64(r.Jain) >= targetJain
	r.Targets.Met = r.Targets.LatencyMet && r.Targets.JainMet

	r.Status = statusOK
	invalid := func(format string, args ...any) {
		r.Status = statusInvalid
		r.Reasons = append(r.Reasons, fmt.Sprintf(format, args...))
	}
	saturated := total >= minShareOfRate*cfg.RateMbit
	if !saturated {
		invalid("the bulk flows carried %.1f Mbit/s, under %.0f%% of the %.0f Mbit/s bottleneck: something before the router (the tunnel, the wire, the machine) could not keep up, so the qdisc under test did not decide the shares",
			total, 100*minShareOfRate, cfg.RateMbit)
	}
	for _, w := range r.Wire {
		r.WireDelayP99Ms = max(r.WireDelayP99Ms, number(w.DelayPercentile(99)))
		if frames := w.Frames() + w.Lost(); frames > 0 && float64(w.Lost()) > maxWireLoss*float64(frames) {
			invalid("the wire %s<->%s lost %d of %d frames (%d over its socket buffer, %d refused by the kernel, %d oversize): the machine could not keep up",
				w.A, w.B, w.Lost(), frames, w.KernelDrops, w.SendErrors, w.Oversize)
		}
	}
	if float64(r.WireDelayP99Ms) > wireDelayNoteMs {
		r.Notes = append(r.Notes, fmt.Sprintf("frames waited up to %g ms (p99) for the wire: the machine was short of CPU, and the latencies include that wait",
			float64(r.WireDelayP99Ms)))
	}
	for _, p := range []struct {
		name string
		s    probeSummary
	}{{"inner", r.InnerProbe}, {"outer", r.OuterProbe}} {
		if p.s.Samples == 0 {
			invalid("the %s latency probe got no reply", p.name)
		}
	}
	switch {
	case m.Control && saturated:
		r.checkControl(cfg, oneFlow, fair)
	case m.Control:
		r.Notes = append(r.Notes, "the link was not filled, so the router's qdisc did not decide the shares: this run cannot prove the wire")
	}
}

// checkControl decides whether the control row proves the wire: kernel
// WireGuard's flows are one outer flow, so a flow-queueing router must
// give them about one flow's share. If it gave them their own shares
// instead, it saw the inner flows' hash, which only the testbed's veths
// could have handed it.
func (r *modeResult) checkControl(cfg *config, oneFlow, fair float64) {
	switch {
	case cfg.Qdisc == qdiscFIFO:
		r.Notes = append(r.Notes, "a FIFO isolates no flow, so this run cannot prove the wire: use fq_codel or cake for that")
		return
	case cfg.InnerFlows < 2 || cfg.OuterFlows < 1:
		r.Notes = append(r.Notes, "with fewer than 2 flows inside or none outside, one flow's share and the isolated share are the same: this run cannot prove the wire")
		return
	}
	share := float64(r.TunnelShare)
	threshold := (oneFlow + fair) / 2
	if math.IsNaN(share) || share >= threshold {
		r.Status = statusInvalid
		r.Reasons = append(r.Reasons, fmt.Sprintf(
			"the wire leaks the flow hash: WireGuard's %d flows got %.2f of the goodput, as if the router isolated them (%.2f), not one flow's share (%.2f); no row of this run can be trusted",
			cfg.InnerFlows, share, fair, oneFlow))
		return
	}
	r.Notes = append(r.Notes, fmt.Sprintf("wire proven: WireGuard's %d flows were squeezed into %.2f of the goodput (one flow's share %.2f, isolated %.2f)",
		cfg.InnerFlows, share, oneFlow, fair))
}

// judge decides whether the whole run is valid, after every row.
func (rep *report) judge() {
	rep.Valid = true
	ran := 0
	for i := range rep.Modes {
		r := &rep.Modes[i]
		switch r.Status {
		case statusSkipped:
			continue
		case statusOK:
		default:
			rep.Valid = false
		}
		ran++
		if m, _ := findMode(r.Mode); m.Control && r.Status == statusInvalid && strings.Contains(strings.Join(r.Reasons, " "), "leaks the flow hash") {
			rep.Problems = append(rep.Problems, "the control run shows that the wire leaks the flow hash: every row is invalid")
			for j := range rep.Modes {
				if o := &rep.Modes[j]; o.Status == statusOK {
					o.Status = statusInvalid
					o.Reasons = append(o.Reasons, "the control run shows that the wire leaks the flow hash")
				}
			}
		}
	}
	if ran == 0 {
		rep.Valid = false
		rep.Problems = append(rep.Problems, "no mode ran")
	}
}

// missedTargets says how the run missed what it must show, or "" when it
// showed it: the spread mode met its targets (with latency false, only
// Jain's index; the latency gap is then reported but not required), and
// the one-flow mode, when it ran, was squeezed nearer one flow's share
// than the fair share, so the run could tell spreading from not.
func (rep *report) missedTargets(latency bool) string {
	for _, r := range rep.Modes {
		if r.Status == statusSkipped {
			continue
		}
		switch r.Mode {
		case "spread":
			if r.Status != statusOK {
				return "the spread mode was " + r.Status + ", so its targets are unproven"
			}
			if !r.Targets.JainMet || latency && !r.Targets.LatencyMet {
				return fmt.Sprintf("the spread mode missed its targets: inner probe p99 %.1f ms above the outer's (at most %g), Jain %.3f (at least %g)",
					float64(r.Targets.P99GapMs), targetP99GapMs, float64(r.Jain), targetJain)
			}
		case "one-flow":
			fair := float64(rep.Config.InnerFlows) / float64(rep.Config.InnerFlows+rep.Config.OuterFlows)
			if r.Status == statusOK && float64(r.TunnelShare) > (float64(r.ExpectedShare)+fair)/2 {
				return fmt.Sprintf("the one-flow mode was not squeezed: its tunnel share %.2f is nearer the fair share %.2f than one flow's %.2f",
					float64(r.TunnelShare), fair, float64(r.ExpectedShare))
			}
		}
	}
	return ""
}

// writeJSON writes the report to path.
func (rep *report) writeJSON(path string) error {
	data, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

// readReport reads a report written by writeJSON.
func readReport(path string) (*report, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var rep report
	if err := json.Unmarshal(data, &rep); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &rep, nil
}

// writeTable prints the report for a person.
func (rep *report) writeTable(w io.Writer) {
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
	fmt.Fprintf(w, "\n%s at %g Mbit/s%s, %d bulk flows inside + %d outside, %gs per mode (+%gs warm-up), kernel %s %s\n\n",
		c.Qdisc, c.RateMbit, vpn, c.InnerFlows, c.OuterFlows, c.DurationS, c.OmitS, c.Kernel, where)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "mode\tstatus\tMbit/s\ttunnel share (expected)\tJain\tflows seen\tinner probe ms p50/p90/p99\touter probe ms p50/p90/p99\tidle p50 ms in/out\twire p99 ms\t")
	for _, r := range rep.Modes {
		if r.Status == statusSkipped || r.Status == statusFailed {
			fmt.Fprintf(tw, "%s\t%s\t(see below)\t\t\t\t\t\t\t\t\n", r.Mode, r.Status)
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
		fmt.Fprintf(tw, "%s\t%s\t%.1f\t%.2f (%.2f)\t%.3f\t%s\t%s\t%s\t%s\t%s\t\n", r.Mode, r.Status,
			float64(r.TotalMbit), float64(r.TunnelShare), float64(r.ExpectedShare), float64(r.Jain), flows,
			latencyCell(r.InnerProbe), latencyCell(r.OuterProbe), idle, wireDelay)
	}
	tw.Flush()

	fmt.Fprintln(w, "\nper-flow goodput, Mbit/s (inside | outside):")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
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
		fmt.Fprintf(tw, "%s\t%s\t|\t%s\t\n", r.Mode, strings.Join(in, " "), strings.Join(out, " "))
	}
	tw.Flush()

	fmt.Fprintln(w)
	for _, r := range rep.Modes {
		for _, s := range r.Reasons {
			fmt.Fprintf(w, "%s: %s: %s\n", r.Mode, strings.ToUpper(r.Status), s)
		}
		for _, s := range r.Notes {
			fmt.Fprintf(w, "%s: %s\n", r.Mode, s)
		}
		if r.Mode == "spread" && r.Status == statusOK {
			verdict := "met"
			if !r.Targets.Met {
				verdict = "NOT met"
			}
			fmt.Fprintf(w, "spread: targets (inner p99 within %g ms of outer, Jain >= %g) %s: gap %.1f ms, Jain %.3f\n",
				targetP99GapMs, targetJain, verdict, float64(r.Targets.P99GapMs), float64(r.Jain))
			if idle := float64(r.Targets.IdleGapMs); !math.IsNaN(idle) {
				fmt.Fprintf(w, "spread: with no load the tunnel itself added %.1f ms to the round trip (idle medians); under load the inner probe's p99 rose %.1f ms more than the outer's\n",
					idle, float64(r.Targets.LoadP99GapMs))
			}
		}
	}
	for _, p := range rep.Problems {
		fmt.Fprintf(w, "PROBLEM: %s\n", p)
	}
	if rep.Valid {
		fmt.Fprintf(w, "result: valid (%.0f s)\n", c.ElapsedS)
	} else {
		fmt.Fprintf(w, "result: INVALID (%.0f s)\n", c.ElapsedS)
	}
}

func latencyCell(p probeSummary) string {
	if p.Samples == 0 {
		return "no replies"
	}
	cell := fmt.Sprintf("%.1f / %.1f / %.1f", float64(p.Median), float64(p.P90), float64(p.P99))
	if p.Lost > 0 {
		cell += fmt.Sprintf(" (%.1f%% lost)", p.LossPercent)
	}
	return cell
}

// writeOutputs writes results.json, and the plots unless disabled, into
// dir, returning the files written.
func (rep *report) writeOutputs(dir string, plots bool) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	files := []string{filepath.Join(dir, "results.json")}
	if err := rep.writeJSON(files[0]); err != nil {
		return nil, err
	}
	if !plots {
		return files, nil
	}
	cdf := filepath.Join(dir, "latency-cdf.png")
	if err := plotLatencyCDF(rep, cdf); err != nil {
		return files, fmt.Errorf("latency plot: %w", err)
	}
	tput := filepath.Join(dir, "throughput.png")
	if err := plotThroughput(rep, tput); err != nil {
		return append(files, cdf), fmt.Errorf("throughput plot: %w", err)
	}
	return append(files, cdf, tput), nil
}

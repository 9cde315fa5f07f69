package report

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/flowspread/flowspread/examples/testbed/internal/load"
	"github.com/flowspread/flowspread/examples/testbed/internal/verdict"
)

// Kind says what a mode must show.
type Kind struct {
	// Squeezed: the tunnel's flows are one outer flow and so must get
	// about one flow's share.
	Squeezed bool
	// Control: the mode that proves the wire (kernel WireGuard must be
	// squeezed, or the wire leaks the flow hash and every row is invalid).
	Control bool
}

// Round is one round of a mode's measured time: its window, from the
// start of the measured time, and the probes sent in it.
type Round struct {
	From, To time.Duration
	Probes   verdict.Round
}

// Measure computes the row's figures from its flows, probes and rounds,
// and checks that they mean something. Without rounds (no send times)
// the latency target falls back to the difference of the two probes'
// p99s.
func (r *ModeResult) Measure(c Config, k Kind, rounds []Round, t verdict.Targets) {
	var total float64
	r.TotalMbit, r.Jain, r.TunnelShare, total = shares(r.Flows, func(f int) float64 { return r.Flows[f].GoodputMbit })
	n, mOut := float64(c.InnerFlows), float64(c.OuterFlows)
	oneFlow, fair := 1/(mOut+1), n/(n+mOut)
	r.ExpectedShare = number(fair)
	if k.Squeezed {
		r.ExpectedShare = number(oneFlow)
	}
	r.measureGaps()
	r.judgeLatency(c, rounds, t)
	r.Targets.JainMet = float64(r.Jain) >= TargetJain
	r.Targets.Met = r.Targets.LatencyMet && r.Targets.JainMet
	saturated := total >= MinShareOfRate*c.RateMbit
	r.checkValidity(c, total, saturated)
	switch {
	case k.Control && saturated:
		r.checkControl(c, oneFlow, fair)
	case k.Control:
		r.Notes = append(r.Notes, "the link was not filled, so the router's qdisc did not decide the shares: this run cannot prove the wire")
	}
}

// shares returns the total goodput, Jain's index and the inner flows'
// share of flows, each flow's goodput given by goodput(i).
func shares(flows []load.Flow, goodput func(int) float64) (totalMbit, jainIndex, tunnelShare number, total float64) {
	var inner float64
	goodputs := make([]float64, len(flows))
	for i, f := range flows {
		goodputs[i] = goodput(i)
		total += goodputs[i]
		if f.Path == "inner" {
			inner += goodputs[i]
		}
	}
	tunnelShare = number(math.NaN())
	if total > 0 {
		tunnelShare = number(inner / total)
	}
	return number(total), number(jain(goodputs)), tunnelShare, total
}

// measureGaps computes today's figures of the probes: the p99 gap and,
// with idle probes, the tunnel's own delay.
func (r *ModeResult) measureGaps() {
	r.Targets.P99GapMs = r.InnerProbe.P99 - r.OuterProbe.P99
	r.Targets.IdleGapMs, r.Targets.LoadP99GapMs = number(math.NaN()), number(math.NaN())
	if r.InnerIdle != nil && r.OuterIdle != nil && r.InnerIdle.Samples > 0 && r.OuterIdle.Samples > 0 {
		r.Targets.IdleGapMs = r.InnerIdle.Median - r.OuterIdle.Median
		r.Targets.LoadP99GapMs = r.Targets.P99GapMs - r.Targets.IdleGapMs
	}
}

// judgeLatency decides the latency target: pairwise over the rounds when
// there are rounds, else by the p99 gap.
func (r *ModeResult) judgeLatency(c Config, rounds []Round, t verdict.Targets) {
	status := verdict.NotMet
	if float64(r.Targets.P99GapMs) <= targetGapMs {
		status = verdict.Met
	}
	if len(rounds) > 0 {
		status = r.judgeRounds(rounds, t)
	}
	if c.Qdisc != "fifo" && r.OuterProbe.Samples > 0 && r.OuterProbe.LossPercent > outerProbeLossNote {
		// A gap measured against a probe that waited in a bulk
		// flow's queue proves nothing, however small.
		if status == verdict.Met {
			status = verdict.Inconclusive
			if r.Verdict != nil {
				r.Verdict.Status = status.String()
			}
		}
		r.Notes = append(r.Notes, fmt.Sprintf("the outer probe lost %.1f%% of its round trips, which a sparse flow alone in its queue does not: it most likely shared the router's queue with a bulk flow (a hash collision: fq_codel has 1024 buckets), so this row's latency comparison proves nothing; run again",
			r.OuterProbe.LossPercent))
	}
	r.Targets.Latency = status.String()
	r.Targets.LatencyMet = status == verdict.Met
}

// judgeRounds records each round's shares and asks package verdict for
// the pairwise latency verdict over the rounds.
func (r *ModeResult) judgeRounds(rounds []Round, t verdict.Targets) verdict.Status {
	probes := make([]verdict.Round, len(rounds))
	for i, rd := range rounds {
		probes[i] = rd.Probes
	}
	res := verdict.Judge(probes, t)
	r.Rounds = make([]RoundResult, len(rounds))
	for i, rd := range rounds {
		rr := &r.Rounds[i]
		rr.TotalMbit, rr.Jain, rr.TunnelShare, _ = shares(r.Flows, func(f int) float64 {
			return r.Flows[f].GoodputBetween(rd.From, rd.To)
		})
		if i < len(res.Rounds) {
			v := res.Rounds[i]
			rr.Latency, rr.Pairs, rr.Reasons = v.Status.String(), v.Pairs, v.Reasons
			rr.DiffP50Ms, rr.GapQMs = ms(v.DiffP50), ms(v.GapQ)
			rr.InnerLoss, rr.OuterLoss = v.InnerLoss, v.OuterLoss
		}
	}
	r.Verdict = &Verdict{
		Status: res.Status.String(), Quantile: t.Quantile, GapMs: float64(ms(t.Gap)),
		GapQMinMs: ms(res.GapQMin), GapQMedianMs: ms(res.GapQMedian), GapQMaxMs: ms(res.GapQMax),
		Reasons: res.Reasons, Advice: res.Advice,
	}
	return res.Status
}

func ms(d time.Duration) number { return number(float64(d) / float64(time.Millisecond)) }

// checkValidity marks the row invalid when the link was not filled, the
// wire lost frames or a probe got no reply, and notes a slow wire.
func (r *ModeResult) checkValidity(c Config, total float64, saturated bool) {
	r.Status = StatusOK
	invalid := func(format string, args ...any) {
		r.Status = StatusInvalid
		r.Reasons = append(r.Reasons, fmt.Sprintf(format, args...))
	}
	r.checkPaths(invalid)
	if !saturated {
		invalid("the bulk flows carried %.1f Mbit/s, under %.0f%% of the %.0f Mbit/s bottleneck: something before the router (the tunnel, the wire, the machine) could not keep up, so the qdisc under test did not decide the shares",
			total, 100*MinShareOfRate, c.RateMbit)
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
		s    ProbeSummary
	}{{"inner", r.InnerProbe}, {"outer", r.OuterProbe}} {
		if p.s.Samples == 0 {
			invalid("the %s latency probe got no reply", p.name)
		}
	}
}

// checkControl decides whether the control row proves the wire: kernel
// WireGuard's flows are one outer flow, so a flow-queueing router must
// give them about one flow's share. If it gave them their own shares
// instead, it saw the inner flows' hash, which only the testbed's veths
// could have handed it.
func (r *ModeResult) checkControl(c Config, oneFlow, fair float64) {
	switch {
	case c.Qdisc == "fifo":
		r.Notes = append(r.Notes, "a FIFO isolates no flow, so this run cannot prove the wire: use fq_codel or cake for that")
		return
	case c.InnerFlows < 2 || c.OuterFlows < 1:
		r.Notes = append(r.Notes, "with fewer than 2 flows inside or none outside, one flow's share and the isolated share are the same: this run cannot prove the wire")
		return
	}
	share := float64(r.TunnelShare)
	threshold := (oneFlow + fair) / 2
	if math.IsNaN(share) || share >= threshold {
		r.Status = StatusInvalid
		r.Reasons = append(r.Reasons, fmt.Sprintf(
			"the wire leaks the flow hash: WireGuard's %d flows got %.2f of the goodput, as if the router isolated them (%.2f), not one flow's share (%.2f); no row of this run can be trusted",
			c.InnerFlows, share, fair, oneFlow))
		return
	}
	r.Notes = append(r.Notes, fmt.Sprintf("wire proven: WireGuard's %d flows were squeezed into %.2f of the goodput (one flow's share %.2f, isolated %.2f)",
		c.InnerFlows, share, oneFlow, fair))
}

// Validate decides whether the whole run is valid, after every row.
func (rep *Report) Validate() {
	rep.CheckHostShare()
	rep.Valid = true
	ran := 0
	for i := range rep.Modes {
		r := &rep.Modes[i]
		switch r.Status {
		case StatusSkipped:
			continue
		case StatusOK:
		default:
			rep.Valid = false
		}
		ran++
		if r.Mode == "control" && r.Status == StatusInvalid && strings.Contains(strings.Join(r.Reasons, " "), "leaks the flow hash") {
			rep.Problems = append(rep.Problems, "the control run shows that the wire leaks the flow hash: every row is invalid")
			for j := range rep.Modes {
				if o := &rep.Modes[j]; o.Status == StatusOK {
					o.Status = StatusInvalid
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

// Missed says how the run missed what it must show, or "" when it showed
// it: the spread mode met its targets (with latency false, only Jain's
// index; the latency verdict is then reported but not required), and the
// one-flow mode, when it ran, was squeezed nearer one flow's share than
// the fair share, so the run could tell spreading from not. Inconclusive
// is true when the only miss is a latency verdict the host was too busy
// to give. At cake the spread mode must also take no more than the
// direct mode's share plus HostShareSlack (CheckHostShare).
func (rep *Report) Missed(latency bool) (msg string, inconclusive bool) {
	if miss := rep.missedHostShare(); miss != "" {
		return miss, false
	}
	var busy string
	for _, r := range rep.Modes {
		if r.Status == StatusSkipped {
			continue
		}
		switch r.Mode {
		case "spread":
			miss, inconclusive := missedSpread(r, latency)
			if inconclusive {
				busy = miss
			} else if miss != "" {
				return miss, false
			}
		case "one-flow":
			if miss := rep.missedOneFlow(r); miss != "" {
				return miss, false
			}
		}
	}
	return busy, busy != ""
}

// missedSpread checks the spread mode's targets.
func missedSpread(r ModeResult, latency bool) (string, bool) {
	switch {
	case r.Status != StatusOK:
		return "the spread mode was " + r.Status + ", so its targets are unproven", false
	case !r.Targets.JainMet || latency && !r.Targets.LatencyMet && r.Targets.Latency != verdict.Inconclusive.String():
		return fmt.Sprintf("the spread mode missed its targets: %s, Jain %.3f (at least %g)",
			r.latencyWords(), float64(r.Jain), TargetJain), false
	case latency && !r.Targets.LatencyMet:
		// The verdict was inconclusive: the host, not the tunnel.
		msg := "inconclusive: the host was too busy to judge the spread mode's latency"
		if r.Verdict != nil && len(r.Verdict.Reasons) > 0 {
			msg += " (" + strings.Join(r.Verdict.Reasons, "; ") + ")"
		}
		advice := "close other work on this machine and run again"
		if r.Verdict != nil && r.Verdict.Advice != "" {
			advice = r.Verdict.Advice
		}
		return msg + ": " + advice, true
	}
	return "", false
}

// missedOneFlow checks that the one-flow mode was squeezed.
func (rep *Report) missedOneFlow(r ModeResult) string {
	fair := float64(rep.Config.InnerFlows) / float64(rep.Config.InnerFlows+rep.Config.OuterFlows)
	if r.Status == StatusOK && float64(r.TunnelShare) > (float64(r.ExpectedShare)+fair)/2 {
		return fmt.Sprintf("the one-flow mode was not squeezed: its tunnel share %.2f is nearer the fair share %.2f than one flow's %.2f",
			float64(r.TunnelShare), fair, float64(r.ExpectedShare))
	}
	return ""
}

// latencyWords says the row's latency figures against the target.
func (r ModeResult) latencyWords() string {
	if r.Verdict != nil {
		return fmt.Sprintf("inner probe's %g quantile %.1f ms above the outer's over the same instants (median round; rounds %.1f to %.1f; at most %g)",
			r.Verdict.Quantile, float64(r.Verdict.GapQMedianMs), float64(r.Verdict.GapQMinMs), float64(r.Verdict.GapQMaxMs), r.Verdict.GapMs)
	}
	return fmt.Sprintf("inner probe p99 %.1f ms above the outer's (at most %g)", float64(r.Targets.P99GapMs), targetGapMs)
}

package verdict

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"
)

// Bounds of the rules; the package doc says why each is where it is.
const (
	// stallOver is the outer round trip under load above which the host
	// stalled: fq_codel gives a sparse flow a few ms at most.
	stallOver = 30 * time.Millisecond
	// idleOver is the idle round trip (p99) above which the host made the
	// probes wait with nothing queued: a quiet host answers in a few ms.
	idleOver = 20 * time.Millisecond
	// maxProbeLoss is the loss of a probe that should lose nothing (the
	// outer one under load, either one idle) above which its figures do
	// not describe a sparse flow alone in its queue; the testbed's report
	// used the same 2%.
	maxProbeLoss = 0.02
	// maxStalled is the part of the answered instants that may be host
	// stalls before the rest no longer speaks for the round.
	maxStalled = 0.10
	// minInstants is the fewest instants a round (or its idle probes)
	// must pair, and the fewest differences any quantile is taken over.
	minInstants = 50
	// lossMarginPoints is the least excess inner loss, over the outer
	// probe's, that is a miss: one-flow loses 20-40%, a sparse flow in
	// its own queue nothing, and a point is 10 probes in a 10 s round.
	lossMarginPoints = 0.01
	// lossMarginErrors is that excess in standard errors of a difference
	// of two loss fractions with no real difference: at 3, chance alone
	// passes it about once in 700 rounds.
	lossMarginErrors = 3
	// wideMissFactor: a round that misses its gap by more than this
	// factor (or misses on loss) missed widely, and no Met round can
	// outvote it. A round's p99 rests on its top few samples (about 5 in
	// a 5 s round): on a quiet host one spread round in three came out
	// at 4.2 ms beside two at -2.8 and -2.2 ms, while the one-flow mode
	// misses by 50 ms and more. So only a miss by over 5 times the gap
	// is wide.
	wideMissFactor = 5
)

// cause is why a round or mode is Inconclusive, to choose the advice.
type cause uint8

const (
	causeBusy     cause = 1 << iota // the host stalled or was loaded
	causeFew                        // too few samples
	causeDisagree                   // rounds disagreed
	causeInvalid                    // the targets make no sense
)

// advice says what to do, most useful first.
func (c cause) advice() string {
	switch {
	case c&causeInvalid != 0:
		return "the targets are invalid: this is a bug in the testbed, please report it"
	case c&causeBusy != 0:
		return "the host was too busy: close other work (builds, virtual machines, browsers) and run again"
	case c&causeDisagree != 0:
		return "the rounds disagreed, so the host's load likely changed during the run: close other work and run again"
	case c&causeFew != 0:
		return "too few probe samples to judge: run longer rounds, and check that both probes ran for all of it"
	}
	return "run again"
}

// Judge judges one mode from its rounds: each round alone, then the mode
// from its rounds, by the rules in the package doc. It does not modify
// rounds.
func Judge(rounds []Round, t Targets) Result {
	var res Result
	if err := t.check(); err != "" {
		res.Reasons = []string{"the targets are invalid: " + err}
		res.Advice = causeInvalid.advice()
		for range rounds {
			res.Rounds = append(res.Rounds, RoundResult{Reasons: res.Reasons})
		}
		return res
	}
	var causes cause
	res.Rounds = make([]RoundResult, len(rounds))
	for k, r := range rounds {
		var c cause
		res.Rounds[k], c = judgeRound(r, t)
		causes |= c
	}
	res.GapQMin, res.GapQMedian, res.GapQMax = spread(res.Rounds)
	c := res.decide(t)
	if res.Status == Inconclusive {
		res.Advice = (c | causes).advice()
	}
	return res
}

// check returns what is wrong with t, or "".
func (t Targets) check() string {
	switch {
	case t.Interval <= 0:
		return fmt.Sprintf("the probe interval is %v, not positive", t.Interval)
	case t.Gap < 0:
		return fmt.Sprintf("the gap is %v, negative", t.Gap)
	case !(t.Quantile > 0 && t.Quantile <= 1): // also NaN
		return fmt.Sprintf("the quantile is %g, not in (0, 1]", t.Quantile)
	}
	return ""
}

// minDiffs is the fewest differences the q-quantile is taken over: enough
// that at least one difference lies above it, so that it is not the
// maximum of a handful.
func minDiffs(q float64) int {
	if q >= 0.999 {
		return 1000
	}
	return max(minInstants, int(math.Ceil(1/(1-q)-1e-9)))
}

// judgeRound judges one round alone.
func judgeRound(r Round, t Targets) (RoundResult, cause) {
	res := RoundResult{Inner: Summarize(r.Inner), Outer: Summarize(r.Outer)}
	res.InnerLoss, res.OuterLoss = res.Inner.Loss, res.Outer.Loss
	base := earliest(r.Inner, r.Outer)
	p := pairProbes(stamp(r.Inner, base), stamp(r.Outer, base), int64(t.Interval), int64(stallOver))
	res.Offset = time.Duration(p.offset)
	res.Instants, res.Pairs, res.Stalled, res.Diffs = p.instants, p.pairs(), p.stalled, len(p.diffs)
	if len(p.diffs) > 0 {
		res.DiffP50 = time.Duration(quantile(p.diffs, 0.5))
		res.GapQ = time.Duration(pairedGap(p.inner, p.outer, p.stalled, t.Quantile))
	}
	q := quantileName(t.Quantile)

	// Rules that forbid any verdict.
	var causes cause
	inconclusive := func(c cause, format string, args ...any) {
		causes |= c
		res.Reasons = append(res.Reasons, fmt.Sprintf(format, args...))
	}
	if need := max(minInstants, (max(len(r.Inner), len(r.Outer))+1)/2); p.instants < need {
		inconclusive(causeFew, "the two probes were sent at the same instant only %d times (of %d inner and %d outer samples; at least %d needed)",
			p.instants, len(r.Inner), len(r.Outer), need)
	}
	if r.IdleInner != nil || r.IdleOuter != nil {
		res.IdleInner, res.IdleOuter = Summarize(r.IdleInner), Summarize(r.IdleOuter)
		judgeIdle(&res, r, t, inconclusive)
	}
	if res.Outer.Loss > maxProbeLoss {
		inconclusive(causeBusy, "the outer probe lost %.1f%% of its round trips, which a sparse flow alone in its queue does not: it shared a queue with a bulk flow (fq_codel has 1024 buckets), or the host dropped packets",
			100*res.Outer.Loss)
	}
	if pairs := p.pairs(); pairs > 0 && float64(p.stalled) > maxStalled*float64(pairs) {
		inconclusive(causeBusy, "the host stalled at %d of %d instants (the outer probe waited over %v): too many to judge the rest",
			p.stalled, pairs, stallOver)
	}
	if len(res.Reasons) > 0 {
		return res, causes
	}

	// Misses.
	var misses []string
	lossMiss := lossMissed(res.Inner, res.Outer)
	if lossMiss {
		misses = append(misses, fmt.Sprintf("the inner probe lost %.1f%% of its round trips, the outer one %.1f%%: the tunnel's sparse flow was dropped with its bulk flows",
			100*res.Inner.Loss, 100*res.Outer.Loss))
	}
	enough := len(p.diffs) >= minDiffs(t.Quantile)
	if enough && res.GapQ > t.Gap {
		misses = append(misses, fmt.Sprintf("at the instants both probes were answered outside host stalls, the inner probe's %s was %s above the outer one's (at most %s): it queued where the outer probe did not",
			q, ms(res.GapQ), ms(t.Gap)))
	}
	if len(misses) > 0 {
		if res.Outer.P99 > stallOver {
			inconclusive(causeBusy, "the outer probe itself waited %s at p99: the host, not the tunnel, was stalling, and a stall can hit the tunnel's processes alone, so this cannot be told apart from the tunnel's own miss (%s)",
				ms(res.Outer.P99), joinMisses(misses))
			return res, causes
		}
		res.Status = NotMet
		res.Reasons = misses
		return res, 0
	}
	if !enough {
		inconclusive(causeFew, "only %d instants had both probes answered outside host stalls (at least %d needed for a %s)",
			len(p.diffs), minDiffs(t.Quantile), q)
		return res, causes
	}
	res.Status = Met
	return res, 0
}

// judgeIdle applies the idle rules of the package doc.
func judgeIdle(res *RoundResult, r Round, t Targets, inconclusive func(cause, string, ...any)) {
	for _, idle := range []struct {
		name string
		s    Summary
	}{{"inner", res.IdleInner}, {"outer", res.IdleOuter}} {
		switch {
		case idle.s.Answered() == 0:
			inconclusive(causeFew, "with no load the %s probe got no answer, so the host cannot be checked", idle.name)
		case idle.s.P99 > idleOver:
			inconclusive(causeBusy, "with no load the %s probe already waited %s at p99 (a quiet host answers within %s): the host was too busy",
				idle.name, ms(idle.s.P99), ms(idleOver))
		case idle.s.Loss > maxProbeLoss:
			inconclusive(causeBusy, "with no load the %s probe already lost %.1f%% of its round trips: the host was too busy, or the path is broken",
				idle.name, 100*idle.s.Loss)
		}
	}
	base := earliest(r.IdleInner, r.IdleOuter)
	p := pairProbes(stamp(r.IdleInner, base), stamp(r.IdleOuter, base), int64(t.Interval), 0)
	if len(p.diffs) < minInstants {
		inconclusive(causeFew, "with no load the probes were both answered at only %d instants (at least %d needed to check the host)",
			len(p.diffs), minInstants)
		return
	}
	res.IdleGapQ = time.Duration(pairedGap(p.inner, p.outer, 0, t.Quantile))
	if res.IdleGapQ > t.Gap {
		inconclusive(causeBusy, "with no load the inner probe's %s was already %s above the outer one's (at most %s): the tunnel's processes did not get the CPU in time, so the host was too busy to judge the tunnel under load",
			quantileName(t.Quantile), ms(res.IdleGapQ), ms(t.Gap))
	}
}

// lossMissed reports whether the inner probe lost materially more than
// the outer one: more than twice as much, by more than lossMarginPoints,
// and by more than lossMarginErrors standard errors of the difference of
// two fractions drawn from one pooled loss rate.
func lossMissed(inner, outer Summary) bool {
	if inner.Samples == 0 || outer.Samples == 0 {
		return false
	}
	excess := inner.Loss - outer.Loss
	pooled := float64(inner.Lost+outer.Lost) / float64(inner.Samples+outer.Samples)
	se := math.Sqrt(pooled * (1 - pooled) * (1/float64(inner.Samples) + 1/float64(outer.Samples)))
	return inner.Loss > 2*outer.Loss && excess > lossMarginPoints && excess > lossMarginErrors*se
}

// wide reports whether a NotMet round missed widely.
func (r RoundResult) wide(t Targets) bool {
	return r.GapQ > wideMissFactor*t.Gap || lossMissed(r.Inner, r.Outer)
}

// decide sets the mode's Status and Reasons from its rounds, and returns
// why it is Inconclusive, if it is.
func (res *Result) decide(t Targets) cause {
	n := len(res.Rounds)
	if n == 0 {
		res.Reasons = []string{"no round was measured"}
		return causeFew
	}
	var met, notMet, wide []RoundResult
	for _, r := range res.Rounds {
		switch r.Status {
		case Met:
			met = append(met, r)
		case NotMet:
			notMet = append(notMet, r)
			if r.wide(t) {
				wide = append(wide, r)
			}
		}
	}
	q := quantileName(t.Quantile)
	var c cause
	switch {
	case len(met) > 0 && len(wide) > 0:
		lo, hi := diffRange(met)
		_, whi := diffRange(wide)
		res.Reasons = []string{fmt.Sprintf("the rounds disagree: %d met (%s gap %s to %s) and %d missed widely (%s gap up to %s, or lost more)",
			len(met), q, ms(lo), ms(hi), len(wide), q, ms(whi))}
		c = causeDisagree
	case 2*len(met) > n:
		res.Status = Met
	case 2*len(notMet) > n:
		res.Status = NotMet
		lo, hi := diffRange(notMet)
		res.Reasons = []string{fmt.Sprintf("%d of %d rounds not met (%s gap %s to %s)", len(notMet), n, q, ms(lo), ms(hi))}
	default:
		if len(met) > 0 && len(notMet) > 0 {
			c = causeDisagree
		}
		res.Reasons = []string{fmt.Sprintf("%d of %d rounds met, %d not met and %d inconclusive: no majority of the rounds agrees",
			len(met), n, len(notMet), n-len(met)-len(notMet))}
	}
	if res.Status == Met {
		return 0
	}
	for k, r := range res.Rounds {
		for _, why := range r.Reasons {
			res.Reasons = append(res.Reasons, fmt.Sprintf("round %d: %s", k+1, why))
		}
	}
	return c
}

// spread returns the least, median and greatest GapQ of the rounds that
// had a difference to take it from.
func spread(rounds []RoundResult) (lo, mid, hi time.Duration) {
	var qs []float64
	for _, r := range rounds {
		if r.Diffs > 0 {
			qs = append(qs, float64(r.GapQ))
		}
	}
	if len(qs) == 0 {
		return 0, 0, 0
	}
	slices.Sort(qs)
	return time.Duration(qs[0]), time.Duration(quantile(qs, 0.5)), time.Duration(qs[len(qs)-1])
}

// diffRange returns the least and greatest GapQ of rounds.
func diffRange(rounds []RoundResult) (lo, hi time.Duration) {
	for k, r := range rounds {
		if k == 0 || r.GapQ < lo {
			lo = r.GapQ
		}
		if k == 0 || r.GapQ > hi {
			hi = r.GapQ
		}
	}
	return lo, hi
}

// quantileName names a quantile as users read it: 0.99 is "p99".
func quantileName(q float64) string {
	return "p" + strconv.FormatFloat(q*100, 'g', 4, 64)
}

// ms writes d in milliseconds, as the testbed's report does.
func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64) + " ms"
}

func joinMisses(misses []string) string {
	s := misses[0]
	for _, m := range misses[1:] {
		s += "; " + m
	}
	return s
}

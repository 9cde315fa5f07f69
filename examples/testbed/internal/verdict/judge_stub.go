package verdict

import (
	"fmt"
	"slices"
	"time"
)

// Judge is a stand-in for the real judgement, which replaces this file:
// it pairs the probes instant by instant, judges each round by the
// quantile of the differences and the losses, and calls the mode met
// when every round is, not met when most rounds are, and inconclusive
// otherwise.
func Judge(rounds []Round, t Targets) Result {
	var res Result
	var qs []time.Duration
	met, notMet := 0, 0
	for _, r := range rounds {
		rr := judgeRound(r, t)
		res.Rounds = append(res.Rounds, rr)
		switch rr.Status {
		case Met:
			met++
		case NotMet:
			notMet++
			res.Reasons = append(res.Reasons, rr.Reasons...)
		}
		if rr.Pairs > 0 {
			qs = append(qs, rr.DiffQ)
		}
	}
	if len(qs) > 0 {
		slices.Sort(qs)
		res.DiffQMin, res.DiffQMedian, res.DiffQMax = qs[0], qs[len(qs)/2], qs[len(qs)-1]
	}
	switch {
	case len(rounds) > 0 && met == len(rounds):
		res.Status = Met
	case notMet*2 > len(rounds):
		res.Status = NotMet
	default:
		res.Status = Inconclusive
		for _, rr := range res.Rounds {
			if rr.Status == Inconclusive {
				res.Reasons = append(res.Reasons, rr.Reasons...)
			}
		}
		res.Advice = "close other work on this machine and run again"
	}
	return res
}

func judgeRound(r Round, t Targets) RoundResult {
	diffs, inLoss, outLoss := pair(r.Inner, r.Outer, t.Interval)
	rr := RoundResult{Pairs: len(diffs), InnerLoss: inLoss, OuterLoss: outLoss}
	if len(diffs) > 0 {
		rr.DiffP50, rr.DiffQ = quantile(diffs, 0.5), quantile(diffs, t.Quantile)
	}
	idle, _, _ := pair(r.IdleInner, r.IdleOuter, t.Interval)
	switch {
	case len(diffs) < 10:
		rr.Status, rr.Reasons = Inconclusive, []string{fmt.Sprintf("only %d instants with both probes answered", len(diffs))}
	case len(idle) > 0 && quantile(idle, t.Quantile) > t.Gap:
		rr.Status, rr.Reasons = Inconclusive, []string{"the probes differed beyond the target with no load"}
	case outLoss > 0.05:
		rr.Status, rr.Reasons = Inconclusive, []string{fmt.Sprintf("the outer probe lost %.0f%%", 100*outLoss)}
	case rr.DiffQ > t.Gap || inLoss > outLoss+0.01:
		rr.Status, rr.Reasons = NotMet, []string{fmt.Sprintf("inner minus outer %v at the quantile (target %v), loss %.1f%% inside, %.1f%% outside", rr.DiffQ, t.Gap, 100*inLoss, 100*outLoss)}
	default:
		rr.Status = Met
	}
	return rr
}

// pair matches samples sent within half an interval of each other and
// returns the differences of those both answered, and each side's loss.
func pair(in, out []Sample, interval time.Duration) (diffs []time.Duration, inLoss, outLoss float64) {
	i, j := 0, 0
	for i < len(in) && j < len(out) {
		d := in[i].Sent.Sub(out[j].Sent)
		switch {
		case d < -interval/2:
			i++
		case d > interval/2:
			j++
		default:
			if !in[i].Lost && !out[j].Lost {
				diffs = append(diffs, in[i].RTT-out[j].RTT)
			}
			i, j = i+1, j+1
		}
	}
	return diffs, lossOf(in), lossOf(out)
}

func lossOf(s []Sample) float64 {
	lost := 0
	for _, x := range s {
		if x.Lost {
			lost++
		}
	}
	if len(s) == 0 {
		return 0
	}
	return float64(lost) / float64(len(s))
}

func quantile(d []time.Duration, q float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(int(q*float64(len(s))), len(s)-1)]
}

package verdict

import "time"

// Sample is one probe round trip.
type Sample struct {
	// Sent is when the probe left, by the host's wall clock. Both probes
	// run on one host, so their Sent times are comparable. irtt gives it
	// for lost round trips too; a sample without one (zero) counts in its
	// probe's loss but pairs with nothing.
	Sent time.Time
	// RTT is the round-trip time; meaningless when Lost.
	RTT  time.Duration
	Lost bool
}

// Round is one measurement round of one mode: the two probes under load
// and, when they ran, the same two probes before the load.
type Round struct {
	Inner, Outer []Sample // under load, sent at the same interval
	// IdleInner and IdleOuter ran before the load; nil if not measured.
	// Rounds may share one idle measurement of their mode.
	IdleInner, IdleOuter []Sample
}

// Targets are what the inner probe must show against the outer one.
type Targets struct {
	// Gap bounds the chosen quantile of the inner probe's RTTs less the
	// same quantile of the outer probe's, over the same instants.
	Gap time.Duration
	// Quantile of each probe's RTTs judged against Gap, e.g. 0.99.
	Quantile float64
	// Interval is the probes' send interval: samples of the two probes
	// sent within half of it of each other are one instant.
	Interval time.Duration
}

// Status is a verdict.
type Status int

const (
	// Inconclusive: the host was too busy, or the rounds disagreed too
	// much, to tell; rerun on a quieter host.
	Inconclusive Status = iota
	// Met: the inner probe kept within Gap of the outer one.
	Met
	// NotMet: the inner probe waited longer than Gap (or lost more) on a
	// host that was quiet enough to tell.
	NotMet
)

// String returns "inconclusive", "met" or "not met".
func (s Status) String() string {
	switch s {
	case Met:
		return "met"
	case NotMet:
		return "not met"
	}
	return "inconclusive"
}

// RoundResult is the judgement of one round.
type RoundResult struct {
	Status Status
	// Pairs is how many instants both probes were answered.
	Pairs int
	// DiffP50 is the median of the per-instant differences inner minus
	// outer, over the Diffs answered instants the host did not stall;
	// GapQ is the Targets.Quantile of the inner RTTs at those instants
	// less that of the outer RTTs, with the stalled instants counted as
	// passes (see the package doc: the figure judged). Both are zero when
	// Diffs is 0.
	DiffP50, GapQ time.Duration
	// InnerLoss and OuterLoss are the fractions of each probe lost.
	InnerLoss, OuterLoss float64
	// Reasons say why the round is not Met, in plain words.
	Reasons []string

	// Instants is how many times both probes were sent at the same
	// instant (answered or not); Stalled how many of the Pairs were left
	// out of the differences because the host stalled; Diffs = Pairs -
	// Stalled.
	Instants, Stalled, Diffs int
	// Offset is how much later the outer probe was sent than the inner
	// one at the same instant, as estimated for pairing.
	Offset time.Duration
	// Inner and Outer summarize each probe under load; IdleInner and
	// IdleOuter the idle probes (zero when not measured), and IdleGapQ
	// their gap at the Targets.Quantile, over the same instants.
	Inner, Outer, IdleInner, IdleOuter Summary
	IdleGapQ                           time.Duration
}

// Result is the judgement of a mode over all its rounds.
type Result struct {
	Status Status
	Rounds []RoundResult
	// GapQMin, GapQMedian and GapQMax are the spread of the rounds'
	// GapQ, over the rounds with at least one difference (all zero when
	// none had any).
	GapQMin, GapQMedian, GapQMax time.Duration
	// Reasons say why the mode is not Met; Advice, for Inconclusive, what
	// the user can do (close other work, rerun).
	Reasons []string
	Advice  string
}

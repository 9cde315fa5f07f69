package verdict

import (
	"math"
	"slices"
	"time"
)

// Summary describes one probe's samples.
type Summary struct {
	// Samples counts every sample, Lost those with no answer; Loss is
	// Lost/Samples (0 with no samples).
	Samples, Lost int
	Loss          float64
	// Min, Median, P90, P99 and Max are over the answered round trips,
	// interpolated as numpy's default (Hyndman and Fan's definition 7);
	// all zero when none was answered.
	Min, Median, P90, P99, Max time.Duration
}

// Answered is how many samples got an answer.
func (s Summary) Answered() int { return s.Samples - s.Lost }

// Summarize describes samples, in any order; it does not modify them.
func Summarize(samples []Sample) Summary {
	s := Summary{Samples: len(samples)}
	rtts := make([]float64, 0, len(samples))
	for _, x := range samples {
		if x.Lost {
			s.Lost++
			continue
		}
		rtts = append(rtts, float64(x.RTT))
	}
	if s.Samples > 0 {
		s.Loss = float64(s.Lost) / float64(s.Samples)
	}
	if len(rtts) == 0 {
		return s
	}
	slices.Sort(rtts)
	s.Min = time.Duration(rtts[0])
	s.Median = time.Duration(quantile(rtts, 0.5))
	s.P90 = time.Duration(quantile(rtts, 0.9))
	s.P99 = time.Duration(quantile(rtts, 0.99))
	s.Max = time.Duration(rtts[len(rtts)-1])
	return s
}

// quantile returns the q-quantile (0 <= q <= 1) of sorted, ascending,
// interpolating linearly between the two closest ranks (definition 7, as
// the testbed's report). It returns 0 for an empty slice.
func quantile(sorted []float64, q float64) float64 {
	return quantileAbove(sorted, 0, q)
}

// quantileAbove returns the q-quantile of sorted (ascending) with below
// more values, all lower than any of sorted, put under it: -Inf when the
// quantile falls among them. It returns 0 when there is nothing at all.
// Judge counts the instants the host stalled as such passes, so that
// leaving an instant out can only lower a miss (see the package doc).
func quantileAbove(sorted []float64, below int, q float64) float64 {
	n := below + len(sorted)
	if n == 0 {
		return 0
	}
	at := func(i int) float64 {
		if i < below {
			return math.Inf(-1)
		}
		return sorted[i-below]
	}
	rank := q * float64(n-1)
	lo := int(math.Floor(rank))
	if lo >= n-1 {
		return at(n - 1)
	}
	lo = max(lo, 0)
	a, b := at(lo), at(lo+1)
	if math.IsInf(a, -1) {
		return a
	}
	return a + (rank-float64(lo))*(b-a)
}

// tailExcess is how far the q-quantile of the per-instant differences
// (sorted, ascending) lies beyond what the two probes' own jitter gives:
// the q-quantile plus the (1-q)-quantile less the median. Two probes on
// one path jitter independently, so their differences spread both ways
// alike, and the plain p99 of the differences of two identical paths is
// several ms (the direct mode showed 2.7-6 ms on a quiet host). For such
// symmetric noise around a shift D the figure is D; a tunnel that makes
// its probe queue now and then stretches the upper tail only, and the
// figure grows by that stretch.
func tailExcess(sorted []float64, q float64) float64 {
	return tailExcessAbove(sorted, 0, q)
}

// tailExcessAbove is tailExcess with below more values, all lower than
// any of sorted, counted under its upper quantile only (see quantileAbove):
// Judge counts the stalled instants so, as passes.
func tailExcessAbove(sorted []float64, below int, q float64) float64 {
	return quantileAbove(sorted, below, q) + quantile(sorted, 1-q) - quantile(sorted, 0.5)
}

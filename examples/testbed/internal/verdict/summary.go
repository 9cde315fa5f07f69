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
	n := len(sorted)
	if n == 0 {
		return 0
	}
	rank := q * float64(n-1)
	lo := int(math.Floor(rank))
	if lo >= n-1 {
		return sorted[n-1]
	}
	lo = max(lo, 0)
	return sorted[lo] + (rank-float64(lo))*(sorted[lo+1]-sorted[lo])
}

// pairedGap is the q-quantile of the inner round trips less the
// q-quantile of the outer ones, both taken over the same instants (each
// sorted, ascending, of equal length): the p99 gap that the targets name,
// with the two p99s drawn from one set of instants rather than from two
// samples. passes more instants, left out of both (the host stalled
// there), count as low values under both quantiles, so that leaving them
// out never pushes a tail round trip over the quantile: a stall both
// probes share can only lower the figure.
func pairedGap(inner, outer []float64, passes int, q float64) float64 {
	n := len(inner)
	if n > 1 && passes > 0 {
		// The q-quantile of n+passes values whose lowest passes are out.
		q = max(0, (q*float64(n+passes-1)-float64(passes))/float64(n-1))
	}
	return quantile(inner, q) - quantile(outer, q)
}

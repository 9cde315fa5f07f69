package report

import (
	"math"
	"slices"
	"strconv"
)

// number is a measured value that may be missing (NaN), for example the
// median of a probe that got no reply. It is null in JSON, where NaN
// cannot be written.
type number float64

func (n number) MarshalJSON() ([]byte, error) {
	if math.IsNaN(float64(n)) || math.IsInf(float64(n), 0) {
		return []byte("null"), nil
	}
	return strconv.AppendFloat(nil, float64(n), 'f', -1, 64), nil
}

func (n *number) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*n = number(math.NaN())
		return nil
	}
	f, err := strconv.ParseFloat(string(b), 64)
	*n = number(f)
	return err
}

// jain returns Jain's fairness index of xs: (Σx)² / (n·Σx²), from 1/n
// when one flow takes everything to 1 when all flows get the same (R. Jain,
// D. Chiu, W. Hawe, DEC-TR-301, 1984). It returns 0 for no flows, or when
// every flow got nothing, where the index is undefined.
func jain(xs []float64) float64 {
	var sum, sumSq float64
	for _, x := range xs {
		sum += x
		sumSq += x * x
	}
	if len(xs) == 0 || sumSq == 0 {
		return 0
	}
	return sum * sum / (float64(len(xs)) * sumSq)
}

// percentile returns the p-th percentile (0 <= p <= 100) of sorted, which
// must be in ascending order, interpolating linearly between the two
// closest ranks (Hyndman and Fan's definition 7, numpy's default). It
// returns NaN for an empty slice.
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	rank := p / 100 * float64(len(sorted)-1)
	lo := int(math.Floor(rank))
	if lo >= len(sorted)-1 {
		return sorted[len(sorted)-1]
	}
	if lo < 0 {
		return sorted[0]
	}
	frac := rank - float64(lo)
	return sorted[lo] + frac*(sorted[lo+1]-sorted[lo])
}

// latencySummary is what the report says about one latency probe, in
// milliseconds.
type latencySummary struct {
	Samples     int     `json:"samples"`
	Lost        int     `json:"lost"`
	LossPercent float64 `json:"loss_percent"`
	Min         number  `json:"min_ms"`
	Median      number  `json:"median_ms"`
	P90         number  `json:"p90_ms"`
	P99         number  `json:"p99_ms"`
	Max         number  `json:"max_ms"`
}

// summarize computes the latency summary of the round-trip times rttMs
// (any order; it is not modified) and the count of probes that got no
// reply.
func summarize(rttMs []float64, lost int) latencySummary {
	s := latencySummary{Samples: len(rttMs), Lost: lost}
	if total := len(rttMs) + lost; total > 0 {
		s.LossPercent = 100 * float64(lost) / float64(total)
	}
	if len(rttMs) == 0 {
		nan := number(math.NaN())
		s.Min, s.Median, s.P90, s.P99, s.Max = nan, nan, nan, nan, nan
		return s
	}
	sorted := slices.Clone(rttMs)
	slices.Sort(sorted)
	s.Min = number(sorted[0])
	s.Median = number(percentile(sorted, 50))
	s.P90 = number(percentile(sorted, 90))
	s.P99 = number(percentile(sorted, 99))
	s.Max = number(sorted[len(sorted)-1])
	return s
}

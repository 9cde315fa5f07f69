package verdict

import (
	"math"
	"slices"
	"sort"
	"time"
)

// probe is one probe's samples with a send time, sorted by it, as
// nanoseconds since the round's earliest send (saturating, so that no
// input can overflow the arithmetic below).
type probe []stamped

type stamped struct {
	sent int64 // ns since the round's base
	rtt  int64 // ns; meaningless when lost
	lost bool
}

// stamp converts the samples that carry a send time; a sample without one
// cannot be placed at an instant (it still counts in its probe's loss).
func stamp(samples []Sample, base time.Time) probe {
	p := make(probe, 0, len(samples))
	for _, s := range samples {
		if s.Sent.IsZero() {
			continue
		}
		p = append(p, stamped{sent: int64(s.Sent.Sub(base)), rtt: int64(s.RTT), lost: s.Lost})
	}
	slices.SortStableFunc(p, func(a, b stamped) int {
		switch {
		case a.sent < b.sent:
			return -1
		case a.sent > b.sent:
			return 1
		}
		return 0
	})
	return p
}

// earliest returns the earliest send time among the probes' samples, or
// the zero time when none has one.
func earliest(probes ...[]Sample) time.Time {
	var base time.Time
	for _, samples := range probes {
		for _, s := range samples {
			if !s.Sent.IsZero() && (base.IsZero() || s.Sent.Before(base)) {
				base = s.Sent
			}
		}
	}
	return base
}

// pairing is how two probes met.
type pairing struct {
	offset   int64 // outer send time minus inner send time at one instant, ns
	instants int   // pairs of samples, answered or not
	// diffs are inner minus outer RTT at the answered instants the host
	// did not stall, in ns, ascending; stalled counts the answered
	// instants left out.
	diffs   []float64
	stalled int
	// inner and outer are each probe's RTTs at the same instants as
	// diffs, in ns, each ascending.
	inner, outer []float64
}

// pairs returns the answered pairs (stalled and not).
func (p pairing) pairs() int { return len(p.diffs) + p.stalled }

// pairProbes pairs inner and outer (sorted) samples sent at the same
// instants. stallOver is the outer RTT above which the host stalled; 0
// marks no stalls.
func pairProbes(inner, outer probe, interval, stallOver int64) pairing {
	pr := pairing{offset: estimateOffset(inner, outer, interval)}
	stalls := stallWindows(outer, interval, stallOver)
	tol := interval / 2
	for i, j := 0, 0; i < len(inner) && j < len(outer); {
		d := satSub(outer[j].sent, pr.offset) - inner[i].sent
		switch {
		case d < -tol: // this outer sample has no inner one at its instant
			j++
			continue
		case d > tol:
			i++
			continue
		}
		// Each sample pairs once: leave this pair to a nearer neighbour
		// when there is one.
		if j+1 < len(outer) && abs(satSub(outer[j+1].sent, pr.offset)-inner[i].sent) < abs(d) {
			j++
			continue
		}
		if i+1 < len(inner) && abs(satSub(outer[j].sent, pr.offset)-inner[i+1].sent) < abs(d) {
			i++
			continue
		}
		in, out := inner[i], outer[j]
		i, j = i+1, j+1
		pr.instants++
		if in.lost || out.lost {
			continue
		}
		if stalls.cover(in.sent) || stalls.cover(out.sent) {
			pr.stalled++
			continue
		}
		pr.diffs = append(pr.diffs, float64(in.rtt)-float64(out.rtt))
		pr.inner = append(pr.inner, float64(in.rtt))
		pr.outer = append(pr.outer, float64(out.rtt))
	}
	slices.Sort(pr.diffs)
	slices.Sort(pr.inner)
	slices.Sort(pr.outer)
	return pr
}

// estimateOffset estimates how much later the outer probe is sent than
// the inner one at the same instant, in (-interval/2, interval/2]: the
// median of the densest quarter-interval of the nearest-neighbour send
// offsets taken modulo the interval. Working modulo the interval makes an
// offset near half an interval, which some samples see as +I/2 and others
// as -I/2, one cluster; the densest window ignores neighbours that jitter
// or skipped sends (a busy irtt sends late) put anywhere.
func estimateOffset(inner, outer probe, interval int64) int64 {
	if len(inner) == 0 || len(outer) == 0 || interval <= 0 {
		return 0
	}
	phases := make([]int64, 0, len(inner))
	for _, in := range inner {
		k := sort.Search(len(outer), func(k int) bool { return outer[k].sent >= in.sent })
		best := int64(math.MaxInt64)
		for _, c := range []int{k - 1, k} {
			if c >= 0 && c < len(outer) {
				if d := satSub(outer[c].sent, in.sent); abs(d) < abs(best) {
					best = d
				}
			}
		}
		if abs(best) > interval { // a gap in the outer probe, not an offset
			continue
		}
		phases = append(phases, mod(best, interval))
	}
	if len(phases) == 0 {
		return 0
	}
	slices.Sort(phases)
	// Unroll the circle once so that a window may wrap past the interval.
	n := len(phases)
	ring := make([]int64, 2*n)
	for k, p := range phases {
		ring[k], ring[k+n] = p, p+interval
	}
	width := max(interval/4, 1)
	bestStart, bestCount := 0, 0
	for start, end := 0, 0; start < n; start++ {
		for end < start+n && ring[end]-ring[start] <= width {
			end++
		}
		if end-start > bestCount {
			bestStart, bestCount = start, end-start
		}
	}
	med := ring[bestStart+bestCount/2]
	if bestCount%2 == 0 {
		med = ring[bestStart+bestCount/2-1] + (ring[bestStart+bestCount/2]-ring[bestStart+bestCount/2-1])/2
	}
	off := mod(med, interval)
	if off > interval/2 {
		off -= interval
	}
	return off
}

// windows are sorted, disjoint [from, to] spans of send times, in ns.
type windows [][2]int64

// stallWindows returns when the host stalled, as the outer probe saw it:
// from one interval before a stalled outer probe left (the inner probe of
// that instant may have left just before it and been caught) until it
// came back.
func stallWindows(outer probe, interval, stallOver int64) windows {
	var w windows
	if stallOver <= 0 {
		return w
	}
	for _, s := range outer {
		if s.lost || s.rtt <= stallOver {
			continue
		}
		from, to := satSub(s.sent, interval), satAdd(s.sent, s.rtt)
		if n := len(w); n > 0 && from <= w[n-1][1] {
			w[n-1][1] = max(w[n-1][1], to)
			continue
		}
		w = append(w, [2]int64{from, to})
	}
	return w
}

// cover reports whether t falls in one of the windows.
func (w windows) cover(t int64) bool {
	k := sort.Search(len(w), func(k int) bool { return w[k][1] >= t })
	return k < len(w) && w[k][0] <= t
}

func abs(x int64) int64 {
	if x < 0 {
		if x == math.MinInt64 {
			return math.MaxInt64
		}
		return -x
	}
	return x
}

// mod returns x modulo m in [0, m), for m > 0.
func mod(x, m int64) int64 {
	r := x % m
	if r < 0 {
		r += m
	}
	return r
}

func satAdd(a, b int64) int64 {
	s := a + b
	switch {
	case a > 0 && b > 0 && s < 0:
		return math.MaxInt64
	case a < 0 && b < 0 && s >= 0:
		return math.MinInt64
	}
	return s
}

func satSub(a, b int64) int64 {
	if b == math.MinInt64 {
		return satAdd(satAdd(a, math.MaxInt64), 1)
	}
	return satAdd(a, -b)
}

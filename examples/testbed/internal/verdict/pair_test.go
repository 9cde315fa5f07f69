package verdict

import (
	"math"
	"testing"
	"time"
)

const ms1 = int64(time.Millisecond)

// grid makes a probe sent every interval from start, with RTTs from rtt
// (ns; negative marks lost).
func grid(n int, start int64, rtt func(k int) int64) probe {
	p := make(probe, n)
	for k := range p {
		r := rtt(k)
		p[k] = stamped{sent: start + int64(k)*int64(interval), rtt: max(r, 0), lost: r < 0}
	}
	return p
}

func TestEstimateOffset(t *testing.T) {
	I := int64(interval)
	flat := func(int) int64 { return ms1 }
	tests := []struct {
		name         string
		inner, outer probe
		want         int64
	}{
		{"none", nil, grid(10, 0, flat), 0},
		{"same phase", grid(100, 0, flat), grid(100, 0, flat), 0},
		{"outer 3 ms later", grid(100, 0, flat), grid(100, 3*ms1, flat), 3 * ms1},
		{"outer 3 ms earlier", grid(100, 0, flat), grid(100, -3*ms1, flat), -3 * ms1},
		{"outer 7 ms later is 3 ms earlier", grid(100, 0, flat), grid(100, 7*ms1, flat), -3 * ms1},
		{"outer 12 ms later is 2 ms later", grid(100, 0, flat), grid(100, 12*ms1, flat), 2 * ms1},
		{"half an interval", grid(100, 0, flat), grid(100, I/2, flat), I / 2},
		{"outer starts 40 instants late", grid(100, 0, flat), grid(60, 40*I+ms1, flat), ms1},
	}
	for _, tt := range tests {
		if got := estimateOffset(tt.inner, tt.outer, I); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, time.Duration(got), time.Duration(tt.want))
		}
	}
	// Near half an interval, jitter puts the nearest neighbour on either
	// side: the estimate is one of the two and pairs all instants.
	inner := grid(200, 0, flat)
	outer := grid(200, I/2, flat)
	for k := range outer {
		outer[k].sent += int64((k*7919)%800-400) * int64(time.Microsecond)
	}
	if got := estimateOffset(inner, outer, I); abs(abs(got)-I/2) > ms1/2 {
		t.Errorf("half an interval with jitter: %v", time.Duration(got))
	}
}

// TestPairProbesEachOnce: a stray sample that a greedy match would take
// for the first instant is left alone when its neighbour is nearer, so
// every other sample still pairs with its own instant.
func TestPairProbesEachOnce(t *testing.T) {
	for _, strayInner := range []bool{false, true} {
		inner := grid(100, 0, func(k int) int64 { return int64(k%9)*ms1 + ms1 + ms1/2 })
		outer := grid(100, ms1, func(k int) int64 { return int64(k%9)*ms1 + ms1 })
		// A stray sample 4 ms before the first one of the other probe.
		if strayInner {
			inner = append(probe{{sent: -3 * ms1, rtt: 5 * ms1}}, inner...)
		} else {
			outer = append(probe{{sent: -4 * ms1, rtt: 5 * ms1}}, outer...)
		}
		p := pairProbes(inner, outer, int64(interval), int64(stallOver))
		if p.instants != 100 || len(p.diffs) != 100 || p.diffs[0] != float64(ms1/2) || p.diffs[99] != float64(ms1/2) {
			t.Errorf("stray inner %v: %d instants, %d diffs %v..%v; want 100, all 0.5 ms",
				strayInner, p.instants, len(p.diffs), p.diffs[0], p.diffs[len(p.diffs)-1])
		}
	}
}

// TestPairProbesStallEdge: the outer probe leaves 3 ms before the inner
// one. The host stops just after the outer probe of instant 50 came back
// but before the inner one did, so only the inner probe of instant 50
// waits; the outer probe of instant 51 shows the stall, which lasts until
// it comes back (instants 51 to 57 left while it lasted). Instant 50 is
// the stall's too, not the tunnel's: it is left out with them.
func TestPairProbesStallEdge(t *testing.T) {
	inner := grid(100, 0, func(k int) int64 {
		if k == 50 {
			return 70 * ms1
		}
		return 2 * ms1
	})
	outer := grid(100, -3*ms1, func(k int) int64 {
		if k == 51 {
			return 63 * ms1
		}
		return 2 * ms1
	})
	p := pairProbes(inner, outer, int64(interval), int64(stallOver))
	if p.instants != 100 || p.stalled != 8 || p.diffs[len(p.diffs)-1] != 0 {
		t.Errorf("%d instants, %d stalled, largest diff %v; want 100, 8 (instants 50 to 57), 0",
			p.instants, p.stalled, time.Duration(p.diffs[len(p.diffs)-1]))
	}
}

func TestStallWindows(t *testing.T) {
	outer := probe{
		{sent: 0, rtt: ms1},
		{sent: 10 * ms1, rtt: 80 * ms1},  // stalled: [0, 90]
		{sent: 20 * ms1, rtt: 70 * ms1},  // stalled, within the first
		{sent: 200 * ms1, rtt: 40 * ms1}, // stalled: [190, 240]
		{sent: 300 * ms1, lost: true, rtt: 900 * ms1},
	}
	w := stallWindows(outer, int64(interval), int64(stallOver))
	want := windows{{0, 90 * ms1}, {190 * ms1, 240 * ms1}}
	if len(w) != len(want) || w[0] != want[0] || w[1] != want[1] {
		t.Fatalf("%v, want %v", w, want)
	}
	for _, c := range []struct {
		at   int64
		want bool
	}{{-1, false}, {0, true}, {90 * ms1, true}, {91 * ms1, false}, {200 * ms1, true}, {300 * ms1, false}} {
		if got := w.cover(c.at); got != c.want {
			t.Errorf("cover(%v) = %v", time.Duration(c.at), got)
		}
	}
	if w := stallWindows(outer, int64(interval), 0); len(w) != 0 {
		t.Errorf("no stall bound: %v", w)
	}
}

func TestQuantile(t *testing.T) {
	s := []float64{1, 2, 3, 4, 5}
	tests := []struct {
		sorted []float64
		q      float64
		want   float64
	}{
		{nil, 0.5, 0},
		{s, 0, 1},
		{s, 0.5, 3},
		{s, 1, 5},
		{s, 0.9, 4.6},
		{[]float64{7}, 0.99, 7},
	}
	for _, tt := range tests {
		if got := quantile(tt.sorted, tt.q); math.Abs(got-tt.want) > 1e-9 {
			t.Errorf("quantile(%v, %g) = %g, want %g", tt.sorted, tt.q, got, tt.want)
		}
	}
}

func TestPairedGap(t *testing.T) {
	inner := []float64{1, 2, 3, 4, 5}
	outer := []float64{1, 1, 1, 1, 1}
	tests := []struct {
		passes int
		q      float64
		want   float64
	}{
		{0, 0.5, 2},   // 3 - 1
		{0, 0.9, 3.6}, // 4.6 - 1
		{0, 1, 4},
		// passes count as low values under both: the q-quantile of 10
		// values, 5 of them out, is rank 8.1 of 10, rank 3.1 of the 5.
		{5, 0.9, 3.1},
		{2, 0.99, 3.94},
		// So many passes that the quantile falls among them: the lowest.
		{5, 0.5, 0},
	}
	for _, tt := range tests {
		if got := pairedGap(inner, outer, tt.passes, tt.q); math.Abs(got-tt.want) > 1e-9 {
			t.Errorf("pairedGap(%v, %v, %d, %g) = %g, want %g", inner, outer, tt.passes, tt.q, got, tt.want)
		}
	}
	// More passes never raise the figure.
	for passes := range 20 {
		if a, b := pairedGap(inner, outer, passes, 0.99), pairedGap(inner, outer, passes+1, 0.99); b > a {
			t.Errorf("pairedGap with %d passes %g, with %d %g: rose", passes, a, passes+1, b)
		}
	}
}

func TestLossMissed(t *testing.T) {
	probe := func(n int, loss float64) Summary {
		lost := int(math.Round(loss * float64(n)))
		return Summary{Samples: n, Lost: lost, Loss: float64(lost) / float64(n)}
	}
	tests := []struct {
		name         string
		inner, outer Summary
		want         bool
	}{
		{"one-flow", probe(1000, 0.25), probe(1000, 0), true},
		{"half a point", probe(1000, 0.005), probe(1000, 0), false},
		{"two points", probe(1000, 0.02), probe(1000, 0), true},
		{"not twice the outer's", probe(1000, 0.05), probe(1000, 0.03), false},
		{"five against two in 1000", probe(1000, 0.05), probe(1000, 0.02), true},
		{"five against two in 100: chance", probe(100, 0.05), probe(100, 0.02), false},
		{"both lose alike", probe(1000, 0.10), probe(1000, 0.09), false},
		{"no samples", Summary{}, probe(1000, 0), false},
	}
	for _, tt := range tests {
		if got := lossMissed(tt.inner, tt.outer); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestSummarize(t *testing.T) {
	var samples []Sample
	for k := range 101 {
		samples = append(samples, Sample{RTT: time.Duration(100-k) * time.Millisecond})
	}
	samples = append(samples, Sample{Lost: true, RTT: time.Hour})
	got := Summarize(samples)
	want := Summary{Samples: 102, Lost: 1, Loss: 1.0 / 102, Min: 0, Median: 50 * time.Millisecond,
		P90: 90 * time.Millisecond, P99: 99 * time.Millisecond, Max: 100 * time.Millisecond}
	if got != want {
		t.Errorf("%+v\nwant %+v", got, want)
	}
	if got.Answered() != 101 {
		t.Errorf("answered %d", got.Answered())
	}
	if got := Summarize(nil); got != (Summary{}) {
		t.Errorf("no samples: %+v", got)
	}
	if got := Summarize([]Sample{{Lost: true}}); got != (Summary{Samples: 1, Lost: 1, Loss: 1}) {
		t.Errorf("all lost: %+v", got)
	}
}

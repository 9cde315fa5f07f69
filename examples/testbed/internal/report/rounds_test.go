package report

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/flowspread/flowspread/examples/testbed/internal/load"
	"github.com/flowspread/flowspread/examples/testbed/internal/verdict"
)

// roundsOf builds rounds of 200 probe instants each, 10 ms apart, with
// the inner and outer round-trip times rtt(round, instant) gives.
func roundsOf(n int, rtt func(round, i int) (inner, outer time.Duration)) []Round {
	t0 := time.Unix(1_700_000_000, 0)
	rounds := make([]Round, n)
	for r := range rounds {
		rounds[r].From, rounds[r].To = time.Duration(r)*3*time.Second, time.Duration(r+1)*3*time.Second
		for i := range 200 {
			sent := t0.Add(rounds[r].From + time.Duration(i)*10*time.Millisecond)
			in, out := rtt(r, i)
			rounds[r].Probes.Inner = append(rounds[r].Probes.Inner, verdict.Sample{Sent: sent, RTT: in})
			// The outer probe leaves a little after the inner one, as
			// two processes started together do.
			rounds[r].Probes.Outer = append(rounds[r].Probes.Outer, verdict.Sample{Sent: sent.Add(300 * time.Microsecond), RTT: out})
		}
	}
	return rounds
}

// withIntervals gives each flow of r one-second intervals over 9 s at
// its goodput, except that round 2 (6 to 9 s) of the inner flows runs at
// innerLate.
func withIntervals(r ModeResult, innerLate float64) ModeResult {
	for f := range r.Flows {
		for s := range 9 {
			mbit := r.Flows[f].GoodputMbit
			if s >= 6 && r.Flows[f].Path == "inner" {
				mbit = innerLate
			}
			r.Flows[f].Intervals = append(r.Flows[f].Intervals, load.Interval{
				Start: time.Duration(s) * time.Second, End: time.Duration(s+1) * time.Second, Bytes: uint64(mbit * 1e6 / 8)})
		}
	}
	return r
}

func TestMeasureRounds(t *testing.T) {
	ms := time.Millisecond
	probes := func(r ModeResult, rounds []Round) ModeResult {
		var in, out load.Probe
		for _, rd := range rounds {
			for k := range rd.Probes.Inner {
				in.RTTms = append(in.RTTms, float64(rd.Probes.Inner[k].RTT)/float64(ms))
				out.RTTms = append(out.RTTms, float64(rd.Probes.Outer[k].RTT)/float64(ms))
			}
		}
		r.InnerProbe, r.OuterProbe = NewProbeSummary(in), NewProbeSummary(out)
		return r
	}
	// A busy host stalls for 60 ms once a second: both probes sent
	// during the stall wait for its end, the first 60 ms more, the next
	// 50, and so on, on each side alike.
	stall := func(i int) time.Duration {
		if k := i % 100; k >= 7 && k < 13 {
			return time.Duration(60-10*(k-7)) * ms
		}
		return 0
	}
	for _, tc := range []struct {
		name    string
		mode    string
		row     ModeResult
		rounds  []Round
		latency string
		met     bool
	}{
		{"spread close to the outer probe", "spread",
			withIntervals(measuredRow("spread", repeat(2.35, 4), repeat(2.35, 4), nil, nil), 2.35),
			roundsOf(3, func(r, i int) (time.Duration, time.Duration) { return 3*ms + 200*time.Microsecond, 3 * ms }), "met", true},
		{"spread on a host that stalls both probes", "spread",
			withIntervals(measuredRow("spread", repeat(2.35, 4), repeat(2.35, 4), nil, nil), 2.35),
			roundsOf(3, func(r, i int) (time.Duration, time.Duration) { return 3*ms + stall(i), 3*ms + stall(i) }), "met", true},
		{"spread on a host that stalls half the time", "spread",
			withIntervals(measuredRow("spread", repeat(2.35, 4), repeat(2.35, 4), nil, nil), 2.35),
			roundsOf(3, func(r, i int) (time.Duration, time.Duration) {
				d := time.Duration(0)
				if i%20 < 10 {
					d = time.Duration(60-6*(i%20)) * ms
				}
				return 3*ms + d + 500*time.Microsecond, 3*ms + d
			}), "inconclusive", false},
		{"one-flow squeezed and slow", "one-flow",
			withIntervals(measuredRow("one-flow", repeat(0.9, 4), repeat(3.6, 4), nil, nil), 0.9),
			roundsOf(3, func(r, i int) (time.Duration, time.Duration) { return 25 * ms, 3 * ms }), "not met", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := probes(tc.row, tc.rounds)
			r.Measure(testConfig(), kinds[tc.mode], tc.rounds, testTargets)
			if r.Verdict == nil || r.Targets.Latency != tc.latency || r.Targets.LatencyMet != tc.met || r.Verdict.Status != tc.latency {
				t.Fatalf("latency %q (met %v), verdict %+v; want %q", r.Targets.Latency, r.Targets.LatencyMet, r.Verdict, tc.latency)
			}
			if len(r.Rounds) != 3 {
				t.Fatalf("%d rounds, want 3", len(r.Rounds))
			}
			for i, rr := range r.Rounds {
				if rr.Latency != tc.latency || rr.Pairs < 190 {
					t.Errorf("round %d: %q with %d pairs; want %q with about 200", i, rr.Latency, rr.Pairs, tc.latency)
				}
				if math.Abs(float64(rr.TunnelShare-r.TunnelShare)) > 0.01 || math.Abs(float64(rr.Jain-r.Jain)) > 0.01 {
					t.Errorf("round %d: share %v, Jain %v; the whole run %v, %v", i, rr.TunnelShare, rr.Jain, r.TunnelShare, r.Jain)
				}
			}
			if r.Verdict.GapQMinMs > r.Verdict.GapQMedianMs || r.Verdict.GapQMedianMs > r.Verdict.GapQMaxMs {
				t.Errorf("spread of the rounds out of order: %+v", r.Verdict)
			}
		})
	}
}

// TestMeasureRoundsShares: a round in which the tunnel's flows slowed
// shows it, though the whole run's figures hide it.
func TestMeasureRoundsShares(t *testing.T) {
	r := withIntervals(measuredRow("spread", repeat(2.35, 4), repeat(2.35, 4), []float64{1}, []float64{1}), 0.5)
	rounds := roundsOf(3, func(r, i int) (time.Duration, time.Duration) { return 3 * time.Millisecond, 3 * time.Millisecond })
	r.Measure(testConfig(), kinds["spread"], rounds, testTargets)
	if got := float64(r.Rounds[0].TunnelShare); math.Abs(got-0.5) > 0.01 {
		t.Errorf("round 1: tunnel share %v, want 0.5", got)
	}
	if got, want := float64(r.Rounds[2].TunnelShare), 2.0/(2+9.4); math.Abs(got-want) > 0.01 {
		t.Errorf("round 3: tunnel share %v, want %v", got, want)
	}
	if float64(r.Rounds[2].Jain) > 0.9 {
		t.Errorf("round 3: Jain %v, want well below 1", r.Rounds[2].Jain)
	}
	var b strings.Builder
	(&Report{Config: testConfig(), Modes: []ModeResult{r}}).WriteTable(&b)
	if !strings.Contains(b.String(), "met 0.0 (0.0..0.0)") {
		t.Errorf("the table lacks the verdict with its spread across rounds:\n%s", b.String())
	}
}

// TestMeasureOuterProbeLossInconclusive: a met verdict against an outer
// probe that lost round trips (it shared a bulk flow's queue) proves
// nothing: it becomes inconclusive, never met.
func TestMeasureOuterProbeLossInconclusive(t *testing.T) {
	r := withIntervals(measuredRow("spread", repeat(2.35, 4), repeat(2.35, 4), []float64{1}, []float64{1}), 2.35)
	r.OuterProbe = NewProbeSummary(load.Probe{RTTms: repeat(3, 95), Lost: 5})
	rounds := roundsOf(3, func(r, i int) (time.Duration, time.Duration) { return 3 * time.Millisecond, 3 * time.Millisecond })
	r.Measure(testConfig(), kinds["spread"], rounds, testTargets)
	if r.Targets.Latency != "inconclusive" || r.Targets.LatencyMet || r.Verdict.Status != "inconclusive" {
		t.Errorf("latency %q (met %v), verdict %q; want inconclusive", r.Targets.Latency, r.Targets.LatencyMet, r.Verdict.Status)
	}
}

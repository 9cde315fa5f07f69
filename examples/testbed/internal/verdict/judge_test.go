package verdict

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// TestJudgeScenes judges modes made of synthetic rounds, each scene with
// many seeds, and checks the statuses the package doc promises.
func TestJudgeScenes(t *testing.T) {
	const seeds = 20
	tests := []struct {
		name   string
		rounds func(rng *rand.Rand) []Round
		// want are the allowed statuses.
		want []Status
		// reason, if set, must appear in the mode's reasons.
		reason string
	}{
		{
			name:   "quiet spread",
			rounds: func(rng *rand.Rand) []Round { return quietSpread().rounds(rng, 5) },
			want:   []Status{Met},
		},
		{
			name:   "quiet spread without idle probes",
			rounds: func(rng *rand.Rand) []Round { s := quietSpread(); s.idle = nil; return s.rounds(rng, 5) },
			want:   []Status{Met},
		},
		{
			// The busy run: both probes share 60-120 ms stops.
			// Paired, the stops cancel: never a false "not met".
			name:   "busy host spread, stalls shared",
			rounds: func(rng *rand.Rand) []Round { return busySpread().rounds(rng, 5) },
			want:   []Status{Met, Inconclusive},
		},
		{
			name:   "one-flow",
			rounds: func(rng *rand.Rand) []Round { return oneFlow().rounds(rng, 5) },
			want:   []Status{NotMet},
			reason: "the inner probe lost",
		},
		{
			name:   "one-flow on a moderately busy host",
			rounds: func(rng *rand.Rand) []Round { return busyOneFlow().rounds(rng, 5) },
			want:   []Status{NotMet},
			reason: "the inner probe's p99 was",
		},
		{
			name: "one-flow with no loss, latency alone",
			rounds: func(rng *rand.Rand) []Round {
				s := oneFlow()
				s.inner.loss = 0
				return s.rounds(rng, 5)
			},
			want:   []Status{NotMet},
			reason: "the inner probe's p99 was",
		},
		{
			// The tunnel's processes starved: the inner probe alone
			// waits at 3% of the instants. The idle probes show the
			// host was busy, so not a false "not met".
			name:   "busy host, idle probes miss",
			rounds: func(rng *rand.Rand) []Round { return starvedSpread().rounds(rng, 5) },
			want:   []Status{Inconclusive},
			reason: "with no load the outer probe already waited",
		},
		{
			name: "busy host, idle inner probe waits alone",
			rounds: func(rng *rand.Rand) []Round {
				s := starvedSpread()
				s.idle = quietIdle()
				s.idle.inner.stalls, s.idle.inner.stallLen = 0.03, [2]time.Duration{3 * time.Millisecond, 8 * time.Millisecond}
				return s.rounds(rng, 5)
			},
			want:   []Status{Inconclusive},
			reason: "the tunnel's processes did not get the CPU in time",
		},
		{
			name: "outer probe shares a bulk queue",
			rounds: func(rng *rand.Rand) []Round {
				s := quietSpread()
				s.outer.loss = 0.05
				return s.rounds(rng, 5)
			},
			want:   []Status{Inconclusive},
			reason: "which a sparse flow alone in its queue does not",
		},
		{
			name: "host stalls at a fifth of the instants",
			rounds: func(rng *rand.Rand) []Round {
				s := busySpread()
				s.freezes = 25
				return s.rounds(rng, 5)
			},
			want:   []Status{Inconclusive},
			reason: "too many to judge the rest",
		},
		{
			// Met and widely missed rounds: the load changed.
			name: "rounds disagree wildly, mostly met",
			rounds: func(rng *rand.Rand) []Round {
				return append(quietSpread().rounds(rng, 3), oneFlow().rounds(rng, 2)...)
			},
			want:   []Status{Inconclusive},
			reason: "the rounds disagree",
		},
		{
			name: "rounds disagree wildly, mostly not met",
			rounds: func(rng *rand.Rand) []Round {
				return append(oneFlow().rounds(rng, 3), quietSpread().rounds(rng, 2)...)
			},
			want:   []Status{Inconclusive},
			reason: "the rounds disagree",
		},
		{
			name: "most rounds inconclusive",
			rounds: func(rng *rand.Rand) []Round {
				return append(starvedSpread().rounds(rng, 3), quietSpread().rounds(rng, 2)...)
			},
			want:   []Status{Inconclusive},
			reason: "no majority",
		},
		{
			name: "a busy round among met ones",
			rounds: func(rng *rand.Rand) []Round {
				return append(starvedSpread().rounds(rng, 2), quietSpread().rounds(rng, 3)...)
			},
			want: []Status{Met},
		},
		{
			name: "too few samples",
			rounds: func(rng *rand.Rand) []Round {
				s := quietSpread()
				s.n = 40
				return s.rounds(rng, 5)
			},
			want:   []Status{Inconclusive},
			reason: "at the same instant only 40 times",
		},
		{
			name: "too few for a p99",
			rounds: func(rng *rand.Rand) []Round {
				s := quietSpread()
				s.n = 80
				return s.rounds(rng, 5)
			},
			want:   []Status{Inconclusive},
			reason: "needed for a p99",
		},
		{
			name: "inner probe stopped half-way",
			rounds: func(rng *rand.Rand) []Round {
				rounds := quietSpread().rounds(rng, 5)
				for k := range rounds {
					rounds[k].Inner = rounds[k].Inner[:400]
				}
				return rounds
			},
			want:   []Status{Inconclusive},
			reason: "only 400 times",
		},
		{
			name:   "no rounds",
			rounds: func(*rand.Rand) []Round { return nil },
			want:   []Status{Inconclusive},
			reason: "no round was measured",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			counts := map[Status]int{}
			for seed := range uint64(seeds) {
				rng := rand.New(rand.NewPCG(seed, 11))
				res := Judge(tt.rounds(rng), targets)
				counts[res.Status]++
				if !slicesContains(tt.want, res.Status) {
					t.Errorf("seed %d: %v, want one of %v; GapQ %v..%v..%v; reasons:\n%s",
						seed, res.Status, tt.want, res.GapQMin, res.GapQMedian, res.GapQMax, strings.Join(res.Reasons, "\n"))
					continue
				}
				if tt.reason != "" && !strings.Contains(strings.Join(res.Reasons, "\n"), tt.reason) {
					t.Errorf("seed %d: %v for reasons:\n%s\nwant one containing %q", seed, res.Status, strings.Join(res.Reasons, "\n"), tt.reason)
				}
				if res.Status == Inconclusive && res.Advice == "" {
					t.Errorf("seed %d: inconclusive with no advice", seed)
				}
			}
			t.Logf("%v", counts)
		})
	}
}

func slicesContains(ss []Status, s Status) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// TestJudgeSharedStallsMet: a round whose differences are small except
// at the instants where both probes stalled, by different amounts, is
// Met, where the old comparison of two p99s failed it.
func TestJudgeSharedStallsMet(t *testing.T) {
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 12))
		s := quietSpread()
		s.freezes, s.freezeLen = 6, [2]time.Duration{60 * time.Millisecond, 120 * time.Millisecond}
		s.freezeSkew = 40 * time.Millisecond // stalls differ a lot between the probes
		if seed%2 == 1 {
			s.phase = -s.phase // the outer probe leaves first
		}
		r := s.round(rng)
		res := Judge([]Round{r}, targets)
		rr := res.Rounds[0]
		if res.Status != Met {
			t.Errorf("seed %d: %v, want met: %s", seed, res.Status, strings.Join(res.Reasons, "; "))
		}
		if rr.Outer.P99 <= stallOver {
			t.Errorf("seed %d: outer p99 %v: the scene should stall the host", seed, rr.Outer.P99)
		}
		if rr.Stalled == 0 {
			t.Errorf("seed %d: no instant left out as a stall", seed)
		}
		// What the old verdict did: p99 minus p99 of separate samples.
		if seed == 0 {
			t.Logf("inner p99 %v - outer p99 %v = %v; pairwise p99 %v over %d instants, %d stalled",
				rr.Inner.P99, rr.Outer.P99, rr.Inner.P99-rr.Outer.P99, rr.GapQ, rr.Diffs, rr.Stalled)
		}
	}
}

// TestJudgeRoundFigures checks a round's figures on a scene whose
// figures are known: the inner probe always 0.5 ms slower, 0.8% lost (too
// few to be a miss).
func TestJudgeRoundFigures(t *testing.T) {
	const n = 500
	var r Round
	for k := range n {
		at := t0.Add(time.Duration(k) * interval)
		rtt := time.Millisecond + time.Duration(k%7)*100*time.Microsecond
		r.Outer = append(r.Outer, Sample{Sent: at.Add(2 * time.Millisecond), RTT: rtt})
		r.Inner = append(r.Inner, Sample{Sent: at, RTT: rtt + 500*time.Microsecond, Lost: k%125 == 0})
	}
	rr := Judge([]Round{r}, targets).Rounds[0]
	want := RoundResult{
		Status: Met, Pairs: n - n/125, Instants: n, Diffs: n - n/125,
		DiffP50: 500 * time.Microsecond, GapQ: 500 * time.Microsecond,
		InnerLoss: 0.008, Offset: 2 * time.Millisecond,
	}
	got := rr
	got.Reasons, got.Inner, got.Outer = nil, Summary{}, Summary{}
	if got.Status != want.Status || got.Pairs != want.Pairs || got.Instants != want.Instants || got.Diffs != want.Diffs ||
		got.DiffP50 != want.DiffP50 || got.GapQ != want.GapQ || got.InnerLoss != want.InnerLoss || got.Offset != want.Offset || got.Stalled != 0 {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	if rr.Inner.Lost != n/125 || rr.Outer.Samples != n || rr.Outer.Max != 1600*time.Microsecond {
		t.Errorf("summaries: inner %+v outer %+v", rr.Inner, rr.Outer)
	}
}

// TestJudgePhases: probes with any phase offset pair at their instants:
// each outer sample with the inner one nearest in phase. Each instant's
// RTTs differ from its neighbours' by milliseconds, so a pair one instant
// off shows as a large difference.
func TestJudgePhases(t *testing.T) {
	phases := []time.Duration{
		0, 700 * time.Microsecond, 3 * time.Millisecond, 4400 * time.Microsecond,
		5600 * time.Microsecond, 7 * time.Millisecond, 9800 * time.Microsecond, 10 * time.Millisecond,
		-3 * time.Millisecond, -4400 * time.Microsecond, -5600 * time.Microsecond, -9 * time.Millisecond,
	}
	const n = 600
	sig := func(g int) time.Duration { return time.Millisecond + time.Duration(g*37%20)*time.Millisecond }
	for _, phase := range phases {
		t.Run(phase.String(), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(phase), 13))
			jitter := func() time.Duration { return time.Duration(rng.Int64N(int64(400 * time.Microsecond))) }
			// The offset is the phase, taken to the nearest instant: an
			// outer sample sent near inner instant g belongs to it.
			offset, shift := phase, 0
			for ; offset > interval/2; shift++ {
				offset -= interval
			}
			for ; offset <= -interval/2; shift-- {
				offset += interval
			}
			var r Round
			for k := range n {
				at := t0.Add(time.Duration(k) * interval)
				// The outer probe starts 3 instants later than the inner.
				if k >= 3 {
					r.Outer = append(r.Outer, Sample{Sent: at.Add(phase + jitter()), RTT: sig(k + shift)})
				}
				r.Inner = append(r.Inner, Sample{Sent: at.Add(jitter()), RTT: sig(k) + 500*time.Microsecond})
			}
			res := Judge([]Round{r}, targets)
			rr := res.Rounds[0]
			if res.Status != Met || rr.Instants < n-4 || rr.GapQ != 500*time.Microsecond || rr.DiffP50 != 500*time.Microsecond {
				t.Errorf("%v: %d instants, DiffP50 %v, GapQ %v, offset %v; want met, %d instants or more, both 500µs; %s",
					res.Status, rr.Instants, rr.DiffP50, rr.GapQ, rr.Offset, n-4, strings.Join(res.Reasons, "; "))
			}
			if d := rr.Offset - offset; d < -time.Millisecond || d > time.Millisecond {
				t.Errorf("offset %v, want about %v", rr.Offset, offset)
			}
		})
	}
}

// TestJudgeHalfIntervalPhase: probes half an interval apart, each send
// jittering either side of it, still pair at every instant, each sample
// once: a nearest-neighbour match without the offset would flip between
// the two neighbours and lose about half of the instants.
func TestJudgeHalfIntervalPhase(t *testing.T) {
	for _, phase := range []time.Duration{interval / 2, -interval / 2} {
		rng := rand.New(rand.NewPCG(uint64(phase+interval), 15))
		const n = 600
		var r Round
		for k := range n {
			at := t0.Add(time.Duration(k) * interval)
			j := time.Duration(rng.Int64N(int64(800*time.Microsecond))) - 400*time.Microsecond
			r.Outer = append(r.Outer, Sample{Sent: at.Add(phase + j), RTT: time.Millisecond})
			r.Inner = append(r.Inner, Sample{Sent: at, RTT: 1500 * time.Microsecond})
		}
		rr := Judge([]Round{r}, targets).Rounds[0]
		if rr.Instants < n-1 || rr.Status != Met {
			t.Errorf("phase %v: %v, %d instants of %d, offset %v", phase, rr.Status, rr.Instants, n, rr.Offset)
		}
	}
}

// TestJudgeInvalidTargets: targets that make no sense give Inconclusive
// with a reason, not a verdict.
func TestJudgeInvalidTargets(t *testing.T) {
	rounds := quietSpread().rounds(rand.New(rand.NewPCG(1, 14)), 2)
	for name, tg := range map[string]Targets{
		"no interval":  {Gap: targets.Gap, Quantile: 0.99},
		"negative gap": {Gap: -time.Millisecond, Quantile: 0.99, Interval: interval},
		"quantile 0":   {Gap: targets.Gap, Interval: interval},
		"quantile 1.5": {Gap: targets.Gap, Quantile: 1.5, Interval: interval},
		"quantile NaN": {Gap: targets.Gap, Quantile: nan(), Interval: interval},
		"valid":        targets,
	} {
		res := Judge(rounds, tg)
		if tg == targets {
			if res.Status != Met {
				t.Errorf("%s: %v, want met", name, res.Status)
			}
			continue
		}
		if res.Status != Inconclusive || len(res.Rounds) != len(rounds) || !strings.Contains(res.Reasons[0], "targets are invalid") {
			t.Errorf("%s: %v, %d rounds, %q", name, res.Status, len(res.Rounds), res.Reasons)
		}
	}
}

func nan() float64 { return math.NaN() }

// TestJudgeSpread checks the mode's spread of GapQ over its rounds.
func TestJudgeSpread(t *testing.T) {
	mk := func(gap time.Duration) Round {
		var r Round
		for k := range 300 {
			at := t0.Add(time.Duration(k) * interval)
			r.Outer = append(r.Outer, Sample{Sent: at, RTT: time.Millisecond})
			r.Inner = append(r.Inner, Sample{Sent: at, RTT: time.Millisecond + gap})
		}
		return r
	}
	res := Judge([]Round{mk(1500 * time.Microsecond), mk(300 * time.Microsecond), mk(time.Millisecond)}, targets)
	if res.Status != Met || res.GapQMin != 300*time.Microsecond || res.GapQMedian != time.Millisecond || res.GapQMax != 1500*time.Microsecond {
		t.Errorf("%v: spread %v %v %v, want met, 300µs 1ms 1.5ms", res.Status, res.GapQMin, res.GapQMedian, res.GapQMax)
	}
	// Narrow misses among Met rounds do not spoil a Met majority; a wide
	// one does.
	res = Judge([]Round{mk(time.Millisecond), mk(time.Millisecond), mk(9 * time.Millisecond)}, targets)
	if res.Status != Met {
		t.Errorf("two met and one narrow miss: %v, want met: %q", res.Status, res.Reasons)
	}
	res = Judge([]Round{mk(time.Millisecond), mk(time.Millisecond), mk(11 * time.Millisecond)}, targets)
	if res.Status != Inconclusive {
		t.Errorf("two met and one wide miss: %v, want inconclusive: %q", res.Status, res.Reasons)
	}
	res = Judge([]Round{mk(3 * time.Millisecond), mk(3 * time.Millisecond), mk(time.Millisecond)}, targets)
	if res.Status != NotMet {
		t.Errorf("two narrow misses and one met: %v, want not met: %q", res.Status, res.Reasons)
	}
}

// TestJudgeIndependentJitter is the direct mode's case: two probes on one
// path, each waiting its own 0-12 ms behind the bulk flows' packets. The
// plain p99 of their differences is several ms (a quiet host showed 2.7
// to 6 ms), yet nothing is wrong, so the round must be Met; the same
// probes with the inner one queueing 40 ms at one instant in 20, as
// behind a bulk flow in its queue, must be NotMet.
func TestJudgeIndependentJitter(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	jitter := func() time.Duration { return time.Duration(rng.ExpFloat64() * float64(2*time.Millisecond)) }
	var quiet, queued Round
	for k := range 1000 {
		at := t0.Add(time.Duration(k) * interval)
		in, out := time.Millisecond+jitter(), time.Millisecond+jitter()
		quiet.Inner = append(quiet.Inner, Sample{Sent: at, RTT: in})
		quiet.Outer = append(quiet.Outer, Sample{Sent: at.Add(3 * time.Millisecond), RTT: out})
		if k%20 == 3 {
			in += 40 * time.Millisecond
		}
		queued.Inner = append(queued.Inner, Sample{Sent: at, RTT: in})
		queued.Outer = append(queued.Outer, Sample{Sent: at.Add(3 * time.Millisecond), RTT: out})
	}
	got := Judge([]Round{quiet}, targets).Rounds[0]
	if got.Status != Met {
		t.Errorf("independent jitter alone: %v (GapQ %v), want met: %q", got.Status, got.GapQ, got.Reasons)
	}
	diffs := pairProbes(stamp(quiet.Inner, t0), stamp(quiet.Outer, t0), int64(interval), int64(stallOver)).diffs
	if plain := time.Duration(quantile(diffs, targets.Quantile)); plain <= targets.Gap {
		t.Fatalf("the plain p99 of the differences is %v: the case does not test the jitter", plain)
	}
	if got := Judge([]Round{queued}, targets).Rounds[0]; got.Status != NotMet {
		t.Errorf("inner probe queueing at 1 instant in 20: %v (GapQ %v), want not met", got.Status, got.GapQ)
	}
}

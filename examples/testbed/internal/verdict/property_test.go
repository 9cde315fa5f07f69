package verdict

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// randomScene picks a scene of any kind, with random figures, whose
// probes pair by index (phases and send jitter well within half an
// interval), so that a test knows which samples are one instant.
func randomScene(rng *rand.Rand) scene {
	kinds := []func() scene{quietSpread, busySpread, oneFlow, busyOneFlow, starvedSpread}
	s := kinds[rng.IntN(len(kinds))]()
	s.n = 300 + rng.IntN(500)
	s.phase = time.Duration(rng.Int64N(int64(6*time.Millisecond))) - 3*time.Millisecond
	s.sendJitter = min(s.sendJitter, time.Millisecond)
	s.inner.jitter = time.Duration(rng.Int64N(int64(500 * time.Microsecond)))
	s.outer.jitter = time.Duration(rng.Int64N(int64(500 * time.Microsecond)))
	if rng.IntN(3) == 0 {
		s.idle = nil
	}
	if rng.IntN(3) == 0 {
		s.inner.loss = rng.Float64() * 0.05
	}
	return s
}

// delayInstants adds a delay to the samples of the chosen instants of one
// or both probes, in copies: none, one instant, runs like host stalls, or
// a random part of them.
func delayInstants(rng *rand.Rand, r Round, both bool) Round {
	n := min(len(r.Inner), len(r.Outer))
	chosen := make([]bool, n)
	switch rng.IntN(4) {
	case 0:
		chosen[rng.IntN(n)] = true
	case 1: // runs, as the host's stalls
		for range 1 + rng.IntN(20) {
			from := rng.IntN(n)
			for k := from; k < min(n, from+1+rng.IntN(15)); k++ {
				chosen[k] = true
			}
		}
	default:
		part := []float64{0.005, 0.02, 0.1, 0.3, 1}[rng.IntN(5)]
		for k := range chosen {
			chosen[k] = rng.Float64() < part
		}
	}
	fixed := rng.IntN(2) == 0
	delay := time.Duration(rng.Int64N(int64(300 * time.Millisecond)))
	out := r
	out.Inner, out.Outer = slices.Clone(r.Inner), slices.Clone(r.Outer)
	for k, c := range chosen {
		if !c {
			continue
		}
		d := delay
		if !fixed {
			d = time.Duration(rng.Int64N(int64(300 * time.Millisecond)))
		}
		out.Inner[k].RTT += d
		if both {
			out.Outer[k].RTT += d
		}
	}
	return out
}

// TestPropertySharedDelay: adding the same delay to both probes at any
// set of instants (what a host stall does at best) never turns a round
// that was not NotMet into NotMet, so never a Met mode into NotMet.
func TestPropertySharedDelay(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 17))
	statuses := map[[2]Status]int{}
	for trial := range 150 {
		s := randomScene(rng)
		rounds := s.rounds(rng, 1+rng.IntN(3))
		delayed := make([]Round, len(rounds))
		for k, r := range rounds {
			delayed[k] = delayInstants(rng, r, true)
		}
		before, after := Judge(rounds, targets), Judge(delayed, targets)
		statuses[[2]Status{before.Status, after.Status}]++
		for k := range rounds {
			if b, a := before.Rounds[k], after.Rounds[k]; b.Status != NotMet && a.Status == NotMet {
				t.Errorf("trial %d round %d: %v became not met: %q", trial, k, b.Status, a.Reasons)
			}
		}
		if before.Status == Met && after.Status == NotMet {
			t.Errorf("trial %d: met became not met: %q", trial, after.Reasons)
		}
	}
	t.Logf("before -> after: %v", statuses)
	if statuses[[2]Status{Met, Met}] == 0 || statuses[[2]Status{Met, Inconclusive}] == 0 {
		t.Errorf("the trials never kept or lost a met verdict (%v): the property was not exercised", statuses)
	}
}

// TestPropertyInnerDelay: delaying the inner probe alone at any set of
// instants never turns a NotMet round into anything else, so never a
// NotMet mode into Met: the verdict cannot only pass.
func TestPropertyInnerDelay(t *testing.T) {
	rng := rand.New(rand.NewPCG(18, 18))
	statuses := map[[2]Status]int{}
	for trial := range 150 {
		s := randomScene(rng)
		rounds := s.rounds(rng, 1+rng.IntN(3))
		delayed := make([]Round, len(rounds))
		for k, r := range rounds {
			delayed[k] = delayInstants(rng, r, false)
		}
		before, after := Judge(rounds, targets), Judge(delayed, targets)
		statuses[[2]Status{before.Status, after.Status}]++
		for k := range rounds {
			if b, a := before.Rounds[k], after.Rounds[k]; b.Status == NotMet && a.Status != NotMet {
				t.Errorf("trial %d round %d: not met became %v: %q", trial, k, a.Status, a.Reasons)
			}
		}
		if before.Status == NotMet && after.Status == Met {
			t.Errorf("trial %d: not met became met", trial)
		}
	}
	t.Logf("before -> after: %v", statuses)
	if statuses[[2]Status{NotMet, NotMet}] == 0 || statuses[[2]Status{Met, NotMet}] == 0 {
		t.Errorf("the trials never kept or made a not met verdict (%v): the property was not exercised", statuses)
	}
}

// TestSharedStallNeverAddsMiss is the property's sharpest case: a round
// that just meets its gap (ten instants of 1000 above it, all at the end),
// then three shared 200 ms stalls among the good instants. Leaving the
// stalled instants out raises the quantile of the rest above the gap, but
// the miss is not the tunnel's, so the round must stay Met. (Too
// few outer samples stall to move its p99, so only the rule that counts
// stalled instants as passes stops it.)
func TestSharedStallNeverAddsMiss(t *testing.T) {
	var r Round
	for k := range 1000 {
		at := t0.Add(time.Duration(k) * interval)
		diff := 500 * time.Microsecond
		if k >= 990 {
			diff = 3 * time.Millisecond
		}
		r.Outer = append(r.Outer, Sample{Sent: at.Add(time.Millisecond), RTT: time.Millisecond})
		r.Inner = append(r.Inner, Sample{Sent: at, RTT: time.Millisecond + diff})
	}
	before := Judge([]Round{r}, targets).Rounds[0]
	r.Inner, r.Outer = slices.Clone(r.Inner), slices.Clone(r.Outer)
	for _, k := range []int{200, 400, 600} {
		r.Inner[k].RTT += 200 * time.Millisecond
		r.Outer[k].RTT += 200 * time.Millisecond
	}
	after := Judge([]Round{r}, targets).Rounds[0]
	if before.Status != Met {
		t.Fatalf("before: %v (GapQ %v), want met", before.Status, before.GapQ)
	}
	// The edge: with the stalled instants simply left out, the 10 tail
	// instants weigh more and the p99 gap is a miss.
	p := pairProbes(stamp(r.Inner, t0), stamp(r.Outer, t0), int64(interval), int64(stallOver))
	if left := pairedGap(p.inner, p.outer, 0, targets.Quantile); after.Stalled < 60 || left <= float64(targets.Gap) || after.Outer.P99 > stallOver {
		t.Fatalf("after: %d stalled, gap without passes %v, outer p99 %v: the case lost its edge", after.Stalled, time.Duration(left), after.Outer.P99)
	}
	if after.Status != Met || after.GapQ > before.GapQ {
		t.Errorf("after one shared stall: %v with GapQ %v (before %v), want met and no higher: %q", after.Status, after.GapQ, before.GapQ, after.Reasons)
	}
}

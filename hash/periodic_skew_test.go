package hash

import (
	"testing"
	"time"
)

// skewedEnds are two ends of one tunnel whose clocks differ: B's reads
// ahead of A's by skew. Real time is A's clock.
type skewedEnds struct {
	a, b *Periodic
	skew int64
}

// apart sends one flow's packets at both ends, every step from real time
// from to to (exclusive), as a flow busy both ways does, and returns the
// real times of the first and last packets the ends hashed differently and
// how many they were; first is -1 when they always agreed.
func (e skewedEnds) apart(in Input, from, to, step int64) (first, last int64, n int) {
	first = -1
	for now := from; now < to; now += step {
		if e.a.FlowHash(in, now) != e.b.FlowHash(in, now+e.skew) {
			if first < 0 {
				first = now
			}
			last, n = now, n+1
		}
	}
	return first, last, n
}

// TestPeriodicClockSkew measures what a skew between the two ends' clocks
// costs, as hash/periodic.go and conn/doc.go state it: for any skew d
// (IdleGap does not bound it; here from IdleGap/20 to 2.5 IdleGap, with
// Period 5 IdleGap), a flow busy across a rotation is mapped apart only
// for the d before the rotation that moves it; but a flow that starts in
// the d before a rotation, as the clock that is ahead reads it, is mapped
// apart until it pauses for IdleGap, for its whole burst here; one that
// starts just before that window agrees throughout. So only skew zero
// leaves every flow in agreement, and a skew d maps apart the flows that
// start in a fraction d/Period of the time.
func TestPeriodicClockSkew(t *testing.T) {
	cfg := testConfig() // Period 10 s, IdleGap 2 s
	period, idle := int64(cfg.Period), int64(cfg.IdleGap)
	const step = 10 * ms // a packet every 10 ms each way
	for _, d := range []int64{100 * ms, 500 * ms, 1900 * ms, 2100 * ms, 5 * sec} {
		t.Run(time.Duration(d).String(), func(t *testing.T) {
			// Fresh ends for each flow: a clock that goes back by more
			// than a Period restarts the handover.
			ends := func() skewedEnds { return skewedEnds{newTestPeriodic(t, cfg), newTestPeriodic(t, cfg), d} }

			// Busy from well before rotation R (epoch e to e+1), at both
			// clocks, to past R+Period: it keeps e's mapping through e+1
			// at both ends and moves to e+2's at each end's own rotation,
			// d apart.
			first, last, n := ends().apart(flow(1), rotation-d-3*sec, rotation+period+3*sec, step)
			if want := rotation + period - d; first != want || last != rotation+period-step || int64(n)*step != d {
				t.Errorf("busy flow: apart from R%+v to R%+v (%d packets); want from R%+v to R%+v: the skew, as the second rotation moves it",
					time.Duration(first-rotation), time.Duration(last-rotation), n,
					time.Duration(want-rotation), time.Duration(rotation+period-step-rotation))
			}

			// A burst that starts in the window and lasts to IdleGap+1 s
			// past R (before either end's next rotation): A hashes its
			// first packets in epoch e and keeps e's mapping past R
			// because the flow is busy; B starts it in e+1.
			burst := d + idle + sec
			start := rotation - d + step
			first, last, n = ends().apart(flow(2), start, start+burst, step)
			if first != start || last != start+burst-step {
				t.Errorf("flow starting at R%+v, in the skew's window: apart from R%+v to R%+v (%d packets); want its whole burst, R%+v to R%+v",
					time.Duration(start-rotation), time.Duration(first-rotation), time.Duration(last-rotation), n,
					time.Duration(start-rotation), time.Duration(start+burst-step-rotation))
			}
			if last-rotation <= idle {
				t.Errorf("the window flow's mismatch ends at R%+v: the schedule should show it lasting past R+IdleGap", time.Duration(last-rotation))
			}

			// The same burst starting just before the window agrees at
			// every packet.
			start = rotation - d - step
			if first, _, n = ends().apart(flow(3), start, start+burst, step); first >= 0 {
				t.Errorf("flow starting at R%+v, before the skew's window: apart from R%+v (%d packets); want no packet apart",
					time.Duration(start-rotation), time.Duration(first-rotation), n)
			}
		})
	}

	// Without skew the ends agree on every packet of all three schedules.
	for i, start := range []int64{rotation - 3*sec, rotation - step, rotation + step} {
		ends := skewedEnds{newTestPeriodic(t, cfg), newTestPeriodic(t, cfg), 0}
		if first, _, n := ends.apart(flow(10+i), start, start+period+3*sec, step); first >= 0 {
			t.Errorf("no skew, flow from R%+v: apart from R%+v (%d packets)", time.Duration(start-rotation), time.Duration(first-rotation), n)
		}
	}
}

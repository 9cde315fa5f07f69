package verdict

import (
	"math"
	"testing"
	"time"
)

// fuzzInput reads rounds and targets from fuzz bytes, in a form that
// keeps most inputs meaningful: small send steps (so that the probes
// meet), round trips in tens of microseconds, with now and then a wild
// value, a lost sample or one without a send time.
type fuzzInput struct{ b []byte }

func (f *fuzzInput) byte() byte {
	if len(f.b) == 0 {
		return 0
	}
	c := f.b[0]
	f.b = f.b[1:]
	return c
}

func (f *fuzzInput) u16() uint16 { return uint16(f.byte())<<8 | uint16(f.byte()) }

func (f *fuzzInput) samples(interval time.Duration) []Sample {
	n := int(f.u16() % 400)
	if n == 0 {
		return nil
	}
	out := make([]Sample, n)
	at := t0.Add(time.Duration(f.byte()) * 100 * time.Microsecond)
	for k := range out {
		ctl := f.byte()
		rtt := time.Duration(f.u16()) * 10 * time.Microsecond
		switch {
		case ctl == 0xff: // a wild value
			rtt = time.Duration(math.MaxInt64 - int64(f.byte()))
		case ctl == 0xfe:
			rtt = -rtt
		}
		out[k] = Sample{Sent: at, RTT: rtt, Lost: ctl&0x30 == 0x30}
		if ctl == 0xfd {
			out[k].Sent = time.Time{}
		}
		// Mostly one interval apart, sometimes late, sometimes repeated.
		at = at.Add(interval + time.Duration(int8(ctl&0x0f)-4)*time.Millisecond)
	}
	return out
}

func (f *fuzzInput) targets() Targets {
	return Targets{
		Interval: time.Duration(f.byte()) * time.Millisecond / 2,
		Gap:      time.Duration(int8(f.byte())) * 100 * time.Microsecond,
		Quantile: float64(f.byte()) / 100,
	}
}

// fuzzSeed is three rounds of two probes of 300 samples, 5 ms apart give
// or take a few ms, at a p99 gap of 2 ms.
func fuzzSeed() []byte {
	seed := []byte{10, 20, 99, 3}
	for range 3 {
		for range 2 {
			seed = append(seed, 1, 44, 0)
			for k := range 300 {
				seed = append(seed, byte(k%16), 0, byte(100+k%7))
			}
		}
		seed = append(seed, 1) // no idle probes
	}
	return seed
}

func FuzzJudge(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{10, 20, 99, 2, 1, 0, 0})
	f.Add(fuzzSeed())
	f.Fuzz(func(t *testing.T, data []byte) {
		in := &fuzzInput{b: data}
		tg := in.targets()
		rounds := make([]Round, in.byte()%6)
		for k := range rounds {
			rounds[k] = Round{Inner: in.samples(tg.Interval), Outer: in.samples(tg.Interval)}
			if in.byte()%2 == 0 {
				rounds[k].IdleInner, rounds[k].IdleOuter = in.samples(tg.Interval), in.samples(tg.Interval)
			}
		}
		res := Judge(rounds, tg)
		valid := func(s Status) bool { return s == Inconclusive || s == Met || s == NotMet }
		if !valid(res.Status) {
			t.Fatalf("status %d", res.Status)
		}
		if len(res.Rounds) != len(rounds) {
			t.Fatalf("%d round results for %d rounds", len(res.Rounds), len(rounds))
		}
		if !(res.GapQMin <= res.GapQMedian && res.GapQMedian <= res.GapQMax) {
			t.Fatalf("GapQ spread %v %v %v", res.GapQMin, res.GapQMedian, res.GapQMax)
		}
		if res.Status != Met && len(res.Reasons) == 0 {
			t.Fatalf("%v with no reason", res.Status)
		}
		if (res.Status == Inconclusive) != (res.Advice != "") {
			t.Fatalf("%v with advice %q", res.Status, res.Advice)
		}
		for k, r := range res.Rounds {
			if !valid(r.Status) {
				t.Fatalf("round %d: status %d", k, r.Status)
			}
			if r.Status != Met && len(r.Reasons) == 0 {
				t.Fatalf("round %d: %v with no reason", k, r.Status)
			}
			if r.Diffs+r.Stalled != r.Pairs || r.Pairs > r.Instants ||
				r.Instants > min(len(rounds[k].Inner), len(rounds[k].Outer)) {
				t.Fatalf("round %d: %d instants, %d pairs, %d stalled, %d diffs", k, r.Instants, r.Pairs, r.Stalled, r.Diffs)
			}
			if r.Status == Met && (r.GapQ > tg.Gap || r.Diffs == 0) {
				t.Fatalf("round %d: met with GapQ %v over %d diffs", k, r.GapQ, r.Diffs)
			}
			if !(r.InnerLoss >= 0 && r.InnerLoss <= 1 && r.OuterLoss >= 0 && r.OuterLoss <= 1) {
				t.Fatalf("round %d: loss %g %g", k, r.InnerLoss, r.OuterLoss)
			}
		}
	})
}

// TestFuzzSeedMeets: the fuzz seed with many samples pairs its probes
// and takes differences, so that fuzzing starts from deep in Judge.
func TestFuzzSeedMeets(t *testing.T) {
	in := &fuzzInput{b: fuzzSeed()}
	tg := in.targets()
	in.byte() // the count of rounds
	r := Round{Inner: in.samples(tg.Interval), Outer: in.samples(tg.Interval)}
	rr := Judge([]Round{r}, tg).Rounds[0]
	if rr.Instants < 250 || rr.Diffs < 250 {
		t.Errorf("seed round: %d instants, %d diffs, %v: %q", rr.Instants, rr.Diffs, rr.Status, rr.Reasons)
	}
}

package verdict

import (
	"math/rand/v2"
	"time"
)

// This file makes synthetic probe samples for the tests: two irtt-like
// probes on a shared host, with paths, loads and host stalls described by
// a scene.

const interval = 10 * time.Millisecond

var (
	t0      = time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC)
	targets = Targets{Gap: 2 * time.Millisecond, Quantile: 0.99, Interval: interval}
)

// path is what one probe's packets go through.
type path struct {
	base   time.Duration // round trip with nothing queued
	jitter time.Duration // mean of an exponential extra wait
	loss   float64
	// queue, when set, is a wait at every instant (the tunnel's bulk
	// queue in the one-flow mode).
	queue func(rng *rand.Rand) time.Duration
	// stalls is the part of the instants at which this probe alone waits
	// stallLen (the tunnel's process starved of CPU).
	stalls   float64
	stallLen [2]time.Duration
}

// scene is one round of two probes on one host.
type scene struct {
	n          int
	phase      time.Duration // the outer probe is sent this much after the inner one
	sendJitter time.Duration // each send is late by up to this, per probe
	inner      path
	outer      path
	// freezes is how many times the host stops everything for
	// freezeLen: both probes' packets sent or in flight then wait until
	// it ends,
	// each a further random share of freezeSkew (which process the host
	// runs first).
	freezes    int
	freezeLen  [2]time.Duration
	freezeSkew time.Duration
	idle       *scene // the idle probes, or nil
}

func uniform(rng *rand.Rand, r [2]time.Duration) time.Duration {
	if r[1] <= r[0] {
		return r[0]
	}
	return r[0] + time.Duration(rng.Int64N(int64(r[1]-r[0])))
}

func expo(rng *rand.Rand, mean time.Duration) time.Duration {
	return time.Duration(rng.ExpFloat64() * float64(mean))
}

// round generates the scene's samples.
func (s scene) round(rng *rand.Rand) Round {
	type freeze struct{ from, to time.Duration }
	freezes := make([]freeze, s.freezes)
	for k := range freezes {
		from := time.Duration(rng.Int64N(int64(s.n) * int64(interval)))
		freezes[k] = freeze{from, from + uniform(rng, s.freezeLen)}
	}
	probe := func(p path, phase time.Duration) []Sample {
		out := make([]Sample, s.n)
		for k := range out {
			at := time.Duration(k)*interval + phase + uniform(rng, [2]time.Duration{0, s.sendJitter})
			rtt := p.base + expo(rng, p.jitter)
			if p.queue != nil {
				rtt += p.queue(rng)
			}
			if rng.Float64() < p.stalls {
				rtt += uniform(rng, p.stallLen)
			}
			for _, f := range freezes {
				if at < f.to && at+rtt > f.from { // sent, or in flight, during it
					rtt = max(rtt, f.to-at+p.base+uniform(rng, [2]time.Duration{0, s.freezeSkew}))
				}
			}
			out[k] = Sample{Sent: t0.Add(at), RTT: rtt, Lost: rng.Float64() < p.loss}
		}
		return out
	}
	r := Round{Inner: probe(s.inner, 0), Outer: probe(s.outer, s.phase)}
	if s.idle != nil {
		idle := s.idle.round(rng)
		r.IdleInner, r.IdleOuter = idle.Inner, idle.Outer
	}
	return r
}

// rounds generates n rounds of s.
func (s scene) rounds(rng *rand.Rand, n int) []Round {
	out := make([]Round, n)
	for k := range out {
		out[k] = s.round(rng)
	}
	return out
}

// The scenes of the tests. Each function returns a fresh value, so that
// a test may change it.

// quietIdle: both probes with no load on a quiet host; the inner one pays
// the tunnel's two ends.
func quietIdle() *scene {
	return &scene{
		n: 300, phase: 3 * time.Millisecond, sendJitter: 200 * time.Microsecond,
		inner: path{base: 1300 * time.Microsecond, jitter: 150 * time.Microsecond},
		outer: path{base: time.Millisecond, jitter: 150 * time.Microsecond},
	}
}

// quietSpread: the spread mode on a quiet host: each probe alone in its
// flow queue.
func quietSpread() scene {
	return scene{
		n: 1000, phase: 3 * time.Millisecond, sendJitter: 200 * time.Microsecond,
		inner: path{base: 1500 * time.Microsecond, jitter: 250 * time.Microsecond},
		outer: path{base: 1200 * time.Microsecond, jitter: 250 * time.Microsecond},
		idle:  quietIdle(),
	}
}

// busySpread: the spread mode on a host that stops now and then for 60 to
// 120 ms, both probes alike (the busy run), with more jitter.
// The idle probes ran while the host was quiet.
func busySpread() scene {
	s := quietSpread()
	s.inner.jitter, s.outer.jitter = 600*time.Microsecond, 600*time.Microsecond
	s.sendJitter = time.Millisecond
	s.freezes, s.freezeLen, s.freezeSkew = 6, [2]time.Duration{60 * time.Millisecond, 120 * time.Millisecond}, 20*time.Millisecond
	return s
}

// oneFlow: the tunnel seen as one flow: the inner probe waits behind the
// tunnel's bulk flows (p99 about 150 ms) and loses a quarter of its round
// trips; the outer probe is fine.
func oneFlow() scene {
	s := quietSpread()
	s.inner.queue = func(rng *rand.Rand) time.Duration {
		return uniform(rng, [2]time.Duration{20 * time.Millisecond, 152 * time.Millisecond})
	}
	s.inner.loss = 0.25
	return s
}

// busyOneFlow: oneFlow on a moderately busy host: more jitter, late
// sends, one 80 ms stop of the whole host.
func busyOneFlow() scene {
	s := oneFlow()
	s.inner.jitter, s.outer.jitter = time.Millisecond, time.Millisecond
	s.sendJitter = 2 * time.Millisecond
	s.freezes, s.freezeLen, s.freezeSkew = 1, [2]time.Duration{80 * time.Millisecond, 80 * time.Millisecond}, 5*time.Millisecond
	return s
}

// starvedSpread: the spread mode on a host whose CPUs are taken by other
// work: the tunnel's processes wait for the CPU at 3% of the instants, so
// the inner probe alone waits 5 to 30 ms there, and the idle probes,
// before the load, already saw the host stop.
func starvedSpread() scene {
	s := quietSpread()
	s.inner.stalls, s.inner.stallLen = 0.03, [2]time.Duration{5 * time.Millisecond, 30 * time.Millisecond}
	idle := quietIdle()
	idle.freezes, idle.freezeLen = 3, [2]time.Duration{60 * time.Millisecond, 120 * time.Millisecond}
	s.idle = idle
	return s
}

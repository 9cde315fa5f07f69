package hash

import (
	"sync/atomic"
	"testing"
	"time"
)

var benchSink uint64

// BenchmarkSum64 hashes a flow key's Input (InputLen = 40 bytes).
// siphash24-generic is this package's SipHash-c-d at c=2, d=4: the same
// code as siphash13, so the two compare the round counts alone, while
// siphash24 is dchest's assembly.
func BenchmarkSum64(b *testing.B) {
	m := refInput()
	k0, k1 := refKey.words()
	hashers := []struct {
		name string
		sum  func(Input) uint64
	}{
		{"siphash24", NewSipHash24(refKey).Sum64},
		{"siphash13", NewSipHash13(refKey).Sum64},
		{"siphash24-generic", func(in Input) uint64 { return sipHash(2, 4, k0, k1, in[:]) }},
	}
	for _, h := range hashers {
		b.Run(h.name+"/40B", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(m)))
			for b.Loop() {
				benchSink += h.sum(m)
			}
		})
	}
}

// BenchmarkFlowHash measures the policies through the Policy interface, as
// a tunnel calls them. static is the baseline: periodic-steady adds the
// epoch check and activity recording, periodic-pinned computes the
// previous epoch's hash instead of the current one and refreshes its slot.
// The -parallel variants hash distinct flows from every CPU at once.
func BenchmarkFlowHash(b *testing.B) {
	const flows = 64
	keys := make([]Input, flows)
	for i := range keys {
		keys[i] = flow(i)
	}
	newPeriodic := func(b *testing.B, pinned bool) (Policy, int64) {
		p := newTestPeriodic(b, PeriodicConfig{Secret: testSecret, Period: time.Hour})
		start := (rotation/int64(time.Hour) + 1) * int64(time.Hour) // a rotation
		if pinned {
			for _, k := range keys {
				p.FlowHash(k, start-1*sec)
			}
		}
		p.FlowHash(keys[0], start)
		return p, start
	}
	policies := []struct {
		name string
		make func(b *testing.B) (Policy, int64)
	}{
		{"static", func(b *testing.B) (Policy, int64) { return NewStatic(NewSipHash24(refKey)), rotation }},
		{"periodic-steady", func(b *testing.B) (Policy, int64) { return newPeriodic(b, false) }},
		{"periodic-pinned", func(b *testing.B) (Policy, int64) { return newPeriodic(b, true) }},
	}
	for _, pc := range policies {
		b.Run(pc.name, func(b *testing.B) {
			pol, now := pc.make(b)
			k := keys[1]
			b.ReportAllocs()
			for b.Loop() {
				now += int64(time.Microsecond)
				benchSink += pol.FlowHash(k, now)
			}
		})
	}
	for _, pc := range policies {
		b.Run(pc.name+"-parallel", func(b *testing.B) {
			pol, start := pc.make(b)
			var next atomic.Int64
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				k := keys[next.Add(1)%flows]
				now := start
				var sum uint64
				for pb.Next() {
					now += int64(time.Microsecond)
					sum += pol.FlowHash(k, now)
				}
				atomic.AddUint64(&benchSink, sum)
			})
		})
	}
}

package network

import (
	"os"
	"testing"
)

// TestMain lets the test binary stand in for the testbed binary as the
// wire forwarder, which the tests start as `network.test wire -a IF -b IF`,
// and as the on-link client's `neighbour-proxies`.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "wire":
			os.Exit(WireMain(os.Args[2:]))
		case "neighbour-proxies":
			os.Exit(NeighbourProxiesMain(os.Args[2:]))
		}
	}
	os.Exit(m.Run())
}

func TestWireStatsDelays(t *testing.T) {
	var s WireStats
	s.Delays = make([]uint64, delayBuckets)
	for _, ns := range []int64{500, 3_000, 3_500, 900_000} { // 0.5 µs, 3 µs, 3.5 µs, 900 µs
		s.Delays[delayBucket(ns)]++
	}
	if got := s.DelayPercentile(50); got != 0.004 {
		t.Errorf("median bound %v ms, want 0.004", got)
	}
	if got := s.DelayPercentile(99); got != 1.024 {
		t.Errorf("p99 bound %v ms, want 1.024", got)
	}
	if got := delayBucket(100 * 1e9); got != delayBuckets-1 {
		t.Errorf("100 s lands in bucket %d, want the last", got)
	}
	earlier := WireStats{AToBFrames: 1, Delays: make([]uint64, delayBuckets)}
	earlier.Delays[delayBucket(3_000)] = 1
	s.AToBFrames = 5
	d := s.Since(earlier)
	if d.AToBFrames != 4 || d.Delays[delayBucket(3_000)] != 1 || s.Delays[delayBucket(3_000)] != 2 {
		t.Errorf("since: %+v (and the original changed: %v)", d, s.Delays)
	}
}

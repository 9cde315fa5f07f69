package hash

import (
	"net/netip"
	"testing"

	"github.com/flowspread/flowspread/flowaddr"
)

// TestFreshInputDoesNotAllocate builds the Input in a local variable on
// every call, as a tunnel does per packet, and hashes it through the Hasher
// and Policy interfaces: an array passed by value does not escape, so no
// call allocates. Each hash is checked against the same flow's bytes hashed
// with Sum, so the fresh Input must carry the flow key.
func TestFreshInputDoesNotAllocate(t *testing.T) {
	const flows = 64
	src := netip.MustParseAddr("2001:db8:a::1").As16()
	dst := netip.MustParseAddr("2001:db8:b::2").As16()
	// freshInput builds flow i's Input on the caller's stack, the same
	// key as flow(i).
	freshInput := func(i int) Input {
		k := flowaddr.Key{Src: src, Dst: dst, SrcPort: uint16(40000 + i), DstPort: 443, Proto: 17}.Canonical()
		var in Input = k.Bytes()
		return in
	}
	wants := func(sum func([]byte) uint64) []uint64 {
		w := make([]uint64, flows)
		for i := range w {
			b := flow(i)
			w[i] = sum(b[:])
		}
		return w
	}

	hashers := []struct {
		name string
		h    Hasher
		sum  func([]byte) uint64
	}{
		{"SipHash24", NewSipHash24(refKey), NewSipHash24(refKey).Sum},
		{"SipHash13", NewSipHash13(refKey), NewSipHash13(refKey).Sum},
	}
	for _, tt := range hashers {
		t.Run("Hasher/"+tt.name, func(t *testing.T) {
			want := wants(tt.sum)
			var n, bad int
			allocs := testing.AllocsPerRun(1000, func() {
				i := n % flows
				n++
				in := freshInput(i)
				if tt.h.Sum64(in) != want[i] {
					bad++
				}
			})
			if allocs != 0 {
				t.Errorf("%v allocations per Sum64, want 0", allocs)
			}
			if bad != 0 {
				t.Errorf("%d calls did not return the flow's hash", bad)
			}
		})
	}

	periodic := newTestPeriodic(t, testConfig())
	policies := []struct {
		name string
		p    Policy
		sum  func([]byte) uint64
	}{
		{"Static", NewStatic(NewSipHash24(refKey)), NewSipHash24(refKey).Sum},
		// Every call falls in one epoch with no previous table, so each
		// flow takes that epoch's hash.
		{"Periodic", periodic, NewSipHash24(periodic.EpochKey(periodic.Epoch(rotation))).Sum},
	}
	for _, tt := range policies {
		t.Run("Policy/"+tt.name, func(t *testing.T) {
			want := wants(tt.sum)
			now := rotation
			tt.p.FlowHash(flow(0), now) // the first epoch's table is made here
			var n, bad int
			allocs := testing.AllocsPerRun(1000, func() {
				i := n % flows
				n++
				now += ms
				in := freshInput(i)
				if tt.p.FlowHash(in, now) != want[i] {
					bad++
				}
			})
			if allocs != 0 {
				t.Errorf("%v allocations per FlowHash, want 0", allocs)
			}
			if bad != 0 {
				t.Errorf("%d calls did not return the flow's hash", bad)
			}
		})
	}
}

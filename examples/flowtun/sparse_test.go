package main

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

func TestSparseFirst(t *testing.T) {
	tests := []struct {
		name    string
		hashes  []uint64
		want    []int
		singles int
	}{
		{"empty", nil, []int{}, 0},
		{"one", []uint64{7}, []int{0}, 1},
		{"all one flow", []uint64{1, 1, 1}, []int{0, 1, 2}, 0},
		{"all distinct", []uint64{1, 2, 3}, []int{0, 1, 2}, 3},
		{"probe behind a burst", []uint64{1, 1, 1, 1, 9, 1}, []int{4, 0, 1, 2, 3, 5}, 1},
		{"two bursts and two sparse", []uint64{1, 2, 1, 5, 2, 6}, []int{3, 5, 0, 1, 2, 4}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, singles := sparseFirst(make([]int, len(tt.hashes)), tt.hashes)
			if !slices.Equal(got, tt.want) || singles != tt.singles {
				t.Errorf("sparseFirst(%v) = %v, %d singletons; want %v, %d", tt.hashes, got, singles, tt.want, tt.singles)
			}
		})
	}
}

// TestSparseFirstProperties checks random batches: the order is a
// permutation, every singleton comes before every packet of a flow with
// more, and each flow's packets keep their order.
func TestSparseFirstProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		n := rng.IntN(65)
		hashes := make([]uint64, n)
		for i := range hashes {
			hashes[i] = uint64(rng.IntN(1 + n/3))
		}
		order, singles := sparseFirst(make([]int, n), hashes)
		if !slices.Equal(slices.Sorted(slices.Values(order)), seq(n)) {
			t.Fatalf("%v: order %v is not a permutation", hashes, order)
		}
		count := map[uint64]int{}
		for _, h := range hashes {
			count[h]++
		}
		wantSingles := 0
		for _, c := range count {
			if c == 1 {
				wantSingles++
			}
		}
		if singles != wantSingles {
			t.Fatalf("%v: %d singletons reported, want %d", hashes, singles, wantSingles)
		}
		seenBulk := false
		last := map[uint64]int{}
		for _, i := range order {
			h := hashes[i]
			if count[h] == 1 && seenBulk {
				t.Fatalf("%v: order %v puts singleton %d after a bulk packet", hashes, order, i)
			}
			if count[h] > 1 {
				seenBulk = true
				if j, ok := last[h]; ok && j > i {
					t.Fatalf("%v: order %v reorders flow %d (%d before %d)", hashes, order, h, j, i)
				}
				last[h] = i
			}
		}
	}
}

func seq(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

func TestSparseFirstDoesNotAllocate(t *testing.T) {
	hashes := []uint64{1, 1, 2, 1, 3, 3, 4}
	order := make([]int, len(hashes))
	if n := testing.AllocsPerRun(100, func() { sparseFirst(order, hashes) }); n != 0 {
		t.Errorf("sparseFirst allocates %v times", n)
	}
}

// TestOuterPairKey: the datagrams of one outer address pair share a key,
// and the pairs of a spread tunnel (addresses that differ in their low
// bits, as flowaddr.Mapper hands them out) do not collide.
func TestOuterPairKey(t *testing.T) {
	src := netip.MustParsePrefix("2001:db8:a:1::/64")
	dst := netip.MustParsePrefix("2001:db8:b:1::/64")
	at := func(p netip.Prefix, i int) netip.AddrPort {
		a := p.Addr().As16()
		a[14], a[15] = byte(i>>8), byte(i)
		return netip.AddrPortFrom(netip.AddrFrom16(a), 51820)
	}
	seen := map[uint64][2]int{}
	for i := range 128 {
		for j := range 128 {
			k := outerPairKey(at(src, i), at(dst, j))
			if k != outerPairKey(at(src, i), at(dst, j)) {
				t.Fatalf("pair (%d, %d): the key changed between calls", i, j)
			}
			if prev, ok := seen[k]; ok {
				t.Fatalf("pairs %v and (%d, %d) share the key %#x", prev, i, j, k)
			}
			seen[k] = [2]int{i, j}
		}
	}
	// The direction counts: a reply's pair is another flow's.
	if outerPairKey(at(src, 1), at(dst, 2)) == outerPairKey(at(dst, 2), at(src, 1)) {
		t.Error("a pair and its reverse share a key")
	}
}

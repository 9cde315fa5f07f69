package main

import (
	"math/rand/v2"
	"slices"
	"testing"
)

func TestSparseFirst(t *testing.T) {
	tests := []struct {
		name   string
		hashes []uint64
		want   []int
	}{
		{"empty", nil, []int{}},
		{"one", []uint64{7}, []int{0}},
		{"all one flow", []uint64{1, 1, 1}, []int{0, 1, 2}},
		{"all distinct", []uint64{1, 2, 3}, []int{0, 1, 2}},
		{"probe behind a burst", []uint64{1, 1, 1, 1, 9, 1}, []int{4, 0, 1, 2, 3, 5}},
		{"two bursts and two sparse", []uint64{1, 2, 1, 5, 2, 6}, []int{3, 5, 0, 1, 2, 4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := sparseFirst(make([]int, len(tt.hashes)), tt.hashes)
			if !slices.Equal(got, tt.want) {
				t.Errorf("sparseFirst(%v) = %v, want %v", tt.hashes, got, tt.want)
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
		order := sparseFirst(make([]int, n), hashes)
		if !slices.Equal(slices.Sorted(slices.Values(order)), seq(n)) {
			t.Fatalf("%v: order %v is not a permutation", hashes, order)
		}
		count := map[uint64]int{}
		for _, h := range hashes {
			count[h]++
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

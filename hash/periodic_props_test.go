package hash

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// hashTable caches epochHash for a set of flows over a range of epochs.
type hashTable struct {
	first uint64
	h     [][]uint64 // [epoch-first][flow]
}

func newHashTable(p *Periodic, keys []Input, first, last uint64) *hashTable {
	ht := &hashTable{first: first}
	for e := first; e <= last; e++ {
		row := make([]uint64, len(keys))
		for i, k := range keys {
			row[i] = epochHash(p, e, k)
		}
		ht.h = append(ht.h, row)
	}
	return ht
}

// epochOf returns the epoch in [lo, hi] whose hash of flow i is h.
func (ht *hashTable) epochOf(i int, h uint64, lo, hi uint64) (uint64, bool) {
	for e := hi; e >= lo && e >= ht.first; e-- {
		if int(e-ht.first) < len(ht.h) && ht.h[e-ht.first][i] == h {
			return e, true
		}
	}
	return 0, false
}

// TestPeriodicHandoverProperties drives random traffic through one
// goroutine with a monotonic clock and checks, for every packet:
//   - its hash is its epoch's or the previous epoch's: no mapping outlives
//     the next rotation;
//   - a flow never returns to an older mapping;
//   - a flow that sent less than IdleGap (less the IdleGap/64 resolution)
//     ago keeps its mapping, across a rotation too, unless that mapping
//     was already the previous epoch's.
//
// Small slot counts make flows collide and share fates.
func TestPeriodicHandoverProperties(t *testing.T) {
	for _, slots := range []int{1, 8, 4096} {
		t.Run(fmt.Sprintf("slots=%d", slots), func(t *testing.T) {
			cfg := testConfig()
			cfg.Slots = slots
			p := newTestPeriodic(t, cfg)
			const flows = 32
			keys := make([]Input, flows)
			for i := range keys {
				keys[i] = flow(100 + i)
			}
			start := rotation - 30*sec
			e0 := p.Epoch(start)
			ht := newHashTable(p, keys, e0-1, e0+50)
			idleGap, tick := p.idleGap, p.idleGap/64

			type last struct {
				sent  bool
				at    int64
				epoch uint64 // epoch of the packet
				used  uint64 // epoch whose mapping it used
			}
			seen := make([]last, flows)
			rng := rand.New(rand.NewPCG(uint64(slots), 99))
			var kept, moves int
			now := start
			for range 20000 {
				now += rng.Int64N(40 * ms)
				// Skewed choice: low-numbered flows are busy, high ones sparse.
				i := min(int(rng.ExpFloat64()*6), flows-1)
				e := p.Epoch(now)
				got := p.FlowHash(keys[i], now)
				used, ok := ht.epochOf(i, got, e-1, e)
				if !ok {
					t.Fatalf("flow %d at rotation%+v (epoch %d): hash %#x is neither epoch's", i, time.Duration(now-rotation), e, got)
				}
				prev := seen[i]
				if prev.sent {
					if used < prev.used {
						t.Fatalf("flow %d at rotation%+v: went back from epoch %d's mapping to %d's", i, time.Duration(now-rotation), prev.used, used)
					}
					if now-prev.at < idleGap-tick {
						if e == prev.epoch && used != prev.used {
							t.Fatalf("flow %d busy at rotation%+v moved within epoch %d", i, time.Duration(now-rotation), e)
						}
						if e == prev.epoch+1 && prev.used == prev.epoch && used != prev.used {
							t.Fatalf("flow %d busy across the rotation at rotation%+v was not handed over", i, time.Duration(now-rotation))
						}
					}
					if used < e && e > prev.epoch {
						kept++
					}
					if used != prev.used {
						moves++
					}
				}
				seen[i] = last{sent: true, at: now, epoch: e, used: used}
			}
			t.Logf("%d packets handed over on the previous mapping, %d moves", kept, moves)
			if kept == 0 || moves == 0 {
				t.Errorf("schedule exercised nothing: %d handovers, %d moves", kept, moves)
			}
		})
	}
}

// TestPeriodicConcurrent hashes from many goroutines across rotations,
// under a shared clock that each goroutine reads a little late, as real
// callers do. Each goroutine owns its flows; flows of different goroutines
// collide in a small slot table. Run it with -race.
func TestPeriodicConcurrent(t *testing.T) {
	cfg := PeriodicConfig{Secret: testSecret, Period: time.Second, IdleGap: 200 * time.Millisecond, Slots: 16}
	p := newTestPeriodic(t, cfg)
	const (
		goroutines = 8
		flowsEach  = 8
		step       = 100 * int64(time.Microsecond)
	)
	start := rotation - 500*ms
	end := start + 3500*ms
	e0 := p.Epoch(start)
	keys := make([]Input, goroutines*flowsEach)
	for i := range keys {
		keys[i] = flow(1000 + i)
	}
	ht := newHashTable(p, keys, e0-1, p.Epoch(end)+1)

	var clock atomic.Int64
	var kept, moves atomic.Int64
	var wg sync.WaitGroup
	ready := make(chan struct{})
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 5))
			lag := int64(g) * 100 * int64(time.Microsecond)
			used := make([]uint64, flowsEach)
			<-ready
			for n := 0; ; n++ {
				if n%16 == 0 {
					runtime.Gosched() // interleave the goroutines even on few CPUs
				}
				now := start + clock.Add(step) - lag
				if now >= end {
					return
				}
				j := min(int(rng.ExpFloat64()*2), flowsEach-1)
				// Flow j alternates between bursts and pauses longer
				// than IdleGap, each (250+60j) ms long.
				if phase := 250*ms + int64(j)*60*ms; (now/phase)%2 == 1 {
					continue
				}
				i := g*flowsEach + j
				e := p.Epoch(now)
				got := p.FlowHash(keys[i], now)
				x, ok := ht.epochOf(i, got, e-1, e+1)
				if !ok {
					t.Errorf("flow %d at start%+v (epoch %d): hash %#x belongs to no nearby epoch", i, time.Duration(now-start), e, got)
					return
				}
				if x < used[j] {
					t.Errorf("flow %d at start%+v: went back from epoch %d's mapping to %d's", i, time.Duration(now-start), used[j], x)
					return
				}
				if x < e {
					kept.Add(1)
				}
				if used[j] != 0 && x != used[j] {
					moves.Add(1)
				}
				used[j] = x
			}
		}()
	}
	close(ready)
	wg.Wait()
	t.Logf("%d packets on a previous mapping, %d moves", kept.Load(), moves.Load())
	if kept.Load() == 0 || moves.Load() == 0 {
		t.Errorf("run exercised nothing: %d packets on a previous mapping, %d moves", kept.Load(), moves.Load())
	}
}

// TestPeriodicRotationOnce lets many goroutines cross a rotation at once:
// all must hash with the one epoch state that exactly one of them made.
func TestPeriodicRotationOnce(t *testing.T) {
	p := newTestPeriodic(t, testConfig())
	p.FlowHash(flow(1), rotation-1*sec)
	before := p.state.Load()
	const goroutines = 16
	states := make([]*epochState, goroutines)
	ready := make(chan struct{})
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-ready
			states[g] = p.stateAt(rotation + int64(g))
		}()
	}
	close(ready)
	wg.Wait()
	for g, st := range states {
		if st != states[0] {
			t.Fatalf("goroutine %d got epoch state %p, goroutine 0 got %p", g, st, states[0])
		}
	}
	if st := states[0]; st == before || st.epoch != p.Epoch(rotation) || st.prev != before.cur {
		t.Errorf("rotation did not install epoch %d with the previous table", p.Epoch(rotation))
	}
}

func TestPeriodicFlowHashDoesNotAllocate(t *testing.T) {
	tests := []struct {
		name string
		// setup sends before the measured calls; it returns the time
		// they start at.
		setup func(p *Periodic, b Input) int64
		// wantPrev says whether the measured calls must keep the
		// previous epoch's hash.
		wantPrev bool
	}{
		{"first epoch", func(p *Periodic, b Input) int64 { return rotation }, false},
		{"previous table idle", func(p *Periodic, b Input) int64 {
			p.FlowHash(b, rotation-5*sec)
			return rotation + 5*sec
		}, false},
		{"pinned", func(p *Periodic, b Input) int64 {
			p.FlowHash(b, rotation-1*sec)
			return rotation
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var pol Policy = newTestPeriodic(t, testConfig())
			p := pol.(*Periodic)
			b := flow(1)
			now := tt.setup(p, b)
			p.FlowHash(b, now) // any rotation happens here
			want := epochHash(p, p.Epoch(now), b)
			if tt.wantPrev {
				want = epochHash(p, p.Epoch(now)-1, b)
			}
			var bad int
			allocs := testing.AllocsPerRun(1000, func() {
				now += ms
				if pol.FlowHash(b, now) != want {
					bad++
				}
			})
			if allocs != 0 {
				t.Errorf("%v allocations per FlowHash, want 0", allocs)
			}
			if bad != 0 {
				t.Errorf("%d calls did not return the expected hash", bad)
			}
		})
	}
}

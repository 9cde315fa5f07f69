package main

import (
	"math/rand/v2"
	"testing"
)

// step is one datagram arriving at a replay window: its counter, and what
// the window must say (nil: accept it).
type step struct {
	counter uint64
	want    error
}

// feed runs steps through w as the tunnel does: check, then accept what
// passed.
func feed(t *testing.T, w *replayWindow, steps []step) {
	t.Helper()
	for i, s := range steps {
		err := w.check(s.counter)
		if err != s.want {
			t.Fatalf("step %d, counter %d: %v, want %v", i, s.counter, err, s.want)
		}
		if err == nil {
			w.accept(s.counter)
		}
	}
}

func inOrder(from, to uint64) []step {
	var s []step
	for c := from; c <= to; c++ {
		s = append(s, step{c, nil})
	}
	return s
}

func TestReplayWindow(t *testing.T) {
	const W = replayWindowSize
	const big = 1 << 60 // a clock-based counter
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"in order", inOrder(1, 5000)},
		{"counter zero once", []step{{0, nil}, {0, errReplayed}, {1, nil}}},
		{"duplicate", []step{{5, nil}, {6, nil}, {5, errReplayed}, {6, errReplayed}, {7, nil}}},
		{"reordered within the window", []step{
			{100, nil}, {50, nil}, {99, nil}, {51, nil}, {1, nil},
			{50, errReplayed}, {99, errReplayed}, {100, errReplayed}, {98, nil},
		}},
		{"window edge", []step{
			{W + 100, nil},
			{100, errTooOld}, // exactly W behind
			{101, nil},       // W-1 behind: the oldest still accepted
			{101, errReplayed},
			{99, errTooOld},
			{W + 99, nil}, // just behind the top
			{W + 100, errReplayed},
		}},
		{"first counter from the clock", []step{
			{big, nil}, {big - 1, nil}, {big - W, errTooOld}, {big + 1, nil}, {big, errReplayed},
		}},
		{"jump past the whole ring", []step{
			{5, nil}, {10, nil}, {1_000_000, nil},
			{1_000_000 - 5, nil}, {1_000_000, errReplayed}, {10, errTooOld},
		}},
		// The block that counter 5 lived in comes round again: its stale
		// bits must not flag new counters as replays.
		{"ring wraparound clears reused blocks", []step{
			{5, nil}, {10, nil}, {63, nil},
			{replayBlocks*64 + 40, nil}, // back in block 0 of the ring
			{replayBlocks*64 + 5, nil},
			{replayBlocks*64 + 10, nil},
			{replayBlocks*64 + 63, nil},
			{replayBlocks*64 + 5, errReplayed},
		}},
		{"window slides one block at a time", func() []step {
			s := inOrder(1, 64*replayBlocks*3)
			// Everything is a replay now, and the old end too old.
			top := uint64(64 * replayBlocks * 3)
			return append(s, step{top, errReplayed}, step{top - W + 1, errReplayed}, step{top - W, errTooOld})
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var w replayWindow
			feed(t, &w, tc.steps)
		})
	}
}

// TestReplayWindowModel checks the window against the obvious model (a
// set of every counter seen) on random arrivals around the top: reordered,
// duplicated, old and far ahead.
func TestReplayWindowModel(t *testing.T) {
	for seed := range uint64(20) {
		r := rand.New(rand.NewPCG(seed, 42))
		var w replayWindow
		seen := map[uint64]bool{}
		var top uint64
		for i := range 20000 {
			var c uint64
			switch k := r.IntN(10); {
			case k < 6: // near the top, either side
				c = top + uint64(r.IntN(256)) - 128
			case k < 8: // anywhere in and around the window
				c = top - uint64(r.IntN(replayWindowSize+200))
			case k < 9: // a jump ahead
				c = top + uint64(r.IntN(10000))
			default: // a duplicate of something recent
				c = top - uint64(r.IntN(64))
			}
			if c > 1<<62 { // wrapped below zero
				c = 0
			}
			var want error
			switch {
			case c > top:
			case top-c >= replayWindowSize:
				want = errTooOld
			case seen[c]:
				want = errReplayed
			}
			if got := w.check(c); got != want {
				t.Fatalf("seed %d, arrival %d: counter %d (top %d): %v, want %v", seed, i, c, top, got, want)
			}
			if want == nil {
				w.accept(c)
				seen[c] = true
				top = max(top, c)
			}
		}
	}
}

// FuzzReplayWindow drives the window with arbitrary arrivals; a counter
// accepted once is never accepted again.
func FuzzReplayWindow(f *testing.F) {
	f.Add([]byte{1, 2, 3, 3, 200, 1})
	f.Add([]byte{2, 4, 0xfe, 3, 0xfe, 0xff, 0xff, 2, 0xfe, 1})
	f.Fuzz(func(t *testing.T, deltas []byte) {
		var w replayWindow
		accepted := map[uint64]bool{}
		var c uint64 = 1 << 40
		for i, d := range deltas {
			// Even bytes step forward, odd ones back, by up to 16 blocks;
			// 0xfe and 0xff jump as far as a sender's catch-up, forward
			// and back, so that old rings come round again.
			step := uint64(d>>1) * 8
			if d >= 0xfe {
				step = uint64(maxCounterLag) + uint64(d)
			}
			if d&1 == 0 {
				c += step
			} else {
				c -= step
			}
			if w.check(c) == nil {
				if accepted[c] {
					t.Fatalf("arrival %d: counter %d accepted twice", i, c)
				}
				w.accept(c)
				accepted[c] = true
			}
		}
	})
}

func TestReplayWindowAllocs(t *testing.T) {
	var w replayWindow
	c := uint64(1)
	if n := testing.AllocsPerRun(1000, func() {
		if w.check(c) == nil {
			w.accept(c)
		}
		c += 3
	}); n != 0 {
		t.Errorf("the replay window allocates %v times per datagram", n)
	}
}

// TestReplayWindowAfterRestart is a receiver that has just started at
// now: a datagram sealed more than maxClockSkew before is a replay of
// traffic from before the restart and is dropped as too old; one sealed
// within the skew, or later, is taken once.
func TestReplayWindowAfterRestart(t *testing.T) {
	const now = uint64(1_700_000_000) * 1e9
	skew := uint64(maxClockSkew)
	w := newReplayWindow(restartFloor(now))
	feed(t, &w, []step{
		{now - skew - 1, errTooOld},
		{now - 2*skew, errTooOld},
		{1, errTooOld},
		{now - skew, nil}, // the oldest taken
		{now - skew/2, nil},
		{now - skew/2, errReplayed},
		{now, nil},
		{now + 3, nil},
		{now - skew, errTooOld}, // now far behind the top
	})
	if restartFloor(uint64(maxClockSkew)/2) != 0 {
		t.Error("a clock before the skew does not give the floor 0")
	}
}

// TestReplayWindowSenderJump follows a sender whose counter jumps to its
// clock (sealer.catchUp) while datagrams sealed before the jump are still
// on the way: each is taken once after the jump, and a second jump
// retires the first ring for good.
func TestReplayWindowSenderJump(t *testing.T) {
	const W = replayWindowSize
	lag := uint64(maxCounterLag)
	const c0 = uint64(1) << 50
	j1 := c0 + 100 + lag + 7 // the first jump
	j2 := j1 + 50 + lag + 9  // the second
	var w replayWindow
	feed(t, &w, append(inOrder(c0, c0+90), []step{
		{j1, nil}, // overtook c0+91..c0+100, still on their way
		{c0 + 95, nil}, {c0 + 91, nil}, {c0 + 100, nil},
		{c0 + 95, errReplayed}, {c0 + 50, errReplayed}, {j1, errReplayed},
		{j1 + 1, nil}, {j1 - 1, nil}, // never sent, but not seen: only authentication tells
		{c0 - W, errTooOld},
		{j2, nil},
		{j1 + 2, nil}, {j1 + 1, errReplayed},
		// The ring before j1 is gone: its counters are all too old now,
		// the ones it took and the ones it did not.
		{c0 + 95, errTooOld}, {c0 + 96, errTooOld}, {j1 - 2, errTooOld},
		{j2 + 1, nil},
	}...))
}

// TestReplayWindowNoJumpFromEmpty checks that the first counter a fresh
// window takes does not count as a jump: nothing below it was taken, so
// the floor, not a retired ring, decides what is too old.
func TestReplayWindowNoJumpFromEmpty(t *testing.T) {
	const now = uint64(1_700_000_000) * 1e9
	w := newReplayWindow(restartFloor(now))
	feed(t, &w, []step{{now, nil}, {now - 1, nil}, {now - uint64(maxClockSkew), errTooOld}})
}

// TestSealerCatchUp checks that the send counter follows the clock once
// it lags by more than maxCounterLag, and never goes back.
func TestSealerCatchUp(t *testing.T) {
	const start = uint64(1) << 60
	lag := uint64(maxCounterLag)
	s, _ := pair(t, start)
	for _, tc := range []struct {
		now, want uint64
	}{
		{start + lag, start},               // exactly the lag: stays
		{start + lag + 1, start + lag + 1}, // beyond: jumps to the clock
		{start, start + lag + 1},           // the clock stepped back: stays
		{0, start + lag + 1},
		{start + 3*lag + 2, start + 3*lag + 2},
	} {
		s.catchUp(tc.now)
		if s.counter != tc.want {
			t.Errorf("clock %d: counter %d, want %d", tc.now, s.counter, tc.want)
		}
	}
	d := sealPacket(t, s, []byte("x"))
	if c, _ := parseHeader(d); c != start+3*lag+3 {
		t.Errorf("the datagram after the jump carries %d, want %d", c, start+3*lag+3)
	}
}

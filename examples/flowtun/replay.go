package main

import (
	"errors"
	"time"
)

// The anti-replay window, as IPsec does it (RFC 4303 section 3.4.3) with
// the ring of bitmap blocks of RFC 6479: moving the window forward clears
// whole 64-bit blocks instead of shifting the bitmap bit by bit.
const (
	replayBlocks    = 32 // 2048 bits
	replayBlockBits = 64
	// replayWindow is how far behind the highest counter seen a datagram
	// may be and still be accepted once. The block holding the highest
	// counter is only partly behind it, so one block is not usable:
	// RFC 6479 section 2.
	replayWindowSize = (replayBlocks - 1) * replayBlockBits
)

// maxClockSkew is how far behind our clock, at our start, a counter may
// be and still be accepted: counters are the sender's wall clock in
// nanoseconds (see sealer.catchUp), so a freshly started end takes no
// datagram sealed more than this before it started. Ten seconds: clocks
// kept by NTP agree to milliseconds, a host without it drifts seconds a
// day, and a replay after a restart can reach back no further than this.
// A peer whose clock is behind ours by more is not heard after we
// restart until its clock has caught up with our start less this.
const maxClockSkew = 10 * time.Second

var (
	errReplayed = errors.New("replayed datagram: its counter was seen already")
	errTooOld   = errors.New("datagram too old: its counter is behind the replay window")
)

// replayWindow remembers which counters were received: a ring of the
// last replayWindowSize counters below the highest, as IPsec keeps it,
// plus the ring from before the sender's last jump (sealer.catchUp), so
// that datagrams sealed before a jump and delivered after the first one
// sealed after it are still accepted, and a floor below which nothing is.
// The zero value is ready: it has seen nothing and accepts any counter
// once; newReplayWindow gives one with a floor.
//
// check runs before decryption, so that replays cost no decryption;
// accept runs only after the datagram authenticated, so that forged
// counters never move the window. It is not safe for concurrent use: one
// goroutine (the network reader) owns it. It does not allocate.
type replayWindow struct {
	cur, prev replayRing
	// base is the first counter of cur; counters below it are prev's.
	base uint64
	// floor is the lowest counter accepted at all: prev's base, or the
	// floor the window started with.
	floor uint64
	// started: cur has accepted a counter, so a jump from its top starts
	// a new ring rather than moving an empty one.
	started bool
}

// replayRing is one window: the highest counter accepted, and which of
// the replayWindowSize counters below it were.
type replayRing struct {
	top    uint64
	bitmap [replayBlocks]uint64
}

// newReplayWindow returns a window that accepts no counter below floor.
func newReplayWindow(floor uint64) replayWindow {
	return replayWindow{cur: replayRing{top: floor}, base: floor, floor: floor}
}

// restartFloor is the floor of a window started at now, the wall clock
// in nanoseconds: maxClockSkew before it.
func restartFloor(now uint64) uint64 {
	return now - min(now, uint64(maxClockSkew))
}

// check says whether counter may be accepted: errTooOld when it is below
// the floor or replayWindowSize or more behind the highest counter
// accepted in its ring, errReplayed when it was accepted already.
func (w *replayWindow) check(counter uint64) error {
	switch {
	case counter < w.floor:
		return errTooOld
	case counter < w.base:
		return w.prev.check(counter)
	}
	return w.cur.check(counter)
}

// accept records counter, which check allowed and which authenticated.
// A counter at least maxCounterLag above the top is the sender's jump to
// its clock: the current ring becomes prev, and everything below prev's
// base turns too old.
func (w *replayWindow) accept(counter uint64) {
	switch {
	case counter < w.base:
		w.prev.accept(counter)
	case w.started && counter > w.cur.top && counter-w.cur.top >= uint64(maxCounterLag):
		w.prev, w.floor, w.base = w.cur, w.base, counter
		w.cur = replayRing{top: counter}
		w.cur.accept(counter)
	default:
		w.cur.accept(counter)
	}
	w.started = true
}

func (r *replayRing) check(counter uint64) error {
	if counter > r.top {
		return nil
	}
	if r.top-counter >= replayWindowSize {
		return errTooOld
	}
	block := (counter / replayBlockBits) % replayBlocks
	if r.bitmap[block]&(1<<(counter%replayBlockBits)) != 0 {
		return errReplayed
	}
	return nil
}

func (r *replayRing) accept(counter uint64) {
	if counter > r.top {
		// Clear the blocks the window moves onto: they held counters a
		// whole ring ago.
		from, to := r.top/replayBlockBits, counter/replayBlockBits
		for b, n := from+1, uint64(0); b <= to && n < replayBlocks; b, n = b+1, n+1 {
			r.bitmap[b%replayBlocks] = 0
		}
		r.top = counter
	}
	r.bitmap[(counter/replayBlockBits)%replayBlocks] |= 1 << (counter % replayBlockBits)
}

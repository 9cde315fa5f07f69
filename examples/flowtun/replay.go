package main

import "errors"

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

var (
	errReplayed = errors.New("replayed datagram: its counter was seen already")
	errTooOld   = errors.New("datagram too old: its counter is behind the replay window")
)

// replayWindow remembers which counters of the last replayWindowSize
// were received. The zero value is ready: it has seen nothing.
//
// check runs before decryption, so that replays cost no decryption;
// accept runs only after the datagram authenticated, so that forged
// counters never move the window. It is not safe for concurrent use: one
// goroutine (the network reader) owns it. It does not allocate.
type replayWindow struct {
	top    uint64 // the highest counter accepted
	bitmap [replayBlocks]uint64
}

// check says whether counter may be accepted: errTooOld when it is
// replayWindowSize or more behind the highest counter accepted,
// errReplayed when it was accepted already.
func (w *replayWindow) check(counter uint64) error {
	if counter > w.top {
		return nil
	}
	if w.top-counter >= replayWindowSize {
		return errTooOld
	}
	block := (counter / replayBlockBits) % replayBlocks
	if w.bitmap[block]&(1<<(counter%replayBlockBits)) != 0 {
		return errReplayed
	}
	return nil
}

// accept records counter, which check allowed and which authenticated.
func (w *replayWindow) accept(counter uint64) {
	if counter > w.top {
		// Clear the blocks the window moves onto: they held counters a
		// whole ring ago.
		from, to := w.top/replayBlockBits, counter/replayBlockBits
		for b, n := from+1, uint64(0); b <= to && n < replayBlocks; b, n = b+1, n+1 {
			w.bitmap[b%replayBlocks] = 0
		}
		w.top = counter
	}
	w.bitmap[(counter/replayBlockBits)%replayBlocks] |= 1 << (counter % replayBlockBits)
}

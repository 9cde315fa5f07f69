package conn

import (
	"sync/atomic"
	"time"
)

// DefaultPathTimeout is how long a spread pair stays known open after the
// peer's last datagram arrived on it, when Config.PathTimeout is zero.
// Stateful firewalls forget an idle UDP pair after their UDP timeout:
// Linux conntrack's nf_conntrack_udp_timeout is 30 s, many home routers
// use 30 to 60 s (RFC 4787 REQ-5 asks for 2 min, few follow it). 20 s
// stays below the shortest of them with room for the path's delay and
// the clock's coarse ticks.
const DefaultPathTimeout = 20 * time.Second

const (
	// maxPathBits bounds the slots of a peer's path state: 2^12 slots of
	// 8 bytes, 32 KiB, for the widest pair space.
	maxPathBits = 12
	// tickShift makes the path clock's tick 2^27 ns, about 134 ms: coarse
	// enough for a 32-bit arrival time to last 18 years, fine enough for
	// a timeout of seconds.
	tickShift = 27
	// probeTicks is the least time between two probe copies on one slot:
	// 8 ticks, 1.07 s. A flow's first datagram sends a probe at once;
	// if that copy is lost, the next one goes a second later, as TCP
	// retransmits its first SYN after 1 s (RFC 6298), and a flow that
	// waits costs its peer at most one extra datagram a second.
	probeTicks = 8
)

// A slot packs, in one uint64 so one atomic load reads it whole:
//
//	bits 63-32  arrival tick + 1 of the peer's last datagram on the pair (0: none)
//	bit  31     a probe was sent
//	bits 30-12  tick of the last probe, modulo 2^19 (19.5 hours)
//	bits 11-0   tag: the pair's hash bits beyond the slot index
const (
	slotArrivalShift = 32
	slotProbed       = 1 << 31
	slotProbeShift   = 12
	slotProbeMask    = 1<<19 - 1
	slotTagMask      = 1<<12 - 1
)

// pathState is what the conn knows of the paths to one spreading peer:
// per pair of buckets, when the peer's traffic last arrived on its spread
// pair, and when we last sent a probe copy on it. The slots are allocated
// when learning starts (the first Observe or probe for the peer), so a
// peer that never needs them costs only this struct.
type pathState struct {
	slots atomic.Pointer[[]atomic.Uint64]
	// A flow's slot is hash >> indexShift; with a pair space wider than
	// the slots, (hash >> tagShift) & tagMask is its tag, so that a slot
	// never vouches for another pair that shares it.
	indexShift, tagShift uint8
	tagMask              uint64
}

// newPathState returns the path state of a peer whose range has 2^peerBits
// addresses, when ours has 2^localBits (0 without a Prefix). The flow's
// pair is fixed by the top max(localBits, peerBits) bits of its hash.
func newPathState(localBits, peerBits int) *pathState {
	wide := max(localBits, peerBits)
	bits := min(wide, maxPathBits)
	return &pathState{
		indexShift: uint8(64 - bits),
		tagShift:   uint8(64 - wide),
		tagMask:    1<<(wide-bits) - 1,
	}
}

// pathSlotBytes is the memory of a peer's slots once learning starts.
func (ps *pathState) pathSlotBytes() int { return 8 << (64 - ps.indexShift) }

// slotOf returns the slot and tag of hash h, allocating the slots if
// alloc and there are none yet; nil if there are none.
func (ps *pathState) slotOf(h uint64, alloc bool) (*atomic.Uint64, uint64) {
	s := ps.slots.Load()
	if s == nil {
		if !alloc {
			return nil, 0
		}
		fresh := make([]atomic.Uint64, 1<<(64-ps.indexShift))
		if !ps.slots.CompareAndSwap(nil, &fresh) {
			s = ps.slots.Load()
		} else {
			s = &fresh
		}
	}
	return &(*s)[h>>ps.indexShift], (h >> ps.tagShift) & ps.tagMask
}

// fresh reports whether slot value v vouches for the pair with tag:
// the peer's traffic for it arrived within timeout ticks before now (or
// after now: the receive clock may be a little ahead of a sender's).
func fresh(v, tag uint64, now, timeout uint32) bool {
	arrived := uint32(v >> slotArrivalShift)
	return arrived != 0 && v&slotTagMask == tag && int32(now-arrived) < int32(timeout)
}

// tickRecvClock brings the receive clock, which Observe reads, up to the
// path clock: a read of the time per batch, and a store only when the
// tick changes, so readers on several cores rarely write the line.
func (c *FlowSpreadConn) tickRecvClock() {
	if now := c.pathClock(); c.recvClock.Load() != now {
		c.recvClock.Store(now)
	}
}

// pathClock returns the path clock's tick now, plus one, so that a tick
// is never 0 (which a slot reads as "never").
func (c *FlowSpreadConn) pathClock() uint32 {
	return uint32(uint64(time.Since(c.epoch))>>tickShift) + 1
}

// Observe tells the conn that a datagram it delivered was authentic and
// carried the inner flow f: info is what the read returned for it, f the
// [FlowSpreadConn.Classify] of its plaintext. Only the VPN can tell an
// authentic datagram from a forged one, so only what it observes changes
// where the conn sends: when the datagram came on the spread pair of f
// (the peer's range address for f to ours), the pair is open, and the
// flow's datagrams to the peer go on it from now on (see [Peer.Open]),
// until none of the peer's has arrived on it for Config.PathTimeout.
// A datagram on any other pair (the canonical one, another flow's)
// changes nothing, so an authentic datagram that an attacker replays
// from another address cannot move a flow.
//
// Call it after authenticating, for every datagram or at least once a
// second per flow, and before the next read: it takes the time from the
// read. It is safe for concurrent use and does not allocate, except once
// per peer when learning starts (see "Paths through stateful firewalls"
// in the package doc).
func (c *FlowSpreadConn) Observe(info *RecvInfo, f Flow) {
	if !f.Valid || info.OuterSrc == info.Peer {
		return // unclassified, or the canonical pair
	}
	t, i := info.from.table, info.from.index
	if t == nil { // a RecvInfo the caller made: find the peer
		t = c.peers.Load()
		i = t.byCanonical(info.Peer).index
		if i < 0 {
			return
		}
	}
	e := &t.peers[i]
	if e.paths == nil || info.OuterSrc.Port() != e.port { // not spread, or Open
		return
	}
	hi, lo := halves(info.OuterSrc.Addr().As16())
	if e.contiguous() {
		if hi != e.firstHi || lo != e.firstLo+f.Hash>>(64-e.rangeBits) {
			return
		}
	} else if wHi, wLo := e.mapper.AddrWords(e.mapper.Bucket(f.Hash)); hi != wHi || lo != wLo {
		return
	}
	if c.local != nil {
		wHi, wLo := c.local.AddrWords(c.local.Bucket(f.Hash))
		if dHi, dLo := halves(info.OuterDst.Addr().As16()); dHi != wHi || dLo != wLo {
			return
		}
	}
	c.learn(e.paths, f.Hash, c.recvClock.Load())
}

// learn marks the slot of hash h open at tick now.
func (c *FlowSpreadConn) learn(ps *pathState, h uint64, now uint32) {
	slot, tag := ps.slotOf(h, true)
	for {
		v := slot.Load()
		if uint32(v>>slotArrivalShift) == now && v&slotTagMask == tag {
			return // already marked this tick: no write, no shared cache line
		}
		nv := uint64(now)<<slotArrivalShift | tag
		if v&slotTagMask == tag {
			nv |= v & (slotProbed | slotProbeMask<<slotProbeShift)
		}
		if slot.CompareAndSwap(v, nv) {
			if !fresh(v, tag, now, c.pathTimeout) {
				c.stats.pathsOpened.Add(1)
			}
			return
		}
	}
}

// Ways a datagram of a classified flow to a spreading peer goes out.
const (
	pathSpread  uint8 = iota // on its spread pair
	pathWaiting              // on the canonical pair
	pathProbe                // on the canonical pair, after a probe copy on the spread pair
)

// pathFor decides how a datagram of flow hash h to the peer of route r
// goes out. now reads the send clock once per call of the caller.
func (c *FlowSpreadConn) pathFor(r *peerRoute, h uint64, memo *peerMemo) uint8 {
	if r.open || r.paths == nil {
		return pathSpread
	}
	if memo.now == 0 {
		memo.now = c.pathClock()
	}
	now := memo.now
	slot, tag := r.paths.slotOf(h, c.probe)
	if slot == nil {
		return pathWaiting // no slots: nothing learned, and no probes
	}
	for {
		v := slot.Load()
		if fresh(v, tag, now, c.pathTimeout) {
			return pathSpread
		}
		if !c.probe {
			return pathWaiting
		}
		if v&slotProbed != 0 && v&slotTagMask == tag &&
			(now-uint32(v>>slotProbeShift))&slotProbeMask < probeTicks {
			return pathWaiting
		}
		if v&slotTagMask != tag && fresh(v, v&slotTagMask, now, c.pathTimeout) {
			// The slot vouches for another pair that shares it: keep
			// that one open; this one waits until the other expires or
			// the peer's traffic for this one arrives (learn).
			return pathWaiting
		}
		// Claim the probe, keeping this pair's arrival time.
		nv := uint64(slotProbed) | uint64(now&slotProbeMask)<<slotProbeShift | tag
		if v&slotTagMask == tag {
			nv |= v &^ (slotProbed | slotProbeMask<<slotProbeShift)
		}
		if slot.CompareAndSwap(v, nv) {
			return pathProbe
		}
	}
}

package conn

import (
	"net/netip"
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
//	bits 30-18  tick of the last probe, modulo 2^13 (18 minutes; an older
//	            probe that aliases a recent one delays the next by a second)
//	bits 17-0   tag: the pair's key bits beyond the slot index
const (
	slotArrivalShift = 32
	slotProbed       = 1 << 31
	slotProbeShift   = 18
	slotProbeMask    = 1<<13 - 1
	slotTagMask      = 1<<18 - 1
)

// pathState is what the conn knows of the paths to one spreading peer:
// per pair of endpoints (address and port at each end), when the peer's
// traffic last arrived on it, and when we last sent a probe copy on it.
// The slots are allocated when learning starts (the first Observe or
// probe for the peer), so a peer that never needs them costs only this
// struct.
type pathState struct {
	slots atomic.Pointer[[]atomic.Uint64]
	// ports holds, for a peer whose ports a NAT translates, the port
	// each slot's flow last arrived from; allocated with the first one.
	ports atomic.Pointer[[]atomic.Uint32]
	// A flow's pair key is the top addrBits of its hash, then portBits
	// from bit 31 down (see portIndex): addrShift is 64 - addrBits,
	// portShift 32 - portBits. Its slot is key >> tagBits, and with a
	// pair space wider than the slots, key & tagMask is its tag, so that
	// a slot never vouches for another pair that shares it.
	addrShift, portBits, portShift, tagBits uint8
	tagMask                                 uint64
	learnPorts                              bool
}

// newPathState returns the path state of a peer whose range is theirs,
// when ours is ours. A flow's pair is fixed by the top max of the two
// address bits of its hash, and by max of the two port bits from bit 31
// down. learnPorts keeps the port each flow arrives from, for a peer
// whose ports a NAT translates.
func newPathState(ours, theirs rangeBitsPair, learnPorts bool) *pathState {
	addrs, ports := max(ours.addrs, theirs.addrs), max(ours.ports, theirs.ports)
	wide := addrs + ports
	bits := min(wide, maxPathBits)
	return &pathState{
		addrShift:  uint8(64 - addrs),
		portBits:   uint8(ports),
		portShift:  uint8(32 - ports),
		tagBits:    uint8(wide - bits),
		tagMask:    1<<(wide-bits) - 1,
		learnPorts: learnPorts,
	}
}

// key returns the pair key of hash h. A shift by 64 (or 32) gives 0.
func (ps *pathState) key(h uint64) uint64 {
	return h>>ps.addrShift<<ps.portBits | uint64(uint32(h)>>ps.portShift)
}

// portIndex returns the port of a range of 2^(32-shift) ports that hash h
// picks: bits 31 down of h, apart from the top bits that pick addresses
// (at most maxBits of them).
func portIndex(h uint64, shift uint8) uint16 { return uint16(uint32(h) >> shift) }

// pathSlotBytes is the memory of a peer's slots once learning starts.
func (ps *pathState) pathSlotBytes() int {
	n := 8 << ps.slotBits()
	if ps.learnPorts {
		n += 4 << ps.slotBits()
	}
	return n
}

// slotBits returns log2 of the number of slots.
func (ps *pathState) slotBits() int {
	return int(64-ps.addrShift) + int(ps.portBits) - int(ps.tagBits)
}

// slotOf returns the slot and tag of hash h, allocating the slots if
// alloc and there are none yet; nil if there are none.
func (ps *pathState) slotOf(h uint64, alloc bool) (*atomic.Uint64, uint64) {
	s := ps.slots.Load()
	if s == nil {
		if !alloc {
			return nil, 0
		}
		fresh := make([]atomic.Uint64, 1<<ps.slotBits())
		if !ps.slots.CompareAndSwap(nil, &fresh) {
			s = ps.slots.Load()
		} else {
			s = &fresh
		}
	}
	k := ps.key(h)
	return &(*s)[k>>ps.tagBits], k & ps.tagMask
}

// learnedPort returns the port the flow of hash h last arrived from, for
// a peer whose ports are learned, or 0.
func (ps *pathState) learnedPort(h uint64) uint16 {
	p := ps.ports.Load()
	if p == nil {
		return 0
	}
	return uint16((*p)[ps.key(h)>>ps.tagBits].Load())
}

// setPort records that the flow of hash h arrived from port.
func (ps *pathState) setPort(h uint64, port uint16) {
	p := ps.ports.Load()
	if p == nil {
		fresh := make([]atomic.Uint32, 1<<ps.slotBits())
		if !ps.ports.CompareAndSwap(nil, &fresh) {
			p = ps.ports.Load()
		} else {
			p = &fresh
		}
	}
	if slot := &(*p)[ps.key(h)>>ps.tagBits]; slot.Load() != uint32(port) {
		slot.Store(uint32(port))
	}
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
	if e.paths == nil { // not spread, or Open
		return
	}
	if !e.onSpreadPair(info.OuterSrc, f.Hash) || !c.onOurEnd(info.OuterDst, f.Hash) {
		return
	}
	if e.translated {
		e.paths.setPort(f.Hash, info.OuterSrc.Port())
	}
	c.learn(e.paths, f.Hash, c.recvClock.Load())
}

// onSpreadPair reports whether src is the peer's end of the spread pair
// of flow hash h: the address of its range for h (its canonical address
// without a prefix), and the port of its range for h (any but the
// canonical one when a NAT translates them; the canonical one without
// ports).
func (e *peerEntry) onSpreadPair(src netip.AddrPort, h uint64) bool {
	port := src.Port()
	switch {
	case e.translated:
		if port == e.port {
			return false
		}
	case e.portBits != 0:
		if port != e.portFirst+portIndex(h, 32-e.portBits) {
			return false
		}
	case port != e.port:
		return false
	}
	hi, lo := halves(src.Addr().As16())
	switch {
	case e.mapper == nil:
		return src.Addr().As16() == e.ip.Unmap().As16()
	case e.contiguous():
		return hi == e.firstHi && lo == e.firstLo+h>>(64-e.rangeBits)
	}
	wHi, wLo := e.mapper.AddrWords(e.mapper.Bucket(h))
	return hi == wHi && lo == wLo
}

// onOurEnd reports whether dst is our end of the spread pair of flow
// hash h: the address of our range for h, and the port of our range for h
// (any address without a prefix, and the canonical port without ports).
func (c *FlowSpreadConn) onOurEnd(dst netip.AddrPort, h uint64) bool {
	if c.ports.Len() > 0 && dst.Port() != c.ports.First+portIndex(h, c.portShift) {
		return false
	}
	if c.local != nil {
		wHi, wLo := c.local.AddrWords(c.local.Bucket(h))
		if dHi, dLo := halves(dst.Addr().As16()); dHi != wHi || dLo != wLo {
			return false
		}
	}
	return true
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
	// A translated peer's ports are not known before its traffic
	// arrives: nothing to probe.
	probe := c.probe && !r.translated
	slot, tag := r.paths.slotOf(h, probe)
	if slot == nil {
		return pathWaiting // no slots: nothing learned, and no probes
	}
	for {
		v := slot.Load()
		if fresh(v, tag, now, c.pathTimeout) {
			return pathSpread
		}
		if !probe {
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

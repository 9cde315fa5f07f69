package wireguard

import (
	"encoding/binary"
	"net/netip"
	"sync/atomic"

	"github.com/flowspread/flowspread/conn"
	"github.com/flowspread/flowspread/flowaddr"
)

// receivedTable remembers, for each transport datagram the Bind's receive
// delivered to wireguard-go, what the conn's read said about it (the
// [conn.RecvInfo]) and its length, keyed by the address of the buffer's
// first byte: wireguard-go decrypts in place and writes the plaintext to
// the TUN from that same buffer, MessageTransportOffsetContent (16) bytes
// after its start (device/receive.go, RoutineSequentialReceiver).
//
// It is direct-mapped like [bufferTable], with the same per-slot seqlock,
// but a record is wider: one 64-byte slot, 4 MiB for the 2^16 slots,
// allocated with the Bind. Records are taken, so each serves one packet;
// a datagram that wireguard-go drops (it failed to authenticate, or was a
// replay) leaves its record until the slot is written again, and a record
// never matches a packet it was not made for (see [Bind.received]).
type receivedTable struct {
	gens  atomic.Uint32
	slots [1 << tableBits]receivedSlot
}

type receivedSlot struct {
	key atomic.Uintptr
	gen atomic.Uint32 // as in slot
	// peer is the Endpoint receive reported: its address is RecvInfo.Peer.
	peer atomic.Pointer[Endpoint]
	// src and dst are the outer addresses in 16-byte form.
	srcHi, srcLo, dstHi, dstLo atomic.Uint64
	// meta packs the ports, the datagram's length and the flags:
	// srcPort<<48 | dstPort<<32 | length<<8 | src4<<3 | dst4<<2 | ECN.
	meta atomic.Uint64
}

const (
	metaSrc4 = 1 << 3
	metaDst4 = 1 << 2
)

// store records the datagram of n bytes that the conn read as m, reported
// to wireguard-go as from ep, under key. It reports false when the slot
// was being written by another writer (the receive functions only).
func (t *receivedTable) store(key uintptr, ep *Endpoint, m *conn.Message) bool {
	s := &t.slots[slotOf(key)]
	for {
		g := s.gen.Load()
		if g == slotBusy {
			return false
		}
		if s.gen.CompareAndSwap(g, slotBusy) {
			break
		}
	}
	src, dst := m.OuterSrc.Addr(), m.OuterDst.Addr()
	src16, dst16 := src.As16(), dst.As16()
	meta := uint64(m.OuterSrc.Port())<<48 | uint64(m.OuterDst.Port())<<32 | uint64(m.N&0xffffff)<<8 | uint64(m.ECN&3)
	if src.Is4() {
		meta |= metaSrc4
	}
	if dst.Is4() {
		meta |= metaDst4
	}
	s.key.Store(key)
	s.peer.Store(ep)
	s.srcHi.Store(binary.BigEndian.Uint64(src16[:8]))
	s.srcLo.Store(binary.BigEndian.Uint64(src16[8:]))
	s.dstHi.Store(binary.BigEndian.Uint64(dst16[:8]))
	s.dstLo.Store(binary.BigEndian.Uint64(dst16[8:]))
	s.meta.Store(meta)
	for {
		g := t.gens.Add(1)
		if g != slotEmpty && g != slotBusy {
			s.gen.Store(g)
			return true
		}
	}
}

// forget drops key's record, if the slot holds it.
func (t *receivedTable) forget(key uintptr) {
	s := &t.slots[slotOf(key)]
	if gen := s.gen.Load(); gen != slotEmpty && gen != slotBusy && s.key.Load() == key {
		s.gen.CompareAndSwap(gen, slotEmpty)
	}
}

// take returns key's record and forgets it: of two lookups at most one
// gets it, and a record being written, replaced or already taken misses.
func (t *receivedTable) take(key uintptr) (info conn.RecvInfo, n int, ok bool) {
	if key == 0 {
		return info, 0, false
	}
	s := &t.slots[slotOf(key)]
	gen := s.gen.Load()
	if gen == slotEmpty || gen == slotBusy || s.key.Load() != key {
		return info, 0, false
	}
	ep := s.peer.Load()
	srcHi, srcLo, dstHi, dstLo := s.srcHi.Load(), s.srcLo.Load(), s.dstHi.Load(), s.dstLo.Load()
	meta := s.meta.Load()
	if !s.gen.CompareAndSwap(gen, slotEmpty) || ep == nil {
		return info, 0, false
	}
	info.Peer = ep.addr
	info.OuterSrc = netip.AddrPortFrom(addrOf(srcHi, srcLo, meta&metaSrc4 != 0), uint16(meta>>48))
	info.OuterDst = netip.AddrPortFrom(addrOf(dstHi, dstLo, meta&metaDst4 != 0), uint16(meta>>32))
	info.ECN = flowaddr.ECN(meta & 3)
	return info, int(meta>>8) & 0xffffff, true
}

// addrOf rebuilds an address that store split into two words; an IPv4
// address comes back unmapped, as the conn reported it. Zones are not
// kept: outer addresses of a spread pair are global.
func addrOf(hi, lo uint64, is4 bool) netip.Addr {
	var a [16]byte
	binary.BigEndian.PutUint64(a[:8], hi)
	binary.BigEndian.PutUint64(a[8:], lo)
	if is4 {
		return netip.AddrFrom16(a).Unmap()
	}
	return netip.AddrFrom16(a)
}

package conn

import (
	"encoding/binary"
	"sync/atomic"
	"time"

	"github.com/flowspread/flowspread/flowaddr"
)

// The raw receiver's IPv6 fragment reassembly (RFC 8200 section 4.5). The
// AnyIP backend gets reassembled datagrams from the kernel; the raw
// receiver sees the fragments themselves, so it puts them back together
// the way the kernel's net/ipv6/reassembly.c would. Nothing here needs
// Linux, so it is tested and fuzzed everywhere.

const (
	fragHeaderLen = 8 // RFC 8200 section 4.5
	protoFragment = 44

	// reasmEntries is how many datagrams are reassembled at once. Each
	// holds a buffer of reasmMaxLen bytes, allocated the first time it
	// is needed and kept: at most 64 x 64 KiB = 4 MiB per receiver, the
	// kernel's own default budget (net.ipv6.ip6frag_high_thresh).
	reasmEntries = 64
	// reasmMaxLen is the longest fragmentable part: the reassembled
	// packet's Payload Length is at most 65535 (RFC 8200 section 4.5).
	reasmMaxLen = 65535
	// reasmMaxFragments bounds the fragments of one datagram: a 65535-byte
	// datagram cut for the IPv6 minimum MTU of 1280 takes 54.
	reasmMaxFragments = 64
	// reasmTimeout is how long a datagram may take to arrive whole. RFC
	// 8200 allows up to 60 s; a sender's kernel sends all fragments of a
	// datagram back to back, so they arrive within milliseconds, and one
	// still incomplete after seconds has lost a fragment. A VPN's inner
	// transport has retransmitted long before 5 s (WireGuard's own
	// handshake retry is 5 s), and a short timeout frees the room that
	// lost or hostile fragments take.
	reasmTimeout = 5 * time.Second
)

// reasmKey identifies the datagram a fragment belongs to: RFC 8200's
// source, destination and Identification. (The next header is the same
// in every fragment of a datagram, and only UDP is reassembled.)
type reasmKey struct {
	src, dst [16]byte
	id       uint32
}

// fragRange is the part [off, end) of a datagram one fragment carried.
type fragRange struct{ off, end int32 }

type reasmEntry struct {
	key  reasmKey
	used bool
	// dead: the datagram was abandoned (overlap, malformed fragment);
	// RFC 5722 says its later fragments are dropped too, so the key is
	// kept, with no data, until it times out.
	dead  bool
	start time.Duration // when the first fragment arrived
	total int           // length of the fragmentable part; -1 until the last fragment
	have  int           // bytes received
	// firstECN is the ECN of the fragment at offset 0; ecnSeen has bit
	// 1<<ecn set for the ECN of every fragment.
	firstECN flowaddr.ECN
	ecnSeen  uint8
	nfrags   int
	frags    [reasmMaxFragments]fragRange
	buf      []byte // reasmMaxLen bytes once used; kept for the next datagram
}

// reassembler holds the datagrams being put back together. It is not safe
// for concurrent use (the raw receiver calls it under its lock), except
// for the counters, which may be read at any time.
type reassembler struct {
	entries []reasmEntry

	// fragmentsDropped counts fragments thrown away, reassembled the
	// datagrams completed.
	fragmentsDropped, reassembled atomic.Uint64
}

// newReassembler returns a reassembler for at most entries datagrams at
// once. It allocates no data buffer until a fragment needs one.
func newReassembler(entries int) *reassembler {
	return &reassembler{entries: make([]reasmEntry, entries)}
}

// fragVerdict is what add did with a fragment.
type fragVerdict uint8

const (
	fragHeld      fragVerdict = iota // kept until the rest arrives
	fragComplete                     // it completed a datagram
	fragDropped                      // it (and maybe its datagram) was thrown away and counted
	fragForeign                      // not a UDP fragment: not ours, left alone
	fragTruncated                    // the frame is shorter than its Payload Length
)

// add takes one IPv6 packet with a Fragment header right after the IPv6
// header: head holds both headers, data the fragment's data, captured the
// packet's length as read (headers included). When this fragment
// completes its datagram, add returns fragComplete and the datagram's
// fragmentable part (the UDP header and payload) with its ECN; the slice
// is valid until the next call. now is a monotonic clock reading.
//
// add copies what it keeps; it allocates only the first time an entry
// holds data. It never panics.
func (r *reassembler) add(head *[rawHeadLen]byte, data []byte, captured int, now time.Duration) (dgram []byte, ecn flowaddr.ECN, v fragVerdict) {
	if captured < rawHeadLen || head[6] != protoFragment {
		return nil, 0, fragTruncated
	}
	if head[40] != protoUDP {
		return nil, 0, fragForeign
	}
	payloadLen := int(binary.BigEndian.Uint16(head[4:]))
	fragLen := payloadLen - fragHeaderLen
	if fragLen < 0 || rawHeadLen+fragLen > captured || fragLen > len(data) {
		return nil, 0, fragTruncated
	}
	data = data[:fragLen]
	offField := binary.BigEndian.Uint16(head[42:])
	off, more := int(offField&^7), offField&1 != 0
	ecn = flowaddr.ECN(head[1]>>4) & 3
	if off == 0 && !more {
		// An atomic fragment (RFC 6946): a whole datagram.
		return data, ecn, fragComplete
	}
	end := off + fragLen
	if end > reasmMaxLen || (off == 0 && fragLen < udpHeaderLen) {
		// Past the largest payload, or a first fragment without the
		// whole UDP header (RFC 8200 section 4.5): this fragment only.
		r.fragmentsDropped.Add(1)
		return nil, 0, fragDropped
	}
	key := reasmKey{src: [16]byte(head[8:24]), dst: [16]byte(head[24:40]), id: binary.BigEndian.Uint32(head[44:])}
	e := r.find(key, now)
	if e == nil {
		e = r.newEntry(key, now)
	}
	if e.dead {
		r.fragmentsDropped.Add(1)
		return nil, 0, fragDropped
	}
	// The kernel abandons the whole datagram for an empty fragment, a
	// non-last fragment whose length is not a multiple of 8, and an end
	// that contradicts the last fragment's.
	switch {
	case fragLen == 0, more && fragLen%8 != 0:
		return r.abandon(e, 1)
	case !more && (e.total >= 0 && end != e.total || end < e.maxEnd()):
		return r.abandon(e, 1)
	case more && e.total >= 0 && end > e.total:
		return r.abandon(e, 1)
	}
	for _, f := range e.frags[:e.nfrags] {
		if int(f.off) == off && int(f.end) == end {
			// An exact duplicate, which the network may make: RFC 8200
			// lets it be dropped alone.
			r.fragmentsDropped.Add(1)
			return nil, 0, fragDropped
		}
		if off < int(f.end) && int(f.off) < end {
			return r.abandon(e, 1) // RFC 5722: overlaps void the datagram
		}
	}
	if e.nfrags == len(e.frags) {
		return r.abandon(e, 1)
	}
	if e.buf == nil {
		e.buf = make([]byte, reasmMaxLen)
	}
	copy(e.buf[off:end], data)
	e.frags[e.nfrags] = fragRange{int32(off), int32(end)}
	e.nfrags++
	e.have += fragLen
	e.ecnSeen |= 1 << ecn
	if off == 0 {
		e.firstECN = ecn
	}
	if !more {
		e.total = end
	}
	if e.total < 0 || e.have != e.total {
		return nil, 0, fragHeld
	}
	// No overlaps, so have == total means every byte is there.
	ecn, ok := reassembledECN(e.firstECN, e.ecnSeen)
	if !ok {
		return r.abandon(e, 0) // this fragment is among e's already
	}
	r.reassembled.Add(1)
	dgram = e.buf[:e.total]
	e.used = false
	return dgram, ecn, fragComplete
}

// reassembledECN is the ECN of a datagram put together from fragments
// with the ECN codepoints in seen (bit 1<<ecn each), as RFC 3168 section
// 5.3 and the kernel's ip_frag_ecn_table say: CE if any fragment had CE
// and all were ECN-capable; not ok (drop it) when Not-ECT mixes with
// ECN-capable codepoints; otherwise the first fragment's.
func reassembledECN(first flowaddr.ECN, seen uint8) (flowaddr.ECN, bool) {
	const notECT, ce = 1 << 0, 1 << 3
	switch {
	case seen&notECT != 0 && seen != notECT:
		return 0, false
	case seen&ce != 0:
		return 3, true
	}
	return first, true
}

func (e *reasmEntry) maxEnd() int {
	m := 0
	for _, f := range e.frags[:e.nfrags] {
		m = max(m, int(f.end))
	}
	return m
}

// find returns the live entry for key, or nil. An entry past its time is
// abandoned on the way.
func (r *reassembler) find(key reasmKey, now time.Duration) *reasmEntry {
	for i := range r.entries {
		e := &r.entries[i]
		if !e.used || e.key != key {
			continue
		}
		if now-e.start > reasmTimeout {
			r.free(e)
			return nil
		}
		return e
	}
	return nil
}

// newEntry starts an entry for key in a free slot: one unused, else one past
// its time, else the oldest abandoned one, else the oldest. Pushing out
// the oldest, rather than refusing the newest as the kernel does when
// full, keeps a few lost or hostile fragments from blocking every
// reassembly for the whole timeout: the fragments of a datagram arrive
// together, so the oldest entry is the least likely to complete.
func (r *reassembler) newEntry(key reasmKey, now time.Duration) *reasmEntry {
	var victim *reasmEntry
	better := func(e *reasmEntry) bool {
		switch {
		case victim == nil:
			return true
		case e.dead != victim.dead:
			return e.dead
		}
		return e.start < victim.start
	}
	for i := range r.entries {
		e := &r.entries[i]
		if e.used && now-e.start > reasmTimeout {
			r.free(e)
		}
		if !e.used {
			victim = e
			break
		}
		if better(e) {
			victim = e
		}
	}
	r.free(victim)
	*victim = reasmEntry{key: key, used: true, start: now, total: -1, buf: victim.buf}
	return victim
}

// abandon voids e's datagram: its fragments, and the extra ones not yet
// in it, are dropped and counted, and later fragments of it are dropped
// until it times out.
func (r *reassembler) abandon(e *reasmEntry, extra uint64) ([]byte, flowaddr.ECN, fragVerdict) {
	r.fragmentsDropped.Add(uint64(e.nfrags) + extra)
	e.nfrags, e.have, e.dead = 0, 0, true
	return nil, 0, fragDropped
}

// free drops what e holds (counted) and makes its slot unused.
func (r *reassembler) free(e *reasmEntry) {
	if e.used {
		r.fragmentsDropped.Add(uint64(e.nfrags))
	}
	e.used, e.dead, e.nfrags, e.have = false, false, 0, 0
}

// held reports how many entries are in use and how many fragment bytes
// they hold.
func (r *reassembler) held() (entries, bytes int) {
	for i := range r.entries {
		if e := &r.entries[i]; e.used {
			entries++
			bytes += e.have
		}
	}
	return entries, bytes
}

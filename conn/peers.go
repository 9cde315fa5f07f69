package conn

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"net/netip"

	"github.com/flowspread/flowspread/flowaddr"
)

// peerEntry is a validated [Peer] with what the hot paths need
// precomputed, packed into one 64-byte cache line: with thousands of
// peers the entry of a datagram's peer is usually not in the cache, and
// finding the peer should miss once, not once per field spread over the
// entry and its Mapper.
type peerEntry struct {
	addr   netip.AddrPort   // canonical, as configured
	mapper *flowaddr.Mapper // nil: the peer is not spread
	// firstHi, firstLo: the first address of a contiguous range, as two
	// big-endian halves; bucket b is first + b (flowaddr.LayoutContiguous),
	// so the range check needs no Mapper.
	firstHi, firstLo uint64
	scope            uint32 // interface index of a link-local address's zone
	rangeBits        uint8  // the range has 2^rangeBits addresses
	contiguous       bool
	// hostsOthers: peerTable.candidate names this peer for another peer's
	// canonical address (one in this peer's prefix, or in its block when
	// the prefix is the block's only one), so a source there may be that
	// peer's rather than this one's.
	hostsOthers bool
}

// peerRoute is what a send to a configured peer needs, kept in the
// canonical-address map itself: with thousands of peers the one probe
// that finds a destination peer usually misses the cache, and it should
// be the only miss, not the first of three (the map, the peer's entry,
// its Mapper).
type peerRoute struct {
	// firstHi, firstLo: with dst == routeContiguous, the first address
	// of the peer's range; bucket b's address is first + b.
	firstHi, firstLo uint64
	// paths: what we know of the spread pairs to the peer; nil when the
	// peer is not spread. open: Peer.Open, every pair is open.
	paths *pathState
	index int32  // in peerTable.peers, or -1: no such peer
	scope uint32 // interface index of a link-local address's zone
	shift uint8  // 64 - the range's bits: a hash's bucket is hash >> shift
	dst   uint8
	open  bool
}

// Kinds of peerRoute.dst: how a spread send finds the peer's address.
const (
	routeCanonical  = iota // the peer is not spread
	routeContiguous        // first + bucket
	routeMapper            // the peer entry's Mapper (the scattered layout)
)

// noRoute is the peerRoute of a destination that is not a peer.
var noRoute = peerRoute{index: -1}

// endpointKey is an address (v4 as v4-mapped, zone dropped) and a port: a
// packed map key, cheaper to hash than a netip.AddrPort.
type endpointKey [18]byte

func keyOf(ap netip.AddrPort) endpointKey {
	var k endpointKey
	a := ap.Addr().As16()
	copy(k[:16], a[:])
	k[16] = byte(ap.Port() >> 8)
	k[17] = byte(ap.Port())
	return k
}

// prefixGroup finds peers whose prefixes share one length by the masked
// source address.
type prefixGroup struct {
	bits     int
	byPrefix map[[16]byte]int32
}

// peerTable maps canonical addresses and outer source addresses to peers.
// It is built once by Listen and only read afterwards, so lookups need no
// lock; none allocates.
//
// Peer prefixes never overlap (Config.validate), so an address lies in at
// most one. To find it with one map probe whatever the mix of prefix
// lengths, the table indexes the blocks of blockBits bits (the shortest
// prefix length, at most 64) that hold a prefix: a block usually holds
// one, which names the only peer the source can belong to, and bySource
// checks that peer's range. Only a block that holds several (a /48 peer
// next to /56s of the same /48, say) is resolved by probing the groups of
// the lengths found in it.
type peerTable struct {
	peers []peerEntry
	// byAddr maps canonical addresses to peers, with what a send needs.
	byAddr    map[endpointKey]peerRoute
	blockMask uint64 // keeps the first blockBits bits of an address's first half
	// blocks gives the peer whose prefix is the only one in a block, or
	// -1-k when several are: shared[k] has a bit set for each length
	// among them (a spread prefix is at most a /127).
	blocks map[uint64]int32
	shared [][2]uint64
	groups []prefixGroup
	// learning: some spread peer is not Open, so reads keep the path
	// clock for Observe.
	learning bool
}

func newPeerTable(cfg *Config) (*peerTable, error) {
	t := &peerTable{
		peers:  make([]peerEntry, len(cfg.Peers)),
		byAddr: make(map[endpointKey]peerRoute, len(cfg.Peers)),
		blocks: make(map[uint64]int32),
	}
	blockBits := 64
	for i, p := range cfg.Peers {
		e := peerEntry{addr: p.Addr, scope: zoneIndex(p.Addr.Addr().Zone())}
		if p.Prefix.IsValid() {
			m, err := flowaddr.NewMapper(flowaddr.MapperConfig{
				Prefix: p.Prefix, Bits: p.Bits, Layout: cfg.Layout, PermKey: cfg.PermKey,
			})
			if err != nil {
				return nil, fmt.Errorf("conn: Peers[%d].Prefix %v: %w", i, p.Prefix, err)
			}
			e.mapper, e.rangeBits = m, uint8(m.Bits())
			if m.Layout() == flowaddr.LayoutContiguous {
				e.contiguous = true
				e.firstHi, e.firstLo = m.AddrWords(0)
			}
			g := t.group(p.Prefix.Bits())
			g.byPrefix[p.Prefix.Addr().As16()] = int32(i)
			blockBits = min(blockBits, p.Prefix.Bits())
		}
		t.peers[i] = e
		r := e.route(int32(i))
		if e.mapper != nil {
			localBits := 0
			if cfg.Prefix.IsValid() {
				localBits = cfg.Bits
			}
			r.paths, r.open = newPathState(localBits, int(e.rangeBits)), p.Open
			t.learning = t.learning || !p.Open
		}
		t.byAddr[keyOf(p.Addr)] = r
	}
	t.blockMask = ^uint64(0) << (64 - blockBits) // blockBits 0: a shift by 64 gives 0
	for i, p := range cfg.Peers {
		if !p.Prefix.IsValid() {
			continue
		}
		pfxHi, _ := halves(p.Prefix.Addr().As16())
		bk := pfxHi & t.blockMask
		b, ok := t.blocks[bk]
		switch {
		case !ok:
			t.blocks[bk] = int32(i)
			continue
		case b >= 0: // a second prefix in the block
			t.shared = append(t.shared, [2]uint64{})
			l := cfg.Peers[b].Prefix.Bits()
			t.shared[len(t.shared)-1][l/64] |= 1 << (l % 64)
			b = -int32(len(t.shared))
			t.blocks[bk] = b
		}
		l := p.Prefix.Bits()
		t.shared[-1-b][l/64] |= 1 << (l % 64)
	}
	for i := range t.peers {
		hi, lo := halves(t.peers[i].addr.Addr().As16())
		if j := t.candidate(hi, lo); j >= 0 && j != int32(i) {
			t.peers[j].hostsOthers = true
		}
	}
	return t, nil
}

// group returns the group of prefixes of length bits, adding it if there
// is none.
func (t *peerTable) group(bits int) *prefixGroup {
	if g := t.groupOf(bits); g != nil {
		return g
	}
	t.groups = append(t.groups, prefixGroup{bits: bits, byPrefix: make(map[[16]byte]int32)})
	return &t.groups[len(t.groups)-1]
}

// groupOf returns the group of prefixes of length bits, or nil.
func (t *peerTable) groupOf(bits int) *prefixGroup {
	for i := range t.groups {
		if t.groups[i].bits == bits {
			return &t.groups[i]
		}
	}
	return nil
}

// route returns what a send to peer i, whose entry e is, needs.
func (e *peerEntry) route(i int32) peerRoute {
	r := peerRoute{index: i, scope: e.scope}
	switch {
	case e.mapper == nil:
		r.dst = routeCanonical
	case e.contiguous:
		r.dst, r.firstHi, r.firstLo, r.shift = routeContiguous, e.firstHi, e.firstLo, 64-e.rangeBits
	default:
		r.dst = routeMapper
	}
	return r
}

// byCanonical returns the route to the peer whose canonical address is
// ap, or noRoute.
func (t *peerTable) byCanonical(ap netip.AddrPort) peerRoute {
	if r, ok := t.byAddr[keyOf(ap)]; ok {
		return r
	}
	return noRoute
}

// bySource returns the index of the peer that an outer source address
// belongs to, or -1: the peer's canonical address, or (spread) an address
// of the peer's spread range with the peer's port.
func (t *peerTable) bySource(src netip.AddrPort) (peer int32, spread bool) {
	hi, lo := halves(src.Addr().As16())
	port := src.Port()
	i := t.candidate(hi, lo)
	if i >= 0 {
		p := &t.peers[i]
		if p.addr.Port() == port && p.addr.Addr().As16() == src.Addr().As16() {
			return i, false
		}
		if !p.hostsOthers {
			// No other peer's canonical address lies in i's block: the
			// canonical map cannot match, skip its probe.
			return t.spreadFrom(i, hi, lo, port)
		}
	}
	if r, ok := t.byAddr[keyOf(src)]; ok {
		return r.index, false
	}
	if i < 0 {
		return -1, false
	}
	return t.spreadFrom(i, hi, lo, port)
}

// spreadFrom returns (i, true) if a datagram from the address hi, lo and
// port comes from peer i's spread range with i's port, else -1.
func (t *peerTable) spreadFrom(i int32, hi, lo uint64, port uint16) (int32, bool) {
	p := &t.peers[i]
	if p.addr.Port() != port {
		return -1, false
	}
	if p.contiguous {
		dLo, borrow := bits.Sub64(lo, p.firstLo, 0)
		dHi, _ := bits.Sub64(hi, p.firstHi, borrow)
		if dHi != 0 || dLo>>p.rangeBits != 0 {
			return -1, false
		}
		return i, true
	}
	var a [16]byte
	binary.BigEndian.PutUint64(a[:8], hi)
	binary.BigEndian.PutUint64(a[8:], lo)
	if _, ok := p.mapper.BucketOf(a); !ok {
		return -1, false
	}
	return i, true
}

// candidate returns the only peer whose spread range may hold the address
// hi, lo, or -1: the peer whose prefix is the only one in the address's
// block, or in a block of several, the one whose prefix holds it. The
// caller checks the range itself, which lies in the prefix.
func (t *peerTable) candidate(hi, lo uint64) int32 {
	if len(t.blocks) == 0 {
		return -1
	}
	b, ok := t.blocks[hi&t.blockMask]
	if !ok {
		return -1
	}
	if b >= 0 {
		return b
	}
	for w, set := range t.shared[-1-b] {
		for set != 0 {
			l := w*64 + bits.TrailingZeros64(set)
			set &= set - 1
			var a [16]byte
			binary.BigEndian.PutUint64(a[:8], hi)
			binary.BigEndian.PutUint64(a[8:], lo)
			if i, ok := t.groupOf(l).byPrefix[maskBits(a, l)]; ok {
				return i
			}
		}
	}
	return -1
}

// halves returns a's two big-endian halves.
func halves(a [16]byte) (hi, lo uint64) {
	return binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(a[8:])
}

// maskBits keeps the first bits bits of a.
func maskBits(a [16]byte, bits int) [16]byte {
	var m [16]byte
	full := bits / 8
	copy(m[:full], a[:full])
	if rem := bits % 8; rem != 0 {
		m[full] = a[full] & (0xff << (8 - rem))
	}
	return m
}

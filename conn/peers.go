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
	ip     netip.Addr       // the canonical address, as configured (see addr)
	mapper *flowaddr.Mapper // nil: the peer's range has no addresses
	// paths is the spreading peer's path state, nil when it is not
	// spread or is Open (it learns nothing). A new peer table keeps the
	// pointer of a peer whose Addr and Range stay, so what was learned
	// survives other peers' changes.
	paths *pathState
	// firstHi, firstLo: the first address of a contiguous range, as two
	// big-endian halves; bucket b is first + b (flowaddr.LayoutContiguous),
	// so the range check needs no Mapper.
	firstHi, firstLo uint64
	port             uint16
	// portFirst, portBits: the peer's port range, 2^portBits ports from
	// portFirst; portBits 0: none. translated: a NAT rewrites them
	// (PortRange.Translated), so any port is the peer's.
	portFirst uint16
	// rangeBits: a contiguous range has 2^rangeBits addresses; 0 for a
	// scattered range or none (a range has at least 2 addresses), so the
	// entry needs no separate flag.
	rangeBits  uint8
	portBits   uint8
	translated bool
	// hostsOthers: peerTable.candidate names this peer for another peer's
	// canonical address (one in this peer's prefix, or in its block when
	// the prefix is the block's only one), so a source there may be that
	// peer's rather than this one's.
	hostsOthers bool
}

// addr returns the peer's canonical address and port, as configured.
func (e *peerEntry) addr() netip.AddrPort { return netip.AddrPortFrom(e.ip, e.port) }

// contiguous reports whether the peer is spread over a contiguous range.
func (e *peerEntry) contiguous() bool { return e.rangeBits != 0 }

// spread reports whether the peer has a range of addresses or ports.
func (e *peerEntry) spread() bool { return e.mapper != nil || e.portBits != 0 }

// fromPort reports whether a datagram from port comes from a port of the
// peer's range: its port range, or its canonical port when it spreads
// over addresses alone.
func (e *peerEntry) fromPort(port uint16) bool {
	switch {
	case e.translated:
		return true
	case e.portBits == 0:
		return port == e.port
	}
	return port-e.portFirst < 1<<e.portBits && port >= e.portFirst
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
	// paths: what we know of the spread pairs to the peer (the entry's
	// paths); nil when the peer is not spread. open: Peer.Open, every
	// pair is open.
	paths *pathState
	index int32  // in peerTable.peers, or -1: no such peer
	scope uint32 // interface index of a link-local address's zone
	// portFirst, portBits: the peer's port range (portBits 0: none);
	// translated: its ports are learned, not computed.
	portFirst  uint16
	shift      uint8 // 64 - the range's bits: a hash's bucket is hash >> shift
	dst        uint8
	portBits   uint8
	open       bool
	translated bool
}

// Kinds of peerRoute.dst: how a spread send finds the peer's address.
const (
	routeCanonical  = iota // the peer's range has no addresses
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
// A table is never changed once built: Listen builds the first, and
// SetPeer and RemovePeer build a new one and swap it in, so lookups need
// no lock; none allocates.
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
	// list holds the validated peers the table was built from, in the
	// order of peers.
	list  []Peer
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
	// hosts finds peers that spread over ports alone by their canonical
	// address (As16 of the unmapped address): their sources are not in
	// any prefix.
	hosts map[[16]byte]int32
	// learning: some spread peer is not Open, so reads keep the path
	// clock for Observe.
	learning bool
}

// newPeerTable builds the table of cfg's validated peers.
func newPeerTable(cfg *Config) (*peerTable, error) {
	return buildPeerTable(cfg.Peers, cfg.Layout, cfg.PermKey, localBits(cfg), nil)
}

// initPeers builds the conn's first peer table, from cfg's validated peers.
func (c *FlowSpreadConn) initPeers(cfg *Config) error {
	t, err := newPeerTable(cfg)
	if err != nil {
		return err
	}
	c.peers.Store(t)
	return nil
}

// localBits returns the address and port bits of our own range: how
// many of each a flow's hash chooses from.
func localBits(cfg *Config) rangeBitsPair {
	var b rangeBitsPair
	if cfg.Range.Prefix.IsValid() {
		b.addrs = cfg.Range.Bits
	}
	b.ports = cfg.Range.Ports.Bits
	return b
}

// rangeBitsPair is the size of a range: 2^addrs addresses (0: none)
// and 2^ports ports (0: none).
type rangeBitsPair struct{ addrs, ports int }

// buildPeerTable builds the table of validated peers, whose prefixes are
// laid out as layout and permKey say, for a conn whose own range is ours.
// A peer that old has with the same Addr and Range keeps its Mapper and
// path state.
func buildPeerTable(peers []Peer, layout flowaddr.Layout, permKey [16]byte, ours rangeBitsPair, old *peerTable) (*peerTable, error) {
	t := &peerTable{
		list:   peers,
		peers:  make([]peerEntry, len(peers)),
		byAddr: make(map[endpointKey]peerRoute, len(peers)),
		blocks: make(map[uint64]int32),
	}
	blockBits := 64
	for i, p := range peers {
		e := peerEntry{ip: p.Addr.Addr(), port: p.Addr.Port()}
		pr := p.Range.Ports
		if pr.Len() > 0 {
			e.portFirst, e.portBits, e.translated = pr.First, uint8(pr.Bits), pr.Translated
		}
		prev := old.same(p)
		if prev != nil {
			e.mapper, e.paths = prev.mapper, prev.paths
		}
		if pfx := p.Range.Prefix; pfx.IsValid() {
			if prev == nil {
				m, err := flowaddr.NewMapper(flowaddr.MapperConfig{
					Prefix: pfx, Bits: p.Range.Bits, Layout: layout, PermKey: permKey,
				})
				if err != nil {
					return nil, fmt.Errorf("peer %v: Range.Prefix %v: %w", p.Addr, pfx, err)
				}
				e.mapper = m
			}
			if e.mapper.Layout() == flowaddr.LayoutContiguous {
				e.rangeBits = uint8(e.mapper.Bits())
				e.firstHi, e.firstLo = e.mapper.AddrWords(0)
			}
			g := t.group(pfx.Bits())
			g.byPrefix[pfx.Addr().As16()] = int32(i)
			blockBits = min(blockBits, pfx.Bits())
		} else if e.portBits != 0 {
			if t.hosts == nil {
				t.hosts = make(map[[16]byte]int32)
			}
			t.hosts[p.Addr.Addr().Unmap().As16()] = int32(i)
		}
		switch {
		case !e.spread() || p.Open:
			e.paths = nil
		case e.paths == nil:
			theirs := rangeBitsPair{ports: pr.Bits}
			if e.mapper != nil {
				theirs.addrs = e.mapper.Bits()
			}
			e.paths = newPathState(ours, theirs, pr.Translated)
		}
		t.peers[i] = e
		r := e.route(int32(i))
		if e.spread() {
			r.open = p.Open
			t.learning = t.learning || !p.Open
		}
		t.byAddr[keyOf(p.Addr)] = r
	}
	t.blockMask = ^uint64(0) << (64 - blockBits) // blockBits 0: a shift by 64 gives 0
	for i, p := range peers {
		if !p.Range.Prefix.IsValid() {
			continue
		}
		pfxHi, _ := halves(p.Range.Prefix.Addr().As16())
		bk := pfxHi & t.blockMask
		b, ok := t.blocks[bk]
		switch {
		case !ok:
			t.blocks[bk] = int32(i)
			continue
		case b >= 0: // a second prefix in the block
			t.shared = append(t.shared, [2]uint64{})
			l := peers[b].Range.Prefix.Bits()
			t.shared[len(t.shared)-1][l/64] |= 1 << (l % 64)
			b = -int32(len(t.shared))
			t.blocks[bk] = b
		}
		l := p.Range.Prefix.Bits()
		t.shared[-1-b][l/64] |= 1 << (l % 64)
	}
	for i := range t.peers {
		hi, lo := halves(t.peers[i].ip.As16())
		if j := t.candidate(hi, lo); j >= 0 && j != int32(i) {
			t.peers[j].hostsOthers = true
		}
	}
	return t, nil
}

// same returns the entry of the peer that has p's Addr and Range in t,
// or nil: one whose Mapper and path state still hold for p. t may
// be nil.
func (t *peerTable) same(p Peer) *peerEntry {
	if t == nil {
		return nil
	}
	r, ok := t.byAddr[keyOf(p.Addr)]
	if !ok {
		return nil
	}
	if q := t.list[r.index]; q.Addr != p.Addr || q.Range != p.Range {
		return nil
	}
	return &t.peers[r.index]
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
	r := peerRoute{index: i, scope: zoneIndex(e.ip.Zone()), paths: e.paths,
		portFirst: e.portFirst, portBits: e.portBits, translated: e.translated}
	switch {
	case e.mapper == nil:
		r.dst = routeCanonical
	case e.contiguous():
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
// belongs to, or -1: the peer's canonical address and port, or (spread)
// an address and port of the peer's range.
func (t *peerTable) bySource(src netip.AddrPort) (peer int32, spread bool) {
	hi, lo := halves(src.Addr().As16())
	port := src.Port()
	i := t.candidate(hi, lo)
	if i >= 0 {
		p := &t.peers[i]
		if p.port == port && p.ip.As16() == src.Addr().As16() {
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
	if t.hosts != nil {
		if j, ok := t.hosts[src.Addr().As16()]; ok && t.peers[j].fromPort(port) {
			return j, true
		}
	}
	if i < 0 {
		return -1, false
	}
	return t.spreadFrom(i, hi, lo, port)
}

// spreadFrom returns (i, true) if a datagram from the address hi, lo and
// port comes from peer i's range, else -1.
func (t *peerTable) spreadFrom(i int32, hi, lo uint64, port uint16) (int32, bool) {
	p := &t.peers[i]
	if !p.fromPort(port) {
		return -1, false
	}
	if p.contiguous() {
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

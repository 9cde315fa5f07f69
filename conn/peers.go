package conn

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"net/netip"

	"github.com/flowspread/flowspread/flowaddr"
)

// peerEntry is a validated [Peer] with what the hot paths need precomputed.
type peerEntry struct {
	addr   netip.AddrPort // canonical, as configured
	key    endpointKey    // keyOf(addr)
	port   uint16
	scope  uint32 // interface index of a link-local address's zone
	prefix netip.Prefix
	mapper *flowaddr.Mapper // nil: the peer is not spread
	// hostsOthers: another peer's canonical address lies in prefix, so a
	// source in prefix may be that peer's rather than this one's.
	hostsOthers bool
}

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

// prefixBlock describes one block of the address space at the table's
// block length: the peer prefixes that lie in it.
type prefixBlock struct {
	// peer is the only peer whose prefix lies in the block, or -1 when
	// several do; then lengths says which groups to probe.
	peer    int32
	lengths [2]uint64 // bit L: a prefix of length L lies in the block (a spread prefix is at most a /127)
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
// most one. To find it in one map probe whatever the mix of prefix
// lengths, the table indexes the blocks of blockBits bits (the shortest
// prefix length, at most 64) that hold a prefix: a block usually holds
// one, which names the peer. Only a block that holds several (a /48 peer
// next to /56s of the same /48, say) is resolved by probing the groups of
// the lengths found in it.
type peerTable struct {
	peers     []peerEntry
	byAddr    map[endpointKey]int32
	blockMask uint64 // the first blockBits bits of an address's first 8 bytes
	blocks    map[uint64]prefixBlock
	groups    []prefixGroup
}

func newPeerTable(cfg *Config) (*peerTable, error) {
	t := &peerTable{
		peers:  make([]peerEntry, len(cfg.Peers)),
		byAddr: make(map[endpointKey]int32, len(cfg.Peers)),
		blocks: make(map[uint64]prefixBlock),
	}
	blockBits := 64
	for i, p := range cfg.Peers {
		e := peerEntry{addr: p.Addr, key: keyOf(p.Addr), port: p.Addr.Port(), prefix: p.Prefix, scope: zoneIndex(p.Addr.Addr().Zone())}
		if p.Prefix.IsValid() {
			m, err := flowaddr.NewMapper(flowaddr.MapperConfig{
				Prefix: p.Prefix, Bits: p.Bits, Layout: cfg.Layout, PermKey: cfg.PermKey,
			})
			if err != nil {
				return nil, fmt.Errorf("conn: Peers[%d].Prefix %v: %w", i, p.Prefix, err)
			}
			e.mapper = m
			g := t.group(p.Prefix.Bits())
			g.byPrefix[p.Prefix.Addr().As16()] = int32(i)
			blockBits = min(blockBits, p.Prefix.Bits())
		}
		t.peers[i] = e
		t.byAddr[e.key] = int32(i)
	}
	t.blockMask = ^uint64(0) << (64 - blockBits) // blockBits 0: shifts by 64, mask 0
	for i := range t.peers {
		p := &t.peers[i]
		if p.mapper == nil {
			continue
		}
		bk := t.blockOf(p.prefix.Addr().As16())
		b, ok := t.blocks[bk]
		if !ok {
			b.peer = int32(i)
		} else {
			b.peer = -1
		}
		l := p.prefix.Bits()
		b.lengths[l/64] |= 1 << (l % 64)
		t.blocks[bk] = b
	}
	for i := range t.peers {
		a := [16]byte(t.peers[i].key[:16])
		if j := t.prefixPeer(a); j >= 0 && j != int32(i) {
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

// blockOf returns the key of the block that holds a.
func (t *peerTable) blockOf(a [16]byte) uint64 {
	return binary.BigEndian.Uint64(a[:8]) & t.blockMask
}

// byCanonical returns the index of the peer whose canonical address is ap,
// or -1.
func (t *peerTable) byCanonical(ap netip.AddrPort) int32 {
	if i, ok := t.byAddr[keyOf(ap)]; ok {
		return i
	}
	return -1
}

// bySource returns the index of the peer that an outer source address
// belongs to, or -1: the peer's canonical address, or (spread) an address
// of the peer's spread range with the peer's port.
func (t *peerTable) bySource(src netip.AddrPort) (peer int32, spread bool) {
	k := keyOf(src)
	a := [16]byte(k[:16])
	i := t.prefixPeer(a)
	if i >= 0 {
		p := &t.peers[i]
		if p.key == k {
			return i, false
		}
		if !p.hostsOthers {
			// No canonical address but p's own lies in p's prefix: the
			// canonical map cannot match, skip its probe.
			return t.spreadFrom(i, a, src.Port())
		}
	}
	if j, ok := t.byAddr[k]; ok {
		return j, false
	}
	if i < 0 {
		return -1, false
	}
	return t.spreadFrom(i, a, src.Port())
}

// spreadFrom returns (i, true) if a datagram from a, port, an address in
// peer i's prefix, comes from i's spread range with i's port, else -1.
func (t *peerTable) spreadFrom(i int32, a [16]byte, port uint16) (int32, bool) {
	p := &t.peers[i]
	if p.port != port {
		return -1, false
	}
	if _, ok := p.mapper.BucketOf(a); !ok {
		return -1, false
	}
	return i, true
}

// prefixPeer returns the index of the peer whose prefix holds a, or -1.
func (t *peerTable) prefixPeer(a [16]byte) int32 {
	if len(t.blocks) == 0 {
		return -1
	}
	b, ok := t.blocks[t.blockOf(a)]
	if !ok {
		return -1
	}
	if b.peer >= 0 {
		if p := &t.peers[b.peer]; maskBits(a, p.prefix.Bits()) == p.prefix.Addr().As16() {
			return b.peer
		}
		return -1
	}
	for w, set := range b.lengths {
		for set != 0 {
			l := w*64 + bits.TrailingZeros64(set)
			set &= set - 1
			if i, ok := t.groupOf(l).byPrefix[maskBits(a, l)]; ok {
				return i
			}
		}
	}
	return -1
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

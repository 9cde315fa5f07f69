package conn

import (
	"fmt"
	"net/netip"

	"github.com/flowspread/flowspread/flowaddr"
)

// peerEntry is a validated [Peer] with what the hot paths need precomputed.
type peerEntry struct {
	addr   netip.AddrPort // canonical, as configured
	port   uint16
	scope  uint32 // interface index of a link-local address's zone
	prefix netip.Prefix
	mapper *flowaddr.Mapper // nil: the peer is not spread
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

// prefixGroup finds peers whose prefixes share one length by the masked
// source address.
type prefixGroup struct {
	bits     int
	byPrefix map[[16]byte]int32
}

// peerTable maps canonical addresses and outer source addresses to peers.
// It is built once by Listen and only read afterwards, so lookups need no
// lock; none allocates.
type peerTable struct {
	peers  []peerEntry
	byAddr map[endpointKey]int32
	groups []prefixGroup
}

func newPeerTable(cfg *Config) (*peerTable, error) {
	t := &peerTable{
		peers:  make([]peerEntry, len(cfg.Peers)),
		byAddr: make(map[endpointKey]int32, len(cfg.Peers)),
	}
	for i, p := range cfg.Peers {
		e := peerEntry{addr: p.Addr, port: p.Addr.Port(), prefix: p.Prefix, scope: zoneIndex(p.Addr.Addr().Zone())}
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
		}
		t.peers[i] = e
		t.byAddr[keyOf(p.Addr)] = int32(i)
	}
	return t, nil
}

func (t *peerTable) group(bits int) *prefixGroup {
	for i := range t.groups {
		if t.groups[i].bits == bits {
			return &t.groups[i]
		}
	}
	t.groups = append(t.groups, prefixGroup{bits: bits, byPrefix: make(map[[16]byte]int32)})
	return &t.groups[len(t.groups)-1]
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
	if i, ok := t.byAddr[k]; ok {
		return i, false
	}
	a := [16]byte(k[:16])
	for gi := range t.groups {
		g := &t.groups[gi]
		i, ok := g.byPrefix[maskBits(a, g.bits)]
		if !ok {
			continue
		}
		p := &t.peers[i]
		if p.port != src.Port() {
			return -1, false
		}
		if _, ok := p.mapper.BucketOf(a); !ok {
			return -1, false
		}
		return i, true
	}
	return -1, false
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

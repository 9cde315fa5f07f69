package conn

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"unsafe"

	"github.com/flowspread/flowspread/flowaddr"
)

// refBySource is peerTable.bySource written as the definition reads: a
// peer's canonical address first, then the one prefix that holds the
// source, with the peer's port and inside the peer's spread range.
func refBySource(peers []peerEntry, src netip.AddrPort) (int32, bool) {
	k := keyOf(src)
	for i := range peers {
		if keyOf(peers[i].addr()) == k {
			return int32(i), false
		}
	}
	a := netip.AddrFrom16([16]byte(k[:16]))
	for i := range peers {
		p := &peers[i]
		if p.mapper == nil || !p.mapper.Prefix().Contains(a) {
			continue
		}
		if _, ok := p.mapper.BucketOf(a.As16()); !ok || p.addr().Port() != src.Port() {
			return -1, false
		}
		return int32(i), true
	}
	return -1, false
}

// randomPeers returns a valid peer list that exercises the block index:
// prefixes of mixed lengths packed into a few /48s (blocks that hold one
// prefix and blocks that hold several), the odd shorter prefix that
// lowers the block length, peers without a prefix, and canonical
// addresses inside their own prefix, inside another peer's, next to
// another peer's in its block, or outside every prefix.
func randomPeers(rng *rand.Rand) []Peer {
	lengths := []int{40, 48, 52, 56, 60, 63, 64, 72, 96, 112}
	var peers []Peer
	var prefixes []netip.Prefix
	for len(peers) < 2+rng.IntN(40) {
		a := netip.MustParseAddr("2001:db8:100::").As16()
		a[5] = byte(rng.IntN(6)) // one of six /48s
		for i := 6; i < 16; i++ {
			a[i] = byte(rng.UintN(256))
		}
		port := uint16(51820 + rng.IntN(3))
		if rng.IntN(8) == 0 { // a peer that does not spread
			peers = append(peers, Peer{Addr: netip.AddrPortFrom(netip.AddrFrom16(a), port)})
			continue
		}
		l := lengths[rng.IntN(len(lengths))]
		if l == 40 && rng.IntN(4) != 0 {
			l = 48 // keep the block length at 48 in most tables
		}
		p, _ := netip.AddrFrom16(a).Prefix(l)
		overlaps := false
		for _, q := range prefixes {
			overlaps = overlaps || q.Overlaps(p)
		}
		if overlaps {
			continue
		}
		canon := a
		switch rng.IntN(5) {
		case 0: // in another peer's prefix
			if len(prefixes) > 0 {
				canon = prefixes[rng.IntN(len(prefixes))].Addr().As16()
				canon[15] ^= byte(1 + rng.IntN(200))
			}
		case 1: // in another peer's /48, in or next to its prefix
			if len(prefixes) > 0 {
				canon = prefixes[rng.IntN(len(prefixes))].Addr().As16()
				canon[6] ^= byte(rng.IntN(256))
				canon[15] ^= byte(1 + rng.IntN(200))
			}
		case 2: // outside every prefix
			canon[0], canon[1] = 0x20, 0x01
			canon[2], canon[3] = 0x0d, 0xb9
		}
		prefixes = append(prefixes, p)
		peers = append(peers, Peer{Addr: netip.AddrPortFrom(netip.AddrFrom16(canon), port), Range: Range{Prefix: p}})
	}
	return peers
}

// TestBySourceMatchesDefinition checks the peer table's lookup against
// refBySource on random tables, with contiguous and scattered ranges, for canonical addresses (right and wrong
// port), addresses of each spread range, addresses of a prefix outside
// its range, and random addresses in and around the prefixes' blocks.
func TestBySourceMatchesDefinition(t *testing.T) {
	rng := rand.New(rand.NewPCG(10, 10))
	for round := range 300 {
		layout := flowaddr.Layout(round % 2) // contiguous and scattered ranges
		cfg, err := Config{Range: Range{Prefix: netip.MustParsePrefix("2001:db8:b::/64")}, Peers: randomPeers(rng), Layout: layout}.validate()
		if err != nil {
			continue // two canonical addresses collided
		}
		tab, err := newPeerTable(&cfg)
		if err != nil {
			t.Fatal(err)
		}
		var srcs []netip.AddrPort
		for _, p := range tab.peers {
			port := p.addr().Port()
			srcs = append(srcs, p.addr(), netip.AddrPortFrom(p.addr().Addr(), port+1))
			if p.mapper == nil {
				continue
			}
			for range 4 {
				a := netip.AddrFrom16(p.mapper.Addr16(p.mapper.Bucket(rng.Uint64())))
				srcs = append(srcs, netip.AddrPortFrom(a, port), netip.AddrPortFrom(a, port+1))
			}
			b := p.mapper.Prefix().Addr().As16()
			for i := p.mapper.Prefix().Bits() / 8; i < 16; i++ {
				b[i] = byte(rng.UintN(256)) // in the prefix, almost surely outside the range
			}
			srcs = append(srcs, netip.AddrPortFrom(netip.AddrFrom16(b), port))
			b = p.mapper.Prefix().Addr().As16()
			b[6] ^= byte(1 + rng.IntN(255)) // the same /48 block, mostly outside the prefix
			srcs = append(srcs, netip.AddrPortFrom(netip.AddrFrom16(b), port))
		}
		for _, src := range srcs {
			gi, gs := tab.bySource(src)
			wi, ws := refBySource(tab.peers, src)
			if gi != wi || gs != ws {
				t.Fatalf("round %d: bySource(%v) = %d, %v; want %d, %v\npeers: %v", round, src, gi, gs, wi, ws, peerList(tab))
			}
		}
	}
}

func peerList(t *peerTable) string {
	s := ""
	for i, p := range t.peers {
		var pfx netip.Prefix
		if p.mapper != nil {
			pfx = p.mapper.Prefix()
		}
		s += fmt.Sprintf("\n  %d: %v %v", i, p.addr(), pfx)
	}
	return s
}

// TestPeerBlocks checks that the block index resolves a source in one map
// probe when its block holds a single prefix, and otherwise lists the
// lengths to probe.
func TestPeerBlocks(t *testing.T) {
	cfg, err := Config{
		Range: Range{Prefix: netip.MustParsePrefix("2001:db8:b::/64")},
		Peers: []Peer{
			{Addr: netip.MustParseAddrPort("[2001:db8:1::1]:1"), Range: Range{Prefix: netip.MustParsePrefix("2001:db8:1::/48")}},
			{Addr: netip.MustParseAddrPort("[2001:db8:2::1]:1"), Range: Range{Prefix: netip.MustParsePrefix("2001:db8:2::/56")}},
			{Addr: netip.MustParseAddrPort("[2001:db8:2:100::1]:1"), Range: Range{Prefix: netip.MustParsePrefix("2001:db8:2:100::/64")}},
			{Addr: netip.MustParseAddrPort("[2001:db8:2:200::1]:1"), Range: Range{Prefix: netip.MustParsePrefix("2001:db8:2:200::/64")}},
		},
	}.validate()
	if err != nil {
		t.Fatal(err)
	}
	tab, err := newPeerTable(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(tab.blocks); got != 2 {
		t.Fatalf("%d blocks, want 2 (2001:db8:1::/48 and 2001:db8:2::/48)", got)
	}
	one := tab.blocks[0x20010db800010000]
	if one != 0 {
		t.Errorf("block 2001:db8:1::/48 names peer %d, want 0", one)
	}
	several := tab.blocks[0x20010db800020000]
	if several >= 0 {
		t.Fatalf("block 2001:db8:2::/48 names peer %d, want the lengths of its three prefixes", several)
	}
	if got, want := tab.shared[-1-several], [2]uint64{1 << 56, 1 << (64 - 64)}; got != want {
		t.Errorf("block 2001:db8:2::/48 has lengths %x, want %x (/56 and /64)", got, want)
	}
}

// TestPeerEntrySize checks that what the lookup reads of a peer fits one
// cache line.
func TestPeerEntrySize(t *testing.T) {
	if n := unsafe.Sizeof(peerEntry{}); n > 64 {
		t.Errorf("peerEntry is %d bytes, more than a 64-byte cache line", n)
	}
}

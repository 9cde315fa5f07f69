package conn

import (
	"math/rand/v2"
	"net/netip"
	"testing"
	"unsafe"

	"github.com/flowspread/flowspread/flowaddr"
)

// TestOuterForMatchesMapper checks the address pair outerFor picks from a
// peer's route against the peers' own Mappers, on random tables of
// contiguous and scattered ranges of mixed sizes: a flow to a spread peer
// goes from our address of its bucket to the peer's address of its
// bucket, and a flow to a peer without a prefix, or to an address that is
// no peer's, goes to that address.
func TestOuterForMatchesMapper(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 11))
	for round := range 200 {
		layout := flowaddr.Layout(round % 2)
		cfg, err := Config{Range: Range{Prefix: netip.MustParsePrefix("2001:db8:b::/64")}, Peers: randomPeers(rng), Layout: layout}.validate()
		if err != nil {
			continue // two canonical addresses collided
		}
		for i := range cfg.Peers {
			cfg.Peers[i].Open = true // every pair open: this checks the mapping (paths_test.go checks the rest)
			if cfg.Peers[i].Range.Prefix.IsValid() {
				// Range sizes other than the default, up to what the prefix holds.
				cfg.Peers[i].Range.Bits = 1 + rng.IntN(min(maxBits, 127-cfg.Peers[i].Range.Prefix.Bits()))
			}
		}
		c := &FlowSpreadConn{prefix: cfg.Range.Prefix}
		if err = c.initPeers(&cfg); err != nil {
			t.Fatal(err)
		}
		if c.local, err = flowaddr.NewMapper(flowaddr.MapperConfig{Prefix: cfg.Range.Prefix, Bits: cfg.Range.Bits, Layout: layout}); err != nil {
			t.Fatal(err)
		}
		var memo peerMemo
		for _, p := range c.peers.Load().peers {
			stranger := netip.AddrPortFrom(p.addr().Addr(), p.addr().Port()+1)
			for range 8 {
				f := Flow{Hash: rng.Uint64(), ECN: flowaddr.ECT1, Valid: true}
				wantDst := p.addr().Addr().As16()
				if p.mapper != nil {
					wantDst = p.mapper.Addr16(p.mapper.Bucket(f.Hash))
				}
				wantBucket := c.local.Bucket(f.Hash)
				var o outerHdr
				b, _, err := c.outerFor(p.addr(), f, &o, &memo)
				if err != nil || b != int32(wantBucket) || o.kind != outerSpread ||
					o.dst != wantDst || o.src != c.local.Addr16(wantBucket) || o.port != p.addr().Port() || o.ecn != flowaddr.ECT1 {
					t.Fatalf("round %d: outerFor(%v, %x) = %d, %v, dst %v src %v kind %d; want bucket %d, dst %v src %v%s", round, p.addr(), f.Hash,
						b, err, netip.AddrFrom16(o.dst), netip.AddrFrom16(o.src), o.kind, wantBucket, netip.AddrFrom16(wantDst), netip.AddrFrom16(c.local.Addr16(wantBucket)), peerList(c.peers.Load()))
				}
				if b, _, err := c.outerFor(stranger, f, &o, &memo); err != nil || b != -1 || o.kind != outerDefault || o.dst != stranger.Addr().As16() {
					t.Fatalf("round %d: outerFor(%v), no peer's address, = %d, %v, dst %v kind %d; want it unspread", round, stranger, b, err, netip.AddrFrom16(o.dst), o.kind)
				}
			}
		}
	}
}

// TestOuterForZone checks that a link-local peer's zone becomes the
// datagram's scope, from the table for a peer and from the zone itself
// for any other address.
func TestOuterForZone(t *testing.T) {
	peer := netip.MustParseAddrPort("[fe80::1%7]:51820")
	cfg, err := Config{Peers: []Peer{{Addr: peer}}}.validate()
	if err != nil {
		t.Fatal(err)
	}
	c := &FlowSpreadConn{}
	if err = c.initPeers(&cfg); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		to   netip.AddrPort
		f    Flow
		want uint32
	}{
		{peer, Flow{}, 7},
		{peer, Flow{Hash: 1, Valid: true}, 7},
		{netip.MustParseAddrPort("[fe80::2%9]:51820"), Flow{Hash: 1, Valid: true}, 9},
	} {
		var o outerHdr
		var memo peerMemo
		if _, _, err := c.outerFor(tc.to, tc.f, &o, &memo); err != nil || o.scope != tc.want {
			t.Errorf("outerFor(%v, valid %v): scope %d, %v; want %d", tc.to, tc.f.Valid, o.scope, err, tc.want)
		}
	}
}

// TestPeerRouteSize checks that a canonical-address map slot, key and
// route, fits one cache line, so that finding a destination peer misses
// the cache once.
func TestPeerRouteSize(t *testing.T) {
	type slot struct {
		k endpointKey
		r peerRoute
	}
	if n := unsafe.Sizeof(slot{}); n > 64 {
		t.Errorf("a byAddr slot is %d bytes, more than a 64-byte cache line", n)
	}
}

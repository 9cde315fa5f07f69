package conn

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// TestSetPeerValidates checks that SetPeer validates as Listen does and
// that a refused change leaves the peers as they were.
func TestSetPeerValidates(t *testing.T) {
	c, peer := pathsConn(t, true, 10, 10)
	before := c.Peers()
	for _, tc := range []struct {
		name string
		p    Peer
		want string
	}{
		{"no port", Peer{Addr: netip.AddrPortFrom(netip.MustParseAddr("2001:db8:c::1"), 0)}, "not an address with a port"},
		{"overlaps the peer", Peer{Addr: netip.MustParseAddrPort("[2001:db8:c::1]:1"), Range: Range{Prefix: netip.MustParsePrefix("2001:db8:a::/96")}}, "overlaps peer [2001:db8:a::1]:51820"},
		{"overlaps ours", Peer{Addr: netip.MustParseAddrPort("[2001:db8:c::1]:1"), Range: Range{Prefix: netip.MustParsePrefix("2001:db8:b::/64")}}, "overlaps our Range.Prefix"},
		{"bits set past its length", Peer{Addr: peer, Range: Range{Prefix: netip.MustParsePrefix("2001:db8:a::1/64")}}, "did you mean 2001:db8:a::/64"},
		{"IPv4 prefix", Peer{Addr: netip.MustParseAddrPort("192.0.2.1:1"), Range: Range{Prefix: netip.MustParsePrefix("192.0.2.0/24")}}, "is not IPv6"},
	} {
		err := c.SetPeer(tc.p)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "conn: ") {
			t.Errorf("%s: SetPeer(%+v) = %v, want an error with %q", tc.name, tc.p, err, tc.want)
		}
		if got := c.Peers(); !slices.Equal(got, before) {
			t.Fatalf("%s: a refused SetPeer changed the peers to %+v", tc.name, got)
		}
	}
}

// TestSetPeerRemovePeer checks adding, changing and removing peers: the
// table finds them from then on, Peers lists them with defaults filled
// in, and a peer whose range stays keeps what was learned of its paths,
// while a changed range starts afresh.
func TestSetPeerRemovePeer(t *testing.T) {
	c, peer := pathsConn(t, false, 10, 10)
	const h = 0x4444_3333_2222_1111
	c.Observe(ptr(spreadInfo(c, peer, h)), Flow{Hash: h, Valid: true})
	if path, _ := sendPath(t, c, peer, h); path != pathSpread {
		t.Fatalf("learned flow: path %d, want spread", path)
	}

	other := Peer{Addr: netip.MustParseAddrPort("[2001:db8:c::1]:51820"), Range: Range{Prefix: netip.MustParsePrefix("2001:db8:c::/64")}}
	if err := c.SetPeer(other); err != nil {
		t.Fatal(err)
	}
	peers := c.Peers()
	if len(peers) != 2 || peers[1].Addr != other.Addr || peers[1].Range.Bits != DefaultBits {
		t.Fatalf("after adding: peers %+v, want the old one and %v with Bits %d", peers, other.Addr, DefaultBits)
	}
	added := c.peers.Load().peers[1].mapper
	src := netip.AddrPortFrom(netip.AddrFrom16(added.Addr16(5)), 51820)
	if i, spread := c.peers.Load().bySource(src); i != 1 || !spread {
		t.Fatalf("bySource(%v) = %d, %v; want the added peer, spread", src, i, spread)
	}
	if path, _ := sendPath(t, c, peer, h); path != pathSpread {
		t.Fatalf("after adding another peer: path %d, want the learned path kept", path)
	}
	// Open the first peer: same range, the learned state stays, and
	// every flow now goes spread.
	if err := c.SetPeer(Peer{Addr: peer, Range: Range{Prefix: netip.MustParsePrefix("2001:db8:a::/64")}, Open: true}); err != nil {
		t.Fatal(err)
	}
	if path, _ := sendPath(t, c, peer, h^1<<62); path != pathSpread {
		t.Fatalf("after opening the peer: path %d, want spread", path)
	}
	// A new range: nothing learned holds for it.
	if err := c.SetPeer(Peer{Addr: peer, Range: Range{Prefix: netip.MustParsePrefix("2001:db8:d::/64")}}); err != nil {
		t.Fatal(err)
	}
	if path, o := sendPath(t, c, peer, h); path != pathWaiting || o.dst != peer.Addr().As16() {
		t.Fatalf("after changing the peer's range: path %d to %v, want waiting on its canonical pair", path, netip.AddrFrom16(o.dst))
	}

	if !c.RemovePeer(other.Addr) || c.RemovePeer(other.Addr) {
		t.Fatal("RemovePeer: want true once, then false")
	}
	if i, _ := c.peers.Load().bySource(src); i >= 0 {
		t.Fatalf("bySource(%v) = %d after removing its peer, want -1", src, i)
	}
	if peers := c.Peers(); len(peers) != 1 || peers[0].Addr != peer {
		t.Fatalf("after removing: peers %+v", peers)
	}
}

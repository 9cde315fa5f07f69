package conn

import (
	"net/netip"
	"testing"
)

// TestSourceIdentity pins what Config's docs say a source address proves:
// every address of a peer's spread range, with the peer's port, passes as
// the peer (a read reports the canonical address), and nothing else does,
// the addresses just outside the range included. With AcceptUnknown those
// others are delivered, but under their own address, never as the peer.
// TestReadMapsPeers checks the same verdicts through a real socket.
func TestSourceIdentity(t *testing.T) {
	c, peer := acceptConn(t)
	pm := c.peers.Load().peers[0].mapper
	to := netip.AddrPortFrom(netip.AddrFrom16(c.local.Addr16(1)), 51821)
	first := netip.AddrFrom16(pm.Addr16(0))
	last := netip.AddrFrom16(pm.Addr16(uint32(pm.Len() - 1)))
	for _, a := range []netip.Addr{first.Prev(), last.Next()} {
		if _, in := pm.BucketOf(a.As16()); in {
			t.Fatalf("%v is in the peer's range %v-%v", a, first, last)
		}
	}
	at := func(a netip.Addr) netip.AddrPort { return netip.AddrPortFrom(a, peer.Port()) }

	tests := []struct {
		name   string
		src    netip.AddrPort
		asPeer bool // reported as the peer; otherwise dropped, or with AcceptUnknown reported as src
	}{
		{"canonical", peer, true},
		{"first address of the range", at(first), true},
		{"last address of the range", at(last), true},
		{"just below the range", at(first.Prev()), false},
		{"just above the range", at(last.Next()), false},
		{"in the range, another port", netip.AddrPortFrom(first, peer.Port()+1), false},
	}
	for _, acceptUnknown := range []bool{false, true} {
		c.acceptUnknown = acceptUnknown
		for _, tt := range tests {
			before := c.stats.droppedForeign.Load()
			msgs := []Message{{N: 1, OuterSrc: tt.src, OuterDst: to}}
			kept := c.accept(msgs)
			dropped := c.stats.droppedForeign.Load() - before
			switch {
			case tt.asPeer && (kept != 1 || msgs[0].Peer != peer):
				t.Errorf("AcceptUnknown %v, %s (%v): kept %d, Peer %v; want it read as the peer %v",
					acceptUnknown, tt.name, tt.src, kept, msgs[0].Peer, peer)
			case !tt.asPeer && !acceptUnknown && (kept != 0 || dropped != 1):
				t.Errorf("AcceptUnknown false, %s (%v): kept %d, counted %d as foreign; want it dropped as foreign",
					tt.name, tt.src, kept, dropped)
			case !tt.asPeer && acceptUnknown && (kept != 1 || msgs[0].Peer != tt.src):
				t.Errorf("AcceptUnknown true, %s (%v): kept %d, Peer %v; want it read from its own address",
					tt.name, tt.src, kept, msgs[0].Peer)
			}
		}
	}

	// Every address of the range is the peer, so the range is how many
	// addresses can pass as the peer: 2^Bits instead of one.
	c.acceptUnknown = false
	for b := range uint32(pm.Len()) {
		msgs := []Message{{N: 1, OuterSrc: at(netip.AddrFrom16(pm.Addr16(b))), OuterDst: to}}
		if c.accept(msgs) != 1 || msgs[0].Peer != peer {
			t.Fatalf("bucket %d's address %v is not read as the peer", b, msgs[0].OuterSrc)
		}
	}
}

package wireguard

import (
	"net/netip"
	"testing"

	"github.com/flowspread/flowspread/conn"
	"github.com/flowspread/flowspread/flowaddr"
)

// TestRuntimePeers changes the Bind's peers while it is open, and across
// a Close and Open as wireguard-go does on a port change: a removed peer
// gets its flows unspread, a peer set again gets them spread, an invalid
// peer changes nothing, and the peers survive the reopen.
func TestRuntimePeers(t *testing.T) {
	b, td, src, sink, ep, ma, mb := staleSetup(t)
	peer := ep.AddrPort()
	x := innerUDP(innerA, innerB, 40001, 9000, flowaddr.ECT0, "x")
	h := b.Conn().Classify(x).Hash
	spread := sinkArrival{ma.Addr(h), mb.Addr(h), flowaddr.ECT0}
	send := func() sinkArrival {
		t.Helper()
		m := new(message)
		src.next = x
		sizes := make([]int, 1)
		if n, err := td.Read([][]byte{m[:]}, sizes, readOffset); n != 1 || err != nil {
			t.Fatalf("Read = %d, %v", n, err)
		}
		if err := b.Send([][]byte{transport(m, len(x))}, ep); err != nil {
			t.Fatal(err)
		}
		return sink.read(t)
	}
	if got := send(); got != spread {
		t.Fatalf("before any change x arrived as %v, want %v", got, spread)
	}

	if !b.RemovePeer(peer) || b.RemovePeer(peer) {
		t.Fatalf("RemovePeer: want true once, then false")
	}
	if got := send(); got.dst != peer.Addr() {
		t.Errorf("after RemovePeer x arrived as %v, want unspread to %v", got, peer.Addr())
	}
	if len(b.Peers()) != 0 {
		t.Errorf("Peers() = %v after removing the only peer", b.Peers())
	}

	// Our own prefix as the peer's overlaps: refused, nothing changes.
	if err := b.SetPeer(conn.Peer{Addr: peer, Range: conn.Range{Prefix: prefixA}}); err == nil {
		t.Errorf("SetPeer with our own prefix: no error")
	} else {
		t.Logf("SetPeer with our own prefix: %v", err)
	}
	if len(b.Peers()) != 0 {
		t.Errorf("a refused SetPeer left peers %v", b.Peers())
	}

	want := conn.Peer{Addr: peer, Range: conn.Range{Prefix: prefixB}, Open: true}
	if err := b.SetPeer(want); err != nil {
		t.Fatal(err)
	}
	if got := send(); got != spread {
		t.Errorf("after SetPeer x arrived as %v, want %v", got, spread)
	}

	// wireguard-go closes and reopens the Bind when its port changes.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	want.Range.Bits = conn.DefaultBits
	if ps := b.Peers(); len(ps) != 1 || ps[0] != want {
		t.Errorf("closed: Peers() = %+v, want [%+v]", ps, want)
	}
	if _, _, err := b.Open(0); err != nil {
		t.Fatal(err)
	}
	if ps := b.Peers(); len(ps) != 1 || ps[0] != want {
		t.Errorf("reopened: Peers() = %+v, want [%+v]", ps, want)
	}
	if got := send(); got != spread {
		t.Errorf("after reopening x arrived as %v, want %v", got, spread)
	}
}

// TestRuntimePeersClosed changes the peers of a Bind that is not open:
// they are kept for Open, replaced by address.
func TestRuntimePeersClosed(t *testing.T) {
	p1 := conn.Peer{Addr: netip.MustParseAddrPort("[2001:db8:ff::2]:51820"), Range: conn.Range{Prefix: prefixB}}
	b := NewBind(conn.Config{Range: conn.Range{Prefix: prefixA}, Peers: []conn.Peer{p1}})
	cfgPeers := b.cfg.Peers
	p2 := conn.Peer{Addr: netip.MustParseAddrPort("192.0.2.1:51820")}
	if err := b.SetPeer(p2); err != nil {
		t.Fatal(err)
	}
	p1.Open = true
	if err := b.SetPeer(conn.Peer{Addr: netip.MustParseAddrPort("[2001:db8:ff::2]:51820"), Range: conn.Range{Prefix: prefixB}, Open: true}); err != nil {
		t.Fatal(err)
	}
	if ps := b.Peers(); len(ps) != 2 || ps[0] != p1 || ps[1] != p2 {
		t.Errorf("Peers() = %+v, want [%+v %+v]", ps, p1, p2)
	}
	if cfgPeers[0].Open {
		t.Errorf("SetPeer changed the caller's Config.Peers")
	}
	if !b.RemovePeer(netip.MustParseAddrPort("[::ffff:192.0.2.1]:51820")) {
		t.Errorf("RemovePeer of the v4-mapped form of a peer: false")
	}
	if ps := b.Peers(); len(ps) != 1 || ps[0] != p1 {
		t.Errorf("Peers() = %+v, want [%+v]", ps, p1)
	}
}

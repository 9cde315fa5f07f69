package conn

import (
	"net/netip"
	"testing"

	"github.com/flowspread/flowspread/flowaddr"
)

// acceptConn builds, without a socket, the parts of a FlowSpreadConn that
// accept uses: our prefix 2001:db8:b::/64 and one peer,
// [2001:db8:a::1]:51820, spreading over 2001:db8:a::/64.
func acceptConn(tb testing.TB) (c *FlowSpreadConn, peer netip.AddrPort) {
	tb.Helper()
	peer = netip.MustParseAddrPort("[2001:db8:a::1]:51820")
	cfg, err := Config{
		Range: Range{Prefix: netip.MustParsePrefix("2001:db8:b::/64")},
		Peers: []Peer{{Addr: peer, Range: Range{Prefix: netip.MustParsePrefix("2001:db8:a::/64")}}},
	}.validate()
	if err != nil {
		tb.Fatal(err)
	}
	c = &FlowSpreadConn{prefix: cfg.Range.Prefix}
	if err = c.initPeers(&cfg); err != nil {
		tb.Fatal(err)
	}
	if c.local, err = flowaddr.NewMapper(flowaddr.MapperConfig{Prefix: cfg.Range.Prefix, Bits: cfg.Range.Bits}); err != nil {
		tb.Fatal(err)
	}
	return c, peer
}

// TestAcceptBatch checks accept on one batch where verdicts repeat and
// alternate, as they do when it reuses the verdict of the previous
// datagram: every datagram is judged on its own addresses, kept ones
// stay in order at the front, and each drop is counted once.
func TestAcceptBatch(t *testing.T) {
	c, peer := acceptConn(t)
	pm := c.peers.Load().peers[0].mapper
	from := func(b uint32) netip.AddrPort { return netip.AddrPortFrom(netip.AddrFrom16(pm.Addr16(b)), peer.Port()) }
	to := func(b uint32) netip.AddrPort { return netip.AddrPortFrom(netip.AddrFrom16(c.local.Addr16(b)), 51821) }
	outside := netip.AddrPortFrom(netip.MustParseAddr("2001:db8:b::ffff:1"), 51821)
	if _, ok := c.local.BucketOf(outside.Addr().As16()); ok {
		t.Fatalf("%v is in our range", outside)
	}
	stranger := netip.MustParseAddrPort("[2001:db8:c::1]:51820")

	tests := []struct {
		name     string
		src, dst netip.AddrPort
		keep     bool
	}{
		{"spread", from(1), to(1), true},
		{"spread, same pair", from(1), to(1), true},
		{"stranger", stranger, to(1), false},
		{"stranger again", stranger, to(1), false},
		{"spread after a drop", from(1), to(1), true},
		{"outside our range", from(2), outside, false},
		{"outside our range again", from(2), outside, false},
		{"canonical to outside our range", peer, outside, true},
		{"spread, other pair", from(3), to(3), true},
		{"spread source, wrong port", netip.AddrPortFrom(from(3).Addr(), 9), to(3), false},
		{"spread, same source, other destination", from(3), to(4), true},
		{"same source, outside our range", from(3), outside, false},
	}
	msgs := make([]Message, len(tests))
	var want []int
	for i, tt := range tests {
		msgs[i] = Message{N: i + 1, OuterSrc: tt.src, OuterDst: tt.dst, Flow: Flow{Hash: 1, Valid: true}}
		if tt.keep {
			want = append(want, i)
		}
	}
	n := c.accept(msgs)
	if n != len(want) {
		t.Fatalf("kept %d datagrams, want %d", n, len(want))
	}
	for k, i := range want {
		m := msgs[k]
		if m.N != i+1 || m.Peer != peer || m.Flow != (Flow{}) {
			t.Errorf("msgs[%d]: N %d, Peer %v, Flow %v; want %q (N %d) from %v with no Flow",
				k, m.N, m.Peer, m.Flow, tests[i].name, i+1, peer)
		}
	}
	var bytes uint64
	for _, i := range want {
		bytes += uint64(i + 1)
	}
	if got, want := c.stats.received.Load(), uint64(len(want)); got != want {
		t.Errorf("received %d, want %d", got, want)
	}
	if got := c.stats.receivedBytes.Load(); got != bytes {
		t.Errorf("received bytes %d, want %d", got, bytes)
	}
	if f, o := c.stats.droppedForeign.Load(), c.stats.droppedOutsideRange.Load(); f != 3 || o != 3 {
		t.Errorf("dropped %d foreign and %d outside the range, want 3 and 3", f, o)
	}
}

// TestAcceptUnknown checks that AcceptUnknown delivers datagrams from
// strangers with their plain source as Peer (IPv4 unmapped), while a
// peer's canonical address and spread range still map to the peer and a
// spread datagram outside our range is still dropped.
func TestAcceptUnknown(t *testing.T) {
	c, peer := acceptConn(t)
	c.acceptUnknown = true
	pm := c.peers.Load().peers[0].mapper
	from := func(b uint32) netip.AddrPort { return netip.AddrPortFrom(netip.AddrFrom16(pm.Addr16(b)), peer.Port()) }
	to := netip.AddrPortFrom(netip.AddrFrom16(c.local.Addr16(1)), 51821)
	outside := netip.AddrPortFrom(netip.MustParseAddr("2001:db8:b::ffff:1"), 51821)
	if _, ok := c.local.BucketOf(outside.Addr().As16()); ok {
		t.Fatalf("%v is in our range", outside)
	}
	roamed := netip.MustParseAddrPort("[2001:db8:ff::3]:51820")
	nat := netip.MustParseAddrPort("[::ffff:192.0.2.7]:40000")

	tests := []struct {
		name     string
		src, dst netip.AddrPort
		peer     netip.AddrPort // reported; invalid: dropped
	}{
		{"canonical", peer, to, peer},
		{"spread", from(1), to, peer},
		{"roamed peer", roamed, to, roamed},
		{"roamed peer again", roamed, to, roamed},
		// The AnyIP socket reports an IPv4 datagram with both addresses
		// unmapped; a mapped source in an IPv6 packet is refused.
		{"IPv4 stranger, unmapped", nat, netip.MustParseAddrPort("198.51.100.1:51821"), netip.MustParseAddrPort("192.0.2.7:40000")},
		{"v4-mapped source in IPv6", netip.MustParseAddrPort("[::ffff:127.0.0.1]:53"), to, netip.AddrPort{}},
		{"unmapped v4 source to IPv6", netip.MustParseAddrPort("127.0.0.1:53"), to, netip.AddrPort{}},
		{"canonical address, new port", netip.AddrPortFrom(peer.Addr(), 9), to, netip.AddrPortFrom(peer.Addr(), 9)},
		{"spread, other pair", from(2), to, peer},
		{"spread outside our range", from(3), outside, netip.AddrPort{}},
	}
	msgs := make([]Message, len(tests))
	var want []int
	for i, tt := range tests {
		msgs[i] = Message{N: i + 1, OuterSrc: tt.src, OuterDst: tt.dst}
		if tt.peer.IsValid() {
			want = append(want, i)
		}
	}
	n := c.accept(msgs)
	if n != len(want) {
		t.Fatalf("kept %d datagrams, want %d", n, len(want))
	}
	for k, i := range want {
		if m := msgs[k]; m.N != i+1 || m.Peer != tests[i].peer {
			t.Errorf("msgs[%d]: N %d, Peer %v; want %q (N %d) from %v", k, m.N, m.Peer, tests[i].name, i+1, tests[i].peer)
		}
	}
	if got := c.stats.receivedUnknown.Load(); got != 4 {
		t.Errorf("received %d datagrams from strangers, want 4", got)
	}
	if f, o := c.stats.droppedForeign.Load(), c.stats.droppedOutsideRange.Load(); f != 0 || o != 1 {
		t.Errorf("dropped %d foreign and %d outside the range, want 0 and 1", f, o)
	}
	if got := c.stats.droppedBadSource.Load(); got != 2 {
		t.Errorf("dropped %d for a bad source, want 2", got)
	}
}

// TestAcceptUnknownNoPeers checks that a conn that accepts strangers may
// start with no peers, and one that does not may not.
func TestAcceptUnknownNoPeers(t *testing.T) {
	if _, err := (Config{AcceptUnknown: true}).validate(); err != nil {
		t.Errorf("AcceptUnknown without Peers: %v; want it accepted", err)
	}
	if _, err := (Config{}).validate(); err == nil {
		t.Errorf("no Peers and no AcceptUnknown: accepted; want an error")
	}
}

package conn

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/flowspread/flowspread/flowaddr"
)

// benchPeerCounts are the table sizes of the scale benchmarks: one peer,
// a small site, a VPN server.
var benchPeerCounts = []int{1, 100, 10_000}

// benchPeerLengths are the prefix lengths the scale benchmarks cycle
// through, so that a table of 100 peers or more has eight lengths to look
// a source up in.
var benchPeerLengths = []int{48, 56, 60, 64, 52, 62, 72, 96}

// benchPeerSpace holds every peer prefix of the scale benchmarks: peer i
// gets the /48 2001:db8:(0x100+i)::, outside the prefixes of the other
// tests (2001:db8:a::/64, 2001:db8:b::/64), and spreads over the first benchPeerLengths[i%8] bits of it.
var benchPeerSpace = netip.MustParsePrefix("2001:db8::/32")

// benchPeerList returns n peers on port, each with its own prefix of
// mixed lengths in benchPeerSpace and its canonical address (the prefix's
// ::1) inside it.
func benchPeerList(n int, port uint16) []Peer {
	if n > 0xffff-0x100 {
		panic("benchPeerList: too many peers for 2001:db8::/32 in /48s")
	}
	peers := make([]Peer, n)
	for i := range peers {
		a := benchPeerSpace.Addr().As16()
		block := 0x100 + i
		a[4], a[5] = byte(block>>8), byte(block)
		p := netip.PrefixFrom(netip.AddrFrom16(a), benchPeerLengths[i%len(benchPeerLengths)])
		a[15] = 1
		peers[i] = Peer{Addr: netip.AddrPortFrom(netip.AddrFrom16(a), port), Range: Range{Prefix: p}, Open: true}
	}
	return peers
}

// benchPeerStride spreads traffic over the peers: flow i comes from (or
// goes to) peer i*benchPeerStride mod n. The stride is prime to 10, so
// with 10,000 peers 1024 flows reach 1024 distinct peers, and with 100
// they reach all of them.
const benchPeerStride = 7919

// scaleConn builds, without a socket, the parts of a FlowSpreadConn that
// accept uses, with our prefix 2001:db8:b::/64 (testPrefix) and n peers from benchPeerList.
func scaleConn(tb testing.TB, n int) *FlowSpreadConn {
	tb.Helper()
	cfg, err := Config{Range: Range{Prefix: netip.MustParsePrefix("2001:db8:b::/64")}, Peers: benchPeerList(n, 51820)}.validate()
	if err != nil {
		tb.Fatal(err)
	}
	c := &FlowSpreadConn{prefix: cfg.Range.Prefix}
	if err = c.initPeers(&cfg); err != nil {
		tb.Fatal(err)
	}
	if c.local, err = flowaddr.NewMapper(flowaddr.MapperConfig{Prefix: cfg.Range.Prefix, Bits: cfg.Range.Bits}); err != nil {
		tb.Fatal(err)
	}
	return c
}

// scaleMsgs returns 1024 datagrams of as many flows to c, flow i from
// peer i*benchPeerStride mod len(peers), from its address of that peer's
// range to its address of ours.
func scaleMsgs(c *FlowSpreadConn, port uint16) []Message {
	rng := rand.New(rand.NewPCG(1, 2))
	msgs := make([]Message, 1024)
	n := len(c.peers.Load().peers)
	for i := range msgs {
		pm := c.peers.Load().peers[i*benchPeerStride%n].mapper
		h := rng.Uint64()
		msgs[i] = Message{
			N:        1200,
			OuterSrc: netip.AddrPortFrom(netip.AddrFrom16(pm.Addr16(pm.Bucket(h))), port),
			OuterDst: netip.AddrPortFrom(netip.AddrFrom16(c.local.Addr16(c.local.Bucket(h))), 51821),
		}
	}
	return msgs
}

// BenchmarkAcceptPeers measures accept alone, per datagram, as the peer
// table grows: 1024 datagrams of 1024 flows, each from one of up to 1024
// peers of mixed prefix lengths (benchPeerList), 64 at a time. It isolates
// the lookup that BenchmarkRecv/spread-batch/peers=N runs under the
// system calls.
func BenchmarkAcceptPeers(b *testing.B) {
	for _, n := range benchPeerCounts {
		b.Run(fmt.Sprintf("peers=%d", n), func(b *testing.B) {
			c := scaleConn(b, n)
			// accept keeps every datagram, so it only writes their Peer
			// and Flow, and a batch can be judged again as it is.
			all := scaleMsgs(c, 51820)
			const batch = 64
			b.ReportAllocs()
			k := 0
			for b.Loop() {
				if got := c.accept(all[k : k+batch]); got != batch {
					b.Fatalf("kept %d of %d", got, batch)
				}
				k = (k + batch) % len(all)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/pkt")
		})
	}
}

// BenchmarkOuterForPeers measures what a send does per datagram to find
// its outer address pair (outerFor), as the peer table grows: 1024
// datagrams of 1024 flows, flow i to peer i*benchPeerStride mod n, so with
// 10,000 peers each goes to another peer. It isolates the lookup that
// BenchmarkSend/spread-batch/peers=N runs under the system calls.
func BenchmarkOuterForPeers(b *testing.B) {
	for _, n := range benchPeerCounts {
		b.Run(fmt.Sprintf("peers=%d", n), func(b *testing.B) {
			c := scaleConn(b, n)
			rng := rand.New(rand.NewPCG(3, 4))
			peers := make([]netip.AddrPort, 1024)
			flows := make([]Flow, len(peers))
			for i := range peers {
				peers[i] = c.peers.Load().peers[i*benchPeerStride%n].addr()
				flows[i] = Flow{Hash: rng.Uint64(), ECN: flowaddr.ECT0, Valid: true}
			}
			b.ReportAllocs()
			var o outerHdr
			var memo peerMemo
			k := 0
			for b.Loop() {
				if bucket, _, err := c.outerFor(peers[k], flows[k], &o, &memo); err != nil || bucket < 0 {
					b.Fatalf("outerFor(%v) = %d, %v", peers[k], bucket, err)
				}
				k = (k + 1) % len(peers)
			}
		})
	}
}

// BenchmarkPeerSetup measures what Listen does with the peer list before
// it opens a socket, as the list grows: validate (which checks that no
// two prefixes overlap) and building the peer table.
func BenchmarkPeerSetup(b *testing.B) {
	for _, n := range benchPeerCounts {
		cfg := Config{Range: Range{Prefix: netip.MustParsePrefix("2001:db8:b::/64")}, Peers: benchPeerList(n, 51820)}
		b.Run(fmt.Sprintf("validate/peers=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := cfg.validate(); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("table/peers=%d", n), func(b *testing.B) {
			valid, err := cfg.validate()
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := newPeerTable(&valid); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

package flowaddr_test

import (
	"fmt"
	"net/netip"

	"github.com/dchest/siphash"
	"github.com/flowspread/flowspread/flowaddr"
)

func ExampleNewMapper() {
	// 2^10 flow addresses in a /64 routed to this host.
	m, err := flowaddr.NewMapper(flowaddr.MapperConfig{
		Prefix: netip.MustParsePrefix("2001:db8:1:2::/64"),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	first, last := netip.AddrFrom16(m.Addr16(0)), netip.AddrFrom16(m.Addr16(uint32(m.Len()-1)))
	fmt.Printf("%d addresses: %s to %s\n", m.Len(), first, last)

	h := uint64(0x8000_0000_0000_0000) // a flow's keyed hash
	fmt.Printf("hash %#x: bucket %d, address %s\n", h, m.Bucket(h), m.Addr(h))

	// A receiver maps the destination address back, and drops datagrams
	// sent to other addresses of the prefix.
	for _, s := range []string{"2001:db8:1:2::600", "2001:db8:1:2::1"} {
		b, ok := m.BucketOf(netip.MustParseAddr(s).As16())
		fmt.Printf("%s: bucket %d, %v\n", s, b, ok)
	}

	// Bits must stay below the prefix's host bits.
	_, err = flowaddr.NewMapper(flowaddr.MapperConfig{
		Prefix: netip.MustParsePrefix("2001:db8:1:2::/120"),
		Bits:   8,
	})
	fmt.Println(err)
	// Output:
	// 1024 addresses: 2001:db8:1:2::400 to 2001:db8:1:2::7ff
	// hash 0x8000000000000000: bucket 512, address 2001:db8:1:2::600
	// 2001:db8:1:2::600: bucket 512, true
	// 2001:db8:1:2::1: bucket 0, false
	// flowaddr: invalid mapper configuration: bits 8 out of range: prefix 2001:db8:1:2::/120 allows 1..7 (one less than its 8 host bits, so that the addresses can skip its Subnet-Router anycast address)
}

// Both tunnel ends run this with the same secret and prefixes, and so pick
// the same outer address pair for a flow, in both directions.
func ExampleMapper_Addr() {
	local, _ := flowaddr.NewMapper(flowaddr.MapperConfig{Prefix: netip.MustParsePrefix("2001:db8:a::/64")})
	peer, _ := flowaddr.NewMapper(flowaddr.MapperConfig{Prefix: netip.MustParsePrefix("2001:db8:b::/56")})
	const k0, k1 = 0x0706050403020100, 0x0f0e0d0c0b0a0908 // the shared hash secret

	flow := flowaddr.Key{
		Src:     netip.MustParseAddr("::ffff:192.0.2.10").As16(),
		Dst:     netip.MustParseAddr("::ffff:192.0.2.20").As16(),
		SrcPort: 40000, DstPort: 443, Proto: 6, Flags: flowaddr.FlagIPv4,
	}
	for _, k := range []flowaddr.Key{flow, flow.Reverse()} {
		c := k.Canonical()
		b := c.Bytes()
		h := siphash.Hash(k0, k1, b[:])
		fmt.Printf("%s:%d -> %s:%d: %s <-> %s\n", k.SrcAddr(), k.SrcPort, k.DstAddr(), k.DstPort, local.Addr(h), peer.Addr(h))
	}
	// Output:
	// 192.0.2.10:40000 -> 192.0.2.20:443: 2001:db8:a::6f6 <-> 2001:db8:b::6f6
	// 192.0.2.20:443 -> 192.0.2.10:40000: 2001:db8:a::6f6 <-> 2001:db8:b::6f6
}

// The scattered layout spreads the addresses over the whole prefix. Both
// ends must use the same PermKey. These addresses are fixed for this key:
// a change to the permutation would make two tunnel ends that run
// different versions disagree.
func ExampleNewMapper_scattered() {
	m, err := flowaddr.NewMapper(flowaddr.MapperConfig{
		Prefix:  netip.MustParsePrefix("2001:db8:1::/48"),
		Layout:  flowaddr.LayoutScattered,
		PermKey: [16]byte{0: 1, 15: 2},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	for b := range uint32(3) {
		a := m.Addr16(b)
		back, ok := m.BucketOf(a)
		fmt.Printf("bucket %d: %s (back: %d %v)\n", b, netip.AddrFrom16(a), back, ok)
	}
	// Output:
	// bucket 0: 2001:db8:1:e1a9:7d12:c7c7:49de:ee13 (back: 0 true)
	// bucket 1: 2001:db8:1:eac4:7f39:fc9e:5716:fac6 (back: 1 true)
	// bucket 2: 2001:db8:1:e099:2c3f:b739:fd97:fdbf (back: 2 true)
}

func ExampleDecapsulate() {
	// An inner IPv6 packet, Traffic Class ECT(0), from 2001:db8::1 to
	// 2001:db8::2, no payload (Next Header 59).
	inner := []byte{
		0x60, 0x20, 0x00, 0x00, // version 6, traffic class 0x02, flow label 0
		0x00, 0x00, 59, 64, // payload length 0, no next header, hop limit 64
		0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
		0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2,
	}
	e, _ := flowaddr.PacketECN(inner)
	fmt.Println("inner:", e, "-> outer when sending:", flowaddr.OuterECN(e))

	// A queue on the tunnel's path marked the outer header CE: the mark
	// moves into the inner packet.
	drop, err := flowaddr.Decapsulate(inner, flowaddr.CE)
	e, _ = flowaddr.PacketECN(inner)
	fmt.Println("after outer CE:", e, "drop:", drop, "err:", err)

	// A packet whose transport does not do ECN must be dropped instead.
	inner[1] = 0x00 // Not-ECT
	drop, _ = flowaddr.Decapsulate(inner, flowaddr.CE)
	fmt.Println("Not-ECT inner, outer CE: drop:", drop)
	// Output:
	// inner: ECT(0) -> outer when sending: ECT(0)
	// after outer CE: CE drop: false err: <nil>
	// Not-ECT inner, outer CE: drop: true
}

package flowaddr_test

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/flowspread/flowspread/flowaddr"
	tu "github.com/flowspread/flowspread/internal/testutil"
)

var sinkKey flowaddr.Key

// Endpoints: the inner flow runs client to server; tunnels run between the
// tunnel endpoints; ICMP errors come from a router.
var (
	c4, s4 = tu.ClientV4, tu.ServerV4
	c6, s6 = tu.ClientV6, tu.ServerV6
	ta4    = netip.MustParseAddr("203.0.113.1")
	tb4    = netip.MustParseAddr("203.0.113.2")
	ta6    = netip.MustParseAddr("2001:db8:ffff::1")
	tb6    = netip.MustParseAddr("2001:db8:ffff::2")
	r4     = netip.MustParseAddr("192.0.2.254")
	r6     = netip.MustParseAddr("2001:db8:1::fe")
)

var payload = gopacket.Payload("flow payload bytes")

// key returns the expected key of a flow.
func key(src, dst netip.Addr, proto uint8, sport, dport uint16) flowaddr.Key {
	k := flowaddr.Key{Src: src.As16(), Dst: dst.As16(), SrcPort: sport, DstPort: dport, Proto: proto}
	if src.Is4() {
		k.Flags = flowaddr.FlagIPv4
	}
	return k
}

func frag(k flowaddr.Key) flowaddr.Key {
	k.Flags |= flowaddr.FlagFragment
	return k
}

// edit returns a copy of pkt changed by f.
func edit(pkt []byte, f func(b []byte)) []byte {
	b := append([]byte(nil), pkt...)
	f(b)
	return b
}

func put16(off int, v uint16) func([]byte) {
	return func(b []byte) { binary.BigEndian.PutUint16(b[off:], v) }
}

// ipv4Proto returns an IPv4 header announcing proto before a raw payload.
func ipv4Proto(src, dst netip.Addr, proto layers.IPProtocol) *layers.IPv4 {
	h := tu.IPv4(src, dst)
	h.Protocol = proto
	return h
}

func ipv6Proto(src, dst netip.Addr, proto layers.IPProtocol) *layers.IPv6 {
	h := tu.IPv6(src, dst)
	h.NextHeader = proto
	return h
}

type parseCase struct {
	name string
	pkt  []byte
	want flowaddr.Key
	err  error
}

func ipCases() []parseCase {
	tcp4 := tu.Build(tu.IPv4(c4, s4), tu.TCP(40000, 443), payload)
	udp4 := tu.Build(tu.IPv4(c4, s4), tu.UDP(40000, 53), payload)
	tcp6 := tu.Build(tu.IPv6(c6, s6), tu.TCP(40000, 443), payload)
	udp6 := tu.Build(tu.IPv6(c6, s6), tu.UDP(40000, 53), payload)
	k4tcp := key(c4, s4, 6, 40000, 443)
	k4udp := key(c4, s4, 17, 40000, 53)
	k6tcp := key(c6, s6, 6, 40000, 443)
	k6udp := key(c6, s6, 17, 40000, 53)

	opts := tu.IPv4(c4, s4)
	opts.Options = []layers.IPv4Option{{OptionType: 148, OptionLength: 4, OptionData: []byte{0, 0}}, {OptionType: 1}}
	bigTCP := tu.Build(tu.IPv4(c4, s4), tu.TCP(40000, 443), gopacket.Payload(make([]byte, 70000)))

	return []parseCase{
		// IPv4 (RFC 791).
		{"ipv4-tcp", tcp4, k4tcp, nil},
		{"ipv4-udp", udp4, k4udp, nil},
		{"ipv4-options-tcp", tu.Build(opts, tu.TCP(40000, 443), payload), k4tcp, nil},
		{"ipv4-trailing-bytes-ignored", append(append([]byte(nil), tcp4...), 0xde, 0xad), k4tcp, nil},
		{"ipv4-big-tcp-total-length-0", edit(bigTCP, put16(2, 0)), k4tcp, nil},
		{"empty", nil, flowaddr.Key{}, flowaddr.ErrEmpty},
		{"ipv4-short-header", tcp4[:10], flowaddr.Key{}, flowaddr.ErrTruncated},
		{"version-5", edit(tcp4, func(b []byte) { b[0] = 0x55 }), flowaddr.Key{}, flowaddr.ErrVersion},
		{"version-0", make([]byte, 40), flowaddr.Key{}, flowaddr.ErrVersion},
		{"ipv4-ihl-4", edit(tcp4, func(b []byte) { b[0] = 0x44 }), flowaddr.Key{}, flowaddr.ErrHeaderLength},
		{"ipv4-ihl-past-buffer", edit(tcp4[:24], func(b []byte) { b[0] = 0x4f; b[3] = 24 }), flowaddr.Key{}, flowaddr.ErrTruncated},
		{"ipv4-total-length-below-header", edit(tcp4, put16(2, 19)), flowaddr.Key{}, flowaddr.ErrTotalLength},
		{"ipv4-total-length-0", edit(tcp4, put16(2, 0)), flowaddr.Key{}, flowaddr.ErrTotalLength},
		{"ipv4-total-length-past-buffer", edit(tcp4, put16(2, uint16(len(tcp4)+1))), flowaddr.Key{}, flowaddr.ErrTruncated},

		// IPv6 (RFC 8200).
		{"ipv6-tcp", tcp6, k6tcp, nil},
		{"ipv6-udp", udp6, k6udp, nil},
		{"ipv6-trailing-bytes-ignored", append(append([]byte(nil), udp6...), 1, 2, 3), k6udp, nil},
		{"ipv6-short-header", tcp6[:39], flowaddr.Key{}, flowaddr.ErrTruncated},
		{"ipv6-payload-length-past-buffer", edit(tcp6, put16(4, uint16(len(tcp6)-39))), flowaddr.Key{}, flowaddr.ErrTruncated},
		{"ipv6-jumbogram", edit(tu.Build(tu.IPv6(c6, s6), tu.HopByHop(1), tu.UDP(40000, 53), payload), put16(4, 0)), k6udp, nil},
		{"ipv6-payload-length-0-tcp", edit(tcp6, put16(4, 0)), key(c6, s6, 6, 0, 0), flowaddr.ErrTruncated},
		{"ipv6-no-next-header", tu.Build(ipv6Proto(c6, s6, layers.IPProtocolNoNextHeader), payload), key(c6, s6, 59, 0, 0), nil},
		{"ipv6-no-next-header-empty", tu.Build(ipv6Proto(c6, s6, layers.IPProtocolNoNextHeader)), key(c6, s6, 59, 0, 0), nil},

		// Extension headers.
		{"ipv6-hbh-dst-rt-udp", tu.Build(tu.IPv6(c6, s6), tu.HopByHop(2), tu.DestOpts(1), tu.Routing(4, 1, s6),
			tu.UDP(40000, 53), payload), k6udp, nil},
		{"ipv6-ah-tcp", tu.Build(tu.IPv6(c6, s6), tu.AuthHeader(0x100, 12), tu.TCP(40000, 443), payload), k6tcp, nil},
		{"ipv6-dst-ah-dst-tcp", tu.Build(tu.IPv6(c6, s6), tu.DestOpts(1), tu.AuthHeader(0x100, 12), tu.DestOpts(3),
			tu.TCP(40000, 443), payload), k6tcp, nil},
		{"ipv4-ah-udp", tu.Build(tu.IPv4(c4, s4), tu.AuthHeader(0x100, 12), tu.UDP(40000, 53), payload), k4udp, nil},
		{"ipv6-ah-length-too-small", edit(tu.Build(tu.IPv6(c6, s6), tu.AuthHeader(0x100, 12), tu.TCP(40000, 443)),
			func(b []byte) { b[41] = 0 }), key(c6, s6, 51, 0, 0), flowaddr.ErrHeaderLength},
		{"ipv6-ah-truncated", tu.Build(ipv6Proto(c6, s6, layers.IPProtocolAH), gopacket.Payload{6, 4, 0, 0}),
			key(c6, s6, 51, 0, 0), flowaddr.ErrTruncated},
		{"ipv6-ext-length-past-payload", edit(tu.Build(tu.IPv6(c6, s6), tu.DestOpts(1), tu.UDP(40000, 53)),
			func(b []byte) { b[41] = 2 }), key(c6, s6, 60, 0, 0), flowaddr.ErrTruncated},
		{"ipv6-ext-truncated-1-byte", tu.Build(ipv6Proto(c6, s6, layers.IPProtocolIPv6Destination), gopacket.Payload{17}),
			key(c6, s6, 60, 0, 0), flowaddr.ErrTruncated},
		{"ipv6-8-ext-headers", tu.Build(tu.IPv6(c6, s6), tu.DestOpts(1), tu.DestOpts(1), tu.DestOpts(1), tu.DestOpts(1),
			tu.DestOpts(1), tu.DestOpts(1), tu.DestOpts(1), tu.DestOpts(1), tu.UDP(40000, 53)), k6udp, nil},
		{"ipv6-9-ext-headers", tu.Build(tu.IPv6(c6, s6), tu.DestOpts(1), tu.DestOpts(1), tu.DestOpts(1), tu.DestOpts(1),
			tu.DestOpts(1), tu.DestOpts(1), tu.DestOpts(1), tu.DestOpts(1), tu.DestOpts(1), tu.UDP(40000, 53)),
			key(c6, s6, 60, 0, 0), flowaddr.ErrExtChain},
		{"ipv6-8-ext-headers-then-fragment", tu.Build(tu.IPv6(c6, s6), tu.DestOpts(1), tu.DestOpts(1), tu.DestOpts(1),
			tu.DestOpts(1), tu.DestOpts(1), tu.DestOpts(1), tu.DestOpts(1), tu.DestOpts(1), tu.Fragment(1, true, 9),
			tu.UDP(40000, 53)), key(c6, s6, 44, 0, 0), flowaddr.ErrExtChain},

		// Fragments: no ports, the same key for every fragment.
		{"ipv4-first-fragment", tu.Build(func() *layers.IPv4 {
			h := tu.IPv4(c4, s4)
			h.Flags = layers.IPv4MoreFragments
			return h
		}(), tu.UDP(40000, 53), payload), frag(key(c4, s4, 17, 0, 0)), nil},
		{"ipv4-later-fragment", tu.Build(func() *layers.IPv4 {
			h := ipv4Proto(c4, s4, layers.IPProtocolUDP)
			h.FragOffset = 185
			return h
		}(), payload), frag(key(c4, s4, 17, 0, 0)), nil},
		{"ipv4-fragment-of-ipip", tu.Build(func() *layers.IPv4 {
			h := tu.IPv4(ta4, tb4)
			h.Flags = layers.IPv4MoreFragments
			return h
		}(), tu.IPv4(c4, s4), tu.UDP(40000, 53)), frag(key(ta4, tb4, 4, 0, 0)), nil},
		{"ipv4-dont-fragment-is-not-a-fragment", tu.Build(func() *layers.IPv4 {
			h := tu.IPv4(c4, s4)
			h.Flags = layers.IPv4DontFragment
			return h
		}(), tu.UDP(40000, 53), payload), k4udp, nil},
		{"ipv6-first-fragment", tu.Build(tu.IPv6(c6, s6), tu.Fragment(0, true, 7), tu.UDP(40000, 53), payload),
			frag(key(c6, s6, 17, 0, 0)), nil},
		{"ipv6-later-fragment", tu.Build(tu.IPv6(c6, s6), &tu.IPv6Fragment{NextHeader: 17, Offset: 100, ID: 7}, payload),
			frag(key(c6, s6, 17, 0, 0)), nil},
		{"ipv6-fragment-after-dst-opts", tu.Build(tu.IPv6(c6, s6), tu.DestOpts(1), tu.Fragment(0, true, 7),
			tu.UDP(40000, 53), payload), frag(key(c6, s6, 17, 0, 0)), nil},
		{"ipv6-atomic-fragment", tu.Build(tu.IPv6(c6, s6), tu.Fragment(0, false, 7), tu.TCP(40000, 443), payload), k6tcp, nil},
		{"ipv6-fragment-header-truncated", tu.Build(ipv6Proto(c6, s6, layers.IPProtocolIPv6Fragment), gopacket.Payload{17, 0, 0, 1}),
			key(c6, s6, 44, 0, 0), flowaddr.ErrTruncated},
	}
}

func tunnelCases() []parseCase {
	k4tcp := key(c4, s4, 6, 40000, 443)
	k4udp := key(c4, s4, 17, 40000, 53)
	k6tcp := key(c6, s6, 6, 40000, 443)
	k6udp := key(c6, s6, 17, 40000, 53)
	greFlow := key(ta4, tb4, 47, 0, 0)

	gre := func(modify func(*layers.GRE)) *layers.GRE {
		g := tu.GRE()
		modify(g)
		return g
	}
	arpFrame := tu.EthernetHeader(tu.ClientMAC, tu.ServerMAC)
	arpFrame.EtherType = layers.EthernetTypeARP
	arp := gopacket.Payload(make([]byte, 28))
	noI := tu.VXLAN(42)
	noI.ValidIDFlag = false
	eth := func() *tu.Ethernet { return tu.EthernetHeader(tu.ClientMAC, tu.ServerMAC) }

	ipip := func(n int) []gopacket.SerializableLayer {
		var ls []gopacket.SerializableLayer
		for range n - 1 {
			ls = append(ls, tu.IPv4(ta4, tb4))
		}
		return append(ls, tu.IPv4(c4, s4), tu.UDP(40000, 53))
	}

	return []parseCase{
		// IP in IP (RFC 2003, RFC 4213, RFC 2473).
		{"ipip-4in4", tu.Build(tu.IPv4(ta4, tb4), tu.IPv4(c4, s4), tu.TCP(40000, 443), payload), k4tcp, nil},
		{"ipip-6in4", tu.Build(tu.IPv4(ta4, tb4), tu.IPv6(c6, s6), tu.TCP(40000, 443), payload), k6tcp, nil},
		{"ipip-4in6", tu.Build(tu.IPv6(ta6, tb6), tu.IPv4(c4, s4), tu.UDP(40000, 53), payload), k4udp, nil},
		{"ipip-6in6", tu.Build(tu.IPv6(ta6, tb6), tu.IPv6(c6, s6), tu.UDP(40000, 53), payload), k6udp, nil},
		{"ipip-4-announces-6", tu.Build(ipv4Proto(ta4, tb4, layers.IPProtocolIPv4),
			gopacket.Payload(tu.Build(tu.IPv6(c6, s6), tu.UDP(1, 2)))), key(ta4, tb4, 4, 0, 0), flowaddr.ErrVersion},
		{"ipip-inner-truncated", tu.Build(ipv4Proto(ta4, tb4, layers.IPProtocolIPv4), gopacket.Payload{0x45, 0}),
			key(ta4, tb4, 4, 0, 0), flowaddr.ErrTruncated},
		{"ipip-inner-empty", tu.Build(ipv4Proto(ta4, tb4, layers.IPProtocolIPv6)), key(ta4, tb4, 41, 0, 0), flowaddr.ErrTruncated},
		{"depth-4", tu.Build(ipip(4)...), k4udp, nil},
		{"depth-5", tu.Build(ipip(5)...), key(ta4, tb4, 4, 0, 0), flowaddr.ErrDepth},

		// GRE (RFC 2784, RFC 2890).
		{"gre-ipv4", tu.Build(tu.IPv4(ta4, tb4), tu.GRE(), tu.IPv4(c4, s4), tu.TCP(40000, 443), payload), k4tcp, nil},
		{"gre-checksum-key-seq-ipv6", tu.Build(tu.IPv6(ta6, tb6), gre(func(g *layers.GRE) {
			g.ChecksumPresent, g.KeyPresent, g.Key, g.SeqPresent, g.Seq = true, true, 0xdeadbeef, true, 5
		}), tu.IPv6(c6, s6), tu.UDP(40000, 53), payload), k6udp, nil},
		{"gre-teb-ipv4", tu.Build(tu.IPv4(ta4, tb4), tu.GRE(), eth(), tu.IPv4(c4, s4), tu.UDP(40000, 53), payload), k4udp, nil},
		{"gre-teb-qinq-vlan-ipv6", tu.Build(tu.IPv4(ta4, tb4), tu.GREKey(9), eth(), tu.ServiceVLAN(100), tu.VLAN(200),
			tu.IPv6(c6, s6), tu.TCP(40000, 443), payload), k6tcp, nil},
		{"gre-teb-3-vlan-tags", tu.Build(tu.IPv4(ta4, tb4), tu.GREKey(0x00010002), eth(), tu.ServiceVLAN(1), tu.VLAN(2), tu.VLAN(3),
			tu.IPv4(c4, s4), tu.UDP(40000, 53)), key(ta4, tb4, 47, 1, 2), flowaddr.ErrVLANTags},
		{"gre-teb-vlan-truncated", tu.Build(tu.IPv4(ta4, tb4), tu.GRE(), func() *tu.Ethernet {
			e := eth()
			e.EtherType = layers.EthernetTypeDot1Q
			return e
		}(), gopacket.Payload{0, 5}),
			greFlow, flowaddr.ErrTruncated},
		{"gre-teb-ethernet-truncated", tu.Build(tu.IPv4(ta4, tb4), gre(func(g *layers.GRE) { g.Protocol = 0x6558 }),
			gopacket.Payload(make([]byte, 13))), greFlow, flowaddr.ErrTruncated},
		{"gre-teb-arp-keyless", tu.Build(tu.IPv4(ta4, tb4), tu.GRE(), arpFrame, arp), greFlow, nil},
		{"gre-teb-arp-keyed", tu.Build(tu.IPv4(ta4, tb4), tu.GREKey(0x00010002), arpFrame, arp), key(ta4, tb4, 47, 1, 2), nil},
		{"gre-ppp-keyed", tu.Build(tu.IPv4(ta4, tb4), gre(func(g *layers.GRE) {
			g.KeyPresent, g.Key, g.Protocol = true, 0xabcd1234, 0x880b
		}), payload), key(ta4, tb4, 47, 0xabcd, 0x1234), nil},
		{"gre-routing-is-opaque", tu.Build(tu.IPv4(ta4, tb4), gre(func(g *layers.GRE) { g.RoutingPresent = true }),
			tu.IPv4(c4, s4), tu.UDP(40000, 53)), greFlow, nil},
		{"gre-version-1-is-opaque", tu.Build(tu.IPv4(ta4, tb4), gre(func(g *layers.GRE) {
			g.Version, g.KeyPresent, g.Key, g.Protocol = 1, true, 0x00200001, 0x880b
		}), payload), greFlow, nil},
		{"gre-truncated", tu.Build(ipv4Proto(ta4, tb4, layers.IPProtocolGRE), gopacket.Payload{0, 0, 8}), greFlow, flowaddr.ErrTruncated},
		{"gre-key-truncated", tu.Build(ipv4Proto(ta4, tb4, layers.IPProtocolGRE), gopacket.Payload{0x20, 0, 8, 0, 1, 2}),
			greFlow, flowaddr.ErrTruncated},
		{"gre-announces-ipv4-carries-ipv6", tu.Build(tu.IPv4(ta4, tb4), gre(func(g *layers.GRE) { g.Protocol = layers.EthernetTypeIPv4 }),
			gopacket.Payload(tu.Build(tu.IPv6(c6, s6), tu.UDP(1, 2)))), greFlow, flowaddr.ErrVersion},

		// VXLAN (RFC 7348).
		{"vxlan-ipv4-tcp", tu.Build(tu.IPv4(ta4, tb4), tu.UDP(50000, tu.VXLANPort), tu.VXLAN(42), eth(), tu.IPv4(c4, s4),
			tu.TCP(40000, 443), payload), k4tcp, nil},
		{"vxlan-vlan-ipv6-udp", tu.Build(tu.IPv6(ta6, tb6), tu.UDP(50000, tu.VXLANPort), tu.VXLAN(42), eth(), tu.VLAN(7),
			tu.IPv6(c6, s6), tu.UDP(40000, 53), payload), k6udp, nil},
		{"vxlan-without-i-flag-is-udp", tu.Build(tu.IPv4(ta4, tb4), tu.UDP(50000, tu.VXLANPort), noI, eth(), tu.IPv4(c4, s4),
			tu.TCP(40000, 443)), key(ta4, tb4, 17, 50000, tu.VXLANPort), nil},
		{"vxlan-short-payload-is-udp", tu.Build(tu.IPv4(ta4, tb4), tu.UDP(50000, tu.VXLANPort), gopacket.Payload{8, 0, 0, 0}),
			key(ta4, tb4, 17, 50000, tu.VXLANPort), nil},
		{"vxlan-arp", tu.Build(tu.IPv4(ta4, tb4), tu.UDP(50000, tu.VXLANPort), tu.VXLAN(42), arpFrame, arp),
			key(ta4, tb4, 17, 50000, tu.VXLANPort), nil},
		{"vxlan-ethernet-truncated", tu.Build(tu.IPv4(ta4, tb4), tu.UDP(50000, tu.VXLANPort), tu.VXLAN(42), gopacket.Payload{1, 2, 3}),
			key(ta4, tb4, 17, 50000, tu.VXLANPort), flowaddr.ErrTruncated},
		{"vxlan-from-port-4789-is-udp", tu.Build(tu.IPv4(ta4, tb4), tu.UDP(tu.VXLANPort, 50000), tu.VXLAN(42), eth(),
			tu.IPv4(c4, s4), tu.TCP(40000, 443)), key(ta4, tb4, 17, tu.VXLANPort, 50000), nil},
	}
}

func transportCases() []parseCase {
	tcp4 := tu.Build(tu.IPv4(c4, s4), tu.TCP(40000, 443), payload)
	udp4 := tu.Build(tu.IPv4(c4, s4), tu.UDP(40000, 53), payload)
	dccp := func(extended bool) []byte {
		return tu.Build(tu.IPv4(c4, s4), &tu.DCCP{SrcPort: 5001, DstPort: 5002, Type: 1, Extended: extended,
			Extra: []byte{0, 0, 0, 0}}, payload)
	}
	udplite := tu.Build(tu.IPv4(c4, s4), &tu.UDPLite{SrcPort: 40000, DstPort: 53}, payload)
	tsOpts := tu.TCP(40000, 443)
	tsOpts.Options = []layers.TCPOption{{OptionType: layers.TCPOptionKindTimestamps, OptionData: make([]byte, 8)}}
	unk := key(c4, s4, 0, 0, 0)
	withProto := func(k flowaddr.Key, p uint8) flowaddr.Key { k.Proto = p; return k }

	return []parseCase{
		{"tcp-with-options", tu.Build(tu.IPv4(c4, s4), tsOpts, payload), key(c4, s4, 6, 40000, 443), nil},
		{"tcp-data-offset-4", edit(tcp4, func(b []byte) { b[32] = 4 << 4 }), withProto(unk, 6), flowaddr.ErrHeaderLength},
		{"tcp-data-offset-past-buffer", edit(tcp4, func(b []byte) { b[32] = 15 << 4 }), withProto(unk, 6), flowaddr.ErrTruncated},
		{"tcp-truncated", tu.Build(ipv4Proto(c4, s4, layers.IPProtocolTCP), gopacket.Payload(make([]byte, 19))),
			withProto(unk, 6), flowaddr.ErrTruncated},
		{"udp-length-7", edit(udp4, put16(24, 7)), withProto(unk, 17), flowaddr.ErrHeaderLength},
		{"udp-length-past-buffer", edit(udp4, put16(24, uint16(len(udp4)-19))), withProto(unk, 17), flowaddr.ErrTruncated},
		{"udp-length-0-jumbogram", edit(udp4, put16(24, 0)), key(c4, s4, 17, 40000, 53), nil},
		{"udp-length-shorter-than-ip-payload", edit(udp4, put16(24, 8)), key(c4, s4, 17, 40000, 53), nil},
		{"udp-truncated", tu.Build(ipv4Proto(c4, s4, layers.IPProtocolUDP), gopacket.Payload(make([]byte, 7))),
			withProto(unk, 17), flowaddr.ErrTruncated},
		{"udplite-coverage-0", udplite, key(c4, s4, 136, 40000, 53), nil},
		{"udplite-coverage-8", edit(udplite, put16(24, 8)), key(c4, s4, 136, 40000, 53), nil},
		{"udplite-coverage-4", edit(udplite, put16(24, 4)), withProto(unk, 136), flowaddr.ErrHeaderLength},
		{"udplite-coverage-past-buffer", edit(udplite, put16(24, 200)), withProto(unk, 136), flowaddr.ErrTruncated},
		{"udplite-truncated", tu.Build(ipv4Proto(c4, s4, layers.IPProtocolUDPLite), gopacket.Payload(make([]byte, 7))),
			withProto(unk, 136), flowaddr.ErrTruncated},
		{"sctp", tu.Build(tu.IPv4(c4, s4), tu.SCTP(5060, 5061), payload), key(c4, s4, 132, 5060, 5061), nil},
		{"sctp-truncated", tu.Build(ipv4Proto(c4, s4, layers.IPProtocolSCTP), gopacket.Payload(make([]byte, 11))),
			withProto(unk, 132), flowaddr.ErrTruncated},
		{"dccp-short-seq", dccp(false), key(c4, s4, 33, 5001, 5002), nil},
		{"dccp-extended-seq", dccp(true), key(c4, s4, 33, 5001, 5002), nil},
		{"dccp-data-offset-2", edit(dccp(false), func(b []byte) { b[24] = 2 }), withProto(unk, 33), flowaddr.ErrHeaderLength},
		{"dccp-data-offset-below-extended-header", edit(dccp(true), func(b []byte) { b[24] = 3 }), withProto(unk, 33), flowaddr.ErrHeaderLength},
		{"dccp-data-offset-past-buffer", edit(dccp(true), func(b []byte) { b[24] = 255 }), withProto(unk, 33), flowaddr.ErrTruncated},
		{"dccp-truncated", tu.Build(ipv4Proto(c4, s4, tu.ProtoDCCP), gopacket.Payload(make([]byte, 11))),
			withProto(unk, 33), flowaddr.ErrTruncated},
		{"esp-spi-in-ports", tu.Build(tu.IPv4(c4, s4), &tu.ESP{SPI: 0x12345678, Seq: 1}, payload), key(c4, s4, 50, 0x1234, 0x5678), nil},
		{"esp-truncated", tu.Build(ipv4Proto(c4, s4, layers.IPProtocolESP), gopacket.Payload{1, 2, 3, 4, 5, 6, 7}),
			withProto(unk, 50), flowaddr.ErrTruncated},
		{"icmp-echo-request", tu.Build(tu.IPv4(c4, s4), tu.ICMPv4Echo(true, 0x4242, 1), payload), key(c4, s4, 1, 0x4242, 0x4242), nil},
		{"icmp-echo-reply", tu.Build(tu.IPv4(s4, c4), tu.ICMPv4Echo(false, 0x4242, 1), payload), key(s4, c4, 1, 0x4242, 0x4242), nil},
		{"icmpv6-echo-request", tu.Build(tu.IPv6(c6, s6), tu.ICMPv6Echo(true, 7, 1)), key(c6, s6, 58, 7, 7), nil},
		{"icmpv6-echo-reply", tu.Build(tu.IPv6(s6, c6), tu.ICMPv6Echo(false, 7, 1)), key(s6, c6, 58, 7, 7), nil},
		{"icmp-timestamp-no-ports", tu.Build(tu.IPv4(c4, s4), tu.ICMPv4(13, 0, 0x00010001), gopacket.Payload(make([]byte, 12))),
			key(c4, s4, 1, 0, 0), nil},
		{"icmpv6-neighbor-solicitation-no-ports", tu.Build(tu.IPv6(c6, s6), tu.ICMPv6Msg(135, 0, 0), gopacket.Payload(s6.AsSlice())),
			key(c6, s6, 58, 0, 0), nil},
		{"icmp-truncated", tu.Build(ipv4Proto(c4, s4, layers.IPProtocolICMPv4), gopacket.Payload{8, 0, 0, 0, 0, 1, 0}),
			withProto(unk, 1), flowaddr.ErrTruncated},
		{"unknown-protocol", tu.Build(ipv4Proto(c4, s4, 253), payload), withProto(unk, 253), nil},
		{"ospf-no-ports", tu.Build(ipv4Proto(c4, s4, 89), payload), withProto(unk, 89), nil},
	}
}

func icmpErrorCases() []parseCase {
	udp4 := tu.Build(tu.IPv4(c4, s4), tu.UDP(40000, 53), payload)
	tcp4 := tu.Build(tu.IPv4(c4, s4), tu.TCP(40000, 443), payload)
	tcp6 := tu.Build(tu.IPv6(c6, s6), tu.TCP(40000, 443), payload)
	ext6 := tu.Build(tu.IPv6(c6, s6), tu.HopByHop(1), tu.Fragment(0, false, 3), tu.UDP(40000, 53), payload)
	echo4 := tu.Build(tu.IPv4(c4, s4), tu.ICMPv4Echo(true, 99, 1), payload)
	frag4 := tu.Build(func() *layers.IPv4 {
		h := ipv4Proto(c4, s4, layers.IPProtocolUDP)
		h.FragOffset = 10
		return h
	}(), payload)
	gre4 := tu.Build(tu.IPv4(ta4, tb4), tu.GREKey(5), tu.IPv4(c4, s4), tu.TCP(40000, 443), payload)
	vxlan6 := tu.Build(tu.IPv6(ta6, tb6), tu.UDP(50000, tu.VXLANPort), tu.VXLAN(42),
		tu.EthernetHeader(tu.ClientMAC, tu.ServerMAC), tu.IPv6(c6, s6), tu.TCP(40000, 443), payload)
	icmp4 := func(typ, code uint8, quote []byte, n int) []byte {
		return tu.Build(tu.IPv4(r4, c4), tu.ICMPv4(typ, code, 0), tu.Quote(quote, n))
	}
	icmp6 := func(typ uint8, quote []byte, n int) []byte {
		return tu.Build(tu.IPv6(r6, c6), tu.ICMPv6Msg(typ, 0, 1280), tu.Quote(quote, n))
	}
	all := 1 << 16
	router4 := key(r4, c4, 1, 0, 0)
	router6 := key(r6, c6, 58, 0, 0)
	errInErr := icmp4(3, 3, udp4, all)

	return []parseCase{
		// An ICMP error gets the key of the replies of the flow it quotes.
		{"icmp-port-unreachable", icmp4(3, 3, udp4, all), key(s4, c4, 17, 53, 40000), nil},
		{"icmp-source-quench", icmp4(4, 0, udp4, all), key(s4, c4, 17, 53, 40000), nil},
		{"icmp-redirect", icmp4(5, 1, udp4, all), key(s4, c4, 17, 53, 40000), nil},
		{"icmp-time-exceeded-rfc792-cut", icmp4(11, 0, tcp4, 28), key(s4, c4, 6, 443, 40000), nil},
		{"icmp-parameter-problem", icmp4(12, 0, tcp4, all), key(s4, c4, 6, 443, 40000), nil},
		{"icmp-frag-needed-quote-cut-to-ports", icmp4(3, 4, tcp4, 24), key(s4, c4, 6, 443, 40000), nil},
		{"icmp-quote-transport-too-short", icmp4(3, 4, tcp4, 22), key(s4, c4, 6, 0, 0), flowaddr.ErrTruncated},
		{"icmp-quote-ip-truncated", icmp4(3, 1, tcp4, 10), router4, flowaddr.ErrTruncated},
		{"icmp-quote-empty", icmp4(3, 1, tcp4, 0), router4, flowaddr.ErrTruncated},
		{"icmp-quote-is-ipv6", icmp4(3, 1, tcp6, all), router4, flowaddr.ErrVersion},
		{"icmp-quoting-echo", icmp4(11, 0, echo4, all), key(s4, c4, 1, 99, 99), nil},
		{"icmp-quoting-fragment", icmp4(11, 1, frag4, 28), frag(key(s4, c4, 17, 0, 0)), nil},
		{"icmp-quoting-gre-tunnel", icmp4(3, 4, gre4, 20+8+20+8), key(s4, c4, 6, 443, 40000), nil},
		{"icmp-quoting-icmp-error-stops", tu.Build(tu.IPv4(r4, c4), tu.ICMPv4(11, 0, 0), tu.Quote(errInErr, all)), router4, nil},
		{"icmp-quote-depth-4", tu.Build(tu.IPv4(ta4, tb4), tu.IPv4(ta4, tb4), tu.IPv4(r4, c4), tu.ICMPv4(3, 3, 0),
			tu.Quote(udp4, all)), key(s4, c4, 17, 53, 40000), nil},
		{"icmp-quote-depth-5", tu.Build(tu.IPv4(ta4, tb4), tu.IPv4(ta4, tb4), tu.IPv4(ta4, tb4), tu.IPv4(r4, c4),
			tu.ICMPv4(3, 3, 0), tu.Quote(udp4, all)), router4, flowaddr.ErrDepth},
		{"icmpv6-packet-too-big", icmp6(2, tcp6, all), key(s6, c6, 6, 443, 40000), nil},
		{"icmpv6-unreachable-ext-headers", icmp6(1, ext6, all), key(s6, c6, 17, 53, 40000), nil},
		{"icmpv6-time-exceeded-cut-quote", icmp6(3, tcp6, 48), key(s6, c6, 6, 443, 40000), nil},
		{"icmpv6-parameter-problem-quoting-vxlan", icmp6(4, vxlan6, all), key(s6, c6, 6, 443, 40000), nil},
		{"icmpv6-quote-truncated", icmp6(2, tcp6, 39), router6, flowaddr.ErrTruncated},
		{"icmpv6-quote-is-ipv4", icmp6(1, tcp4, all), router6, flowaddr.ErrVersion},
		{"icmpv6-quoting-icmpv6-error-stops", tu.Build(tu.IPv6(r6, c6), tu.ICMPv6Msg(3, 0, 0),
			tu.Quote(icmp6(2, tcp6, all), all)), router6, nil},
	}
}

func ethernetCases() []parseCase {
	eth := func() *tu.Ethernet { return tu.EthernetHeader(tu.ClientMAC, tu.ServerMAC) }
	tcp4 := tu.Build(eth(), tu.IPv4(c4, s4), tu.TCP(40000, 443))
	arpFrame := eth()
	arpFrame.EtherType = layers.EthernetTypeARP
	v4type := eth()
	v4type.EtherType = layers.EthernetTypeIPv4
	return []parseCase{
		{"eth-ipv4-tcp", tcp4, key(c4, s4, 6, 40000, 443), nil},
		{"eth-ipv4-padding-and-fcs", append(append([]byte(nil), tcp4...), make([]byte, 64-len(tcp4))...), key(c4, s4, 6, 40000, 443), nil},
		{"eth-vlan-ipv6-udp", tu.Build(eth(), tu.VLAN(10), tu.IPv6(c6, s6), tu.UDP(40000, 53), payload), key(c6, s6, 17, 40000, 53), nil},
		{"eth-qinq-vlan-ipv4", tu.Build(eth(), tu.ServiceVLAN(10), tu.VLAN(20), tu.IPv4(c4, s4), tu.UDP(40000, 53)), key(c4, s4, 17, 40000, 53), nil},
		{"eth-3-vlan-tags", tu.Build(eth(), tu.ServiceVLAN(10), tu.VLAN(20), tu.VLAN(30), tu.IPv4(c4, s4), tu.UDP(40000, 53)),
			flowaddr.Key{}, flowaddr.ErrVLANTags},
		{"eth-vlan-truncated", tu.Build(eth(), tu.VLAN(10))[:16], flowaddr.Key{}, flowaddr.ErrTruncated},
		{"eth-arp", tu.Build(arpFrame, gopacket.Payload(make([]byte, 28))), flowaddr.Key{}, flowaddr.ErrNotIP},
		{"eth-8023-length", edit(tcp4, put16(12, 46)), flowaddr.Key{}, flowaddr.ErrNotIP},
		{"eth-type-ipv4-carries-ipv6", tu.Build(v4type, gopacket.Payload(tu.Build(tu.IPv6(c6, s6), tu.UDP(1, 2)))),
			flowaddr.Key{}, flowaddr.ErrVersion},
		{"eth-truncated", tcp4[:13], flowaddr.Key{}, flowaddr.ErrTruncated},
		{"eth-empty", nil, flowaddr.Key{}, flowaddr.ErrEmpty},
	}
}

func linuxSLLCases() []parseCase {
	sll := func() *tu.LinuxSLL { return tu.LinuxSLLHeader(tu.ClientMAC) }
	arp := sll()
	arp.Protocol = layers.EthernetTypeARP
	return []parseCase{
		{"sll-ipv4-udp", tu.Build(sll(), tu.IPv4(c4, s4), tu.UDP(40000, 53)), key(c4, s4, 17, 40000, 53), nil},
		{"sll-ipv6-tcp", tu.Build(sll(), tu.IPv6(c6, s6), tu.TCP(40000, 443)), key(c6, s6, 6, 40000, 443), nil},
		{"sll-vlan-ipv4", tu.Build(sll(), tu.VLAN(5), tu.IPv4(c4, s4), tu.UDP(40000, 53)), key(c4, s4, 17, 40000, 53), nil},
		{"sll-arp", tu.Build(arp, gopacket.Payload(make([]byte, 28))), flowaddr.Key{}, flowaddr.ErrNotIP},
		{"sll-truncated", tu.Build(sll(), tu.IPv4(c4, s4))[:15], flowaddr.Key{}, flowaddr.ErrTruncated},
		{"sll-ip-truncated", tu.Build(sll(), tu.IPv4(c4, s4), tu.UDP(40000, 53))[:30], flowaddr.Key{}, flowaddr.ErrTruncated},
		{"sll-empty", nil, flowaddr.Key{}, flowaddr.ErrEmpty},
	}
}

func runCases(t *testing.T, parse func([]byte) (flowaddr.Key, error), cases []parseCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parse(tc.pkt)
			if err != tc.err {
				t.Errorf("error %v, want %v", err, tc.err)
			}
			if got != tc.want {
				t.Errorf("key\n got  %v\n want %v\n packet %x", fmtKey(got), fmtKey(tc.want), tc.pkt)
			}
		})
	}
}

// parseIntoDirty is Parse through ParseInto, into a key that held another
// flow: ParseInto must overwrite all of it.
func parseIntoDirty(pkt []byte) (flowaddr.Key, error) {
	k := flowaddr.Key{SrcPort: 1, DstPort: 2, Proto: 3, Flags: flowaddr.FlagIPv4 | flowaddr.FlagFragment}
	for i := range k.Src {
		k.Src[i], k.Dst[i] = 0xaa, 0xbb
	}
	err := flowaddr.ParseInto(&k, pkt)
	return k, err
}

func TestParseInto(t *testing.T) {
	for _, cases := range [][]parseCase{ipCases(), tunnelCases(), transportCases(), icmpErrorCases()} {
		runCases(t, parseIntoDirty, cases)
	}
}

func TestParseIP(t *testing.T)         { runCases(t, flowaddr.Parse, ipCases()) }
func TestParseTunnels(t *testing.T)    { runCases(t, flowaddr.Parse, tunnelCases()) }
func TestParseTransport(t *testing.T)  { runCases(t, flowaddr.Parse, transportCases()) }
func TestParseICMPErrors(t *testing.T) { runCases(t, flowaddr.Parse, icmpErrorCases()) }
func TestParseEthernet(t *testing.T)   { runCases(t, flowaddr.ParseEthernet, ethernetCases()) }
func TestParseLinuxSLL(t *testing.T)   { runCases(t, flowaddr.ParseLinuxSLL, linuxSLLCases()) }

// TestFragmentsShareKey checks that every fragment of one datagram gets
// the same key, whether it holds the transport header or not.
func TestFragmentsShareKey(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		var first, later []byte
		if v6 {
			first = tu.Build(tu.IPv6(c6, s6), tu.Fragment(0, true, 1), tu.TCP(40000, 443), payload)
			later = tu.Build(tu.IPv6(c6, s6), &tu.IPv6Fragment{NextHeader: 6, Offset: 3, ID: 1}, payload)
		} else {
			h := tu.IPv4(c4, s4)
			h.Flags = layers.IPv4MoreFragments
			first = tu.Build(h, tu.TCP(40000, 443), payload)
			h = ipv4Proto(c4, s4, layers.IPProtocolTCP)
			h.FragOffset = 3
			later = tu.Build(h, payload)
		}
		k1, err1 := flowaddr.Parse(first)
		k2, err2 := flowaddr.Parse(later)
		if err1 != nil || err2 != nil || k1 != k2 || k1.Flags&flowaddr.FlagFragment == 0 {
			t.Errorf("v6=%v: first fragment %v (%v), later %v (%v)", v6, fmtKey(k1), err1, fmtKey(k2), err2)
		}
	}
}

// TestPayloadNeverChangesKey rewrites the bytes after the innermost
// transport header of random packets: the key and error must not change.
func TestPayloadNeverChangesKey(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	mutated := 0
	for i := range 4000 {
		var g tu.Generated
		parse := flowaddr.Parse
		if i%4 == 0 {
			g, parse = tu.RandomFrame(r, flowaddr.MaxDepth, false), flowaddr.ParseEthernet
		} else {
			g = tu.RandomPacket(r, flowaddr.MaxDepth, false)
		}
		want, werr := parse(g.Data)
		if g.PayloadLen == 0 {
			continue
		}
		mutated++
		start := len(g.Data) - g.PayloadLen
		for round := range 3 {
			b := append([]byte(nil), g.Data...)
			switch round {
			case 0: // every payload byte
				for j := start; j < len(b); j++ {
					b[j] = byte(r.Uint32())
				}
			case 1: // one byte, all bits
				b[start+r.IntN(g.PayloadLen)] ^= 0xff
			default: // the first payload byte, where a header would start
				b[start] ^= 0xff
			}
			if got, err := parse(b); got != want || err != werr {
				t.Fatalf("%s: changing payload bytes changed the key\n was %v, %v\n now %v, %v\n packet %x\n mutated %x",
					g.Desc, fmtKey(want), werr, fmtKey(got), err, g.Data, b)
			}
		}
	}
	if mutated < 3000 {
		t.Errorf("only %d packets had payload", mutated)
	}
}

// TestReplyDirection checks that the reply direction of a flow parses to
// the reversed key, so that Canonical gives both directions one key.
func TestReplyDirection(t *testing.T) {
	checked, skipped := 0, 0
	for seed := range uint64(4000) {
		gen := tu.RandomPacket
		parse := flowaddr.Parse
		if seed%4 == 0 {
			gen, parse = tu.RandomFrame, flowaddr.ParseEthernet
		}
		fwd := gen(rand.New(rand.NewPCG(seed, 9)), flowaddr.MaxDepth, false)
		rev := gen(rand.New(rand.NewPCG(seed, 9)), flowaddr.MaxDepth, true)
		if fwd.Desc != rev.Desc || len(fwd.Data) != len(rev.Data) {
			t.Fatalf("seed %d: reply packet differs in shape: %s vs %s", seed, fwd.Desc, rev.Desc)
		}
		kf, errF := parse(fwd.Data)
		kr, errR := parse(rev.Data)
		if errF != nil || errR != nil {
			t.Fatalf("seed %d %s: %v, %v", seed, fwd.Desc, errF, errR)
		}
		if !fwd.Symmetric {
			skipped++
			continue
		}
		checked++
		if kr != kf.Reverse() || kr.Canonical() != kf.Canonical() {
			t.Errorf("seed %d %s:\n forward %v\n reply   %v", seed, fwd.Desc, fmtKey(kf), fmtKey(kr))
		}
	}
	t.Logf("%d symmetric flows checked, %d keyed by SPI, GRE key or VXLAN port skipped", checked, skipped)
	if checked < 3000 {
		t.Errorf("only %d symmetric flows", checked)
	}
}

// TestICMPErrorMatchesReplies quotes random packets in ICMP errors, whole
// or cut as RFC 792 allows: the error's key must be the reversed key of
// the quoted packet, which is the key of the flow's replies.
func TestICMPErrorMatchesReplies(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	checked := 0
	for range 3000 {
		g := tu.RandomPacket(r, flowaddr.MaxDepth-1, false)
		if strings.Contains(g.Desc, "err") {
			continue // an error quoting an error is not followed
		}
		want, err := flowaddr.Parse(g.Data)
		if err != nil {
			t.Fatalf("%s: %v", g.Desc, err)
		}
		n := len(g.Data) - r.IntN(g.PayloadLen+1)
		var icmp []byte
		if g.Data[0]>>4 == 6 {
			icmp = tu.Build(tu.IPv6(r6, c6), tu.ICMPv6Msg(2, 0, 1280), tu.Quote(g.Data, n))
		} else {
			icmp = tu.Build(tu.IPv4(r4, c4), tu.ICMPv4(3, 4, 1400), tu.Quote(g.Data, n))
		}
		got, err := flowaddr.Parse(icmp)
		if err != nil || got != want.Reverse() {
			t.Errorf("%s quoted to %d of %d bytes:\n got  %v, %v\n want %v", g.Desc, n, len(g.Data), fmtKey(got), err,
				fmtKey(want.Reverse()))
		}
		checked++
	}
	if checked < 2000 {
		t.Errorf("only %d packets checked", checked)
	}
}

// TestParseDoesNotAllocate runs every table packet, the benchmark packets
// and random garbage through the parsers under testing.AllocsPerRun.
func TestParseDoesNotAllocate(t *testing.T) {
	type run struct {
		parse func([]byte) (flowaddr.Key, error)
		pkt   []byte
	}
	var runs []run
	for _, cases := range [][]parseCase{ipCases(), tunnelCases(), transportCases(), icmpErrorCases()} {
		for _, tc := range cases {
			runs = append(runs, run{flowaddr.Parse, tc.pkt})
		}
	}
	for _, tc := range ethernetCases() {
		runs = append(runs, run{flowaddr.ParseEthernet, tc.pkt})
	}
	for _, tc := range linuxSLLCases() {
		runs = append(runs, run{flowaddr.ParseLinuxSLL, tc.pkt})
	}
	for _, bp := range tu.BenchPackets() {
		runs = append(runs, run{flowaddr.Parse, bp.Data}, run{parseIntoDirty, bp.Data})
	}
	r := rand.New(rand.NewPCG(1, 1))
	for range 200 {
		garbage := make([]byte, r.IntN(200))
		for i := range garbage {
			garbage[i] = byte(r.Uint32())
		}
		if len(garbage) > 0 && r.IntN(2) == 0 {
			garbage[0] = 0x45 // look like IPv4 for a few more bytes
		}
		runs = append(runs, run{flowaddr.Parse, garbage}, run{parseIntoDirty, garbage},
			run{flowaddr.ParseEthernet, garbage}, run{flowaddr.ParseLinuxSLL, garbage})
	}
	for i, rn := range runs {
		if allocs := testing.AllocsPerRun(20, func() { sinkKey, _ = rn.parse(rn.pkt) }); allocs != 0 {
			t.Errorf("run %d (%x): %v allocations", i, rn.pkt, allocs)
		}
	}
}

// BenchmarkParse measures Parse on the shared benchmark packets; compare
// with BenchmarkGopacketParse in the same run.
func BenchmarkParse(b *testing.B) {
	for _, bp := range tu.BenchPackets() {
		b.Run(bp.Name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bp.Data)))
			var k flowaddr.Key
			for b.Loop() {
				k, _ = flowaddr.Parse(bp.Data)
			}
			sinkKey = k
		})
	}
}

// BenchmarkParseEthernet measures the full parser, which Parse leaves its
// other packets to: the benchmark packets behind an Ethernet header, which
// ParseEthernet parses without Parse's fast path.
func BenchmarkParseEthernet(b *testing.B) {
	for _, bp := range tu.BenchPackets() {
		frame := make([]byte, 14, 14+len(bp.Data))
		binary.BigEndian.PutUint16(frame[12:], 0x0800)
		if bp.Data[0]>>4 == 6 {
			binary.BigEndian.PutUint16(frame[12:], 0x86dd)
		}
		frame = append(frame, bp.Data...)
		b.Run(bp.Name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(frame)))
			var k flowaddr.Key
			for b.Loop() {
				k, _ = flowaddr.ParseEthernet(frame)
			}
			sinkKey = k
		})
	}
}

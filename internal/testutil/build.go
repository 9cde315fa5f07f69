package testutil

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// Endpoints from the documentation ranges (RFC 5737, RFC 3849, RFC 7042).
var (
	ClientV4  = netip.MustParseAddr("192.0.2.1")
	ServerV4  = netip.MustParseAddr("198.51.100.2")
	ClientV6  = netip.MustParseAddr("2001:db8:1::1")
	ServerV6  = netip.MustParseAddr("2001:db8:2::2")
	ClientMAC = net.HardwareAddr{0x00, 0x00, 0x5e, 0x00, 0x53, 0x01}
	ServerMAC = net.HardwareAddr{0x00, 0x00, 0x5e, 0x00, 0x53, 0x02}
)

// Build serializes layers, outermost first, into a new packet, with
// gopacket's FixLengths and ComputeChecksums.
//
// Build chains the layers: each layer's next-protocol field (IPv4
// Protocol, IPv6 and extension NextHeader, GRE Protocol, Ethernet, VLAN
// tag and SLL EtherType) is set from the layer after it, unless that one
// is a [gopacket.Payload], whose protocol Build cannot know: set the field
// yourself there. TCP, UDP and [ICMPv6] layers get their checksum
// pseudo-header from the nearest IP layer before them, so a TCP or UDP
// layer needs one. Build panics on a layer that cannot be serialized: it
// is for tests, where that is a bug in the test.
func Build(ls ...gopacket.SerializableLayer) []byte {
	chain(ls)
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		panic(fmt.Sprintf("testutil.Build: %v", err))
	}
	return buf.Bytes()
}

// chain sets next-protocol fields and checksum pseudo-headers.
func chain(ls []gopacket.SerializableLayer) {
	var network gopacket.NetworkLayer
	var src, dst net.IP
	for i, l := range ls {
		switch l := l.(type) {
		case *layers.IPv4:
			network, src, dst = l, l.SrcIP, l.DstIP
		case *layers.IPv6:
			network, src, dst = l, l.SrcIP, l.DstIP
		case *layers.TCP:
			if network != nil {
				_ = l.SetNetworkLayerForChecksum(network)
			}
		case *layers.UDP:
			if network != nil {
				_ = l.SetNetworkLayerForChecksum(network)
			}
		case *ICMPv6:
			l.src, l.dst = src, dst
		}
		if i+1 < len(ls) {
			setNext(l, ls[i+1])
		}
	}
}

// setNext sets l's next-protocol field to the protocol of next.
func setNext(l, next gopacket.SerializableLayer) {
	proto, isIP := ipProtocolOf(next)
	etype, isEther := etherTypeOf(next)
	switch l := l.(type) {
	case *layers.IPv4:
		if isIP {
			l.Protocol = proto
		}
	case *layers.IPv6:
		if isIP {
			l.NextHeader = proto
		}
	case *IPv6Ext:
		if isIP {
			l.NextHeader = proto
		}
	case *IPv6Fragment:
		if isIP {
			l.NextHeader = proto
		}
	case *AH:
		if isIP {
			l.NextHeader = proto
		}
	case *layers.GRE:
		if isEther {
			l.Protocol = etype
		}
	case *Ethernet:
		if isEther {
			l.EtherType = etype
		}
	case *layers.Dot1Q:
		if isEther {
			l.Type = etype
		}
	case *ServiceTag:
		if isEther {
			l.Type = etype
		}
	case *LinuxSLL:
		if isEther {
			l.Protocol = etype
		}
	}
}

// ipProtocolOf returns the IP protocol number that announces l.
func ipProtocolOf(l gopacket.SerializableLayer) (layers.IPProtocol, bool) {
	switch l := l.(type) {
	case *layers.IPv4:
		return layers.IPProtocolIPv4, true
	case *layers.IPv6:
		return layers.IPProtocolIPv6, true
	case *IPv6Ext:
		return l.Kind, true
	case *IPv6Fragment:
		return layers.IPProtocolIPv6Fragment, true
	case *AH:
		return layers.IPProtocolAH, true
	case *ESP:
		return layers.IPProtocolESP, true
	case *layers.TCP:
		return layers.IPProtocolTCP, true
	case *layers.UDP:
		return layers.IPProtocolUDP, true
	case *UDPLite:
		return layers.IPProtocolUDPLite, true
	case *layers.SCTP:
		return layers.IPProtocolSCTP, true
	case *DCCP:
		return ProtoDCCP, true
	case *layers.ICMPv4:
		return layers.IPProtocolICMPv4, true
	case *ICMPv6:
		return layers.IPProtocolICMPv6, true
	case *layers.GRE:
		return layers.IPProtocolGRE, true
	}
	return 0, false
}

// etherTypeOf returns the EtherType that announces l.
func etherTypeOf(l gopacket.SerializableLayer) (layers.EthernetType, bool) {
	switch l.(type) {
	case *layers.IPv4:
		return layers.EthernetTypeIPv4, true
	case *layers.IPv6:
		return layers.EthernetTypeIPv6, true
	case *Ethernet:
		return layers.EthernetTypeTransparentEthernetBridging, true
	case *layers.Dot1Q:
		return layers.EthernetTypeDot1Q, true
	case *ServiceTag:
		return layers.EthernetTypeQinQ, true
	}
	return 0, false
}

// ProtoDCCP is DCCP's IP protocol number, which gopacket does not name.
const ProtoDCCP layers.IPProtocol = 33

// VXLANPort is the VXLAN UDP destination port (RFC 7348 section 5).
const VXLANPort = 4789

// IPv4 returns an IPv4 header from src to dst (TTL 64). Set Flags and
// FragOffset for a fragment, Options for options.
func IPv4(src, dst netip.Addr) *layers.IPv4 {
	return &layers.IPv4{Version: 4, TTL: 64, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
}

// IPv6 returns an IPv6 header from src to dst (hop limit 64).
func IPv6(src, dst netip.Addr) *layers.IPv6 {
	return &layers.IPv6{Version: 6, HopLimit: 64, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
}

// HopByHop returns a Hop-by-Hop Options header of 8*units bytes (units at
// least 1) holding one PadN option.
func HopByHop(units int) *IPv6Ext {
	return &IPv6Ext{Kind: layers.IPProtocolIPv6HopByHop, Data: padN(units)}
}

// DestOpts returns a Destination Options header of 8*units bytes (units at
// least 1) holding one PadN option.
func DestOpts(units int) *IPv6Ext {
	return &IPv6Ext{Kind: layers.IPProtocolIPv6Destination, Data: padN(units)}
}

// padN returns the option area of an 8*units-byte options header: one
// PadN option (RFC 8200 section 4.2) filling it.
func padN(units int) []byte {
	d := make([]byte, 8*units-2)
	d[0] = 1
	d[1] = byte(len(d) - 2)
	return d
}

// Routing returns a Routing header of routing type typ listing addrs.
func Routing(typ, segmentsLeft uint8, addrs ...netip.Addr) *IPv6Ext {
	d := make([]byte, 6, 6+16*len(addrs))
	d[0], d[1] = typ, segmentsLeft
	for _, a := range addrs {
		d = append(d, a.AsSlice()...)
	}
	return &IPv6Ext{Kind: layers.IPProtocolIPv6Routing, Data: d}
}

// Fragment returns an IPv6 Fragment header. Offset is in 8-byte units.
func Fragment(offset uint16, more bool, id uint32) *IPv6Fragment {
	return &IPv6Fragment{Offset: offset, More: more, ID: id}
}

// AuthHeader returns an Authentication Header with an ICV of icvLen zero
// bytes (a multiple of 4; 12 for HMAC-SHA-256-128 keeps IPv6 alignment).
func AuthHeader(spi uint32, icvLen int) *AH {
	return &AH{SPI: spi, Seq: 1, ICV: make([]byte, icvLen)}
}

// TCP returns a TCP header with the SYN flag.
func TCP(src, dst uint16) *layers.TCP {
	return &layers.TCP{SrcPort: layers.TCPPort(src), DstPort: layers.TCPPort(dst), Seq: 1, SYN: true, Window: 65535}
}

// UDP returns a UDP header.
func UDP(src, dst uint16) *layers.UDP {
	return &layers.UDP{SrcPort: layers.UDPPort(src), DstPort: layers.UDPPort(dst)}
}

// SCTP returns an SCTP common header.
func SCTP(src, dst uint16) *layers.SCTP {
	return &layers.SCTP{SrcPort: layers.SCTPPort(src), DstPort: layers.SCTPPort(dst), VerificationTag: 0x5ca1ab1e}
}

// ICMPv4 returns an ICMP header of type typ and code; rest fills bytes 4
// to 8 (identifier and sequence, next-hop MTU, gateway, pointer).
func ICMPv4(typ, code uint8, rest uint32) *layers.ICMPv4 {
	return &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, code), Id: uint16(rest >> 16), Seq: uint16(rest)}
}

// ICMPv4Echo returns an ICMP Echo Request (or Reply) header.
func ICMPv4Echo(request bool, id, seq uint16) *layers.ICMPv4 {
	typ := uint8(layers.ICMPv4TypeEchoReply)
	if request {
		typ = layers.ICMPv4TypeEchoRequest
	}
	return ICMPv4(typ, 0, uint32(id)<<16|uint32(seq))
}

// ICMPv6Msg returns an ICMPv6 header of type typ and code with rest as its
// bytes 4 to 8.
func ICMPv6Msg(typ, code uint8, rest uint32) *ICMPv6 {
	return &ICMPv6{Type: typ, Code: code, Rest: rest}
}

// ICMPv6Echo returns an ICMPv6 Echo Request (or Reply) header.
func ICMPv6Echo(request bool, id, seq uint16) *ICMPv6 {
	typ := uint8(layers.ICMPv6TypeEchoReply)
	if request {
		typ = layers.ICMPv6TypeEchoRequest
	}
	return ICMPv6Msg(typ, 0, uint32(id)<<16|uint32(seq))
}

// GRE returns a GRE version 0 header without optional fields. Set
// ChecksumPresent, KeyPresent with Key, SeqPresent with Seq as needed.
func GRE() *layers.GRE {
	return &layers.GRE{}
}

// GREKey returns a GRE header carrying key (RFC 2890).
func GREKey(key uint32) *layers.GRE {
	return &layers.GRE{KeyPresent: true, Key: key}
}

// VXLAN returns a VXLAN header with the I flag and vni. The UDP header
// before it must go to [VXLANPort].
func VXLAN(vni uint32) *layers.VXLAN {
	return &layers.VXLAN{ValidIDFlag: true, VNI: vni}
}

// EthernetHeader returns an Ethernet II header from src to dst.
func EthernetHeader(src, dst net.HardwareAddr) *Ethernet {
	return &Ethernet{Src: src, Dst: dst}
}

// VLAN returns an 802.1Q customer tag (TPID 0x8100) for vid.
func VLAN(vid uint16) *layers.Dot1Q {
	return &layers.Dot1Q{VLANIdentifier: vid}
}

// ServiceVLAN returns an 802.1ad service tag (TPID 0x88A8) for vid.
func ServiceVLAN(vid uint16) *ServiceTag {
	return &ServiceTag{layers.Dot1Q{VLANIdentifier: vid}}
}

// LinuxSLLHeader returns a Linux cooked capture v1 header of an incoming
// Ethernet packet from addr.
func LinuxSLLHeader(addr net.HardwareAddr) *LinuxSLL {
	return &LinuxSLL{ARPHRD: 1, Addr: addr}
}

// Quote returns the first n bytes of pkt (all of it if shorter) as the
// payload of an ICMP error, copied.
func Quote(pkt []byte, n int) gopacket.Payload {
	n = min(n, len(pkt))
	return gopacket.Payload(append([]byte(nil), pkt[:n]...))
}

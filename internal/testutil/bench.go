package testutil

import "github.com/google/gopacket"

// NamedPacket is a packet with a name for subtests and benchmarks.
type NamedPacket struct {
	Name string
	Data []byte
}

// BenchPackets returns the packets flow-key benchmarks measure, the same on
// every call so that benchmarks of different parsers compare like with
// like: ipv4-tcp, ipv6-tcp, ipv6-ext-udp (Hop-by-Hop, Destination Options
// and Routing headers), ipv4-gre-ipv6-tcp (keyed GRE) and ipv6-4in6-udp,
// each with 100 bytes of payload.
func BenchPackets() []NamedPacket {
	payload := gopacket.Payload(make([]byte, 100))
	gre := GREKey(0x01020304)
	return []NamedPacket{
		{"ipv4-tcp", Build(IPv4(ClientV4, ServerV4), TCP(40000, 443), payload)},
		{"ipv6-tcp", Build(IPv6(ClientV6, ServerV6), TCP(40000, 443), payload)},
		{"ipv6-ext-udp", Build(IPv6(ClientV6, ServerV6), HopByHop(1), DestOpts(1),
			Routing(4, 1, ServerV6), UDP(40000, 53), payload)},
		{"ipv4-gre-ipv6-tcp", Build(IPv4(ClientV4, ServerV4), gre, IPv6(ClientV6, ServerV6), TCP(40000, 443), payload)},
		{"ipv6-4in6-udp", Build(IPv6(ClientV6, ServerV6), IPv4(ClientV4, ServerV4), UDP(40000, 53), payload)},
	}
}

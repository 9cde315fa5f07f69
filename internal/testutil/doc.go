// Package testutil holds helpers shared by the module's tests.
//
// # Packet builders
//
// [Build] serializes layers, outermost first, with gopacket, filling
// lengths, checksums and every next-protocol field from the layer after
// it. The constructors ([IPv4], [IPv6], [TCP], [GREKey], [VXLAN], [VLAN],
// [ICMPv6Echo], [Fragment], [AuthHeader], ...) return layers with
// documentation addresses in mind ([ClientV4], [ServerV6], ...); the
// types in layers.go write what gopacket can decode but not serialize
// (IPv6 extension and Fragment headers, AH, ESP, UDP-Lite, DCCP, Linux
// cooked capture) and an Ethernet header that does not pad.
//
//	pkt := testutil.Build(testutil.IPv6(testutil.ClientV6, testutil.ServerV6),
//		testutil.TCP(40000, 443), gopacket.Payload("hello"))
//
// # Random packets
//
// [RandomPacket] and [RandomFrame] draw valid packets from a seeded
// math/rand/v2 generator, covering every encapsulation and transport the
// flow parser knows, for differential tests and fuzz seeds; asked for the
// reply direction with the same seed they return the same packet with
// every endpoint swapped. [BenchPackets] is the fixed set that benchmarks
// of different parsers share.
package testutil

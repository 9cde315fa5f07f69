package testutil

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net"
	"strings"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// decode decodes pkt with gopacket from first and returns its layer types.
func decode(t *testing.T, pkt []byte, first gopacket.LayerType) (gopacket.Packet, []gopacket.LayerType) {
	t.Helper()
	p := gopacket.NewPacket(pkt, first, gopacket.Default)
	if el := p.ErrorLayer(); el != nil {
		t.Fatalf("gopacket cannot decode %x: %v", pkt, el.Error())
	}
	var types []gopacket.LayerType
	for _, l := range p.Layers() {
		types = append(types, l.LayerType())
	}
	return p, types
}

func TestBuildChainsProtocols(t *testing.T) {
	tests := []struct {
		name   string
		layers []gopacket.SerializableLayer
		first  gopacket.LayerType
		want   []gopacket.LayerType
	}{
		{"ipv4-gre-teb-qinq-vlan-ipv6-udp",
			[]gopacket.SerializableLayer{IPv4(ClientV4, ServerV4), GREKey(7), EthernetHeader(ClientMAC, ServerMAC),
				ServiceVLAN(10), VLAN(20), IPv6(ClientV6, ServerV6), UDP(1000, 2000), gopacket.Payload("x")},
			layers.LayerTypeIPv4,
			[]gopacket.LayerType{layers.LayerTypeIPv4, layers.LayerTypeGRE, layers.LayerTypeEthernet, layers.LayerTypeDot1Q,
				layers.LayerTypeDot1Q, layers.LayerTypeIPv6, layers.LayerTypeUDP, gopacket.LayerTypePayload}},
		{"ipv6-hbh-dst-ah-tcp",
			[]gopacket.SerializableLayer{IPv6(ClientV6, ServerV6), HopByHop(2), DestOpts(1), AuthHeader(9, 12),
				TCP(1000, 443), gopacket.Payload("x")},
			layers.LayerTypeIPv6,
			[]gopacket.LayerType{layers.LayerTypeIPv6, layers.LayerTypeIPv6HopByHop, layers.LayerTypeIPv6Destination,
				layers.LayerTypeIPSecAH, layers.LayerTypeTCP, gopacket.LayerTypePayload}},
		{"ipv6-routing0-fragment",
			[]gopacket.SerializableLayer{IPv6(ClientV6, ServerV6), Routing(0, 1, ServerV6), Fragment(0, true, 1),
				UDP(1, 2)},
			layers.LayerTypeIPv6,
			[]gopacket.LayerType{layers.LayerTypeIPv6, layers.LayerTypeIPv6Routing, layers.LayerTypeIPv6Fragment,
				gopacket.LayerTypeFragment}},
		{"ipv4-udp-vxlan-ethernet-ipv4-icmp",
			[]gopacket.SerializableLayer{IPv4(ClientV4, ServerV4), UDP(50000, VXLANPort), VXLAN(5),
				EthernetHeader(ClientMAC, ServerMAC), IPv4(ClientV4, ServerV4), ICMPv4Echo(true, 1, 2)},
			layers.LayerTypeIPv4,
			[]gopacket.LayerType{layers.LayerTypeIPv4, layers.LayerTypeUDP, layers.LayerTypeVXLAN, layers.LayerTypeEthernet,
				layers.LayerTypeIPv4, layers.LayerTypeICMPv4}},
		{"sll-ipv6-esp",
			[]gopacket.SerializableLayer{LinuxSLLHeader(ClientMAC), IPv6(ClientV6, ServerV6), &ESP{SPI: 3, Seq: 4},
				gopacket.Payload("ciphertext")},
			layers.LayerTypeLinuxSLL,
			[]gopacket.LayerType{layers.LayerTypeLinuxSLL, layers.LayerTypeIPv6, layers.LayerTypeIPSecESP}},
		{"ipv4-udplite-sctp-in-6in4",
			[]gopacket.SerializableLayer{IPv4(ClientV4, ServerV4), IPv6(ClientV6, ServerV6), SCTP(1, 2)},
			layers.LayerTypeIPv4,
			[]gopacket.LayerType{layers.LayerTypeIPv4, layers.LayerTypeIPv6, layers.LayerTypeSCTP}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, got := decode(t, Build(tt.layers...), tt.first)
			if len(got) != len(tt.want) {
				t.Fatalf("layers %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("layers %v, want %v", got, tt.want)
				}
			}
		})
	}
}

func TestBuildFields(t *testing.T) {
	pkt := Build(IPv6(ClientV6, ServerV6), &UDPLite{SrcPort: 5, DstPort: 6, Coverage: 8}, gopacket.Payload("abc"))
	p, _ := decode(t, pkt, layers.LayerTypeIPv6)
	u, ok := p.Layer(layers.LayerTypeUDPLite).(*layers.UDPLite)
	if !ok || u.SrcPort != 5 || u.DstPort != 6 || u.ChecksumCoverage != 8 {
		t.Errorf("UDP-Lite decoded as %+v", u)
	}
	ip := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	if ip.Length != 11 || ip.NextHeader != layers.IPProtocolUDPLite || !ip.SrcIP.Equal(ClientV6.AsSlice()) {
		t.Errorf("IPv6 header %+v", ip)
	}

	// DCCP: data offset covers the generic header and Extra; X is bit 0
	// of byte 8.
	for _, ext := range []bool{false, true} {
		d := Build(IPv4(ClientV4, ServerV4), &DCCP{SrcPort: 1, DstPort: 2, Type: 1, Extended: ext, Extra: make([]byte, 4)})
		h := d[20:]
		wantLen := 16
		if ext {
			wantLen = 20
		}
		if len(h) != wantLen || int(h[4])*4 != wantLen || (h[8]&1 == 1) != ext || d[9] != byte(ProtoDCCP) {
			t.Errorf("DCCP extended=%v header %x", ext, h)
		}
	}

	// The Ethernet header does not pad; a Quote copies.
	frame := Build(EthernetHeader(ClientMAC, ServerMAC), IPv4(ClientV4, ServerV4), UDP(1, 2))
	if len(frame) != 14+28 || !bytes.Equal(frame[:6], ServerMAC) || binary.BigEndian.Uint16(frame[12:]) != 0x0800 {
		t.Errorf("frame %x", frame)
	}
	q := Quote(frame, 10)
	frame[0] ^= 0xff
	if len(q) != 10 || q[0] == frame[0] {
		t.Errorf("Quote did not copy 10 bytes: %x", q)
	}

	// SLL: link address length and protocol.
	sll := Build(LinuxSLLHeader(net.HardwareAddr{1, 2, 3, 4, 5, 6}), IPv4(ClientV4, ServerV4), UDP(1, 2))
	if binary.BigEndian.Uint16(sll[4:]) != 6 || binary.BigEndian.Uint16(sll[14:]) != 0x0800 || sll[6] != 1 {
		t.Errorf("SLL header %x", sll[:16])
	}
}

// TestICMPv6Checksum verifies the ICMPv6 checksum over the pseudo-header
// (RFC 4443 section 2.3): summing it all, checksum included, gives 0xffff.
func TestICMPv6Checksum(t *testing.T) {
	pkt := Build(IPv6(ClientV6, ServerV6), ICMPv6Echo(true, 0x1234, 1), gopacket.Payload("ping!"))
	msg := pkt[40:]
	var sum uint32
	for _, b := range [][]byte{pkt[8:40], msg} {
		for i := 0; i < len(b); i += 2 {
			w := uint32(b[i]) << 8
			if i+1 < len(b) {
				w |= uint32(b[i+1])
			}
			sum += w
		}
	}
	sum += uint32(len(msg)) + 58
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	if sum != 0xffff {
		t.Errorf("checksum does not verify: sum %#x", sum)
	}
}

func TestRandomPacket(t *testing.T) {
	for _, maxIP := range []int{1, 2, 4} {
		r := rand.New(rand.NewPCG(uint64(maxIP), 0))
		for range 500 {
			g := RandomPacket(r, maxIP, false)
			ips := strings.Count(g.Desc, "ipv4") + strings.Count(g.Desc, "ipv6")
			if ips < 1 || ips > maxIP {
				t.Fatalf("%d IP headers in %s, want 1 to %d", ips, g.Desc, maxIP)
			}
			if g.PayloadLen < 0 || g.PayloadLen > len(g.Data) {
				t.Fatalf("%s: PayloadLen %d of %d bytes", g.Desc, g.PayloadLen, len(g.Data))
			}
			first := layers.LayerTypeIPv4
			if g.Data[0]>>4 == 6 {
				first = layers.LayerTypeIPv6
			}
			// gopacket decodes the outer header at least.
			p := gopacket.NewPacket(g.Data, first, gopacket.Default)
			if p.NetworkLayer() == nil {
				t.Fatalf("%s: no network layer in %x", g.Desc, g.Data)
			}
		}
	}
}

// TestRandomPacketReply checks that the reply direction is the same
// packet with the outer addresses swapped.
func TestRandomPacketReply(t *testing.T) {
	for seed := range uint64(200) {
		fwd := RandomPacket(rand.New(rand.NewPCG(seed, 1)), 4, false)
		again := RandomPacket(rand.New(rand.NewPCG(seed, 1)), 4, false)
		rev := RandomPacket(rand.New(rand.NewPCG(seed, 1)), 4, true)
		if !bytes.Equal(fwd.Data, again.Data) {
			t.Fatalf("seed %d: not deterministic", seed)
		}
		if rev.Desc != fwd.Desc || len(rev.Data) != len(fwd.Data) || rev.PayloadLen != fwd.PayloadLen {
			t.Fatalf("seed %d: reply %s differs from %s", seed, rev.Desc, fwd.Desc)
		}
		src, dst := 12, 16
		alen := 4
		if fwd.Data[0]>>4 == 6 {
			src, dst, alen = 8, 24, 16
		}
		if !bytes.Equal(fwd.Data[src:src+alen], rev.Data[dst:dst+alen]) || !bytes.Equal(fwd.Data[dst:dst+alen], rev.Data[src:src+alen]) {
			t.Fatalf("seed %d: outer addresses not swapped", seed)
		}
	}
}

func TestRandomFramePadding(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	for range 300 {
		g := RandomFrame(r, 4, false)
		if len(g.Data) < 60 {
			t.Fatalf("%s: frame of %d bytes, under the 60-byte minimum", g.Desc, len(g.Data))
		}
		if !strings.HasPrefix(g.Desc, "eth/") {
			t.Fatalf("frame desc %s", g.Desc)
		}
	}
}

func TestBenchPackets(t *testing.T) {
	want := []string{"ipv4-tcp", "ipv6-tcp", "ipv6-ext-udp", "ipv4-gre-ipv6-tcp", "ipv6-4in6-udp"}
	got := BenchPackets()
	if len(got) != len(want) {
		t.Fatalf("%d packets, want %d", len(got), len(want))
	}
	for i, bp := range got {
		if bp.Name != want[i] {
			t.Errorf("packet %d is %q, want %q", i, bp.Name, want[i])
		}
		first := layers.LayerTypeIPv4
		if bp.Data[0]>>4 == 6 {
			first = layers.LayerTypeIPv6
		}
		// gopacket's packet decoder knows no Segment Routing header
		// (routing type 4), so only the outer header is checked here.
		if p := gopacket.NewPacket(bp.Data, first, gopacket.Default); p.NetworkLayer() == nil {
			t.Errorf("%s: gopacket finds no network layer", bp.Name)
		}
	}
	if !bytes.Equal(BenchPackets()[1].Data, got[1].Data) {
		t.Error("BenchPackets differs between calls")
	}
}

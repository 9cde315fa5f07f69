package conn

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/net/bpf"
)

// packetSpec describes a test packet; build turns it into bytes from the
// network header on, as an AF_PACKET SOCK_DGRAM socket sees it.
type packetSpec struct {
	v4         bool
	src, dst   netip.Addr
	sport      uint16
	dport      uint16
	tclass     uint8
	tcp        bool
	hopByHop   bool // a hop-by-hop options header before the transport
	payload    []byte
	badSum     bool // flip the UDP checksum
	zeroSum    bool // a zero UDP checksum
	udpLenDiff int  // added to the UDP length field after serializing
}

func (s packetSpec) build(t testing.TB) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	var ls []gopacket.SerializableLayer
	var netLayer gopacket.NetworkLayer
	if s.v4 {
		ip := &layers.IPv4{Version: 4, TTL: 64, TOS: s.tclass, SrcIP: net.IP(s.src.AsSlice()), DstIP: net.IP(s.dst.AsSlice()), Protocol: layers.IPProtocolUDP}
		if s.tcp {
			ip.Protocol = layers.IPProtocolTCP
		}
		ls, netLayer = append(ls, ip), ip
	} else {
		ip := &layers.IPv6{Version: 6, HopLimit: 64, TrafficClass: s.tclass, SrcIP: net.IP(s.src.AsSlice()), DstIP: net.IP(s.dst.AsSlice()), NextHeader: layers.IPProtocolUDP}
		if s.tcp {
			ip.NextHeader = layers.IPProtocolTCP
		}
		if s.hopByHop {
			ip.HopByHop = &layers.IPv6HopByHop{}
			ip.HopByHop.NextHeader = ip.NextHeader
			ip.HopByHop.Options = []*layers.IPv6HopByHopOption{{OptionType: 1, OptionData: []byte{0, 0, 0, 0}}} // PadN
			ip.NextHeader = layers.IPProtocolIPv6HopByHop
		}
		ls, netLayer = append(ls, ip), ip
	}
	if s.tcp {
		tcp := &layers.TCP{SrcPort: layers.TCPPort(s.sport), DstPort: layers.TCPPort(s.dport), Window: 1000, SYN: true}
		tcp.SetNetworkLayerForChecksum(netLayer)
		ls = append(ls, tcp)
	} else {
		udp := &layers.UDP{SrcPort: layers.UDPPort(s.sport), DstPort: layers.UDPPort(s.dport)}
		udp.SetNetworkLayerForChecksum(netLayer)
		ls = append(ls, udp)
	}
	ls = append(ls, gopacket.Payload(s.payload))
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	if !s.v4 && !s.tcp && !s.hopByHop {
		if s.badSum {
			b[46] ^= 0x5a
		}
		if s.zeroSum {
			b[46], b[47] = 0, 0
		}
		if s.udpLenDiff != 0 {
			binary.BigEndian.PutUint16(b[44:], uint16(int(binary.BigEndian.Uint16(b[44:]))+s.udpLenDiff))
		}
	}
	return b
}

var (
	inPrefix  = netip.MustParseAddr("2001:db8:b::5")
	outPrefix = netip.MustParseAddr("2001:db8:c::5")
	peerAddr  = netip.MustParseAddr("2001:db8:a::1")
)

const testPort = 51820

func goodSpec() packetSpec {
	return packetSpec{src: peerAddr, dst: inPrefix, sport: 4000, dport: testPort, tclass: 0x02, payload: []byte("ciphertext")}
}

func TestRawFilterAcceptsOnlySpreadUDP(t *testing.T) {
	with := func(f func(*packetSpec)) packetSpec { s := goodSpec(); f(&s); return s }
	for _, tt := range []struct {
		name   string
		spec   packetSpec
		accept bool
	}{
		{"match", goodSpec(), true},
		{"match-last-address", with(func(s *packetSpec) { s.dst = netip.MustParseAddr("2001:db8:b::ffff:ffff:ffff:ffff") }), true},
		{"wrong-port", with(func(s *packetSpec) { s.dport = testPort + 1 }), false},
		{"wrong-prefix", with(func(s *packetSpec) { s.dst = outPrefix }), false},
		{"prefix-is-source-only", with(func(s *packetSpec) { s.src, s.dst = inPrefix, peerAddr }), false},
		{"tcp", with(func(s *packetSpec) { s.tcp = true }), false},
		{"ipv4", packetSpec{v4: true, src: netip.MustParseAddr("192.0.2.1"), dst: netip.MustParseAddr("192.0.2.2"), sport: 4000, dport: testPort}, false},
		{"extension-header", with(func(s *packetSpec) { s.hopByHop = true }), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			prog, err := rawFilter(netip.MustParsePrefix("2001:db8:b::/64"), testPort)
			if err != nil {
				t.Fatal(err)
			}
			vm, err := bpf.NewVM(prog)
			if err != nil {
				t.Fatal(err)
			}
			pkt := tt.spec.build(t)
			n, err := vm.Run(pkt)
			if err != nil {
				t.Fatal(err)
			}
			if got := n > 0; got != tt.accept {
				t.Errorf("filter kept %d bytes of the packet; want accept %v", n, tt.accept)
			}
		})
	}
}

// TestRawFilterPrefixLengths checks the filter's masks for prefixes that
// end inside a 32-bit word, on either side of the boundary.
func TestRawFilterPrefixLengths(t *testing.T) {
	base := netip.MustParseAddr("2001:db8:b:c0de:1234:5678:9abc:def0")
	for _, bitsLen := range []int{0, 1, 16, 31, 32, 33, 48, 56, 60, 61, 63, 64, 65, 96, 100, 127, 128} {
		prefix := netip.PrefixFrom(base, bitsLen).Masked()
		prog, err := rawFilter(prefix, testPort)
		if err != nil {
			t.Fatal(err)
		}
		vm, err := bpf.NewVM(prog)
		if err != nil {
			t.Fatal(err)
		}
		run := func(dst netip.Addr) bool {
			s := goodSpec()
			s.dst = dst
			n, err := vm.Run(s.build(t))
			if err != nil {
				t.Fatal(err)
			}
			return n > 0
		}
		if !run(base) {
			t.Errorf("/%d: refused %v inside %v", bitsLen, base, prefix)
		}
		// Flip the last bit inside the prefix, and the first bit after it.
		a := base.As16()
		if bitsLen > 0 {
			in := a
			in[(bitsLen-1)/8] ^= 0x80 >> ((bitsLen - 1) % 8)
			if run(netip.AddrFrom16(in)) {
				t.Errorf("/%d: accepted %v outside %v", bitsLen, netip.AddrFrom16(in), prefix)
			}
		}
		if bitsLen < 128 {
			after := a
			after[bitsLen/8] ^= 0x80 >> (bitsLen % 8)
			if !run(netip.AddrFrom16(after)) {
				t.Errorf("/%d: refused %v inside %v", bitsLen, netip.AddrFrom16(after), prefix)
			}
		}
	}
}

func TestRawFilterRefusesBadConfig(t *testing.T) {
	for _, tt := range []struct {
		name   string
		prefix netip.Prefix
		port   uint16
	}{
		{"ipv4-prefix", netip.MustParsePrefix("192.0.2.0/24"), testPort},
		{"v4-mapped-prefix", netip.MustParsePrefix("::ffff:192.0.2.0/120"), testPort},
		{"zero-prefix", netip.Prefix{}, testPort},
		{"port-0", netip.MustParsePrefix("2001:db8:b::/64"), 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := rawFilter(tt.prefix, tt.port); err == nil {
				t.Error("no error")
			}
		})
	}
}

// splitPacket puts pkt the way the raw receiver reads it: headers into
// head, the rest into a payload buffer of size bufLen.
func splitPacket(pkt []byte, bufLen int) (*[rawHeadLen]byte, []byte, int) {
	var head [rawHeadLen]byte
	copy(head[:], pkt)
	payload := make([]byte, bufLen)
	n := 0
	if len(pkt) > rawHeadLen {
		n = copy(payload, pkt[rawHeadLen:])
	}
	return &head, payload, min(len(pkt), rawHeadLen) + n
}

func TestCheckRawPacket(t *testing.T) {
	prefix := netip.MustParsePrefix("2001:db8:b::/64")
	with := func(f func(*packetSpec)) packetSpec { s := goodSpec(); f(&s); return s }
	for _, tt := range []struct {
		name         string
		spec         packetSpec
		bufLen       int
		skipChecksum bool
		want         rawVerdict
		wantN        int
	}{
		{"good", goodSpec(), 1500, false, rawAccept, 10},
		{"good-odd-length", with(func(s *packetSpec) { s.payload = []byte("odd") }), 1500, false, rawAccept, 3},
		{"good-empty", with(func(s *packetSpec) { s.payload = nil }), 1500, false, rawAccept, 0},
		{"good-large", with(func(s *packetSpec) { s.payload = make([]byte, 1400); s.payload[777] = 0xff }), 1500, false, rawAccept, 1400},
		{"bad-checksum", with(func(s *packetSpec) { s.badSum = true }), 1500, false, rawBadChecksum, 0},
		{"bad-checksum-kernel-vouches", with(func(s *packetSpec) { s.badSum = true }), 1500, true, rawAccept, 10},
		{"zero-checksum", with(func(s *packetSpec) { s.zeroSum = true }), 1500, false, rawBadChecksum, 0},
		{"payload-longer-than-buffer", with(func(s *packetSpec) { s.payload = make([]byte, 100) }), 50, false, rawTruncated, 0},
		{"udp-length-too-long", with(func(s *packetSpec) { s.udpLenDiff = 20 }), 1500, false, rawTruncated, 0},
		{"udp-length-too-short", with(func(s *packetSpec) { s.udpLenDiff = -20 }), 1500, false, rawTruncated, 0},
		{"wrong-prefix", with(func(s *packetSpec) { s.dst = outPrefix }), 1500, false, rawForeign, 0},
		{"wrong-port", with(func(s *packetSpec) { s.dport = 1 }), 1500, false, rawForeign, 0},
		{"tcp", with(func(s *packetSpec) { s.tcp = true }), 1500, false, rawForeign, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			head, payload, captured := splitPacket(tt.spec.build(t), tt.bufLen)
			n, v := checkRawPacket(head, payload, captured, prefix, testPort, tt.skipChecksum)
			if v != tt.want || n != tt.wantN {
				t.Errorf("checkRawPacket = %d, %d; want %d, %d", n, v, tt.wantN, tt.want)
			}
		})
	}
	t.Run("short-frame", func(t *testing.T) {
		pkt := goodSpec().build(t)
		head, payload, _ := splitPacket(pkt, 1500)
		if _, v := checkRawPacket(head, payload, rawHeadLen-1, prefix, testPort, false); v != rawTruncated {
			t.Errorf("verdict %d for a frame shorter than its headers, want rawTruncated", v)
		}
	})
}

// TestUDPChecksumAgainstGopacket flips each byte of gopacket-built packets
// in turn: the checksum gopacket computed must verify, and any change of
// one byte must not.
func TestUDPChecksumAgainstGopacket(t *testing.T) {
	for _, size := range []int{0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 100, 1201} {
		s := goodSpec()
		s.payload = make([]byte, size)
		for i := range s.payload {
			s.payload[i] = byte(i*7 + size)
		}
		pkt := s.build(t)
		head, payload, _ := splitPacket(pkt, 1500)
		if !udpChecksumOK(head, payload[:size]) {
			t.Fatalf("size %d: gopacket's checksum does not verify", size)
		}
		for i := 8; i < len(pkt); i++ { // from the source address on
			if i >= 44 && i < 46 {
				continue // the UDP length: another test covers it
			}
			pkt[i] ^= 0x10
			head, payload, _ := splitPacket(pkt, 1500)
			if udpChecksumOK(head, payload[:size]) {
				t.Errorf("size %d: checksum still verifies with byte %d changed", size, i)
			}
			pkt[i] ^= 0x10
		}
	}
}

func FuzzCheckRawPacket(f *testing.F) {
	f.Add(goodSpec().build(f), 1500, false)
	bad := goodSpec()
	bad.badSum = true
	f.Add(bad.build(f), 1500, false)
	f.Add([]byte{0x60}, 10, true)
	prefix := netip.MustParsePrefix("2001:db8:b::/64")
	f.Fuzz(func(t *testing.T, pkt []byte, bufLen int, skip bool) {
		if bufLen < 0 || bufLen > 1<<16 {
			return
		}
		head, payload, captured := splitPacket(pkt, bufLen)
		n, v := checkRawPacket(head, payload, captured, prefix, testPort, skip)
		if v != rawAccept {
			return
		}
		if n < 0 || n > len(payload) || rawHeadLen+n > len(pkt) {
			t.Fatalf("accepted %d payload bytes of a %d-byte packet into a %d-byte buffer", n, len(pkt), len(payload))
		}
		if !prefix.Contains(netip.AddrFrom16([16]byte(head[24:40]))) {
			t.Fatal("accepted a packet to outside the prefix")
		}
		if !skip && !udpChecksumOK(head, payload[:n]) {
			t.Fatal("accepted a packet whose checksum does not verify")
		}
	})
}

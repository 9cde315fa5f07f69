package flowaddr_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/flowspread/flowspread/flowaddr"
	"github.com/flowspread/flowspread/internal/testutil"
)

// The oracle computes a packet's expected flow key the slow way: every
// header is decoded by gopacket (its DecodingLayers, or a gopacket.Packet
// for the headers it only decodes that way), and the oracle only applies
// the rules of the Parse documentation to the decoded fields. It shares no
// code with the parser. Where gopacket stops (an ICMP error's quote, an
// atomic fragment, a VXLAN payload it would not follow by our rules) the
// oracle starts a second gopacket decode on the remaining bytes. gopacket
// has no DCCP layer: the oracle reads DCCP's fields from the raw bytes.

// oracle holds the state of one oracle run.
type oracle struct {
	key     flowaddr.Key
	icmpKey flowaddr.Key
	depth   int
	quote   bool
	quoted  bool
}

// feedback records whether gopacket found a length field pointing past
// the buffer.
type feedback struct{ truncated bool }

func (f *feedback) SetTruncated() { f.truncated = true }

// errOracle wraps what the oracle rejects; the differential test only
// feeds packets both sides should accept.
var errOracle = errors.New("oracle")

func oracleFail(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errOracle, fmt.Sprintf(format, args...))
}

// oracleParse is the oracle's Parse.
func oracleParse(pkt []byte) (flowaddr.Key, error) {
	var o oracle
	if len(pkt) == 0 {
		return flowaddr.Key{}, oracleFail("empty")
	}
	err := o.ip(pkt, pkt[0]>>4 == 6)
	return o.result(), err
}

// oracleParseEthernet is the oracle's ParseEthernet.
func oracleParseEthernet(frame []byte) (flowaddr.Key, error) {
	var o oracle
	err := o.ethernet(frame)
	return o.result(), err
}

// oracleParseLinuxSLL is the oracle's ParseLinuxSLL.
func oracleParseLinuxSLL(frame []byte) (flowaddr.Key, error) {
	var o oracle
	var sll layers.LinuxSLL
	if len(frame) < 16 || binary.BigEndian.Uint16(frame[4:6]) > 10 { // gopacket slices the address by its length field
		return flowaddr.Key{}, oracleFail("sll header")
	}
	if err := sll.DecodeFromBytes(frame, gopacket.NilDecodeFeedback); err != nil {
		return flowaddr.Key{}, oracleFail("sll: %v", err)
	}
	err := o.etherPayload(sll.EthernetType, sll.Payload)
	return o.result(), err
}

func (o *oracle) result() flowaddr.Key {
	if o.quoted {
		return o.key.Reverse()
	}
	return o.key
}

// decodeOne decodes data as a layer of type lt with a gopacket.Packet,
// for the headers gopacket has no DecodingLayer for. It returns nil if
// gopacket could not decode it.
func decodeOne[L gopacket.Layer](data []byte, lt gopacket.LayerType) L {
	pkt := gopacket.NewPacket(data, lt, gopacket.DecodeOptions{NoCopy: true, Lazy: true})
	l, _ := pkt.Layer(lt).(L)
	return l
}

func (o *oracle) setKey(src, dst net.IP, proto layers.IPProtocol) {
	o.key = flowaddr.Key{Proto: uint8(proto)}
	if len(src) == net.IPv4len {
		o.key.Flags = flowaddr.FlagIPv4
		o.key.Src = netip.AddrFrom4([4]byte(src)).As16()
		o.key.Dst = netip.AddrFrom4([4]byte(dst)).As16()
	} else {
		o.key.Src = [16]byte(src)
		o.key.Dst = [16]byte(dst)
	}
	o.quoted = o.quote
}

func (o *oracle) ip(data []byte, v6 bool) error {
	o.depth++
	if o.depth > flowaddr.MaxDepth {
		return oracleFail("more than MaxDepth IP headers")
	}
	var fb feedback
	if v6 {
		var ip layers.IPv6
		if err := ip.DecodeFromBytes(data, &fb); err != nil {
			return oracleFail("ipv6: %v", err)
		}
		if ip.Version != 6 {
			return oracleFail("ipv6 version %d", ip.Version)
		}
		// gopacket v1.1.19 decodes a Hop-by-Hop header with the IPv6
		// header, then cuts the payload after it to the payload length, as
		// if that did not count the Hop-by-Hop header: it flags a packet
		// with Hop-by-Hop as truncated and keeps trailing bytes in its
		// payload. So the oracle cuts the payload from the decoded length
		// field itself and leaves Hop-by-Hop to the extension loop.
		payload := data[40:]
		if int(ip.Length) > len(payload) {
			if !o.quote {
				return oracleFail("ipv6 truncated")
			}
		} else {
			payload = payload[:ip.Length]
		}
		o.setKey(ip.SrcIP, ip.DstIP, ip.NextHeader)
		return o.extensions(ip.NextHeader, payload, 0, true)
	}
	var ip layers.IPv4
	if err := ip.DecodeFromBytes(data, &fb); err != nil {
		return oracleFail("ipv4: %v", err)
	}
	if ip.Version != 4 {
		return oracleFail("ipv4 version %d", ip.Version)
	}
	if fb.truncated && !o.quote {
		return oracleFail("ipv4 truncated")
	}
	o.setKey(ip.SrcIP, ip.DstIP, ip.Protocol)
	if ip.NextLayerType() == gopacket.LayerTypeFragment {
		o.key.Flags |= flowaddr.FlagFragment
		return nil
	}
	return o.extensions(ip.Protocol, ip.Payload, 0, false)
}

func (o *oracle) extensions(next layers.IPProtocol, data []byte, n int, v6 bool) error {
	for {
		switch {
		case next == layers.IPProtocolAH:
			ah := decodeOne[*layers.IPSecAH](data, layers.LayerTypeIPSecAH)
			if ah == nil {
				return oracleFail("ah")
			}
			next, data = ah.NextHeader, ah.Payload
		case v6 && (next == layers.IPProtocolIPv6HopByHop || next == layers.IPProtocolIPv6Routing ||
			next == layers.IPProtocolIPv6Destination):
			var ext layers.IPv6ExtensionSkipper
			if err := ext.DecodeFromBytes(data, gopacket.NilDecodeFeedback); err != nil {
				return oracleFail("ipv6 extension: %v", err)
			}
			next, data = ext.NextHeader, ext.Payload
		case v6 && next == layers.IPProtocolIPv6Fragment:
			f := decodeOne[*layers.IPv6Fragment](data, layers.LayerTypeIPv6Fragment)
			if f == nil {
				return oracleFail("fragment header")
			}
			if f.FragmentOffset != 0 || f.MoreFragments {
				o.key.Proto = uint8(f.NextHeader)
				o.key.Flags |= flowaddr.FlagFragment
				return nil
			}
			next, data = f.NextHeader, f.Payload
		default:
			return o.transport(next, data, v6)
		}
		n++
		if n > flowaddr.MaxExtHeaders {
			return oracleFail("extension chain")
		}
		o.key.Proto = uint8(next)
	}
}

func (o *oracle) rawPorts(b []byte) error {
	if len(b) < 4 {
		return oracleFail("ports truncated")
	}
	o.key.SrcPort = binary.BigEndian.Uint16(b)
	o.key.DstPort = binary.BigEndian.Uint16(b[2:])
	return nil
}

func (o *oracle) transport(proto layers.IPProtocol, b []byte, v6 bool) error {
	var fb feedback
	switch proto {
	case layers.IPProtocolTCP:
		var tcp layers.TCP
		if err := tcp.DecodeFromBytes(b, &fb); err != nil {
			if o.quote {
				return o.rawPorts(b)
			}
			return oracleFail("tcp: %v", err)
		}
		o.key.SrcPort, o.key.DstPort = uint16(tcp.SrcPort), uint16(tcp.DstPort)
	case layers.IPProtocolUDP:
		if o.quote && len(b) < 8 {
			return o.rawPorts(b)
		}
		var udp layers.UDP
		if err := udp.DecodeFromBytes(b, &fb); err != nil {
			return oracleFail("udp: %v", err)
		}
		if fb.truncated && !o.quote {
			return oracleFail("udp truncated")
		}
		o.key.SrcPort, o.key.DstPort = uint16(udp.SrcPort), uint16(udp.DstPort)
		if udp.DstPort == testutil.VXLANPort && len(udp.Payload) >= 8 {
			var vx layers.VXLAN
			if err := vx.DecodeFromBytes(udp.Payload, gopacket.NilDecodeFeedback); err != nil {
				return oracleFail("vxlan: %v", err)
			}
			if vx.ValidIDFlag {
				return o.ethernet(vx.Payload)
			}
		}
	case layers.IPProtocolUDPLite:
		if o.quote && len(b) < 8 {
			return o.rawPorts(b)
		}
		u := decodeOne[*layers.UDPLite](b, layers.LayerTypeUDPLite)
		if u == nil {
			return oracleFail("udplite")
		}
		if cov := int(u.ChecksumCoverage); !o.quote && cov != 0 && (cov < 8 || cov > len(b)) {
			return oracleFail("udplite coverage")
		}
		o.key.SrcPort, o.key.DstPort = uint16(u.SrcPort), uint16(u.DstPort)
	case layers.IPProtocolSCTP:
		var sctp layers.SCTP
		if err := sctp.DecodeFromBytes(b, &fb); err != nil {
			if o.quote {
				return o.rawPorts(b)
			}
			return oracleFail("sctp: %v", err)
		}
		o.key.SrcPort, o.key.DstPort = uint16(sctp.SrcPort), uint16(sctp.DstPort)
	case testutil.ProtoDCCP:
		if !o.quote {
			if len(b) < 12 {
				return oracleFail("dccp truncated")
			}
			hlen := 12
			if b[8]&1 != 0 {
				hlen = 16
			}
			if off := int(b[4]) * 4; off < hlen || off > len(b) {
				return oracleFail("dccp data offset")
			}
		}
		return o.rawPorts(b)
	case layers.IPProtocolESP:
		if o.quote && len(b) < 8 {
			return o.rawPorts(b)
		}
		esp := decodeOne[*layers.IPSecESP](b, layers.LayerTypeIPSecESP)
		if esp == nil {
			return oracleFail("esp")
		}
		o.key.SrcPort, o.key.DstPort = uint16(esp.SPI>>16), uint16(esp.SPI)
	case layers.IPProtocolICMPv4:
		var icmp layers.ICMPv4
		if err := icmp.DecodeFromBytes(b, &fb); err != nil {
			return oracleFail("icmp: %v", err)
		}
		switch icmp.TypeCode.Type() {
		case layers.ICMPv4TypeEchoRequest, layers.ICMPv4TypeEchoReply:
			o.key.SrcPort, o.key.DstPort = icmp.Id, icmp.Id
		case layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4TypeSourceQuench, layers.ICMPv4TypeRedirect,
			layers.ICMPv4TypeTimeExceeded, layers.ICMPv4TypeParameterProblem:
			return o.quoteOf(icmp.Payload, false)
		}
	case layers.IPProtocolICMPv6:
		var icmp layers.ICMPv6
		if err := icmp.DecodeFromBytes(b, &fb); err != nil || len(b) < 8 {
			return oracleFail("icmpv6: %v", err)
		}
		switch icmp.TypeCode.Type() {
		case layers.ICMPv6TypeEchoRequest, layers.ICMPv6TypeEchoReply:
			var echo layers.ICMPv6Echo
			if err := echo.DecodeFromBytes(icmp.Payload, &fb); err != nil {
				return oracleFail("icmpv6 echo: %v", err)
			}
			o.key.SrcPort, o.key.DstPort = echo.Identifier, echo.Identifier
		case layers.ICMPv6TypeDestinationUnreachable, layers.ICMPv6TypePacketTooBig,
			layers.ICMPv6TypeTimeExceeded, layers.ICMPv6TypeParameterProblem:
			// gopacket's ICMPv6 header is 4 bytes; the quote follows the
			// 4-byte rest of header.
			return o.quoteOf(icmp.Payload[4:], true)
		}
	case layers.IPProtocolIPv4:
		return o.ip(b, false)
	case layers.IPProtocolIPv6:
		return o.ip(b, true)
	case layers.IPProtocolGRE:
		return o.gre(b)
	}
	return nil
}

// quoteOf follows an ICMP error's quote, a second gopacket decode.
func (o *oracle) quoteOf(q []byte, v6 bool) error {
	if o.quote {
		o.key, o.quoted = o.icmpKey, false
		return nil
	}
	o.icmpKey, o.quote = o.key, true
	return o.ip(q, v6)
}

func (o *oracle) gre(b []byte) error {
	if len(b) < 4 {
		return oracleFail("gre truncated")
	}
	// An opaque GRE header needs only its first 4 bytes, where gopacket
	// wants the routing fields too: read its flags and version raw.
	if b[0]&0x40 != 0 || b[1]&0x07 != 0 {
		return nil
	}
	gre := decodeOne[*layers.GRE](b, layers.LayerTypeGRE)
	if gre == nil {
		return oracleFail("gre")
	}
	if gre.KeyPresent {
		o.key.SrcPort, o.key.DstPort = uint16(gre.Key>>16), uint16(gre.Key)
	}
	switch gre.Protocol {
	case layers.EthernetTypeIPv4:
		return o.ip(gre.Payload, false)
	case layers.EthernetTypeIPv6:
		return o.ip(gre.Payload, true)
	case layers.EthernetTypeTransparentEthernetBridging:
		return o.ethernet(gre.Payload)
	}
	return nil
}

func (o *oracle) ethernet(b []byte) error {
	var eth layers.Ethernet
	if err := eth.DecodeFromBytes(b, gopacket.NilDecodeFeedback); err != nil {
		return oracleFail("ethernet: %v", err)
	}
	return o.etherPayload(eth.EthernetType, eth.Payload)
}

func (o *oracle) etherPayload(et layers.EthernetType, b []byte) error {
	for tags := 0; et == layers.EthernetTypeDot1Q || et == layers.EthernetTypeQinQ; tags++ {
		if tags == flowaddr.MaxVLANTags {
			return oracleFail("too many VLAN tags")
		}
		var tag layers.Dot1Q
		if err := tag.DecodeFromBytes(b, gopacket.NilDecodeFeedback); err != nil {
			return oracleFail("vlan: %v", err)
		}
		et, b = tag.Type, tag.Payload
	}
	switch et {
	case layers.EthernetTypeIPv4:
		return o.ip(b, false)
	case layers.EthernetTypeIPv6:
		return o.ip(b, true)
	}
	if o.depth == 0 {
		return oracleFail("not IP")
	}
	return nil
}

// TestDifferentialGopacket compares Parse and ParseEthernet with the
// oracle on random valid packets of every kind the generator draws.
func TestDifferentialGopacket(t *testing.T) {
	r := rand.New(rand.NewPCG(20240601, 1))
	seen := map[string]int{}
	mismatches := 0
	check := func(kind string, g testutil.Generated, got flowaddr.Key, err error, want flowaddr.Key, werr error) {
		t.Helper()
		for _, tok := range strings.FieldsFunc(g.Desc, func(r rune) bool { return r == '/' || r == '(' || r == ')' }) {
			seen[tok]++
		}
		if err == nil && werr == nil && got == want {
			return
		}
		mismatches++
		if mismatches <= 10 {
			t.Errorf("%s %s:\n got  %v, %v\n want %v, %v\n packet %x", kind, g.Desc, fmtKey(got), err, fmtKey(want), werr, g.Data)
		}
	}
	const packets, frames = 10000, 2000
	for range packets {
		g := testutil.RandomPacket(r, flowaddr.MaxDepth, false)
		want, werr := oracleParse(g.Data)
		got, err := flowaddr.Parse(g.Data)
		check("Parse", g, got, err, want, werr)
	}
	for range frames {
		g := testutil.RandomFrame(r, flowaddr.MaxDepth, false)
		want, werr := oracleParseEthernet(g.Data)
		got, err := flowaddr.ParseEthernet(g.Data)
		check("ParseEthernet", g, got, err, want, werr)
		// The same frame as a cooked capture: the SLL header replaces
		// the MAC addresses, its protocol field the EtherType.
		h := testutil.LinuxSLLHeader(testutil.ClientMAC)
		h.Protocol = layers.EthernetType(binary.BigEndian.Uint16(g.Data[12:14]))
		sll := append(testutil.Build(h), g.Data[14:]...)
		want, werr = oracleParseLinuxSLL(sll)
		got, err = flowaddr.ParseLinuxSLL(sll)
		check("ParseLinuxSLL", g, got, err, want, werr)
	}
	if mismatches > 0 {
		t.Fatalf("%d mismatches in %d packets and %d frames", mismatches, packets, frames)
	}
	// The generator must have drawn every kind of header the parser knows.
	for _, tok := range []string{"ipv4", "ipv6", "hbh", "dst", "rt", "ah", "atomicfrag", "frag", "gre", "gre+c+k+s",
		"gre+k", "teb", "vxlan", "eth", "vlan", "qinq", "nonip", "gre+r", "gre-v1", "arp", "tcp", "udp", "udplite",
		"sctp", "dccp", "esp", "icmpecho", "icmp6echo", "icmpother", "icmp6other", "icmperr", "icmp6err", "quote",
		"proto59", "proto253"} {
		if seen[tok] == 0 {
			t.Errorf("no generated packet had %q", tok)
		}
	}
	t.Logf("header kinds seen: %v", seen)
}

// TestDifferentialCut compares Parse with the oracle on random packets cut
// at a random length, the outer length field fixed to match: both must
// accept or both refuse, and agree on the key when they accept.
func TestDifferentialCut(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	mismatches, accepted := 0, 0
	for range 5000 {
		g := testutil.RandomPacket(r, flowaddr.MaxDepth, false)
		n := r.IntN(len(g.Data))
		pkt := g.Data[:n:n]
		// Make the outer header agree with the cut, so that the inner
		// headers' length checks decide.
		if g.Data[0]>>4 == 4 && n >= 20 {
			binary.BigEndian.PutUint16(pkt[2:], uint16(n))
		} else if g.Data[0]>>4 == 6 && n >= 40 {
			binary.BigEndian.PutUint16(pkt[4:], uint16(n-40))
		}
		want, werr := oracleParse(pkt)
		got, err := flowaddr.Parse(pkt)
		if err == nil {
			accepted++
		}
		if (err == nil) != (werr == nil) || (err == nil && got != want) {
			mismatches++
			if mismatches <= 10 {
				t.Errorf("%s cut to %d of %d:\n got  %v, %v\n want %v, %v\n packet %x", g.Desc, n, len(g.Data),
					fmtKey(got), err, fmtKey(want), werr, pkt)
			}
		}
	}
	if mismatches > 0 {
		t.Fatalf("%d mismatches", mismatches)
	}
	// Cuts in payloads and quotes keep the key: both sides must see some.
	if accepted < 500 {
		t.Errorf("only %d of 5000 cut packets accepted", accepted)
	}
	t.Logf("%d of 5000 cut packets accepted", accepted)
}

func fmtKey(k flowaddr.Key) string {
	return fmt.Sprintf("{%v:%d > %v:%d proto %d flags %#x}", k.SrcAddr(), k.SrcPort, k.DstAddr(), k.DstPort, k.Proto, k.Flags)
}

// gopacketParser extracts a flow key with gopacket's DecodingLayerParser,
// the fastest way gopacket offers: preallocated layers, no gopacket.Packet.
// It follows only what the benchmark packets hold: IPv4, IPv6 with
// extension headers, GRE, TCP and UDP, one header of each kind.
type gopacketParser struct {
	ip4     layers.IPv4
	ip6     layers.IPv6
	ext     layers.IPv6ExtensionSkipper
	gre     layers.GRE
	tcp     layers.TCP
	udp     layers.UDP
	from4   *gopacket.DecodingLayerParser
	from6   *gopacket.DecodingLayerParser
	decoded []gopacket.LayerType
}

func newGopacketParser() *gopacketParser {
	p := &gopacketParser{decoded: make([]gopacket.LayerType, 0, 16)}
	dls := []gopacket.DecodingLayer{&p.ip4, &p.ip6, &p.ext, &p.gre, &p.tcp, &p.udp}
	p.from4 = gopacket.NewDecodingLayerParser(layers.LayerTypeIPv4, dls...)
	p.from6 = gopacket.NewDecodingLayerParser(layers.LayerTypeIPv6, dls...)
	p.from4.IgnoreUnsupported = true
	p.from6.IgnoreUnsupported = true
	return p
}

// gopacketExtract returns the flow key of pkt as gopacket decodes it: the
// addresses of the innermost IP header, the protocol after its extension
// headers, the TCP or UDP ports.
func gopacketExtract(p *gopacketParser, pkt []byte) flowaddr.Key {
	dlp := p.from4
	if len(pkt) > 0 && pkt[0]>>4 == 6 {
		dlp = p.from6
	}
	_ = dlp.DecodeLayers(pkt, &p.decoded)
	var k flowaddr.Key
	for _, lt := range p.decoded {
		switch lt {
		case layers.LayerTypeIPv4:
			k = flowaddr.Key{Proto: uint8(p.ip4.Protocol), Flags: flowaddr.FlagIPv4}
			k.Src[10], k.Src[11], k.Dst[10], k.Dst[11] = 0xff, 0xff, 0xff, 0xff
			copy(k.Src[12:], p.ip4.SrcIP)
			copy(k.Dst[12:], p.ip4.DstIP)
		case layers.LayerTypeIPv6:
			k = flowaddr.Key{Proto: uint8(p.ip6.NextHeader)}
			if p.ip6.HopByHop != nil {
				k.Proto = uint8(p.ip6.HopByHop.NextHeader)
			}
			copy(k.Src[:], p.ip6.SrcIP)
			copy(k.Dst[:], p.ip6.DstIP)
		case layers.LayerTypeIPv6Destination, layers.LayerTypeIPv6Routing, layers.LayerTypeIPv6HopByHop:
			k.Proto = uint8(p.ext.NextHeader)
		case layers.LayerTypeTCP:
			k.SrcPort, k.DstPort = uint16(p.tcp.SrcPort), uint16(p.tcp.DstPort)
		case layers.LayerTypeUDP:
			k.SrcPort, k.DstPort = uint16(p.udp.SrcPort), uint16(p.udp.DstPort)
		}
	}
	return k
}

// TestGopacketExtractAgrees makes sure the baseline benchmark measures the
// same work: on the benchmark packets it must give Parse's key.
func TestGopacketExtractAgrees(t *testing.T) {
	p := newGopacketParser()
	for _, bp := range testutil.BenchPackets() {
		want, err := flowaddr.Parse(bp.Data)
		if err != nil {
			t.Fatalf("%s: %v", bp.Name, err)
		}
		if got := gopacketExtract(p, bp.Data); got != want {
			t.Errorf("%s: gopacket %v, Parse %v", bp.Name, fmtKey(got), fmtKey(want))
		}
	}
}

// BenchmarkGopacketParse is the baseline of BenchmarkParse: the same
// packets, the same key, extracted with gopacket's DecodingLayerParser.
func BenchmarkGopacketParse(b *testing.B) {
	p := newGopacketParser()
	for _, bp := range testutil.BenchPackets() {
		b.Run(bp.Name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bp.Data)))
			var k flowaddr.Key
			for b.Loop() {
				k = gopacketExtract(p, bp.Data)
			}
			sinkKey = k
		})
	}
}

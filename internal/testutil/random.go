package testutil

import (
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// Generated is a random packet and what a test needs to know about it.
type Generated struct {
	Data []byte
	// Desc names the layers, outermost first ("ipv4/gre+k/eth/vlan/ipv6/tcp";
	// "quote(...)" wraps a packet quoted in an ICMP error).
	Desc string
	// PayloadLen counts the trailing bytes of Data that carry no header: the
	// innermost payload, or what is left of it in a cut quote. Changing them
	// must not change the packet's flow key.
	PayloadLen int
	// Symmetric is false when the flow key comes from fields that are not
	// swapped in the reply direction: an ESP SPI, a GRE key, or a VXLAN
	// datagram's UDP flow (its destination port stays 4789).
	Symmetric bool
}

// RandomPacket returns a random valid IPv4 or IPv6 packet nesting at most
// maxIPHeaders IP headers (a quoted packet's included): options and
// extension headers, IP-in-IP, GRE, transparent Ethernet bridging and VXLAN
// with VLAN tags, ICMP errors quoting packets (sometimes cut as routers do),
// fragments, every transport the flowaddr parser knows and some it does not.
//
// Called with reply set and a generator in the same state, it returns the
// same packet in the reply direction: addresses, ports and MAC addresses
// swapped at every layer, everything else equal.
func RandomPacket(r *rand.Rand, maxIPHeaders int, reply bool) Generated {
	g := gen{r: r, reply: reply}
	p := g.ip(maxIPHeaders, r.IntN(2) == 0, false)
	return Generated{Data: Build(p.ls...), Desc: strings.Join(p.desc, "/"), PayloadLen: p.payload, Symmetric: p.symmetric}
}

// RandomFrame returns a random Ethernet II frame, with up to two VLAN tags,
// carrying a packet from [RandomPacket], padded to the 60-byte minimum
// frame as a sender's NIC would (the padding counts in PayloadLen).
func RandomFrame(r *rand.Rand, maxIPHeaders int, reply bool) Generated {
	g := gen{r: r, reply: reply}
	var p part
	g.ethernet(&p)
	p.extend(g.ip(maxIPHeaders, r.IntN(2) == 0, false))
	data := Build(p.ls...)
	if pad := 60 - len(data); pad > 0 {
		data = append(data, make([]byte, pad)...)
		p.payload += pad
	}
	return Generated{Data: data, Desc: strings.Join(p.desc, "/"), PayloadLen: p.payload, Symmetric: p.symmetric}
}

// gen draws random packets. In reply mode it swaps every endpoint pair; it
// draws the same random numbers either way.
type gen struct {
	r     *rand.Rand
	reply bool
}

// part is a packet under construction.
type part struct {
	ls   []gopacket.SerializableLayer
	desc []string
	// payload is the length of the trailing payload.
	payload int
	// cuttable is how many trailing bytes a router may cut when quoting
	// the packet in an ICMP error and leave its flow key as it was: the
	// payload, and transport header bytes after the first 8.
	cuttable  int
	symmetric bool
	// ip4 is the last IPv4 header, to make it a fragment.
	ip4 *layers.IPv4
}

func (p *part) add(desc string, ls ...gopacket.SerializableLayer) {
	if desc != "" {
		p.desc = append(p.desc, desc)
	}
	p.ls = append(p.ls, ls...)
}

// extend appends an inner packet, whose flow key becomes the key.
func (p *part) extend(q part) {
	p.ls = append(p.ls, q.ls...)
	p.desc = append(p.desc, q.desc...)
	p.payload, p.cuttable, p.symmetric = q.payload, q.cuttable, q.symmetric
}

// end appends n random payload bytes and closes the packet.
func (p *part) end(g *gen, n int, cuttable int, symmetric bool) {
	if n > 0 {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(g.r.Uint32())
		}
		p.ls = append(p.ls, gopacket.Payload(b))
	}
	p.payload, p.cuttable, p.symmetric = n, cuttable+n, symmetric
}

// setNext sets the next-protocol field of the last layer, for a payload
// Build cannot name.
func (p *part) setNext(proto layers.IPProtocol) {
	switch l := p.ls[len(p.ls)-1].(type) {
	case *layers.IPv4:
		l.Protocol = proto
	case *layers.IPv6:
		l.NextHeader = proto
	case *IPv6Ext:
		l.NextHeader = proto
	case *IPv6Fragment:
		l.NextHeader = proto
	case *AH:
		l.NextHeader = proto
	}
}

func (g *gen) payloadLen(min int) int {
	if g.r.IntN(8) == 0 {
		return min + g.r.IntN(1400)
	}
	return min + g.r.IntN(64)
}

func (g *gen) u16() uint16 { return uint16(g.r.Uint32()) }

// ports returns a random port pair, swapped in reply mode, never the
// VXLAN port (a plain UDP datagram to it could turn into VXLAN when its
// payload changes).
func (g *gen) ports() (uint16, uint16) {
	port := func() uint16 {
		for {
			if p := g.u16(); p != 0 && p != VXLANPort {
				return p
			}
		}
	}
	a, b := port(), port()
	if g.reply {
		return b, a
	}
	return a, b
}

var v4Prefixes = [][3]byte{{192, 0, 2}, {198, 51, 100}, {203, 0, 113}}

// addrs returns a random address pair from the documentation ranges.
func (g *gen) addrs(v6 bool) (netip.Addr, netip.Addr) {
	addr := func() netip.Addr {
		if v6 {
			var a [16]byte
			a[0], a[1], a[2], a[3] = 0x20, 0x01, 0x0d, 0xb8
			for i := 4; i < 16; i++ {
				a[i] = byte(g.r.Uint32())
			}
			return netip.AddrFrom16(a)
		}
		p := v4Prefixes[g.r.IntN(len(v4Prefixes))]
		return netip.AddrFrom4([4]byte{p[0], p[1], p[2], byte(g.r.Uint32())})
	}
	a, b := addr(), addr()
	if g.reply {
		return b, a
	}
	return a, b
}

func (g *gen) macs() (net.HardwareAddr, net.HardwareAddr) {
	if g.reply {
		return ServerMAC, ClientMAC
	}
	return ClientMAC, ServerMAC
}

// ethernet appends an Ethernet header and up to two VLAN tags.
func (g *gen) ethernet(p *part) {
	src, dst := g.macs()
	p.add("eth", EthernetHeader(src, dst))
	for range g.r.IntN(3) {
		vid := uint16(g.r.IntN(4095) + 1)
		if g.r.IntN(2) == 0 {
			p.add("vlan", VLAN(vid))
		} else {
			p.add("qinq", ServiceVLAN(vid))
		}
	}
}

// ip draws a packet of at most budget IP headers. quote says it will be
// quoted in an ICMP error.
func (g *gen) ip(budget int, v6, quote bool) part {
	var p part
	src, dst := g.addrs(v6)
	if v6 {
		h := IPv6(src, dst)
		h.TrafficClass = uint8(g.r.Uint32())
		h.FlowLabel = g.r.Uint32() & 0xfffff
		p.add("ipv6", h)
		g.extensions(&p)
	} else {
		h := IPv4(src, dst)
		h.TOS = uint8(g.r.Uint32())
		h.Id = g.u16()
		if g.r.IntN(2) == 0 {
			h.Flags = layers.IPv4DontFragment
		}
		h.Options = g.ipv4Options()
		p.add("ipv4", h)
		p.ip4 = h
		if g.r.IntN(10) == 0 {
			p.add("ah", AuthHeader(g.r.Uint32(), 4*g.r.IntN(4)))
		}
	}
	if budget >= 2 && g.r.IntN(2) == 0 {
		g.encapsulation(&p, budget-1, v6, quote)
	} else {
		g.terminal(&p, v6, quote)
	}
	return p
}

func (g *gen) ipv4Options() []layers.IPv4Option {
	var opts []layers.IPv4Option
	for range g.r.IntN(3) {
		switch g.r.IntN(3) {
		case 0:
			opts = append(opts, layers.IPv4Option{OptionType: 1, OptionLength: 1})
		case 1: // Router Alert (RFC 2113)
			opts = append(opts, layers.IPv4Option{OptionType: 148, OptionLength: 4, OptionData: []byte{0, 0}})
		default: // Record Route with room for n addresses
			n := 1 + g.r.IntN(4)
			d := make([]byte, 1+4*n)
			d[0] = 4
			opts = append(opts, layers.IPv4Option{OptionType: 7, OptionLength: uint8(2 + len(d)), OptionData: d})
		}
	}
	return opts
}

// extensions appends up to 4 IPv6 extension headers.
func (g *gen) extensions(p *part) {
	for i := range g.r.IntN(5) {
		switch g.r.IntN(5) {
		case 0:
			if i == 0 { // Hop-by-Hop must come first (RFC 8200 section 4.1)
				p.add("hbh", HopByHop(1+g.r.IntN(3)))
				continue
			}
			fallthrough
		case 1:
			p.add("dst", DestOpts(1+g.r.IntN(3)))
		case 2:
			addrs := make([]netip.Addr, 1+g.r.IntN(3))
			for j := range addrs {
				addrs[j], _ = g.addrs(true)
			}
			typ := []uint8{0, 2, 3, 4}[g.r.IntN(4)]
			if typ == 2 {
				addrs = addrs[:1]
			}
			p.add("rt", Routing(typ, uint8(g.r.IntN(len(addrs)+1)), addrs...))
		case 3:
			p.add("ah", AuthHeader(g.r.Uint32(), 4+8*g.r.IntN(3)))
		default:
			p.add("atomicfrag", Fragment(0, false, g.r.Uint32()))
		}
	}
}

// otherProtocols are protocols without ports the parser treats alike.
var otherProtocols = []layers.IPProtocol{2, 89, 103, 112, 115, 253, 254}

// terminal ends the packet with a transport or an opaque payload.
func (g *gen) terminal(p *part, v6, quote bool) {
	kinds := 14
	if quote {
		kinds++
	}
	switch g.r.IntN(kinds) {
	case 0:
		sp, dp := g.ports()
		t := TCP(sp, dp)
		t.ACK = g.r.IntN(2) == 0
		t.Seq, t.Ack = g.r.Uint32(), g.r.Uint32()
		hlen := 20
		if g.r.IntN(2) == 0 {
			t.Options = []layers.TCPOption{
				{OptionType: layers.TCPOptionKindMSS, OptionData: []byte{5, 0xb4}},
				{OptionType: layers.TCPOptionKindNop},
				{OptionType: layers.TCPOptionKindWindowScale, OptionData: []byte{7}},
			}
			hlen += 8
		}
		if g.r.IntN(2) == 0 {
			ts := make([]byte, 8)
			for i := range ts {
				ts[i] = byte(g.r.Uint32())
			}
			t.Options = append(t.Options, layers.TCPOption{OptionType: layers.TCPOptionKindNop},
				layers.TCPOption{OptionType: layers.TCPOptionKindNop},
				layers.TCPOption{OptionType: layers.TCPOptionKindTimestamps, OptionData: ts})
			hlen += 12
		}
		p.add("tcp", t)
		p.end(g, g.payloadLen(0), hlen-8, true)
	case 1:
		sp, dp := g.ports()
		p.add("udp", UDP(sp, dp))
		p.end(g, g.payloadLen(0), 0, true)
	case 2:
		sp, dp := g.ports()
		u := &UDPLite{SrcPort: sp, DstPort: dp}
		if g.r.IntN(2) == 0 {
			u.Coverage = 8
		}
		p.add("udplite", u)
		p.end(g, g.payloadLen(0), 0, true)
	case 3:
		sp, dp := g.ports()
		p.add("sctp", SCTP(sp, dp))
		p.end(g, g.payloadLen(0), 4, true)
	case 4:
		sp, dp := g.ports()
		d := &DCCP{SrcPort: sp, DstPort: dp, Type: uint8(g.r.IntN(10)), Extended: g.r.IntN(2) == 0, Seq: g.r.Uint64()}
		d.Extra = make([]byte, 4*g.r.IntN(3))
		hlen := 12 + len(d.Extra)
		if d.Extended {
			hlen += 4
		}
		p.add("dccp", d)
		p.end(g, g.payloadLen(0), hlen-8, true)
	case 5:
		p.add("esp", &ESP{SPI: g.r.Uint32() | 1<<8, Seq: g.r.Uint32()})
		p.end(g, g.payloadLen(8), 0, false)
	case 6:
		id, seq := g.u16(), g.u16()
		request := g.r.IntN(2) == 0
		if v6 {
			p.add("icmp6echo", ICMPv6Echo(request, id, seq))
		} else {
			p.add("icmpecho", ICMPv4Echo(request, id, seq))
		}
		p.end(g, g.payloadLen(0), 0, true)
	case 7:
		if v6 {
			typ := []uint8{130, 133, 134, 135, 136, 143}[g.r.IntN(6)]
			p.add("icmp6other", ICMPv6Msg(typ, 0, g.r.Uint32()))
		} else {
			typ := []uint8{9, 10, 13, 14, 17, 18}[g.r.IntN(6)]
			p.add("icmpother", ICMPv4(typ, 0, g.r.Uint32()))
		}
		p.end(g, g.payloadLen(0), 0, true)
	case 8:
		proto := otherProtocols[g.r.IntN(len(otherProtocols))]
		if v6 && g.r.IntN(2) == 0 {
			proto = layers.IPProtocolNoNextHeader
		}
		p.setNext(proto)
		p.desc = append(p.desc, "proto"+strconv.Itoa(int(proto)))
		p.end(g, g.payloadLen(1), 0, true)
	case 9:
		g.fragment(p, v6)
	case 10:
		// GRE carrying something other than IP: the GRE flow is the key.
		gre := g.gre()
		gre.Protocol = []layers.EthernetType{0x880b, 0x8847, 0x0806, 0x88be}[g.r.IntN(4)]
		p.add(greDesc(gre)+"/nonip", gre)
		p.end(g, g.payloadLen(0), 0, !gre.KeyPresent)
	case 11:
		// Opaque GRE: source routing, or PPTP's enhanced GRE (version 1).
		gre := GRE()
		gre.Protocol = layers.EthernetTypeIPv4
		if g.r.IntN(2) == 0 {
			gre.RoutingPresent = true
			p.add("gre+r", gre)
		} else {
			gre.Version, gre.KeyPresent, gre.Key = 1, true, g.r.Uint32()
			gre.Protocol = 0x880b
			p.add("gre-v1", gre)
		}
		p.end(g, g.payloadLen(0), 0, true)
	case 12, 13:
		// A tunnel carrying an Ethernet frame that is not IP: the tunnel's
		// flow is the key.
		symmetric := true
		if g.r.IntN(2) == 0 {
			gre := g.gre()
			p.add(greDesc(gre)+"/teb", gre)
			symmetric = !gre.KeyPresent
		} else {
			g.vxlan(p)
			symmetric = false
		}
		g.ethernet(p)
		switch last := p.ls[len(p.ls)-1].(type) {
		case *Ethernet:
			last.EtherType = layers.EthernetTypeARP
		case *layers.Dot1Q:
			last.Type = layers.EthernetTypeARP
		case *ServiceTag:
			last.Type = layers.EthernetTypeARP
		}
		p.desc = append(p.desc, "arp")
		p.end(g, g.payloadLen(28), 0, symmetric)
	default:
		// Only inside a quote: an ICMP error quoting an ICMP error, which
		// the parser does not follow.
		if v6 {
			p.add("icmp6err", ICMPv6Msg(uint8(1+g.r.IntN(4)), 0, g.r.Uint32()))
		} else {
			p.add("icmperr", ICMPv4(3, uint8(g.r.IntN(16)), 0))
		}
		p.end(g, g.payloadLen(0), 0, true)
	}
}

// fragment makes the packet a fragment of a larger datagram.
func (g *gen) fragment(p *part, v6 bool) {
	// A third are first fragments (offset 0, More Fragments set).
	offset := uint16(0)
	if g.r.IntN(3) != 0 {
		offset = uint16(1 + g.r.IntN(1<<13-1))
	}
	more := offset == 0 || g.r.IntN(2) == 0
	proto := []layers.IPProtocol{6, 17, 58, 1, 132, 47, 4, 41}[g.r.IntN(8)]
	if v6 {
		f := Fragment(offset, more, g.r.Uint32())
		f.NextHeader = proto
		p.add("frag", f)
	} else {
		p.ip4.FragOffset = offset
		p.ip4.Flags &^= layers.IPv4DontFragment
		if more {
			p.ip4.Flags |= layers.IPv4MoreFragments
		}
		p.setNext(proto)
		p.desc = append(p.desc, "frag")
	}
	p.end(g, g.payloadLen(1), 0, true)
}

// gre returns a version 0 GRE header with random optional fields.
func (g *gen) gre() *layers.GRE {
	h := GRE()
	h.ChecksumPresent = g.r.IntN(3) == 0
	h.SeqPresent = g.r.IntN(3) == 0
	if g.r.IntN(2) == 0 {
		h.KeyPresent, h.Key = true, g.r.Uint32()
	}
	h.Seq = g.r.Uint32()
	return h
}

func greDesc(h *layers.GRE) string {
	d := "gre"
	if h.ChecksumPresent {
		d += "+c"
	}
	if h.KeyPresent {
		d += "+k"
	}
	if h.SeqPresent {
		d += "+s"
	}
	return d
}

// vxlan appends a UDP header to the VXLAN port and a VXLAN header. The
// source port is the same in both directions, as an encapsulating host
// derives it from the inner flow.
func (g *gen) vxlan(p *part) {
	sp := g.u16() | 0xc000
	p.add("vxlan", UDP(sp, VXLANPort), VXLAN(g.r.Uint32()&0xffffff))
}

// encapsulation appends a tunnel and an inner packet of at most budget IP
// headers.
func (g *gen) encapsulation(p *part, budget int, v6, quote bool) {
	innerV6 := g.r.IntN(2) == 0
	switch g.r.IntN(5) {
	case 0:
		p.extend(g.ip(budget, innerV6, quote))
	case 1:
		gre := g.gre()
		p.add(greDesc(gre), gre)
		p.extend(g.ip(budget, innerV6, quote))
	case 2:
		gre := g.gre()
		p.add(greDesc(gre)+"/teb", gre)
		g.ethernet(p)
		p.extend(g.ip(budget, innerV6, quote))
	case 3:
		g.vxlan(p)
		g.ethernet(p)
		p.extend(g.ip(budget, innerV6, quote))
	default:
		if quote {
			// No ICMP error in a quote here; terminal draws that case.
			p.extend(g.ip(budget, innerV6, quote))
			return
		}
		g.icmpError(p, budget, v6)
	}
}

// icmpError appends an ICMP error quoting a packet of at most budget IP
// headers, cut at random as routers do.
func (g *gen) icmpError(p *part, budget int, v6 bool) {
	var msg gopacket.SerializableLayer
	if v6 {
		typ := uint8(1 + g.r.IntN(4))
		msg = ICMPv6Msg(typ, 0, 1280)
		p.add("icmp6err", msg)
	} else {
		typ := []uint8{3, 4, 5, 11, 12}[g.r.IntN(5)]
		msg = ICMPv4(typ, uint8(g.r.IntN(4)), 1400)
		p.add("icmperr", msg)
	}
	q := g.ip(budget, v6, true)
	quoted := Build(q.ls...)
	cut := 0
	switch g.r.IntN(3) {
	case 0:
		cut = g.r.IntN(q.cuttable + 1)
	case 1:
		cut = q.cuttable
	}
	p.ls = append(p.ls, Quote(quoted, len(quoted)-cut))
	p.desc = append(p.desc, "quote("+strings.Join(q.desc, "/")+")")
	p.payload = max(0, q.payload-cut)
	p.cuttable = p.payload
	p.symmetric = q.symmetric
}

package flowaddr

import "encoding/binary"

// Bounds on what one packet may nest. They keep the work per packet small
// and fixed whatever an attacker sends.
const (
	// MaxDepth bounds the IP headers one packet may nest: the outer header,
	// tunnelled headers (IP-in-IP, GRE, VXLAN) and the packet quoted in an
	// ICMP error all count. Four covers a quoted packet inside two tunnels.
	MaxDepth = 4
	// MaxExtHeaders bounds the IPv6 extension headers (and IPv4
	// Authentication Headers) that follow one IP header. Eight is more than
	// any chain RFC 8200 section 4.1 recommends.
	MaxExtHeaders = 8
	// MaxVLANTags bounds the 802.1Q/802.1ad tags of one Ethernet frame: two
	// covers QinQ.
	MaxVLANTags = 2
)

// Parse returns the flow key of a raw IPv4 or IPv6 packet, as a TUN device
// hands it to a VPN: the addresses, protocol and ports of the innermost
// transport flow the packet carries.
//
// Parse does not allocate, never panics and does not retain pkt. It is safe
// for concurrent use. On error it returns one of the package's sentinel
// errors (compare with ==) together with the innermost flow parsed before
// the error: the addresses and protocol of the last valid IP header, with
// its ports if its transport header was valid too (reversed if it was
// quoted in an ICMP error, see below), or the zero Key if the outermost
// header was bad. A caller may still use that key to classify the packet.
//
// # IP headers
//
// The version nibble picks IPv4 or IPv6; any other is [ErrVersion].
// IPv4 (RFC 791): the header length (IHL) must be at least 5 words
// ([ErrHeaderLength]) and fit the buffer ([ErrTruncated]); the total length
// must be at least the header length ([ErrTotalLength]) and fit the buffer
// ([ErrTruncated]); bytes beyond it (link padding) are ignored. A total
// length of 0 on a buffer larger than 65535 bytes (Linux BIG TCP) means the
// whole buffer. Options are skipped.
// IPv6 (RFC 8200): the payload length must fit the buffer
// ([ErrTruncated]); bytes beyond it are ignored. A payload length of 0 with
// a Hop-by-Hop header first is a jumbogram (RFC 2675): the payload is the
// rest of the buffer.
//
// # Extension headers
//
// Hop-by-Hop Options (0), Routing (43) and Destination Options (60), of
// (n+1)*8 bytes, the Fragment header (44) and the Authentication Header
// (51, RFC 4302, (n+2)*4 bytes, at least 12) are skipped to reach the
// protocol. AH is skipped after an IPv4 header as well. More than
// [MaxExtHeaders] of them after one IP header is [ErrExtChain]. No Next
// Header (59) ends the chain: proto 59, no ports.
//
// # Fragments
//
// An IPv4 packet with More Fragments set or a nonzero offset, or an IPv6
// packet with a Fragment header whose offset or M flag is nonzero, gives
// the addresses, the protocol (for IPv6, the Next Header of the Fragment
// header), no ports and [FlagFragment]; Parse does not look into the
// fragment's payload, so the first and the later fragments of one datagram
// get the same key. An IPv6 atomic fragment (offset 0, M 0, RFC 6946) is
// not a fragment: parsing goes on after its header.
//
// # Encapsulations
//
// The innermost flow wins. Parse follows IPv4 in IPv4 (protocol 4), IPv6 in
// IPv4 (41), IPv4 in IPv6 (4), IPv6 in IPv6 (41), GRE (47, RFC 2784 and
// RFC 2890) and VXLAN (RFC 7348). More than [MaxDepth] IP headers is
// [ErrDepth].
//
// GRE version 0 may carry a checksum, a key and a sequence number (C, K
// and S flags, 4 bytes each) and a protocol type of IPv4 (0x0800), IPv6
// (0x86DD) or transparent Ethernet bridging (0x6558). A GRE packet with the
// Routing flag set or a version other than 0 (such as PPTP's enhanced GRE)
// is opaque: its key is its own addresses, protocol 47, no ports.
//
// VXLAN is a UDP datagram to port 4789 with at least 8 bytes of payload
// whose VXLAN header has the I flag (0x08) set; otherwise the datagram is
// plain UDP.
//
// Transparent Ethernet bridging and VXLAN carry an Ethernet frame: its
// EtherType, after up to [MaxVLANTags] 802.1Q (0x8100) or 802.1ad (0x88A8)
// tags (more is [ErrVLANTags]), must be IPv4 or IPv6. When a tunnel carries
// anything else (ARP, PPP, MPLS, ...) the key is the enclosing flow:
// the GRE packet's addresses with protocol 47, or the VXLAN datagram's UDP
// flow. For GRE, a key present in the GRE header fills the ports: its high
// 16 bits in SrcPort, its low 16 bits in DstPort.
//
// # Transport
//
// TCP (6, data offset at least 5 words and within the buffer), UDP (17, the
// length field at least 8 and within the buffer; 0 means the rest of the
// packet, as in RFC 2675 jumbograms), UDP-Lite (136, RFC 3828, checksum
// coverage 0 or from 8 to the datagram's length), SCTP (132, its 12-byte
// common header) and DCCP (33, RFC 4340, data offset covering the generic
// header and within the buffer) give their ports. A header shorter than
// its fixed part is [ErrTruncated]; a bad length field is
// [ErrHeaderLength], or [ErrTruncated] if it points past the buffer.
//
// ESP (50, RFC 4303) has no ports: SrcPort is the SPI's high 16 bits,
// DstPort its low 16 bits. An SA is one-way, so the two directions of an
// ESP flow have different SPIs, and likewise a GRE key fills the ports
// unchanged in both directions: [Key.Canonical] does not pair such keys.
//
// ICMP (1) and ICMPv6 (58) Echo Request and Echo Reply put the echo
// identifier in both SrcPort and DstPort, so request and reply share one
// flow. ICMP errors (ICMP types 3, 4, 5, 11 and 12; ICMPv6 types 1 to 4)
// quote the packet that caused them after their 8-byte header: Parse parses
// the quoted packet and returns its key reversed, since the error travels
// in the reply direction of the quoted flow. So a Packet Too Big gets the
// same key as the replies of the flow it is about. A quoted packet is
// truncated by nature: inside a quote a total or payload length larger
// than the buffer is accepted, and a transport header needs only its 4
// port bytes. The quoted IP header counts towards [MaxDepth]. An ICMP
// error quoted in an ICMP error is not followed further: the key is then
// the outer ICMP error's own (protocol 1 or 58, no ports). Other ICMP types
// have no ports. Every ICMP message needs its 8-byte header
// ([ErrTruncated]).
//
// Any other protocol gives the addresses and the protocol, no ports and no
// error.
func Parse(pkt []byte) (k Key, err error) {
	err = parseIP(&k, pkt)
	return k, err
}

// ParseInto is [Parse] writing the key into *k, which it overwrites
// whole, instead of returning it; k must not be nil. The contracts are
// Parse's: on error *k holds the innermost flow parsed before it.
//
// It is for a sender's per-packet path, together with [Key.Bytes]. A Key
// that Parse returns is copied into the caller's variable right after its
// fields were stored, and on amd64 the copy's overlapping 16-byte loads
// span those stores, so they cannot be forwarded from the store buffer
// and wait for the cache; the next 16-byte load of the copy, such as
// Bytes' load of Dst, stalls on the copy's own stores again. Parsing into
// a Key that stays put saved 9 ns of 50 per packet for parse + hash + map
// of a plain TCP/IPv6 packet.
func ParseInto(k *Key, pkt []byte) error {
	return parseIP(k, pkt)
}

// ParseEthernet returns the flow key of an Ethernet II frame carrying IPv4
// or IPv6 after up to [MaxVLANTags] 802.1Q (0x8100) or 802.1ad (0x88A8)
// tags. The frame check sequence may be present or not: bytes after the IP
// packet are ignored. The IP packet is parsed as by [Parse], and the same
// contracts hold: no allocation, no panic, the innermost flow on error.
// A frame of any other EtherType is [ErrNotIP].
func ParseEthernet(frame []byte) (k Key, err error) {
	err = parse(&k, frame, layerEthernet)
	return k, err
}

// ParseLinuxSLL returns the flow key of a frame in Linux cooked capture
// format v1 (pcap link type 113, LINKTYPE_LINUX_SLL), as captured on "any"
// interface or on a TUN device. Its protocol field must be IPv4 or IPv6,
// possibly after VLAN tags as libpcap reinserts them; the IP packet is
// parsed as by [Parse], with the same contracts.
func ParseLinuxSLL(frame []byte) (k Key, err error) {
	err = parse(&k, frame, layerLinuxSLL)
	return k, err
}

// parse parses b, starting with a header of kind first, into k, which
// must be the zero Key. It fills k in place, field by field, reading the
// addresses from the packet. Returning a Key instead costs a whole-Key copy
// (overlapping 16-byte moves) right after its fields were stored, from
// parse's result to its inlined caller's: a load that spans several stores
// still in flight cannot be forwarded from them and waits until they reach
// the cache. Each such copy cost about 5 ns, a third of a parse.
func parse(k *Key, b []byte, first layer) (err error) {
	if len(b) == 0 {
		return ErrEmpty
	}
	if first == layerIP {
		first = layerIPv4
		if b[0]>>4 == 6 {
			first = layerIPv6
		}
	}
	var p parser
	err = p.run(first, b)
	k.setAddrs(p.addrs, p.quoted)
	if p.quoted {
		k.SrcPort, k.DstPort = p.dport, p.sport
	} else {
		k.SrcPort, k.DstPort = p.sport, p.dport
	}
	k.Proto = p.proto
	if p.fragment {
		k.Flags |= FlagFragment
	}
	return err
}

// setAddrs sets the addresses of k, which must be zero, and FlagIPv4 for
// IPv4, from adjacent source and destination address bytes in a packet,
// swapped if reversed. It stores as parseIP does, and is small enough to
// be inlined.
func (k *Key) setAddrs(addrs []byte, reversed bool) {
	n := len(addrs) / 2
	src, dst := addrs[:n], addrs[n:]
	if reversed {
		src, dst = dst, src
	}
	switch n {
	case 16:
		k.Src, k.Dst = [16]byte(src), [16]byte(dst)
	case 4:
		binary.LittleEndian.PutUint64(k.Src[8:], uint64(binary.LittleEndian.Uint32(src))<<32|v4MappedLE)
		binary.LittleEndian.PutUint64(k.Dst[8:], uint64(binary.LittleEndian.Uint32(dst))<<32|v4MappedLE)
		k.Flags = FlagIPv4
	}
}

// layer names what run parses next.
type layer uint8

const (
	layerDone layer = iota
	layerIP         // IPv4 or IPv6, by the version nibble
	layerIPv4
	layerIPv6
	layerEthernet
	layerLinuxSLL
)

// flow is a flow key under construction. It points into the packet
// rather than copying addresses at every IP header: Parse builds the Key
// once, at the end, from the innermost flow.
type flow struct {
	// addrs are the source and destination address bytes in the packet,
	// adjacent in both IP headers: 8 for IPv4, 32 for IPv6, nil before the
	// first IP header.
	addrs        []byte
	sport, dport uint16
	proto        uint8
	fragment     bool
}

// parser holds the state of one Parse call. It lives on the caller's stack.
type parser struct {
	flow
	// icmpFlow is the flow of the ICMP error whose quote is being parsed.
	icmpFlow flow
	// depth counts the IP headers seen.
	depth uint8
	// quote is set inside an ICMP error's quoted packet.
	quote bool
	// quoted is set when the flow came from inside a quote, so must be
	// reversed.
	quoted bool
}

// setFlow starts the flow of a new IP header. It sets field by field for
// the reason parse gives.
func (p *parser) setFlow(addrs []byte, proto uint8) {
	p.addrs = addrs
	p.sport, p.dport = 0, 0
	p.proto = proto
	p.fragment = false
	p.quoted = p.quote
}

// run parses layers from next on until the flow is known or an error stops
// it. Each step returns the layer its payload holds, or layerDone.
func (p *parser) run(next layer, b []byte) error {
	var err error
	for next != layerDone {
		switch next {
		case layerIPv4:
			next, b, err = p.ipv4(b)
		case layerIPv6:
			next, b, err = p.ipv6(b)
		case layerEthernet:
			next, b, err = p.ethernet(b)
		default:
			next, b, err = p.linuxSLL(b)
		}
	}
	return err
}

const (
	ipv4HeaderLen  = 20
	ipv6HeaderLen  = 40
	ipv4FragMask   = 0x3fff // More Fragments flag and fragment offset
	bigTCPMinBytes = 0x10000
)

// ipv4 parses an IPv4 header (RFC 791) and what follows it.
func (p *parser) ipv4(b []byte) (layer, []byte, error) {
	if len(b) == 0 {
		return layerDone, nil, ErrTruncated
	}
	if b[0]>>4 != 4 {
		return layerDone, nil, ErrVersion
	}
	if p.depth == MaxDepth {
		return layerDone, nil, ErrDepth
	}
	p.depth++
	if len(b) < ipv4HeaderLen {
		return layerDone, nil, ErrTruncated
	}
	hlen := int(b[0]&0x0f) * 4
	if hlen < ipv4HeaderLen {
		return layerDone, nil, ErrHeaderLength
	}
	if hlen > len(b) {
		return layerDone, nil, ErrTruncated
	}
	total := int(binary.BigEndian.Uint16(b[2:4]))
	if total == 0 && len(b) >= bigTCPMinBytes {
		total = len(b)
	}
	if total < hlen {
		return layerDone, nil, ErrTotalLength
	}
	if total > len(b) {
		if !p.quote {
			return layerDone, nil, ErrTruncated
		}
		total = len(b)
	}
	proto := b[9]
	p.setFlow(b[12:20], proto)
	if binary.BigEndian.Uint16(b[6:8])&ipv4FragMask != 0 {
		p.fragment = true
		return layerDone, nil, nil
	}
	if proto != protoAH {
		return p.upper(proto, b[hlen:total]) // as transport would, one call sooner
	}
	return p.transport(proto, b[hlen:total], false)
}

// ipv6 parses an IPv6 header (RFC 8200) and what follows it.
func (p *parser) ipv6(b []byte) (layer, []byte, error) {
	if len(b) == 0 {
		return layerDone, nil, ErrTruncated
	}
	if b[0]>>4 != 6 {
		return layerDone, nil, ErrVersion
	}
	if p.depth == MaxDepth {
		return layerDone, nil, ErrDepth
	}
	p.depth++
	if len(b) < ipv6HeaderLen {
		return layerDone, nil, ErrTruncated
	}
	plen := int(binary.BigEndian.Uint16(b[4:6]))
	next := b[6]
	payload := b[ipv6HeaderLen:]
	switch {
	case plen == 0 && next == protoHopByHop:
		// A jumbogram (RFC 2675): the payload is the rest of the buffer.
	case plen > len(payload):
		if !p.quote {
			return layerDone, nil, ErrTruncated
		}
	default:
		payload = payload[:plen]
	}
	p.setFlow(b[8:40], next)
	switch next {
	case protoHopByHop, protoRouting, protoDestOpts, protoFragment, protoAH:
		return p.transport(next, payload, true)
	}
	return p.upper(next, payload) // as transport would, one call sooner
}

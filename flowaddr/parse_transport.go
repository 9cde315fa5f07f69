package flowaddr

import "encoding/binary"

// IP protocol numbers (IANA "Assigned Internet Protocol Numbers").
const (
	protoHopByHop = 0
	protoICMP     = 1
	protoIPv4     = 4
	protoTCP      = 6
	protoUDP      = 17
	protoDCCP     = 33
	protoIPv6     = 41
	protoRouting  = 43
	protoFragment = 44
	protoGRE      = 47
	protoESP      = 50
	protoAH       = 51
	protoICMPv6   = 58
	protoDestOpts = 60
	protoSCTP     = 132
	protoUDPLite  = 136
)

// Fixed header lengths of the transport protocols.
const (
	tcpHeaderLen      = 20
	udpHeaderLen      = 8
	sctpHeaderLen     = 12
	dccpHeaderLen     = 12 // generic header with 24-bit sequence numbers
	dccpHeaderLenX    = 16 // generic header with 48-bit sequence numbers
	espHeaderLen      = 8
	icmpHeaderLen     = 8
	ahMinLen          = 12
	fragmentHeaderLen = 8
	portsLen          = 4
	ipv6FragMask      = 0xfff9 // fragment offset and M flag
)

// transport skips the extension headers after an IP header, then parses the
// transport header of proto in b. v6 says the IP header was IPv6.
func (p *parser) transport(proto uint8, b []byte, v6 bool) (layer, []byte, error) {
	for n := 0; ; n++ {
		switch proto {
		case protoAH:
		case protoHopByHop, protoRouting, protoDestOpts, protoFragment:
			if !v6 {
				return p.upper(proto, b)
			}
		default:
			return p.upper(proto, b)
		}
		if n == MaxExtHeaders {
			return layerDone, nil, ErrExtChain
		}
		var hlen int
		switch proto {
		case protoAH:
			if len(b) < ahMinLen {
				return layerDone, nil, ErrTruncated
			}
			hlen = (int(b[1]) + 2) * 4
			if hlen < ahMinLen {
				return layerDone, nil, ErrHeaderLength
			}
		case protoFragment:
			if len(b) < fragmentHeaderLen {
				return layerDone, nil, ErrTruncated
			}
			if binary.BigEndian.Uint16(b[2:4])&ipv6FragMask != 0 {
				p.proto = b[0]
				p.fragment = true
				return layerDone, nil, nil
			}
			hlen = fragmentHeaderLen // an atomic fragment: go on
		default:
			if len(b) < 2 {
				return layerDone, nil, ErrTruncated
			}
			hlen = (int(b[1]) + 1) * 8
		}
		if hlen > len(b) {
			return layerDone, nil, ErrTruncated
		}
		proto = b[0]
		p.proto = proto
		b = b[hlen:]
	}
}

// upper parses the header of protocol proto in b: it fills the ports, or
// hands an encapsulated packet back to run.
func (p *parser) upper(proto uint8, b []byte) (layer, []byte, error) {
	switch proto {
	case protoTCP:
		if !p.quote {
			if len(b) < tcpHeaderLen {
				return layerDone, nil, ErrTruncated
			}
			off := int(b[12]>>4) * 4
			if off < tcpHeaderLen {
				return layerDone, nil, ErrHeaderLength
			}
			if off > len(b) {
				return layerDone, nil, ErrTruncated
			}
		}
		return p.ports(b)
	case protoUDP:
		return p.udp(b)
	case protoUDPLite:
		if !p.quote {
			if len(b) < udpHeaderLen {
				return layerDone, nil, ErrTruncated
			}
			// RFC 3828 section 3.1: coverage 0 is the whole datagram.
			cov := int(binary.BigEndian.Uint16(b[4:6]))
			if cov != 0 && cov < udpHeaderLen {
				return layerDone, nil, ErrHeaderLength
			}
			if cov > len(b) {
				return layerDone, nil, ErrTruncated
			}
		}
		return p.ports(b)
	case protoSCTP:
		if !p.quote && len(b) < sctpHeaderLen {
			return layerDone, nil, ErrTruncated
		}
		return p.ports(b)
	case protoDCCP:
		if !p.quote {
			if len(b) < dccpHeaderLen {
				return layerDone, nil, ErrTruncated
			}
			hlen := dccpHeaderLen
			if b[8]&1 != 0 { // X: extended sequence numbers
				hlen = dccpHeaderLenX
			}
			off := int(b[4]) * 4
			if off < hlen {
				return layerDone, nil, ErrHeaderLength
			}
			if off > len(b) {
				return layerDone, nil, ErrTruncated
			}
		}
		return p.ports(b)
	case protoESP:
		if !p.quote && len(b) < espHeaderLen {
			return layerDone, nil, ErrTruncated
		}
		return p.ports(b)
	case protoICMP:
		return p.icmp(b, false)
	case protoICMPv6:
		return p.icmp(b, true)
	case protoIPv4:
		return layerIPv4, b, nil
	case protoIPv6:
		return layerIPv6, b, nil
	case protoGRE:
		return p.gre(b)
	}
	return layerDone, nil, nil
}

// ports sets the key's ports from the first 4 bytes of b. Callers checked
// the rest of the header; inside a quote only these 4 bytes are needed.
func (p *parser) ports(b []byte) (layer, []byte, error) {
	if len(b) < portsLen {
		return layerDone, nil, ErrTruncated
	}
	p.sport = binary.BigEndian.Uint16(b[0:2])
	p.dport = binary.BigEndian.Uint16(b[2:4])
	return layerDone, nil, nil
}

const (
	vxlanPort      = 4789 // RFC 7348 section 5
	vxlanHeaderLen = 8
	vxlanFlagI     = 0x08 // the VNI is valid
)

// udp parses a UDP header (RFC 768) and a VXLAN header after it.
func (p *parser) udp(b []byte) (layer, []byte, error) {
	if !p.quote {
		if len(b) < udpHeaderLen {
			return layerDone, nil, ErrTruncated
		}
		switch ulen := int(binary.BigEndian.Uint16(b[4:6])); {
		case ulen == 0:
			// RFC 2675 section 4: a jumbogram's UDP length is 0.
		case ulen < udpHeaderLen:
			return layerDone, nil, ErrHeaderLength
		case ulen > len(b):
			return layerDone, nil, ErrTruncated
		default:
			b = b[:ulen]
		}
	}
	// Inside a quote the length field describes the datagram before it was
	// cut, so the payload is whatever the quote holds.
	next, _, err := p.ports(b)
	if err != nil {
		return next, nil, err
	}
	if len(b) >= udpHeaderLen+vxlanHeaderLen && p.dport == vxlanPort && b[udpHeaderLen]&vxlanFlagI != 0 {
		return layerEthernet, b[udpHeaderLen+vxlanHeaderLen:], nil
	}
	return layerDone, nil, nil
}

// ICMP and ICMPv6 message types (RFC 792, RFC 4443).
const (
	icmpEchoReply      = 0
	icmpUnreachable    = 3
	icmpSourceQuench   = 4
	icmpRedirect       = 5
	icmpEchoRequest    = 8
	icmpTimeExceeded   = 11
	icmpParamProblem   = 12
	icmpv6Unreachable  = 1
	icmpv6ParamProblem = 4
	icmpv6EchoRequest  = 128
	icmpv6EchoReply    = 129
)

// icmp parses an ICMP (v6 false) or ICMPv6 header and the packet an error
// message quotes.
func (p *parser) icmp(b []byte, v6 bool) (layer, []byte, error) {
	if len(b) < icmpHeaderLen {
		return layerDone, nil, ErrTruncated
	}
	typ := b[0]
	var echo, quotes bool
	if v6 {
		echo = typ == icmpv6EchoRequest || typ == icmpv6EchoReply
		quotes = typ >= icmpv6Unreachable && typ <= icmpv6ParamProblem
	} else {
		echo = typ == icmpEchoRequest || typ == icmpEchoReply
		switch typ {
		case icmpUnreachable, icmpSourceQuench, icmpRedirect, icmpTimeExceeded, icmpParamProblem:
			quotes = true
		}
	}
	switch {
	case echo:
		id := binary.BigEndian.Uint16(b[4:6])
		p.sport, p.dport = id, id
	case quotes && p.quote:
		// An error about an error: stop at the outer one.
		p.flow = p.icmpFlow
		p.quoted = false
	case quotes:
		p.icmpFlow = p.flow
		p.quote = true
		if v6 {
			return layerIPv6, b[icmpHeaderLen:], nil
		}
		return layerIPv4, b[icmpHeaderLen:], nil
	}
	return layerDone, nil, nil
}

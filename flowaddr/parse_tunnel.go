package flowaddr

import "encoding/binary"

// GRE header bits (RFC 2784, RFC 2890; RFC 1701 for routing).
const (
	greHeaderLen   = 4
	greChecksum    = 0x80 // C: checksum and reserved1, 4 bytes
	greRouting     = 0x40 // R: RFC 1701 source routing, not parsed
	greKey         = 0x20 // K: key, 4 bytes
	greSeq         = 0x10 // S: sequence number, 4 bytes
	greVersionMask = 0x07
)

// EtherTypes (IEEE 802 numbers).
const (
	etherTypeIPv4 = 0x0800
	etherTypeIPv6 = 0x86dd
	etherTypeTEB  = 0x6558 // transparent Ethernet bridging
	etherTypeVLAN = 0x8100 // 802.1Q customer tag
	etherTypeQinQ = 0x88a8 // 802.1ad service tag
)

const (
	ethernetHeaderLen = 14
	vlanTagLen        = 4
)

// gre parses a GRE header and hands what it carries back to run.
func (p *parser) gre(b []byte) (layer, []byte, error) {
	if len(b) < greHeaderLen {
		return layerDone, nil, ErrTruncated
	}
	flags := b[0]
	if flags&greRouting != 0 || b[1]&greVersionMask != 0 {
		// Opaque: the key is the GRE packet's own.
		return layerDone, nil, nil
	}
	hlen := greHeaderLen
	if flags&greChecksum != 0 {
		hlen += 4
	}
	keyOff := hlen
	if flags&greKey != 0 {
		hlen += 4
	}
	if flags&greSeq != 0 {
		hlen += 4
	}
	if len(b) < hlen {
		return layerDone, nil, ErrTruncated
	}
	if flags&greKey != 0 {
		p.sport = binary.BigEndian.Uint16(b[keyOff:])
		p.dport = binary.BigEndian.Uint16(b[keyOff+2:])
	}
	switch binary.BigEndian.Uint16(b[2:4]) {
	case etherTypeIPv4:
		return layerIPv4, b[hlen:], nil
	case etherTypeIPv6:
		return layerIPv6, b[hlen:], nil
	case etherTypeTEB:
		return layerEthernet, b[hlen:], nil
	}
	return layerDone, nil, nil
}

// ethernet parses an Ethernet II header.
func (p *parser) ethernet(b []byte) (layer, []byte, error) {
	if len(b) < ethernetHeaderLen {
		return layerDone, nil, ErrTruncated
	}
	return p.etherType(binary.BigEndian.Uint16(b[12:14]), b[ethernetHeaderLen:])
}

// linuxSLLLen is the length of a Linux cooked capture (v1) header: packet
// type, ARPHRD type, link address length, 8 bytes of link address and the
// protocol (an EtherType).
const linuxSLLLen = 16

// linuxSLL parses a Linux cooked capture v1 header.
func (p *parser) linuxSLL(b []byte) (layer, []byte, error) {
	if len(b) < linuxSLLLen {
		return layerDone, nil, ErrTruncated
	}
	return p.etherType(binary.BigEndian.Uint16(b[14:16]), b[linuxSLLLen:])
}

// etherType skips the VLAN tags after an EtherType field et and hands an IP
// packet back to run. A frame that carries no IP packet is an error at the
// outermost layer; inside a tunnel it leaves the enclosing flow as the key.
func (p *parser) etherType(et uint16, b []byte) (layer, []byte, error) {
	for tags := 0; et == etherTypeVLAN || et == etherTypeQinQ; tags++ {
		if tags == MaxVLANTags {
			return layerDone, nil, ErrVLANTags
		}
		if len(b) < vlanTagLen {
			return layerDone, nil, ErrTruncated
		}
		et = binary.BigEndian.Uint16(b[2:4])
		b = b[vlanTagLen:]
	}
	switch et {
	case etherTypeIPv4:
		return layerIPv4, b, nil
	case etherTypeIPv6:
		return layerIPv6, b, nil
	}
	if p.depth == 0 {
		return layerDone, nil, ErrNotIP
	}
	return layerDone, nil, nil
}

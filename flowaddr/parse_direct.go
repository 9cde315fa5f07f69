package flowaddr

import "encoding/binary"

// direct parses the packets a VPN mostly carries, a plain IPv4 or IPv6
// header (no options, extension headers or fragmentation) and a valid TCP
// or UDP header, in one straight function, and reports whether it did.
// Anything else, including anything invalid, it leaves to run, which gives
// the same key for what direct accepts (the fuzz test checks Parse, which
// uses direct, against ParseEthernet, which does not).
//
// The full parser costs about four calls per header; on this path they
// were most of the time of a parse.
func direct(b []byte) (addrs []byte, sport, dport uint16, proto uint8, ok bool) {
	var t []byte
	switch {
	case len(b) >= ipv6HeaderLen && b[0]>>4 == 6:
		plen := int(binary.BigEndian.Uint16(b[4:6]))
		if plen == 0 || plen > len(b)-ipv6HeaderLen {
			return
		}
		addrs, t, proto = b[8:40], b[ipv6HeaderLen:ipv6HeaderLen+plen], b[6]
	case len(b) >= ipv4HeaderLen && b[0] == 0x45:
		total := int(binary.BigEndian.Uint16(b[2:4]))
		if total < ipv4HeaderLen || total > len(b) || binary.BigEndian.Uint16(b[6:8])&ipv4FragMask != 0 {
			return
		}
		addrs, t, proto = b[12:20], b[ipv4HeaderLen:total], b[9]
	default:
		return
	}
	switch proto {
	case protoTCP:
		if len(t) < tcpHeaderLen {
			return
		}
		if off := int(t[12]>>4) * 4; off < tcpHeaderLen || off > len(t) {
			return
		}
	case protoUDP:
		if len(t) < udpHeaderLen {
			return
		}
		if ulen := int(binary.BigEndian.Uint16(t[4:6])); ulen < udpHeaderLen || ulen > len(t) ||
			binary.BigEndian.Uint16(t[2:4]) == vxlanPort {
			return
		}
	default:
		return
	}
	return addrs, binary.BigEndian.Uint16(t[0:2]), binary.BigEndian.Uint16(t[2:4]), proto, true
}

package flowaddr

import "encoding/binary"

// parseIP is parse of an IP packet into k, which it overwrites whole.
//
// It first parses the packets a VPN mostly carries in one straight loop:
// plain IPv4 and IPv6 headers (no options, extension headers or
// fragmentation), nested by IP-in-IP or by GRE without routing, ending in
// a valid TCP or UDP header. Anything else, including anything invalid, it
// leaves to parse, which gives the same key for what the loop accepts (the
// fuzz test checks Parse, which takes the loop, against ParseEthernet,
// which does not).
//
// The full parser costs about four calls per header and keeps its state
// in memory; on these packets that was most of the time of a parse. The
// loop is the caller's only call, and falls back with a goto rather than
// returning to a caller that would then call parse: a second call level
// cost the fast path a frame and the spills of its arguments.
func parseIP(k *Key, pkt []byte) error {
	// Pointers to the innermost header's addresses: converting to an array
	// pointer checks the length once, so the stores at the end need no
	// bounds checks.
	var addrs6 *[32]byte
	var addrs4 *[8]byte
	var sport, dport uint16
	var proto, version uint8
	b := pkt
	if len(b) == 0 {
		goto slow
	}
	version = b[0] >> 4
	for depth := 0; ; depth++ {
		if depth == MaxDepth {
			goto slow // ErrDepth
		}
		var t []byte // the IP payload
		if version == 6 {
			if len(b) < ipv6HeaderLen || b[0]>>4 != 6 {
				goto slow
			}
			plen := int(binary.BigEndian.Uint16(b[4:6]))
			if plen == 0 || plen > len(b)-ipv6HeaderLen {
				goto slow
			}
			addrs6, addrs4 = (*[32]byte)(b[8:40]), nil
			t, proto = b[ipv6HeaderLen:ipv6HeaderLen+plen], b[6]
		} else {
			if len(b) < ipv4HeaderLen || b[0] != 0x45 {
				goto slow
			}
			total := int(binary.BigEndian.Uint16(b[2:4]))
			if total < ipv4HeaderLen || total > len(b) || binary.BigEndian.Uint16(b[6:8])&ipv4FragMask != 0 {
				goto slow
			}
			addrs6, addrs4 = nil, (*[8]byte)(b[12:20])
			t, proto = b[ipv4HeaderLen:total], b[9]
		}
		switch proto {
		case protoTCP:
			if len(t) < tcpHeaderLen {
				goto slow
			}
			if off := int(t[12]>>4) * 4; off < tcpHeaderLen || off > len(t) {
				goto slow
			}
		case protoUDP:
			if len(t) < udpHeaderLen {
				goto slow
			}
			if ulen := int(binary.BigEndian.Uint16(t[4:6])); ulen < udpHeaderLen || ulen > len(t) ||
				binary.BigEndian.Uint16(t[2:4]) == vxlanPort {
				goto slow
			}
		case protoIPv4:
			version, b = 4, t
			continue
		case protoIPv6:
			version, b = 6, t
			continue
		case protoGRE:
			hlen := directGRE(t)
			if hlen == 0 {
				goto slow
			}
			switch binary.BigEndian.Uint16(t[2:4]) {
			case etherTypeIPv4:
				version = 4
			case etherTypeIPv6:
				version = 6
			default:
				goto slow
			}
			b = t[hlen:]
			continue
		default:
			goto slow
		}
		sport, dport = binary.BigEndian.Uint16(t[0:2]), binary.BigEndian.Uint16(t[2:4])
		break
	}
	// Every field is stored once, each whole address with one 16-byte
	// store where it can be: a later load of a field that spans several
	// stores still in flight cannot be forwarded from them and stalls.
	if addrs6 != nil {
		k.Src = [16]byte(addrs6[:16])
		k.Dst = [16]byte(addrs6[16:])
		k.Flags = 0
	} else {
		binary.BigEndian.PutUint64(k.Src[:8], 0)
		binary.BigEndian.PutUint64(k.Src[8:], v4Mapped|uint64(binary.BigEndian.Uint32(addrs4[:4])))
		binary.BigEndian.PutUint64(k.Dst[:8], 0)
		binary.BigEndian.PutUint64(k.Dst[8:], v4Mapped|uint64(binary.BigEndian.Uint32(addrs4[4:])))
		k.Flags = FlagIPv4
	}
	k.SrcPort, k.DstPort, k.Proto = sport, dport, proto
	return nil

slow:
	*k = Key{}
	return parse(k, pkt, layerIP)
}

// v4Mapped is the ::ffff:0:0/96 prefix's part of the low 8 bytes of an
// address, big-endian.
const v4Mapped = 0xffff << 32

// directGRE returns the length of a GRE header in t that carries a packet
// as gre would parse it, or 0 if gre would stop at it or fail.
func directGRE(t []byte) int {
	if len(t) < greHeaderLen || t[0]&greRouting != 0 || t[1]&greVersionMask != 0 {
		return 0
	}
	hlen := greHeaderLen
	if t[0]&greChecksum != 0 {
		hlen += 4
	}
	if t[0]&greKey != 0 {
		hlen += 4
	}
	if t[0]&greSeq != 0 {
		hlen += 4
	}
	if len(t) < hlen {
		return 0
	}
	return hlen
}

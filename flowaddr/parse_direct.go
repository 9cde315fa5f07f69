package flowaddr

import "encoding/binary"

// parseIP is parse of an IP packet into k, which it overwrites whole.
//
// It first parses the packets a VPN mostly carries in one straight loop:
// IPv4 headers without options and IPv6 headers with at most
// MaxExtHeaders Hop-by-Hop, Routing or Destination Options headers, not
// fragmented, nested by IP-in-IP or by GRE without routing, ending in a
// valid TCP or UDP header. Anything else, including anything invalid, it
// leaves to parse, which gives the same key for what the loop accepts
// (TestParseIPAgreesWithRun checks that, and the fuzz test checks Parse,
// which takes the loop, against ParseEthernet, which does not).
//
// The full parser costs about four calls per header and keeps its state
// in memory; on these packets that was most of the time of a parse. The
// loop is the caller's only call, and falls back with a goto rather than
// returning to a caller that would then call parse: a second call level
// cost the fast path a frame and the spills of its arguments.
func parseIP(k *Key, pkt []byte) error {
	var (
		b     = pkt
		hdr   []byte // the innermost IP header
		t     []byte // its payload
		proto uint8
		v6    bool
	)
	// A plain IPv6 or IPv4 TCP packet, the commonest, skips the loop's
	// state: one length check covers both headers, one unsigned comparison
	// both bounds of the IP length field. The loop would give the same key.
	if len(b) >= ipv6HeaderLen+tcpHeaderLen && b[0]>>4 == 6 && b[6] == protoTCP {
		h := (*[ipv6HeaderLen + tcpHeaderLen]byte)(b)
		plen := int(binary.BigEndian.Uint16(h[4:6]))
		off := int(h[ipv6HeaderLen+12]>>4) * 4
		if uint(plen-tcpHeaderLen) <= uint(len(b)-ipv6HeaderLen-tcpHeaderLen) && off >= tcpHeaderLen && off <= plen {
			k.Src = [16]byte(h[8:24])
			k.Dst = [16]byte(h[24:40])
			k.Flags = 0
			k.SrcPort, k.DstPort, k.Proto = binary.BigEndian.Uint16(h[40:42]), binary.BigEndian.Uint16(h[42:44]), protoTCP
			return nil
		}
	}
	if len(b) >= ipv4HeaderLen+tcpHeaderLen && b[0] == 0x45 && b[9] == protoTCP {
		h := (*[ipv4HeaderLen + tcpHeaderLen]byte)(b)
		total := int(binary.BigEndian.Uint16(h[2:4]))
		off := int(h[ipv4HeaderLen+12]>>4) * 4
		if uint(total-ipv4HeaderLen-tcpHeaderLen) <= uint(len(b)-ipv4HeaderLen-tcpHeaderLen) &&
			binary.BigEndian.Uint16(h[6:8])&ipv4FragMask == 0 && off >= tcpHeaderLen && off <= total-ipv4HeaderLen {
			binary.LittleEndian.PutUint64(k.Src[:8], 0)
			binary.LittleEndian.PutUint64(k.Src[8:], uint64(binary.LittleEndian.Uint32(h[12:16]))<<32|v4MappedLE)
			binary.LittleEndian.PutUint64(k.Dst[:8], 0)
			binary.LittleEndian.PutUint64(k.Dst[8:], uint64(binary.LittleEndian.Uint32(h[16:20]))<<32|v4MappedLE)
			k.Flags = FlagIPv4
			k.SrcPort, k.DstPort, k.Proto = binary.BigEndian.Uint16(h[20:22]), binary.BigEndian.Uint16(h[22:24]), protoTCP
			return nil
		}
	}
	if len(b) == 0 {
		goto slow
	}
	v6 = b[0]>>4 == 6
	for depth := 1; ; depth++ {
		if v6 {
			if len(b) < ipv6HeaderLen || b[0]>>4 != 6 {
				goto slow
			}
			plen := int(binary.BigEndian.Uint16(b[4:6]))
			if plen == 0 || plen > len(b)-ipv6HeaderLen {
				goto slow
			}
			t, proto = b[ipv6HeaderLen:ipv6HeaderLen+plen], b[6]
		} else {
			if len(b) < ipv4HeaderLen || b[0] != 0x45 {
				goto slow
			}
			total := int(binary.BigEndian.Uint16(b[2:4]))
			if total < ipv4HeaderLen || total > len(b) || binary.BigEndian.Uint16(b[6:8])&ipv4FragMask != 0 {
				goto slow
			}
			t, proto = b[ipv4HeaderLen:total], b[9]
		}
		hdr = b
		exts := 0
		// Extension headers loop back here: their check stays off the
		// path of a packet without them.
	upper:
		if proto == protoTCP || proto == protoUDP {
			break
		}
		switch proto {
		case protoHopByHop, protoRouting, protoDestOpts:
			// IPv6 extension headers that only need skipping.
			if !v6 || exts == MaxExtHeaders || len(t) < 2 {
				goto slow
			}
			hlen := (int(t[1]) + 1) * 8
			if hlen > len(t) {
				goto slow
			}
			proto, t = t[0], t[hlen:]
			exts++
			goto upper
		}
		if depth == MaxDepth {
			goto slow // ErrDepth
		}
		switch proto {
		case protoIPv4:
			v6, b = false, t
		case protoIPv6:
			v6, b = true, t
		case protoGRE:
			hlen := directGRE(t)
			if hlen == 0 {
				goto slow
			}
			switch binary.BigEndian.Uint16(t[2:4]) {
			case etherTypeIPv4:
				v6 = false
			case etherTypeIPv6:
				v6 = true
			default:
				goto slow
			}
			b = t[hlen:]
		default:
			goto slow
		}
	}
	if proto == protoTCP {
		if len(t) < tcpHeaderLen {
			goto slow
		}
		if off := int(t[12]>>4) * 4; off < tcpHeaderLen || off > len(t) {
			goto slow
		}
	} else {
		if len(t) < udpHeaderLen {
			goto slow
		}
		if ulen := int(binary.BigEndian.Uint16(t[4:6])); ulen < udpHeaderLen || ulen > len(t) ||
			binary.BigEndian.Uint16(t[2:4]) == vxlanPort {
			goto slow
		}
	}
	// Every field is stored once, with as few stores as can be: a later
	// load of a field that spans several stores still in flight cannot be
	// forwarded from them and stalls. Each address of IPv6 takes one
	// 16-byte store, of IPv4 two 8-byte ones (the little-endian forms
	// keep the compiler from splitting them into byte stores).
	// The array pointers check hdr's length once for all the loads.
	if v6 {
		h := (*[ipv6HeaderLen]byte)(hdr)
		k.Src = [16]byte(h[8:24])
		k.Dst = [16]byte(h[24:40])
		k.Flags = 0
	} else {
		h := (*[ipv4HeaderLen]byte)(hdr)
		binary.LittleEndian.PutUint64(k.Src[:8], 0)
		binary.LittleEndian.PutUint64(k.Src[8:], uint64(binary.LittleEndian.Uint32(h[12:16]))<<32|v4MappedLE)
		binary.LittleEndian.PutUint64(k.Dst[:8], 0)
		binary.LittleEndian.PutUint64(k.Dst[8:], uint64(binary.LittleEndian.Uint32(h[16:20]))<<32|v4MappedLE)
		k.Flags = FlagIPv4
	}
	k.SrcPort, k.DstPort, k.Proto = binary.BigEndian.Uint16(t[0:2]), binary.BigEndian.Uint16(t[2:4]), proto
	return nil

slow:
	*k = Key{}
	return parse(k, pkt, layerIP)
}

// v4MappedLE is the ::ffff:0:0/96 prefix's part of the low 8 bytes of an
// address, read little-endian: bytes 10 and 11 of the address are 0xff.
const v4MappedLE = 0xffff << 16

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

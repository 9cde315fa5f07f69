package conn

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"net/netip"

	"golang.org/x/net/bpf"
)

// The raw receiver's packet handling, apart from the socket: the classic
// BPF filter the kernel runs, and the checks on the IPv6 and UDP headers of
// what passed it. Nothing here needs Linux, so it is tested and fuzzed
// everywhere.

const (
	ipv6HeaderLen = 40 // RFC 8200 section 3
	udpHeaderLen  = 8  // RFC 768
	// rawHeadLen is what the raw receiver reads in front of the payload:
	// the filter admits only IPv6 headers followed directly by UDP.
	rawHeadLen = ipv6HeaderLen + udpHeaderLen
	// rawSnapLen is how much of a packet the filter keeps: all of it.
	rawSnapLen = 1 << 18

	protoUDP = 17
)

// rawFilter returns the classic BPF program for an AF_PACKET SOCK_DGRAM
// socket (the program sees the packet from its network header on) that
// accepts only IPv6 packets whose next header is UDP, whose destination is
// inside prefix and whose UDP destination port is port. Packets with
// extension headers before UDP are refused: a spreading peer never sends
// them.
func rawFilter(prefix netip.Prefix, port uint16) ([]bpf.Instruction, error) {
	if !prefix.IsValid() || !prefix.Addr().Is6() || prefix.Addr().Is4In6() {
		return nil, fmt.Errorf("conn: raw receiver: prefix %v is not an IPv6 prefix", prefix)
	}
	if port == 0 {
		return nil, errors.New("conn: raw receiver: port 0: the receiver needs the port peers send to")
	}
	prefix = prefix.Masked()
	// Every JumpIf below skips to the drop at the end when the test fails;
	// the skips are filled in once the program's length is known.
	prog := []bpf.Instruction{
		bpf.LoadAbsolute{Off: 0, Size: 1}, // version and traffic class
		bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0xf0},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0x60},
		bpf.LoadAbsolute{Off: 6, Size: 1}, // next header
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: protoUDP},
	}
	addr := prefix.Addr().As16()
	for off := 0; off < prefix.Bits(); off += 32 {
		word := binary.BigEndian.Uint32(addr[off/8:])
		prog = append(prog, bpf.LoadAbsolute{Off: uint32(24 + off/8), Size: 4})
		if rest := prefix.Bits() - off; rest < 32 {
			prog = append(prog, bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: ^uint32(0) << (32 - rest)})
		}
		prog = append(prog, bpf.JumpIf{Cond: bpf.JumpEqual, Val: word})
	}
	prog = append(prog,
		bpf.LoadAbsolute{Off: ipv6HeaderLen + 2, Size: 2}, // UDP destination port
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(port)},
		bpf.RetConstant{Val: rawSnapLen},
		bpf.RetConstant{Val: 0},
	)
	drop := len(prog) - 1
	for i, ins := range prog {
		if j, ok := ins.(bpf.JumpIf); ok {
			j.SkipFalse = uint8(drop - i - 1)
			prog[i] = j
		}
	}
	return prog, nil
}

// rawVerdict is what the raw receiver does with a packet that passed the
// filter.
type rawVerdict uint8

const (
	rawAccept      rawVerdict = iota
	rawTruncated              // shorter than its headers say, or lengths disagree
	rawBadChecksum            // UDP checksum wrong, or zero (RFC 8200 section 8.1)
	rawForeign                // not IPv6+UDP to prefix and port: the filter should have refused it
)

// checkRawPacket checks the IPv6 and UDP headers in head against the
// packet's captured length (headers included) and, unless the kernel vouches
// for the checksum (skipChecksum), verifies the UDP checksum over head and
// payload. On rawAccept, n is the length of the UDP payload, which starts
// at payload[0]. It never panics and does not allocate.
func checkRawPacket(head *[rawHeadLen]byte, payload []byte, captured int, prefix netip.Prefix, port uint16, skipChecksum bool) (n int, v rawVerdict) {
	if captured < rawHeadLen {
		return 0, rawTruncated
	}
	if head[0]>>4 != 6 || head[6] != protoUDP {
		return 0, rawForeign
	}
	if !prefix.Contains(netip.AddrFrom16([16]byte(head[24:40]))) || binary.BigEndian.Uint16(head[42:]) != port {
		return 0, rawForeign
	}
	payloadLen := int(binary.BigEndian.Uint16(head[4:]))
	udpLen := int(binary.BigEndian.Uint16(head[44:]))
	// A zero payload length means a jumbogram (RFC 2675), which needs a
	// hop-by-hop header the filter refuses; treat it as malformed.
	if udpLen < udpHeaderLen || udpLen != payloadLen || ipv6HeaderLen+udpLen > captured {
		return 0, rawTruncated
	}
	n = udpLen - udpHeaderLen
	if n > len(payload) {
		return 0, rawTruncated
	}
	if !skipChecksum && !udpChecksumOK(head, payload[:n]) {
		return 0, rawBadChecksum
	}
	return n, rawAccept
}

// udpChecksumOK verifies the UDP checksum of an IPv6 packet: the one's
// complement sum over the pseudo-header (RFC 8200 section 8.1), the UDP
// header and the payload must be all ones. A zero checksum field is
// invalid over IPv6.
func udpChecksumOK(head *[rawHeadLen]byte, payload []byte) bool {
	if head[46] == 0 && head[47] == 0 {
		return false
	}
	// Pseudo-header: source and destination (head[8:40]), upper-layer
	// length (equal to the UDP length field) and next header.
	sum := onesSum(head[8:40], 0)
	sum, carry := bits.Add64(sum, uint64(binary.BigEndian.Uint16(head[44:]))+protoUDP, 0)
	sum += carry
	sum = onesSum(head[40:48], sum)
	sum = onesSum(payload, sum)
	return fold(sum) == 0xffff
}

// onesSum adds b, as big-endian 16-bit words (an odd last byte padded with
// zero), to the one's complement sum acc, eight bytes per step.
func onesSum(b []byte, acc uint64) uint64 {
	var carry uint64
	for len(b) >= 8 {
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b), 0)
		acc += carry
		b = b[8:]
	}
	if len(b) >= 4 {
		acc, carry = bits.Add64(acc, uint64(binary.BigEndian.Uint32(b)), 0)
		acc += carry
		b = b[4:]
	}
	if len(b) >= 2 {
		acc, carry = bits.Add64(acc, uint64(binary.BigEndian.Uint16(b)), 0)
		acc += carry
		b = b[2:]
	}
	if len(b) == 1 {
		acc, carry = bits.Add64(acc, uint64(b[0])<<8, 0)
		acc += carry
	}
	return acc
}

// fold reduces a 64-bit one's complement sum to 16 bits.
func fold(s uint64) uint16 {
	s = (s >> 32) + (s & 0xffffffff)
	s = (s >> 32) + (s & 0xffffffff)
	s = (s >> 16) + (s & 0xffff)
	s = (s >> 16) + (s & 0xffff)
	return uint16(s)
}

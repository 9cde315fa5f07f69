package conn

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"time"

	"golang.org/x/net/bpf"

	"github.com/flowspread/flowspread/flowaddr"
)

// The raw receiver's packet handling, apart from the socket: the classic
// BPF filter the kernel runs, and the checks on the IPv6 and UDP headers of
// what passed it. Nothing here needs Linux, so it is tested and fuzzed
// everywhere.

const (
	ipv6HeaderLen = 40 // RFC 8200 section 3
	udpHeaderLen  = 8  // RFC 768
	// rawHeadLen is what the raw receiver reads in front of the payload:
	// the filter admits only IPv6 headers followed directly by UDP, or
	// by a Fragment header, which is as long as a UDP header.
	rawHeadLen = ipv6HeaderLen + udpHeaderLen
	// rawSnapLen is how much of a packet the filter keeps: all of it.
	rawSnapLen = 1 << 18

	protoUDP = 17
)

// rawFilter returns the classic BPF program for an AF_PACKET SOCK_DGRAM
// socket (the program sees the packet from its network header on) that
// accepts only IPv6 packets whose destination is inside prefix and whose
// next header is either UDP with destination port port, or a Fragment
// header: only the first fragment of a datagram carries its port, so
// every fragment to the prefix is let through and the port checked after
// reassembly. Other extension headers are refused: the kernel of a peer
// that spreads puts none in front of UDP.
func rawFilter(prefix netip.Prefix, port uint16) ([]bpf.Instruction, error) {
	if !prefix.IsValid() || !prefix.Addr().Is6() || prefix.Addr().Is4In6() {
		return nil, fmt.Errorf("conn: raw receiver: prefix %v is not an IPv6 prefix", prefix)
	}
	if port == 0 {
		return nil, errors.New("conn: raw receiver: port 0: the receiver needs the port peers send to")
	}
	prefix = prefix.Masked()
	// Every JumpIf below without a SkipTrue skips to the drop at the end
	// when the test fails; the skips are filled in once the program's
	// length is known.
	prog := []bpf.Instruction{
		bpf.LoadAbsolute{Off: 0, Size: 1}, // version and traffic class
		bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0xf0},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0x60},
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
		bpf.LoadAbsolute{Off: 6, Size: 1}, // next header
		// A fragment: accept, skipping the three UDP instructions.
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: protoFragment, SkipTrue: 3},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: protoUDP},
		bpf.LoadAbsolute{Off: ipv6HeaderLen + 2, Size: 2}, // UDP destination port
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(port)},
		bpf.RetConstant{Val: rawSnapLen},
		bpf.RetConstant{Val: 0},
	)
	drop := len(prog) - 1
	for i, ins := range prog {
		if j, ok := ins.(bpf.JumpIf); ok && j.SkipTrue == 0 {
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
	rawBadSource              // a source or destination the kernel would refuse (badSource)
	rawFragment               // a fragment the reassembler kept or dropped (and counted)
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

// rawDatagram is a datagram the raw receiver read, whole or reassembled.
type rawDatagram struct {
	// payload is the UDP payload: buf[:len(payload)] when moved is
	// false; otherwise it lies elsewhere (further into buf, or in the
	// reassembler's buffer until its next call) and must be copied.
	payload []byte
	moved   bool
	sport   uint16
	ecn     flowaddr.ECN
}

// readRawPacket makes sense of one packet the raw receiver read: its
// headers in head, the rest in buf, captured bytes in all. It refuses the
// sources the kernel would (badSourceFromWire, or badSource when
// loopback says the interface is a loopback device), checks a whole datagram with
// checkRawPacket, and hands a fragment to reasm, returning the datagram
// it completes. now is a monotonic clock reading for reasm. It never
// panics, and does not allocate for a packet that is not a fragment.
func readRawPacket(head *[rawHeadLen]byte, buf []byte, captured int, prefix netip.Prefix, port uint16, skipChecksum, loopback bool, reasm *reassembler, now time.Duration) (rawDatagram, rawVerdict) {
	if captured < rawHeadLen {
		return rawDatagram{}, rawTruncated
	}
	src, dst := netip.AddrFrom16([16]byte(head[8:24])), netip.AddrFrom16([16]byte(head[24:40]))
	if head[0]>>4 != 6 || !prefix.Contains(dst) {
		return rawDatagram{}, rawForeign
	}
	if badSourceFromWire(src, dst) && !(loopback && !badSource(src, dst)) {
		return rawDatagram{}, rawBadSource
	}
	if head[6] != protoFragment {
		n, v := checkRawPacket(head, buf, captured, prefix, port, skipChecksum)
		return rawDatagram{payload: buf[:n], sport: binary.BigEndian.Uint16(head[40:]), ecn: flowaddr.ECN(head[1]>>4) & 3}, v
	}
	whole, ecn, fv := reasm.add(head, buf, captured, now)
	switch fv {
	case fragHeld, fragDropped:
		return rawDatagram{}, rawFragment
	case fragForeign:
		return rawDatagram{}, rawForeign
	case fragTruncated:
		return rawDatagram{}, rawTruncated
	}
	atomic := binary.BigEndian.Uint16(head[42:])&^6 == 0 // offset 0, no more fragments
	if len(whole) < udpHeaderLen || int(binary.BigEndian.Uint16(whole[4:])) != len(whole) {
		return rawDatagram{}, rawTruncated
	}
	if binary.BigEndian.Uint16(whole[2:]) != port {
		return rawDatagram{}, rawForeign
	}
	// The device's checksum status is a fragment's, not the datagram's:
	// only an atomic fragment (RFC 6946), a datagram in one piece, may
	// skip the check.
	if !(atomic && skipChecksum) && !udpChecksumOK6(head[8:40], whole[:udpHeaderLen], whole[udpHeaderLen:]) {
		return rawDatagram{}, rawBadChecksum
	}
	return rawDatagram{payload: whole[udpHeaderLen:], moved: true, sport: binary.BigEndian.Uint16(whole), ecn: ecn}, rawAccept
}

// udpChecksumOK verifies the UDP checksum of an IPv6 packet: the one's
// complement sum over the pseudo-header (RFC 8200 section 8.1), the UDP
// header and the payload must be all ones. A zero checksum field is
// invalid over IPv6.
func udpChecksumOK(head *[rawHeadLen]byte, payload []byte) bool {
	return udpChecksumOK6(head[8:40], head[40:48], payload)
}

// udpChecksumOK6 is udpChecksumOK for a UDP header udp and payload apart
// from their IPv6 source and destination addrs (32 bytes).
func udpChecksumOK6(addrs, udp, payload []byte) bool {
	if udp[6] == 0 && udp[7] == 0 {
		return false
	}
	// Pseudo-header: source and destination, upper-layer length (equal
	// to the UDP length field) and next header.
	sum := onesSum(addrs[:32], 0)
	sum, carry := bits.Add64(sum, uint64(binary.BigEndian.Uint16(udp[4:]))+protoUDP, 0)
	sum += carry
	sum = onesSum(udp[:8], sum)
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

package flowaddr

import (
	"encoding/binary"
	"fmt"
)

// ECN is an Explicit Congestion Notification codepoint (RFC 3168 section
// 5): the two low bits of the IPv4 TOS byte or of the IPv6 Traffic Class.
type ECN uint8

// The ECN codepoints of RFC 3168 section 5.
const (
	NotECT ECN = 0b00 // Not ECN-Capable Transport
	ECT1   ECN = 0b01 // ECN-Capable Transport, ECT(1)
	ECT0   ECN = 0b10 // ECN-Capable Transport, ECT(0)
	CE     ECN = 0b11 // Congestion Experienced
)

// String returns the codepoint's name as RFC 3168 writes it: "Not-ECT",
// "ECT(1)", "ECT(0)" or "CE".
func (e ECN) String() string {
	switch e {
	case NotECT:
		return "Not-ECT"
	case ECT1:
		return "ECT(1)"
	case ECT0:
		return "ECT(0)"
	case CE:
		return "CE"
	}
	return fmt.Sprintf("ECN(%d)", uint8(e))
}

// PacketECN returns the ECN field of the outermost header of pkt, a raw
// IPv4 or IPv6 packet. ok is false if pkt does not start with a whole IPv4
// header (20 bytes or more, as its IHL says) or IPv6 header (40 bytes): the
// packets that [Decapsulate] accepts. It does not allocate.
func PacketECN(pkt []byte) (e ECN, ok bool) {
	version, err := checkIPHeader(pkt)
	if err != nil {
		return NotECT, false
	}
	return headerECN(pkt, version), true
}

// OuterECN returns the ECN field that an encapsulator in RFC 6040's normal
// mode puts in the outer header of a tunnelled packet whose inner header
// carries inner: a copy of it, CE included (RFC 6040 section 4.1), so that
// congestion marked before the tunnel stays visible to the queues on the
// tunnel's path, and ECN-capable inner packets stay ECN-capable there.
// Bits of inner above the two ECN bits are ignored.
func OuterECN(inner ECN) ECN { return inner & CE }

// Decapsulate combines the ECN field of an arriving outer header, outer,
// into pkt, the decapsulated inner IPv4 or IPv6 packet, in place, as RFC
// 6040 section 4.2 requires of a tunnel egress (Figure 4, "New IP in IP
// Decapsulation Behaviour"; rows: inner, columns: outer):
//
//	          | Not-ECT | ECT(0)  | ECT(1)  | CE
//	----------+---------+---------+---------+--------
//	Not-ECT   | Not-ECT | Not-ECT | Not-ECT | drop
//	ECT(0)    | ECT(0)  | ECT(0)  | ECT(1)  | CE
//	ECT(1)    | ECT(1)  | ECT(1)  | ECT(1)  | CE
//	CE        | CE      | CE      | CE      | CE
//
// So a CE mark that a queue on the tunnel's path set reaches the inner
// flow's end points; a packet whose inner transport cannot take the mark
// must be dropped instead (drop is true, pkt is untouched, err is nil),
// since the mark means the queue wanted that packet gone. RFC 6040 calls
// some combinations currently unused and asks an egress to log them:
// outer ECT(0), ECT(1) or CE on inner Not-ECT, and outer ECT(1) on inner
// CE. Decapsulate leaves logging to the caller, which has both values
// ([PacketECN] reads the inner one).
//
// Only the two ECN bits change. For IPv4 the header checksum is updated
// incrementally (RFC 1624 equation 3), so a packet with a correct checksum
// keeps a correct one; IPv6 has no header checksum. Bits of outer above
// the two ECN bits are ignored.
//
// err is [ErrEmpty], [ErrVersion], [ErrTruncated] (pkt shorter than its IP
// header) or [ErrHeaderLength] (an IPv4 IHL below 5); pkt is then
// untouched. Decapsulate does not allocate and does not retain pkt.
func Decapsulate(pkt []byte, outer ECN) (drop bool, err error) {
	version, err := checkIPHeader(pkt)
	if err != nil {
		return false, err
	}
	inner := headerECN(pkt, version)
	e, drop := decapsulateECN(inner, outer&CE)
	if drop || e == inner {
		return drop, nil
	}
	if version == 6 {
		pkt[1] = pkt[1]&^0x30 | byte(e)<<4
		return false, nil
	}
	oldWord := binary.BigEndian.Uint16(pkt[0:2])
	pkt[1] = pkt[1]&^0x03 | byte(e)
	newWord := binary.BigEndian.Uint16(pkt[0:2])
	sum := binary.BigEndian.Uint16(pkt[10:12])
	binary.BigEndian.PutUint16(pkt[10:12], updateChecksum(sum, oldWord, newWord))
	return false, nil
}

// decapsulateECN is RFC 6040 Figure 4: the inner ECN after decapsulation.
func decapsulateECN(inner, outer ECN) (e ECN, drop bool) {
	switch {
	case outer == CE && inner == NotECT:
		return inner, true
	case outer == CE:
		return CE, false
	case outer == ECT1 && inner == ECT0:
		return ECT1, false
	}
	return inner, false
}

// updateChecksum returns the Internet checksum sum after a 16-bit word of
// the data it covers changed from oldWord to newWord: RFC 1624 equation 3,
// HC' = ~(~HC + ~m + m') in ones' complement arithmetic. Unlike equation 2
// it never produces 0xffff (negative zero) from a valid header, so the
// result equals a full recomputation.
func updateChecksum(sum, oldWord, newWord uint16) uint16 {
	s := uint32(^sum) + uint32(^oldWord) + uint32(newWord)
	s = s&0xffff + s>>16
	s = s&0xffff + s>>16
	return ^uint16(s)
}

// checkIPHeader returns the IP version of pkt if pkt holds a whole IPv4
// or IPv6 header.
func checkIPHeader(pkt []byte) (version int, err error) {
	if len(pkt) == 0 {
		return 0, ErrEmpty
	}
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 20 {
			return 0, ErrTruncated
		}
		ihl := int(pkt[0]&0x0f) * 4
		if ihl < 20 {
			return 0, ErrHeaderLength
		}
		if len(pkt) < ihl {
			return 0, ErrTruncated
		}
		return 4, nil
	case 6:
		if len(pkt) < 40 {
			return 0, ErrTruncated
		}
		return 6, nil
	}
	return 0, ErrVersion
}

// headerECN reads the ECN field of a header that checkIPHeader accepted.
func headerECN(pkt []byte, version int) ECN {
	if version == 4 {
		return ECN(pkt[1] & 0x03)
	}
	return ECN(pkt[1]>>4) & CE
}

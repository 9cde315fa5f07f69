package flowaddr

import (
	"encoding/binary"
	"net/netip"
)

// Key identifies an inner flow: the innermost transport 5-tuple of a packet.
//
// Key is comparable, pointer-free and packed, so it is cheap to copy and to
// use as a map key. IPv4 addresses are stored v4-mapped (::ffff:a.b.c.d) and
// [FlagIPv4] is set. The zero Key is valid and means "no flow known".
type Key struct {
	Src, Dst [16]byte
	// SrcPort and DstPort are the transport ports. For ICMP and ICMPv6 echo
	// both hold the echo identifier; for ESP they hold the SPI's high and
	// low 16 bits. They are zero for fragments ([FlagFragment]) and for
	// protocols without ports.
	SrcPort, DstPort uint16
	// Proto is the transport protocol number (6 TCP, 17 UDP, 58 ICMPv6, ...).
	Proto uint8
	Flags Flags
}

// Flags qualify a [Key].
type Flags uint8

const (
	// FlagIPv4 says the addresses are IPv4, stored v4-mapped.
	FlagIPv4 Flags = 1 << iota
	// FlagFragment says the packet was a fragment of a larger datagram, so
	// the key carries no ports: every fragment of one datagram gets the
	// same key, whether it holds the transport header or not.
	FlagFragment
)

// KeyLen is the length of a key's binary form, see [Key.Bytes].
const KeyLen = 38

// Bytes returns the key's fixed binary form: Src, Dst, SrcPort and DstPort
// big-endian, Proto, Flags. It is the same on every architecture, so two
// tunnel ends that hash it with one secret agree on the result.
// It does not allocate.
func (k Key) Bytes() (b [KeyLen]byte) {
	// Few, wide stores: the hash reads these bytes right away, in 8- and
	// 16-byte loads, and a load that spans several narrow stores still in
	// flight stalls the CPU (store forwarding fails).
	*(*[16]byte)(b[0:16]) = k.Src
	*(*[16]byte)(b[16:32]) = k.Dst
	binary.BigEndian.PutUint32(b[32:], uint32(k.SrcPort)<<16|uint32(k.DstPort))
	binary.BigEndian.PutUint16(b[36:], uint16(k.Proto)<<8|uint16(k.Flags))
	return b
}

// Reverse returns the key of the other direction of the flow.
func (k Key) Reverse() Key {
	k.Src, k.Dst = k.Dst, k.Src
	k.SrcPort, k.DstPort = k.DstPort, k.SrcPort
	return k
}

// Canonical returns one key for both directions of a flow: the endpoint
// (address, then port) that sorts lower becomes Src. Both tunnel ends
// hashing canonical keys pick the same outer address pair for a request and
// its reply, which lets a stateful firewall match the reply.
func (k Key) Canonical() Key {
	if k.less() {
		return k
	}
	return k.Reverse()
}

// less reports whether the source endpoint sorts at or before the
// destination endpoint.
func (k *Key) less() bool {
	for i := range k.Src {
		if k.Src[i] != k.Dst[i] {
			return k.Src[i] < k.Dst[i]
		}
	}
	return k.SrcPort <= k.DstPort
}

// SrcAddr returns the source address, unmapped for IPv4.
func (k *Key) SrcAddr() netip.Addr { return k.addr(k.Src) }

// DstAddr returns the destination address, unmapped for IPv4.
func (k *Key) DstAddr() netip.Addr { return k.addr(k.Dst) }

func (k *Key) addr(a [16]byte) netip.Addr {
	ip := netip.AddrFrom16(a)
	if k.Flags&FlagIPv4 != 0 {
		return ip.Unmap()
	}
	return ip
}

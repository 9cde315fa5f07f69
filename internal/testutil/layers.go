package testutil

import (
	"encoding/binary"
	"errors"
	"net"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// The layers below fill gaps in gopacket's serializers: gopacket decodes
// these headers but cannot write them (or, for Ethernet, pads short frames
// to 60 bytes, which would hide where a frame's payload ends). Each is a
// [gopacket.SerializableLayer]; [Build] fills their next-protocol fields.

// IPv6Ext is an IPv6 Hop-by-Hop Options (0), Routing (43) or Destination
// Options (60) header (RFC 8200 section 4). Data is everything after the
// first two bytes; 2+len(Data) must be a multiple of 8.
type IPv6Ext struct {
	Kind       layers.IPProtocol
	NextHeader layers.IPProtocol
	Data       []byte
}

// LayerType returns gopacket's layer type for the header's kind.
func (e *IPv6Ext) LayerType() gopacket.LayerType {
	switch e.Kind {
	case layers.IPProtocolIPv6HopByHop:
		return layers.LayerTypeIPv6HopByHop
	case layers.IPProtocolIPv6Routing:
		return layers.LayerTypeIPv6Routing
	}
	return layers.LayerTypeIPv6Destination
}

// SerializeTo writes the header.
func (e *IPv6Ext) SerializeTo(b gopacket.SerializeBuffer, _ gopacket.SerializeOptions) error {
	n := 2 + len(e.Data)
	if n%8 != 0 || n > 2048 {
		return errors.New("testutil: IPv6 extension header length must be a multiple of 8, at most 2048")
	}
	h, err := b.PrependBytes(n)
	if err != nil {
		return err
	}
	h[0] = byte(e.NextHeader)
	h[1] = byte(n/8 - 1)
	copy(h[2:], e.Data)
	return nil
}

// IPv6Fragment is an IPv6 Fragment header (RFC 8200 section 4.5). Offset
// is in 8-byte units. Offset 0 without More is an atomic fragment.
type IPv6Fragment struct {
	NextHeader layers.IPProtocol
	Offset     uint16
	More       bool
	ID         uint32
}

// LayerType returns [layers.LayerTypeIPv6Fragment].
func (f *IPv6Fragment) LayerType() gopacket.LayerType { return layers.LayerTypeIPv6Fragment }

// SerializeTo writes the header.
func (f *IPv6Fragment) SerializeTo(b gopacket.SerializeBuffer, _ gopacket.SerializeOptions) error {
	if f.Offset >= 1<<13 {
		return errors.New("testutil: fragment offset exceeds 13 bits")
	}
	h, err := b.PrependBytes(8)
	if err != nil {
		return err
	}
	h[0] = byte(f.NextHeader)
	h[1] = 0
	v := f.Offset << 3
	if f.More {
		v |= 1
	}
	binary.BigEndian.PutUint16(h[2:], v)
	binary.BigEndian.PutUint32(h[4:], f.ID)
	return nil
}

// AH is an IP Authentication Header (RFC 4302). 12+len(ICV) must be a
// multiple of 4 (of 8 after IPv6).
type AH struct {
	NextHeader layers.IPProtocol
	SPI, Seq   uint32
	ICV        []byte
}

// LayerType returns [layers.LayerTypeIPSecAH].
func (a *AH) LayerType() gopacket.LayerType { return layers.LayerTypeIPSecAH }

// SerializeTo writes the header.
func (a *AH) SerializeTo(b gopacket.SerializeBuffer, _ gopacket.SerializeOptions) error {
	n := 12 + len(a.ICV)
	if n%4 != 0 || n > 1028 {
		return errors.New("testutil: AH length must be a multiple of 4, at most 1028")
	}
	h, err := b.PrependBytes(n)
	if err != nil {
		return err
	}
	h[0] = byte(a.NextHeader)
	h[1] = byte(n/4 - 2)
	h[2], h[3] = 0, 0
	binary.BigEndian.PutUint32(h[4:], a.SPI)
	binary.BigEndian.PutUint32(h[8:], a.Seq)
	copy(h[12:], a.ICV)
	return nil
}

// ESP is the header of an IPsec Encapsulating Security Payload packet
// (RFC 4303): SPI and sequence number. The ciphertext follows as payload.
type ESP struct {
	SPI, Seq uint32
}

// LayerType returns [layers.LayerTypeIPSecESP].
func (e *ESP) LayerType() gopacket.LayerType { return layers.LayerTypeIPSecESP }

// SerializeTo writes the header.
func (e *ESP) SerializeTo(b gopacket.SerializeBuffer, _ gopacket.SerializeOptions) error {
	h, err := b.PrependBytes(8)
	if err != nil {
		return err
	}
	binary.BigEndian.PutUint32(h, e.SPI)
	binary.BigEndian.PutUint32(h[4:], e.Seq)
	return nil
}

// UDPLite is a UDP-Lite header (RFC 3828). Coverage 0 covers the whole
// datagram. The checksum is left 0: the builders serve parsers, not stacks.
type UDPLite struct {
	SrcPort, DstPort uint16
	Coverage         uint16
}

// LayerType returns [layers.LayerTypeUDPLite].
func (u *UDPLite) LayerType() gopacket.LayerType { return layers.LayerTypeUDPLite }

// SerializeTo writes the header.
func (u *UDPLite) SerializeTo(b gopacket.SerializeBuffer, _ gopacket.SerializeOptions) error {
	h, err := b.PrependBytes(8)
	if err != nil {
		return err
	}
	binary.BigEndian.PutUint16(h, u.SrcPort)
	binary.BigEndian.PutUint16(h[2:], u.DstPort)
	binary.BigEndian.PutUint16(h[4:], u.Coverage)
	h[6], h[7] = 0, 0
	return nil
}

// DCCP is a DCCP generic header (RFC 4340 section 5.1), 16 bytes with
// Extended (48-bit) sequence numbers, else 12, followed by Extra (the
// type-specific fields and options, a multiple of 4 bytes). The data
// offset covers both. The checksum is left 0.
type DCCP struct {
	SrcPort, DstPort uint16
	Type             uint8
	Extended         bool
	Seq              uint64
	Extra            []byte
}

// LayerType returns [gopacket.LayerTypePayload]: gopacket has no DCCP layer.
func (d *DCCP) LayerType() gopacket.LayerType { return gopacket.LayerTypePayload }

// SerializeTo writes the header.
func (d *DCCP) SerializeTo(b gopacket.SerializeBuffer, _ gopacket.SerializeOptions) error {
	n := 12
	if d.Extended {
		n = 16
	}
	if len(d.Extra)%4 != 0 || n+len(d.Extra) > 1020 {
		return errors.New("testutil: DCCP extra length must be a multiple of 4")
	}
	h, err := b.PrependBytes(n + len(d.Extra))
	if err != nil {
		return err
	}
	clear(h[:n])
	binary.BigEndian.PutUint16(h, d.SrcPort)
	binary.BigEndian.PutUint16(h[2:], d.DstPort)
	h[4] = byte((n + len(d.Extra)) / 4)
	h[8] = (d.Type & 0x0f) << 1
	if d.Extended {
		h[8] |= 1
		binary.BigEndian.PutUint16(h[10:], uint16(d.Seq>>32))
		binary.BigEndian.PutUint32(h[12:], uint32(d.Seq))
	} else {
		h[9] = byte(d.Seq >> 16)
		binary.BigEndian.PutUint16(h[10:], uint16(d.Seq))
	}
	copy(h[n:], d.Extra)
	return nil
}

// ICMPv6 is an ICMPv6 message header (RFC 4443): type, code, checksum and
// the 4-byte rest of header (echo identifier and sequence, MTU, pointer).
// [Build] computes the checksum when an IPv6 header precedes it.
type ICMPv6 struct {
	Type, Code uint8
	Rest       uint32
	src, dst   net.IP
}

// LayerType returns [layers.LayerTypeICMPv6].
func (m *ICMPv6) LayerType() gopacket.LayerType { return layers.LayerTypeICMPv6 }

// SerializeTo writes the header and computes the checksum over the
// pseudo-header and the message (RFC 4443 section 2.3).
func (m *ICMPv6) SerializeTo(b gopacket.SerializeBuffer, opts gopacket.SerializeOptions) error {
	h, err := b.PrependBytes(8)
	if err != nil {
		return err
	}
	h[0], h[1], h[2], h[3] = m.Type, m.Code, 0, 0
	binary.BigEndian.PutUint32(h[4:], m.Rest)
	if opts.ComputeChecksums && len(m.src) == net.IPv6len {
		msg := b.Bytes()
		var sum uint32
		sum = sumBytes(sum, m.src)
		sum = sumBytes(sum, m.dst)
		sum += uint32(len(msg)>>16) + uint32(len(msg)&0xffff) + uint32(layers.IPProtocolICMPv6)
		sum = sumBytes(sum, msg)
		binary.BigEndian.PutUint16(h[2:], foldChecksum(sum))
	}
	return nil
}

func sumBytes(sum uint32, b []byte) uint32 {
	for len(b) >= 2 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	return sum
}

func foldChecksum(sum uint32) uint16 {
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// Ethernet is an Ethernet II header. Unlike [layers.Ethernet] it does not
// pad short frames, so a frame ends where its payload ends; add padding as
// a trailing [gopacket.Payload] where a test wants it.
type Ethernet struct {
	Src, Dst  net.HardwareAddr
	EtherType layers.EthernetType
}

// LayerType returns [layers.LayerTypeEthernet].
func (e *Ethernet) LayerType() gopacket.LayerType { return layers.LayerTypeEthernet }

// SerializeTo writes the header.
func (e *Ethernet) SerializeTo(b gopacket.SerializeBuffer, _ gopacket.SerializeOptions) error {
	if len(e.Src) != 6 || len(e.Dst) != 6 {
		return errors.New("testutil: Ethernet addresses must be 6 bytes")
	}
	h, err := b.PrependBytes(14)
	if err != nil {
		return err
	}
	copy(h, e.Dst)
	copy(h[6:], e.Src)
	binary.BigEndian.PutUint16(h[12:], uint16(e.EtherType))
	return nil
}

// ServiceTag is an 802.1ad service VLAN tag: [Build] puts TPID 0x88A8
// before it, where a [layers.Dot1Q] gets 0x8100.
type ServiceTag struct {
	layers.Dot1Q
}

// LinuxSLL is a Linux cooked capture v1 header (pcap LINKTYPE_LINUX_SLL):
// packet type (0 to us, 4 outgoing), ARPHRD type, link address, protocol.
type LinuxSLL struct {
	PacketType uint16
	ARPHRD     uint16
	Addr       net.HardwareAddr
	Protocol   layers.EthernetType
}

// LayerType returns [layers.LayerTypeLinuxSLL].
func (s *LinuxSLL) LayerType() gopacket.LayerType { return layers.LayerTypeLinuxSLL }

// SerializeTo writes the header.
func (s *LinuxSLL) SerializeTo(b gopacket.SerializeBuffer, _ gopacket.SerializeOptions) error {
	if len(s.Addr) > 8 {
		return errors.New("testutil: SLL link address longer than 8 bytes")
	}
	h, err := b.PrependBytes(16)
	if err != nil {
		return err
	}
	clear(h)
	binary.BigEndian.PutUint16(h, s.PacketType)
	binary.BigEndian.PutUint16(h[2:], s.ARPHRD)
	binary.BigEndian.PutUint16(h[4:], uint16(len(s.Addr)))
	copy(h[6:14], s.Addr)
	binary.BigEndian.PutUint16(h[14:], uint16(s.Protocol))
	return nil
}

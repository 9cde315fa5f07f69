package conn

import "net/netip"

// badSource reports whether a datagram from src to dst must be refused
// whatever the configuration, because no honest peer sends it and a reply
// to it would go somewhere it must not:
//   - an IPv4-mapped source (::ffff:a.b.c.d) in an IPv6 packet, which the
//     socket API cannot tell from a real IPv4 sender: a reply to
//     ::ffff:127.0.0.1 goes to this host's own loopback (see
//     draft-itojun-v6ops-v4mapped-harmful). The Linux kernel delivers
//     such packets to a UDP socket;
//   - an unspecified source (::), which cannot be answered (the kernel
//     delivers those too);
//   - a multicast source (RFC 4291 section 2.7), and a multicast or
//     broadcast destination: the kernel delivers a multicast to our port
//     only because the socket listens on the wildcard address.
//
// A datagram that came over IPv4 has IPv4 addresses on both sides (the
// AnyIP backend unmaps them), an IPv6 one IPv6 addresses: a mix means a
// mapped address in an IPv6 header. Loopback sources are left to the
// kernel, which accepts them only over the loopback interface (the Raw
// receiver uses badSourceFromWire). Link-local
// sources are not refused: the kernel accepts them for a global
// destination on the same link.
func badSource(src, dst netip.Addr) bool {
	d := dst.Unmap()
	if d.Is4() || !dst.IsValid() && src.Is4() { // it came over IPv4
		return !src.Unmap().Is4() || d.IsMulticast() || d == netip.AddrFrom4([4]byte{255, 255, 255, 255})
	}
	return src.Is4() || src.Is4In6() || src.IsUnspecified() || src.IsMulticast() || dst.IsMulticast()
}

// badSourceFromWire is badSource for a packet read off a network
// interface rather than from the loopback device: like the kernel
// (RFC 4291 section 2.5.3), it also refuses loopback sources and
// destinations.
func badSourceFromWire(src, dst netip.Addr) bool {
	return badSource(src, dst) || src.IsLoopback() || dst.IsLoopback()
}

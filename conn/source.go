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
//   - loopback and multicast sources (RFC 4291 sections 2.5.3 and 2.7),
//     and multicast destinations: the kernel refuses the first two on
//     the wire, and delivers a multicast to our port only because the
//     socket listens on the wildcard address (IPv4 multicast and
//     limited broadcast likewise).
//
// A datagram that came over IPv4 has IPv4 addresses on both sides (the
// AnyIP backend unmaps them), an IPv6 one IPv6 addresses: a mix means a
// mapped address in an IPv6 header. Link-local sources are not refused:
// the kernel accepts them for a global destination on the same link.
func badSource(src, dst netip.Addr) bool {
	if src.Is4() {
		d := dst.Unmap()
		return dst.IsValid() && (!d.Is4() || d.IsMulticast() || d == netip.AddrFrom4([4]byte{255, 255, 255, 255}))
	}
	return src.Is4In6() || src.IsUnspecified() || src.IsLoopback() || src.IsMulticast() || dst.IsMulticast()
}

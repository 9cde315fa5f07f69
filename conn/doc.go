// Package conn spreads the inner flows of an encrypted UDP tunnel over many
// outer IPv6 addresses, so that fq_codel or cake on the path gives each
// inner flow its own queue.
//
// [FlowSpreadConn] is a [net.PacketConn] for a VPN's UDP socket. Each
// inner flow, identified by a keyed hash of its innermost 5-tuple, is sent
// from its own address of our prefix to its own address of the peer's
// prefix; every datagram from any address of a peer's range is read as
// coming from the peer's one canonical address, so the VPN's peer and
// roaming logic see nothing new.
//
// # Use it in your VPN
//
// Three calls. Open the conn instead of your UDP socket:
//
//	c, err := conn.Listen(conn.Config{
//		Prefix:    netip.MustParsePrefix("2001:db8:a::/64"), // routed to this host
//		Port:      51820,
//		Peers:     []conn.Peer{{Addr: peerAddr, Prefix: netip.MustParsePrefix("2001:db8:b::/64")}},
//		Key:       sharedKey, // the same at both ends, with Symmetric
//		Symmetric: true,
//	})
//
// Classify each plaintext packet before you encrypt it:
//
//	flow := c.Classify(plaintext)
//
// and send its ciphertext with that flow:
//
//	c.WriteFlow(ciphertext, peerAddr, flow) // or WriteTo(ct, &conn.FlowAddr{Peer: peerAddr, Flow: flow})
//
// Read as before: [FlowSpreadConn.ReadFrom] reports the peer's canonical
// address. [FlowSpreadConn.ReadMsg] also gives the outer ECN codepoint;
// after decrypting, [FlowSpreadConn.Decapsulate] carries congestion marks
// to the inner packet (RFC 6040).
//
// # What the host needs
//
// The prefix must reach the socket. With the default [AnyIP] backend, make
// every address of the prefix local:
//
//	ip -6 route add local 2001:db8:a::/64 dev lo
//
// and have the prefix routed to the host (from the upstream router, or
// DHCPv6-PD). The socket sets IPV6_FREEBIND, which needs no capability,
// to send from those addresses with a per-datagram IPV6_PKTINFO. The [Raw]
// backend captures the prefix's datagrams on an interface instead (needs
// CAP_NET_RAW).
//
// Package conn is the data path only. Package
// [github.com/flowspread/flowspread/conn/host] adds the local route
// (host.AddLocalRoute) and checks a host for a Config before you Listen
// (host.Diagnose), probing the kernel with the same code Listen uses.
//
// # Batches and offloads
//
// [FlowSpreadConn.WriteBatch] sends with sendmmsg, and with UDP GSO for
// runs of consecutive datagrams of one flow and size: a VPN that reads its
// TUN device in batches sees bulk flows in runs, and each run leaves as one
// super-datagram. If the kernel refuses GSO at run time (a device without
// checksum offload, a path MTU below the segment size), the conn falls back
// to plain datagrams for good. [FlowSpreadConn.ReadBatch] reads many
// datagrams per call with the backends that can. None of the per-datagram
// paths allocates.
//
// # Peers and roaming
//
// By default the conn reads only datagrams from its peers: from a peer's
// canonical address, or from its spread range with its port.
//
// That is sorting, not authentication: the conn never authenticates a
// source. Any host that can send from an address of a peer's range, with
// the peer's port, passes as the peer, so the range widens who can pose
// as the peer from one address to 2^Bits. An off-path attacker finds a
// range address no easier to forge than the canonical one, but a host on
// the path inside the peer's prefix (its /64) now qualifies. The VPN must
// authenticate every datagram, as WireGuard does.
//
// A VPN that
// authenticates every datagram itself, as WireGuard does, can set
// Config.AcceptUnknown to read the others too, each reported with its
// plain source address, so that it can follow a peer that moved to a new
// address or port. The conn spreads only to the canonical addresses it
// knows: what the VPN sends to the new address goes out unspread, from
// the socket's default source.
//
// # Flow symmetry and key rotation
//
// With Config.Symmetric and the same hash key at both ends, a request and
// its reply use the same outer address pair, so stateful firewalls match
// replies. Both ends must also agree on Layout, PermKey and each other's
// Prefix and Bits. A rotating [hash.Policy] (hash.NewPeriodic) changes the
// mapping periodically, which limits what an observer learns by counting
// addresses; its handover keeps a busy flow on its pair mid-burst. Both
// ends rotate by their own clocks: a skew d between them maps apart the
// flows that start in the last d before a rotation, until they pause for
// the policy's IdleGap, a fraction d/Period of flows (see
// [hash.Periodic], "Clock skew"); keep the clocks in sync with NTP.
//
// # Exposure
//
// An observer on the path sees up to 2^Bits addresses in use, about as
// many as the tunnel has active flows. With Config.FlowLabel the label
// is derived from the address pair, not from the flow, so it adds nothing
// to count by. cake in dual-srchost or
// triple-isolate mode counts each source address as a host, so a spreading
// sender counts as up to 2^Bits hosts there: Bits bounds that too.
package conn

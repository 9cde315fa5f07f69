// Package conn spreads the inner flows of an encrypted UDP tunnel over many
// outer endpoints, so that fq_codel or cake on the path gives each inner
// flow its own queue.
//
// [FlowSpreadConn] is a [net.PacketConn] for a VPN's UDP socket. Each
// inner flow, identified by a keyed hash of its innermost 5-tuple, is sent
// from its own endpoint of our [Range] to its own endpoint of the peer's:
// its own source port (on IPv4 or IPv6, through NAT, with no prefix), its
// own IPv6 address of a prefix, or both. Every datagram from a peer's range
// is read as coming from the peer's one canonical address, so the VPN's
// peer and roaming logic see nothing new.
//
// # Use it in your VPN
//
// Four calls. Open the conn instead of your UDP socket:
//
//	c, err := conn.Listen(conn.Config{
//		Port:      51820,
//		Range:     conn.Range{Ports: conn.PortRange{First: 61000, Bits: 8}}, // 256 source ports
//		Peers:     []conn.Peer{{Addr: serverAddr}}, // one address and port
//		Key:       sharedKey, // the same at both ends, with Symmetric
//		Symmetric: true,
//		Probe:     true, // if your VPN drops replayed datagrams
//	})
//
// The server lists the client as a peer with the client's Range (or,
// behind a NAT, Range{Ports: conn.PortRange{Bits: 8, Translated: true}})
// and answers each flow on the port pair it arrived on.
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
// address. [FlowSpreadConn.ReadMsg] also gives the outer addresses and ECN
// codepoint. After decrypting, tell the conn which flow the authentic
// datagram carried, so that it learns which pairs are open (see "Paths
// through stateful firewalls"):
//
//	c.Observe(&info, c.Classify(plaintext)) // from a ReadBatch: info := msg.RecvInfo()
//
// and let [FlowSpreadConn.Decapsulate] carry congestion marks to the
// inner packet (RFC 6040).
//
// # What to spread
//
// Ports need nothing from the host: Listen opens a socket on each port of
// Range.Ports (no privileges) and reads them all with one reader, and a
// batch that leaves from several of them goes out with one io_uring
// system call where the kernel has io_uring (a sendto per datagram where
// no control message is needed: each port's socket marks by itself the
// ECN codepoint its flows want, and datagrams of another codepoint carry
// it in IPV6_TCLASS; the datagrams of one port to one peer address and
// port go as one UDP GSO send). Where the process may
// (CAP_BPF and CAP_NET_ADMIN, Linux 5.9), a BPF sk_lookup program hands
// the datagrams to every port to the canonical socket, read alone as
// without ports (Stats.PortSteering, Config.DisablePortSteering). Every flow queue tells flows
// on different ports apart, a NAT keeps them apart, and a host-fair queue
// (cake's default triple-isolate, dual-srchost, dual-dsthost) still sees
// one host, so spreading over ports takes no more than the host's share
// of a shared link. It is the recommended setting.
//
// Addresses (Range.Prefix) work on IPv6 only and need the prefix to reach
// the socket: routed to the host, with every address made local,
//
//	ip -6 route add local 2001:db8:a::/64 dev lo
//
// (or the [Raw] backend, which captures the prefix's datagrams on an
// interface, with CAP_NET_RAW), or on-link, with neighbour proxies for
// the range's addresses. The socket sets IPV6_FREEBIND, which needs no
// capability, to send from them with a per-datagram IPV6_PKTINFO. A
// host-fair queue counts each address as a host, so a sender spreading
// over 2^Bits addresses outweighs its neighbours there: spread over
// addresses only where the path's queues are not host-fair.
// docs/dimensions.md has the figures for each choice at each kind of
// queue.
//
// Package conn is the data path only. Package
// [github.com/flowspread/flowspread/conn/host] adds the local route
// (host.AddLocalRoute) and the neighbour proxies
// (host.AddNeighbourProxies), and checks a host for a Config before you
// Listen (host.Diagnose), probing the kernel with the same code Listen
// uses.
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
// paths allocates. The kernel allocates per datagram for control
// messages longer than a lone IPV6_PKTINFO, so, spreading over addresses
// alone, the conn opens two more sockets on its port (bound to 100::1,
// where nothing is sent, and shared with no one else) that mark their
// datagrams ECT(0) and ECT(1): an ECN-capable flow's datagrams carry no
// IPV6_TCLASS beside their IPV6_PKTINFO. CE-marked datagrams, and those
// spread over addresses and ports at once, still carry both.
//
// # Peers and roaming
//
// By default the conn reads only datagrams from its peers: from a peer's
// canonical address, or from its Range.
//
// That is sorting, not authentication: the conn never authenticates a
// source. Any host that can send from an address and port of a peer's
// range passes as the peer, so the range widens who can pose as the peer
// from one address and port to the range's. An off-path attacker finds a
// range endpoint no easier to forge than the canonical one, but a host on
// the path inside the peer's prefix (its /64) now qualifies, and for a
// peer whose ports a NAT translates, any port of its address does. The VPN must
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
// # Paths through stateful firewalls
//
// Almost every home router runs a stateful IPv6 firewall (RFC 6092): a
// datagram going out opens its address pair for the answers, and an
// unsolicited one coming in is dropped, except to what the user opened,
// usually the VPN's one address and port. A flow sent at once on a pair
// the peer's side has never used would vanish there. So a flow goes on its
// spread pair only when that pair is known open:
//
//   - the peer is declared open (Peer.Open: no firewall in front of it),
//     or
//   - the peer's own datagrams for that flow arrived on that pair within
//     Config.PathTimeout (20 s by default, below the 30 s UDP timeout of
//     Linux conntrack and most home routers), as the VPN reports with
//     [FlowSpreadConn.Observe] after authenticating them.
//
// Otherwise it goes on the canonical pair, which the VPN's keepalives
// hold open (WireGuard's persistent keepalive: 25 s), and counts in
// Stats.SentWaiting. With Config.Probe a copy of the flow's first datagram
// also goes on the spread pair, and again at most once a second while it
// waits (Stats.SentProbes): the copy opens our own firewall for the
// peer's answer on that pair; the peer, seeing the flow there, moves its
// side of the flow to it and its datagrams open the pair for us. Flows
// opened from either side thus move to their own pairs after one round
// trip, and two ends behind firewalls meet. A flow moves at most once
// per idle period, so its datagrams may be reordered once, when it moves.
// A flow whose peer never answers on it (a one-way stream) stays on the
// canonical pair.
//
// Only authenticated traffic teaches the conn: a datagram that merely
// comes from a peer's range changes nothing until the VPN calls Observe,
// and Observe learns only when the datagram came exactly on its flow's
// pair, so a forged or replayed datagram from another address of the
// range cannot move a flow.
//
// Memory: a spreading peer that is not Open keeps one 8-byte slot per
// pair of endpoints, 2^(the wider of the two address ranges' bits + the
// wider of the two port ranges' bits) slots up to 4096 (32 KiB), 8 KiB
// with the default 1024 addresses, allocated when it first learns or
// probes; a peer whose ports a NAT translates keeps 4 more bytes a slot
// for the port each flow came from.
//
// A server needs no range: with one address and port, its client's Range
// as the peer's, Symmetric and the client's Key, it learns each of the
// client's flows on the pair the flow arrived on and answers there, so
// both directions are spread although only the client has a range.
// Through a NAT it answers on the ports the NAT translated the flows to
// (PortRange.Translated).
//
// Peers can change while the conn runs ([FlowSpreadConn.SetPeer],
// [FlowSpreadConn.RemovePeer]): the peer table is swapped whole, with no
// lock on the packet path, and a peer whose range stays keeps what it
// learned.
//
// # Flow symmetry and key rotation
//
// With Config.Symmetric and the same hash key at both ends, a request and
// its reply use the same outer address pair, so stateful firewalls match
// replies. Both ends must also agree on Layout, PermKey and each other's
// Range. A rotating [hash.Policy] (hash.NewPeriodic) changes the
// mapping periodically, which limits what an observer learns by counting
// addresses; its handover keeps a busy flow on its pair mid-burst. Both
// ends rotate by their own clocks: a skew d between them maps apart the
// flows that start in the last d before a rotation, until they pause for
// the policy's IdleGap, a fraction d/Period of flows (see
// [hash.Periodic], "Clock skew"); keep the clocks in sync with NTP.
//
// # Exposure
//
// An observer on the path sees up to 2^Bits addresses or ports in use,
// about as many as the tunnel has active flows. With Config.FlowLabel the
// label is derived from the address pair, not from the flow, so it adds
// nothing to count by. cake in dual-srchost, dual-dsthost or
// triple-isolate mode counts each address as a host, so a sender that
// spreads over addresses counts as up to 2^Bits hosts there; over ports it
// stays one.
package conn

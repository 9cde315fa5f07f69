// Package wireguard gives a wireguard-go device flow spreading without a
// fork of wireguard-go: a [Bind] that sends through a
// [conn.FlowSpreadConn], and a TUN wrapper, [WrapTUN], that tells the Bind
// which inner flow each datagram carries.
//
// # Use it with wireguard-go
//
//	b := wireguard.NewBind(conn.Config{
//		Range:     conn.Range{Prefix: netip.MustParsePrefix("2001:db8:a::/64")}, // routed here, with a local route
//		Peers:     []conn.Peer{{Addr: peerAddr, Range: conn.Range{Prefix: netip.MustParsePrefix("2001:db8:b::/64")}}},
//		Key:       sharedKey,
//		Symmetric: true,
//	})
//	dev := device.NewDevice(wireguard.WrapTUN(tunDev, b), b, logger)
//	dev.IpcSet("private_key=...\nlisten_port=51820\npublic_key=...\n" +
//		"endpoint=" + peerAddr.String() + "\nallowed_ip=10.0.0.2/32\n")
//	dev.Up()
//
// The Bind spreads over every dimension of [conn.Range]: addresses of an
// IPv6 prefix, UDP ports (IPv4 or IPv6, a socket per port, all read by
// the one receive function the Bind gives wireguard-go), or both. Each
// spreading peer's wireguard-go endpoint must be its canonical
// conn.Peer.Addr in Config.Peers. A peer that is not there is not spread
// but still works, as with wireguard-go's own Bind. fwmark is not
// supported.
//
// # How a datagram finds its flow
//
// wireguard-go reads a plaintext packet from the TUN into a buffer,
// encrypts it in place, and hands the same buffer to Bind.Send; on receive
// it decrypts in place into the buffer the Bind read into and hands that
// to the TUN's Write. Neither call says which packet it is, so the wrapper
// and the Bind link them by buffer identity. Read records the flow (hash
// and ECN) in a fixed table of 65536 slots, keyed by the address where
// the datagram will start (wireguard-go writes the 16-byte transport
// header right in front of the plaintext), with the exact length the
// packet seals to (header, plaintext padded as wireguard-go pads it at
// the TUN's MTU, tag). Send takes the record of each datagram's first
// byte, which forgets it, and uses it only for transport data of exactly
// that length: a record serves one datagram, and a buffer that carries
// something else after its send finds nothing. Receive records what the
// conn read about each transport datagram (its [conn.RecvInfo]: peer,
// outer pair, ECN) and its length under the buffer's first byte; Write
// takes the record of the buffer its plaintext sits in, 16 bytes in,
// checks the decrypted length against it, reports the packet's flow to
// [conn.FlowSpreadConn.Observe] and applies RFC 6040 decapsulation.
//
// # Paths through stateful firewalls
//
// A home router's firewall (RFC 6092) drops an inbound datagram on an
// address pair that its own side has not sent on. So by default a flow
// goes on the canonical pair (the peer's endpoint, which WireGuard's
// keepalives hold open) until the peer's traffic for that flow has
// arrived on the flow's spread pair, and goes back there after
// conn.Config.PathTimeout of silence on it. The Bind learns those arrivals
// itself: wireguard-go writes to the TUN only packets that authenticated,
// passed the replay filter and came from the peer's allowed IPs, so what
// Write observes is authentic, and a forged datagram never moves a flow.
//
// [NewBind] sets conn.Config.Probe: a flow waiting on the canonical pair
// also sends, at most once a second, a copy of a datagram on its spread
// pair. The copy opens our firewall for the peer's answer on that pair,
// and the peer, seeing the flow there, answers there and moves too. The
// copy has the same counter as its original, and WireGuard's replay
// filter delivers whichever arrives first and drops the other, so a probe
// never duplicates a packet inside the tunnel. Set conn.Peer.Open for a
// peer whose whole range is reachable (no stateful firewall in front of
// it): its flows go on their spread pairs from the first datagram.
//
// # Through a NAT
//
// A client behind a NAT spreads over ports (Config.Range.Ports); the NAT
// gives each of its source ports a port of its own, which nobody can
// know in advance. The server lists the client as a peer whose
// Range.Ports are Translated (nat-ports), at the address and port the
// NAT maps the client's canonical socket to: every datagram from that
// address, whatever its port, is then the client's and reports the
// client's one canonical Endpoint, so wireguard-go's endpoint stays put;
// and the Bind's Observe teaches the conn each flow's translated port,
// on which the server answers it. A flow the server opens goes on the
// canonical pair until the client's traffic for it arrives. The client
// keeps the NAT's mappings alive with persistent_keepalive_interval, as
// any WireGuard client behind a NAT does; the server needs no endpoint
// for it. TestNATPortSpread runs this through a real Linux masquerade.
//
// A server that does not list the client (AcceptUnknown alone) still
// works, but does not spread: each translated port is a stranger,
// wireguard-go roams the client's endpoint to the port of the latest
// authenticated datagram, and the server sends everything there, one
// port pair at a time (TestNATUnconfiguredPeer).
//
// # Peers at runtime
//
// [Bind.SetPeer], [Bind.RemovePeer] and [Bind.Peers] change the peers the
// Bind spreads to while wireguard-go runs (after `wg set` adds a peer, or
// to change a peer's prefix), without stopping traffic, and keep them
// across wireguard-go's reopening of the Bind. wireguard-go's own peer
// configuration stays separate: a peer it has and the Bind does not is
// sent to unspread.
//
// # Limits
//
// The link is a cache, not a promise. When it cannot be made, the datagram
// is sent unspread, from the socket's default address to the peer's
// canonical address, and a received packet is written without a CE mark
// and observed by no one; [Bind.Stats] counts these (SentUnmatched,
// RecvUnmatched), apart from
// handshakes, cookie replies and keepalives, which carry no inner flow
// and go out unspread by design (SentControl). It is never sent to a
// wrong peer: the peer always comes from wireguard-go's endpoint. A table
// slot shared by two buffers in flight at once (more than 65536 buffers
// between TUN read and send, or an unlucky hash) or a TUN that copies
// packets into buffers of its own loses the match for a packet. The link
// depends on wireguard-go encrypting in place, in the buffer its TUN read
// filled, which it has always done. A wireguard-go that copied the
// ciphertext elsewhere would send unspread and count SentUnmatched; one
// that copied it into a pooled buffer whose last TUN read was never sent
// from it, at exactly that read's offset and sealed length, would be
// matched wrongly, since ciphertext shares nothing with the plaintext the
// record was made from. TestTunnelWirePairs checks every datagram on the
// wire against its inner flow with the real wireguard-go, so an upgrade
// that changes this fails it.
//
// # Roaming
//
// wireguard-go moves a peer's endpoint to the source of the latest
// authenticated datagram. Every datagram a peer sends from any address
// and port of its spread range (any port of its address, with
// translated ports) reports the peer's one canonical [Endpoint], so the
// endpoint does not flap between them. [NewBind] sets
// conn.Config.AcceptUnknown, which is safe because WireGuard
// authenticates every datagram: a datagram from a source that is no
// peer's (a peer that moved to a new address or port, or one not in
// Config.Peers) reports an Endpoint of its plain source, and wireguard-go
// roams there once it authenticates, as it does with its own Bind.
//
// The conn spreads only to canonical addresses it knows, so after such a
// roam everything sent to the peer goes out unspread, from the socket's
// default source to the new address, until the configuration names the
// new address as the peer's canonical one. A peer that moved but still
// sends spread datagrams from the range configured here is reported at
// its old canonical Endpoint for those, so the endpoint alternates
// between the two: traffic flows either way (spread to the range, or
// plain to the new address), but give such a peer its new address. A
// peer that spreads from a range not configured here (a prefix, ports,
// or a NAT's translated ports) looks like one stranger per address and
// port and flaps between them.
package wireguard

// Package wireguard gives a wireguard-go device flow spreading without a
// fork of wireguard-go: a [Bind] that sends through a
// [conn.FlowSpreadConn], and a TUN wrapper, [WrapTUN], that tells the Bind
// which inner flow each datagram carries.
//
// # Use it with wireguard-go
//
//	b := wireguard.NewBind(conn.Config{
//		Prefix:    netip.MustParsePrefix("2001:db8:a::/64"), // routed here, with a local route
//		Peers:     []conn.Peer{{Addr: peerAddr, Prefix: netip.MustParsePrefix("2001:db8:b::/64")}},
//		Key:       sharedKey,
//		Symmetric: true,
//	})
//	dev := device.NewDevice(wireguard.WrapTUN(tunDev, b), b, logger)
//	dev.IpcSet("private_key=...\nlisten_port=51820\npublic_key=...\n" +
//		"endpoint=" + peerAddr.String() + "\nallowed_ip=10.0.0.2/32\n")
//	dev.Up()
//
// Each spreading peer's wireguard-go endpoint must be its canonical
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
// and the Bind link them by buffer identity: the key is the end of the
// buffer's backing array, which stays put while wireguard-go reslices the
// buffer from the front. Read records the flow (hash, ECN, plaintext
// length) under that key in a fixed table of 65536 slots; Send looks it up
// and checks it: the datagram must be transport data, and as long as the
// recorded plaintext encrypts to (plus at most 15 bytes of padding).
// Receive records each datagram's outer ECN codepoint and length the same
// way, and Write checks the decrypted length before it applies RFC 6040
// decapsulation.
//
// # Limits
//
// The link is a cache, not a promise. When it cannot be made, the datagram
// is sent unspread, from the socket's default address to the peer's
// canonical address, and a received packet is written without a CE mark;
// [Bind.Stats] counts these. It is never sent to a wrong peer: the peer
// always comes from wireguard-go's endpoint. Handshakes, cookie replies
// and keepalives carry no inner flow and go out unspread by design. A
// table slot shared by two buffers in flight at once (more than 65536
// buffers between TUN read and send, or an unlucky hash) or a TUN that
// copies packets into buffers of its own loses the match for a packet.
// The link depends on wireguard-go encrypting and decrypting in place,
// which it has always done; the tests check it against the real
// wireguard-go so an upgrade that changes it fails them.
//
// # Roaming
//
// wireguard-go moves a peer's endpoint to the source of the latest
// authenticated datagram. Every datagram a peer sends from any address of
// its spread range reports the peer's one canonical [Endpoint], so the
// endpoint does not flap between the range's addresses. [NewBind] sets
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
// peer that spreads from a prefix not configured here looks like one
// stranger per address and flaps between them.
package wireguard

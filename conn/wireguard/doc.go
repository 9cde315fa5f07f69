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
// Each peer's wireguard-go endpoint must be its canonical conn.Peer.Addr,
// and every peer must be in Config.Peers: the conn drops datagrams from
// any other source. fwmark is not supported.
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
// length) under that key in a fixed table of 8192 slots; Send looks it up
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
// table slot shared by two buffers in flight at once (more than 8192
// buffers between TUN read and send, or an unlucky hash) or a TUN that
// copies packets into buffers of its own loses the match for a packet.
// The link depends on wireguard-go encrypting and decrypting in place,
// which it has always done; the tests check it against the real
// wireguard-go so an upgrade that changes it fails them.
//
// Every datagram a peer sends, from any address of its range, reports the
// peer's one canonical [Endpoint], so wireguard-go's roaming (which moves
// the endpoint to the source of the latest authenticated packet) does not
// flap between the range's addresses. Because the conn knows its peers
// from conn.Config, roaming to an address outside Config.Peers is dropped
// by the conn instead of followed.
package wireguard

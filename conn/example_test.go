package conn_test

import (
	"log"
	"net/netip"

	"github.com/flowspread/flowspread/conn"
	"github.com/flowspread/flowspread/hash"
)

// A VPN end spreading over 2001:db8:a::/64 to a peer that spreads over
// 2001:db8:b::/64. It needs the prefix routed to the host and made local:
//
//	ip -6 route add local 2001:db8:a::/64 dev lo
//
// (no // Output: it needs that route, so it is compiled, not run).
func Example() {
	peer := netip.MustParseAddrPort("[2001:db8:b::1]:51820")
	c, err := conn.Listen(conn.Config{
		Range:     conn.Range{Prefix: netip.MustParsePrefix("2001:db8:a::/64")},
		Port:      51820,
		Peers:     []conn.Peer{{Addr: peer, Range: conn.Range{Prefix: netip.MustParsePrefix("2001:db8:b::/64")}}},
		Key:       hash.Key{ /* a secret shared with the peer */ 1},
		Symmetric: true, // replies use their request's address pair
		Probe:     true, // the VPN drops replayed datagrams, so probe copies are harmless
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	// 1. Classify the plaintext packet read from the TUN device.
	plaintext := []byte{0x60, 0, 0, 0, 0, 8, 17, 64 /* ... an IPv6/UDP packet */}
	flow := c.Classify(plaintext)

	// 2. Encrypt it, and send the ciphertext with its flow.
	ciphertext := seal(plaintext)
	if _, err := c.WriteFlow(ciphertext, peer, flow); err != nil {
		log.Print(err)
	}

	// 3. Read: every datagram of the peer's range reads as from its
	// canonical address, with the outer ECN for RFC 6040 decapsulation.
	buf := make([]byte, 1500)
	n, info, err := c.ReadMsg(buf)
	if err != nil {
		log.Fatal(err)
	}
	inner, ok := open(buf[:n])
	if !ok {
		return // forged: it must not teach the conn anything
	}
	// 4. Authentic: tell the conn on which pair the flow arrived, so its
	// datagrams to the peer go there too (a firewall in front of the
	// peer lets them in, since the peer's own went out on it).
	c.Observe(&info, c.Classify(inner))
	if drop, _ := c.Decapsulate(inner, info.ECN); !drop {
		log.Printf("%d bytes from %v", len(inner), info.Peer)
	}
}

// seal and open stand for the VPN's encryption.
func seal(p []byte) []byte         { return p }
func open(p []byte) ([]byte, bool) { return p, true }

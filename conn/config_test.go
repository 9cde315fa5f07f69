package conn_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/flowspread/flowspread/conn"
)

// Documentation prefixes: ours (A) and the peer's (B).
var (
	prefixA = netip.MustParsePrefix("2001:db8:a::/64")
	prefixB = netip.MustParsePrefix("2001:db8:b::/64")
)

func TestConfigErrors(t *testing.T) {
	peer := conn.Peer{Addr: netip.MustParseAddrPort("[2001:db8:b::1]:51820"), Prefix: prefixB}
	peers := []conn.Peer{peer}
	tests := []struct {
		name string
		cfg  conn.Config
		want string // a piece of the error that tells what is wrong
	}{
		{"IPv4 prefix", conn.Config{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Peers: peers},
			"conn: Prefix 10.0.0.0/8 is not IPv6: the spread prefix must be an IPv6 prefix routed to this host"},
		{"v4-mapped prefix", conn.Config{Prefix: netip.MustParsePrefix("::ffff:192.0.2.0/120"), Peers: peers},
			"is not IPv6"},
		{"host bits set", conn.Config{Prefix: netip.MustParsePrefix("2001:db8:a::1/64"), Peers: peers},
			"did you mean 2001:db8:a::/64?"},
		{"single address", conn.Config{Prefix: netip.MustParsePrefix("2001:db8:a::1/128"), Peers: peers},
			"is a single address"},
		{"range larger than prefix", conn.Config{Prefix: netip.MustParsePrefix("2001:db8:a::/120"), Bits: 12, Peers: peers},
			"Bits is 12 but prefix 2001:db8:a::/120 has only 8 host bits"},
		{"negative bits", conn.Config{Prefix: prefixA, Bits: -1, Peers: peers}, "Bits is -1"},
		{"huge range", conn.Config{Prefix: prefixA, Bits: 30, Peers: peers}, "Bits is 30: at most 20"},
		{"bits without prefix", conn.Config{Bits: 8, Peers: peers}, "Bits is 8 but Prefix is empty"},
		{"no peers", conn.Config{Prefix: prefixA}, "no Peers"},
		{"peer without port", conn.Config{Prefix: prefixA, Peers: []conn.Peer{{Addr: netip.AddrPortFrom(netip.MustParseAddr("2001:db8:b::1"), 0)}}},
			"Peers[0].Addr [2001:db8:b::1]:0 is not an address with a port"},
		{"peer unspecified", conn.Config{Prefix: prefixA, Peers: []conn.Peer{{Addr: netip.MustParseAddrPort("[::]:1")}}},
			"unspecified address"},
		{"duplicate peers", conn.Config{Prefix: prefixA, Peers: []conn.Peer{peer, {Addr: peer.Addr}}},
			"Peers[0] and Peers[1] have the same Addr"},
		{"peer IPv4 prefix", conn.Config{Prefix: prefixA, Peers: []conn.Peer{{Addr: peer.Addr, Prefix: netip.MustParsePrefix("192.0.2.0/24")}}},
			"Peers[0].Prefix 192.0.2.0/24 is not IPv6"},
		{"IPv4 peer with prefix", conn.Config{Prefix: prefixA, Peers: []conn.Peer{{Addr: netip.MustParseAddrPort("192.0.2.1:1"), Prefix: prefixB}}},
			"an IPv4 Addr 192.0.2.1:1"},
		{"peer prefix overlaps ours", conn.Config{Prefix: prefixA, Peers: []conn.Peer{{Addr: peer.Addr, Prefix: netip.MustParsePrefix("2001:db8:a::/48")}}},
			"overlaps our Prefix"},
		{"peer prefixes overlap", conn.Config{Prefix: prefixA, Peers: []conn.Peer{peer, {Addr: netip.MustParseAddrPort("[2001:db8:c::1]:1"), Prefix: netip.MustParsePrefix("2001:db8:b:0:1::/80")}}},
			"Peers[1].Prefix 2001:db8:b:0:1::/80 overlaps Peers[0].Prefix"},
		{"peer bits too large", conn.Config{Prefix: prefixA, Peers: []conn.Peer{{Addr: peer.Addr, Prefix: netip.MustParsePrefix("2001:db8:b::/124"), Bits: 5}}},
			"Peers[0].Bits is 5 but prefix 2001:db8:b::/124 has only 4 host bits"},
		{"peer bits without prefix", conn.Config{Prefix: prefixA, Peers: []conn.Peer{{Addr: peer.Addr, Bits: 4}}},
			"Peers[0].Bits is 4 but its Prefix is empty"},
		{"raw without interface", conn.Config{Prefix: prefixA, Peers: peers, Receive: conn.Raw{}}, "Raw receive needs an Interface"},
		{"raw without prefix", conn.Config{Peers: peers, Receive: conn.Raw{Interface: "eth0"}}, "Raw receive on eth0 needs a Prefix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := conn.Listen(tt.cfg)
			if err == nil {
				c.Close()
				t.Fatalf("Listen succeeded; want an error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Listen error %q\ndoes not contain %q", err, tt.want)
			}
		})
	}
}

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
	peer := conn.Peer{Addr: netip.MustParseAddrPort("[2001:db8:b::1]:51820"), Range: conn.Range{Prefix: prefixB}}
	peers := []conn.Peer{peer}
	tests := []struct {
		name string
		cfg  conn.Config
		want string // a piece of the error that tells what is wrong
	}{
		{"IPv4 prefix", conn.Config{Range: conn.Range{Prefix: netip.MustParsePrefix("10.0.0.0/8")}, Peers: peers},
			"conn: Range.Prefix 10.0.0.0/8 is not IPv6: only IPv6 has room for a range of addresses"},
		{"v4-mapped prefix", conn.Config{Range: conn.Range{Prefix: netip.MustParsePrefix("::ffff:192.0.2.0/120")}, Peers: peers},
			"is not IPv6"},
		{"host bits set", conn.Config{Range: conn.Range{Prefix: netip.MustParsePrefix("2001:db8:a::1/64")}, Peers: peers},
			"did you mean 2001:db8:a::/64?"},
		{"single address", conn.Config{Range: conn.Range{Prefix: netip.MustParsePrefix("2001:db8:a::1/128")}, Peers: peers},
			"is a single address"},
		{"range larger than prefix", conn.Config{Range: conn.Range{Prefix: netip.MustParsePrefix("2001:db8:a::/120"), Bits: 12}, Peers: peers},
			"Bits is 12 but prefix 2001:db8:a::/120 has only 8 host bits"},
		{"negative bits", conn.Config{Range: conn.Range{Prefix: prefixA, Bits: -1}, Peers: peers}, "Bits is -1"},
		{"huge range", conn.Config{Range: conn.Range{Prefix: prefixA, Bits: 30}, Peers: peers}, "Bits is 30: at most 20"},
		{"bits without prefix", conn.Config{Range: conn.Range{Bits: 8}, Peers: peers}, "Range.Bits is 8 but its Prefix is empty"},
		{"no peers", conn.Config{Range: conn.Range{Prefix: prefixA}}, "no Peers"},
		{"peer without port", conn.Config{Range: conn.Range{Prefix: prefixA}, Peers: []conn.Peer{{Addr: netip.AddrPortFrom(netip.MustParseAddr("2001:db8:b::1"), 0)}}},
			"Peers[0].Addr [2001:db8:b::1]:0 is not an address with a port"},
		{"peer unspecified", conn.Config{Range: conn.Range{Prefix: prefixA}, Peers: []conn.Peer{{Addr: netip.MustParseAddrPort("[::]:1")}}},
			"unspecified address"},
		{"duplicate peers", conn.Config{Range: conn.Range{Prefix: prefixA}, Peers: []conn.Peer{peer, {Addr: peer.Addr}}},
			"Peers[0] and Peers[1] have the same Addr"},
		{"peer IPv4 prefix", conn.Config{Range: conn.Range{Prefix: prefixA}, Peers: []conn.Peer{{Addr: peer.Addr, Range: conn.Range{Prefix: netip.MustParsePrefix("192.0.2.0/24")}}}},
			"Peers[0].Range.Prefix 192.0.2.0/24 is not IPv6"},
		{"IPv4 peer with prefix", conn.Config{Range: conn.Range{Prefix: prefixA}, Peers: []conn.Peer{{Addr: netip.MustParseAddrPort("192.0.2.1:1"), Range: conn.Range{Prefix: prefixB}}}},
			"an IPv4 Addr 192.0.2.1:1"},
		{"peer prefix overlaps ours", conn.Config{Range: conn.Range{Prefix: prefixA}, Peers: []conn.Peer{{Addr: peer.Addr, Range: conn.Range{Prefix: netip.MustParsePrefix("2001:db8:a::/48")}}}},
			"overlaps our Range.Prefix"},
		{"peer prefixes overlap", conn.Config{Range: conn.Range{Prefix: prefixA}, Peers: []conn.Peer{peer, {Addr: netip.MustParseAddrPort("[2001:db8:c::1]:1"), Range: conn.Range{Prefix: netip.MustParsePrefix("2001:db8:b:0:1::/80")}}}},
			"Peers[1].Range.Prefix 2001:db8:b:0:1::/80 overlaps Peers[0].Range.Prefix"},
		{"peer bits too large", conn.Config{Range: conn.Range{Prefix: prefixA}, Peers: []conn.Peer{{Addr: peer.Addr, Range: conn.Range{Prefix: netip.MustParsePrefix("2001:db8:b::/124"), Bits: 5}}}},
			"Peers[0].Range.Bits is 5 but prefix 2001:db8:b::/124 has only 4 host bits"},
		{"peer bits without prefix", conn.Config{Range: conn.Range{Prefix: prefixA}, Peers: []conn.Peer{{Addr: peer.Addr, Range: conn.Range{Bits: 4}}}},
			"Peers[0].Range.Bits is 4 but its Prefix is empty"},
		{"raw without interface", conn.Config{Range: conn.Range{Prefix: prefixA}, Peers: peers, Receive: conn.Raw{}}, "Raw receive needs an Interface"},
		{"raw without prefix", conn.Config{Peers: peers, Receive: conn.Raw{Interface: "eth0"}}, "Raw receive on eth0 needs a Range.Prefix"},
		{"ports hold the canonical port", conn.Config{Port: 40010, Range: conn.Range{Ports: conn.PortRange{First: 40000, Bits: 4}}, Peers: peers},
			"Range.Ports 40000-40015 holds the canonical port 40010"},
		{"ports past 65535", conn.Config{Range: conn.Range{Ports: conn.PortRange{First: 65530, Bits: 4}}, Peers: peers},
			"Range.Ports 65530-65545 runs past port 65535"},
		{"too many ports", conn.Config{Range: conn.Range{Ports: conn.PortRange{First: 20000, Bits: 11}}, Peers: peers},
			"Range.Ports.Bits is 11: it must be from 1 to 10"},
		{"ports without a first", conn.Config{Range: conn.Range{Ports: conn.PortRange{Bits: 3}}, Peers: peers},
			"Range.Ports.Bits is 3 but First is 0"},
		{"our ports translated", conn.Config{Range: conn.Range{Ports: conn.PortRange{Bits: 3, Translated: true}}, Peers: peers},
			"only a peer's ports can be translated"},
		{"translated peer open", conn.Config{Peers: []conn.Peer{{Addr: peer.Addr, Open: true, Range: conn.Range{Ports: conn.PortRange{Translated: true}}}}},
			"Peers[0] is Open but its Range.Ports are Translated"},
		{"peers share an address with ports", conn.Config{Peers: []conn.Peer{{Addr: netip.MustParseAddrPort("192.0.2.1:1")}, {Addr: netip.MustParseAddrPort("192.0.2.1:2"), Range: conn.Range{Ports: conn.PortRange{First: 100, Bits: 2}}}}},
			"Peers[0] and Peers[1] share the address 192.0.2.1 and one of them spreads over ports"},
		{"peer ports hold its port", conn.Config{Peers: []conn.Peer{{Addr: netip.MustParseAddrPort("192.0.2.1:101"), Range: conn.Range{Ports: conn.PortRange{First: 100, Bits: 2}}}}},
			"Peers[0].Range.Ports 100-103 holds the canonical port 101"},
		{"raw with ports", conn.Config{Range: conn.Range{Prefix: prefixA, Ports: conn.PortRange{First: 40000}}, Peers: peers, Receive: conn.Raw{Interface: "eth0"}},
			"Raw receive on eth0 takes no Range.Ports"},
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

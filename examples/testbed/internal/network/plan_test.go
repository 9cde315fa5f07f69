package network

import (
	"net/netip"

	"github.com/flowspread/flowspread/flowaddr"
	"slices"
	"strings"
	"testing"
)

func TestPlanCommands(t *testing.T) {
	for _, tc := range []struct {
		name                     string
		opts                     Options
		client, router, home     []string // lines each must hold
		routerLacks              string   // a line the router must not hold
		clientHost, clientPublic string
	}{
		{"IPv6, sites routed", Options{}, []string{
			"addr add 2001:db8:a::1/128 dev lo nodad",
			"addr add 2001:db8:0:1::2/64 dev c0 nodad",
			"route add default via 2001:db8:0:1::1 dev c0 src 2001:db8:a::1",
		}, []string{
			"route add 2001:db8:a::/48 via 2001:db8:0:1::2 dev rc",
			"route add 2001:db8:b::/48 via 2001:db8:0:2::2 dev rs",
		}, nil, "", "2001:db8:a::1", "2001:db8:a::1"},
		{"IPv6, the client on-link", Options{OnLink: true}, []string{
			"addr add 2001:db8:0:1::2/64 dev c0 nodad",
			"route add default via 2001:db8:0:1::1 dev c0 src 2001:db8:0:1::2",
		}, []string{"route add 2001:db8:b::/48 via 2001:db8:0:2::2 dev rs"}, nil,
			"2001:db8:a::/48", "2001:db8:0:1::2", "2001:db8:0:1::2"},
		{"IPv4", Options{Outer: OuterIPv4}, []string{
			"addr add 192.0.2.2/24 dev c0",
			"route add default via 192.0.2.1 dev c0 src 192.0.2.2",
		}, []string{"addr add 192.0.2.1/24 dev rc", "addr add 198.51.100.1/24 dev rs"}, nil,
			"route add", "192.0.2.2", "192.0.2.2"},
		{"IPv4 behind the NAT", Options{Outer: OuterIPv4, NAT: true}, []string{
			"addr add 10.0.0.2/24 dev c0",
			"route add default via 10.0.0.1 dev c0 src 10.0.0.2",
		}, []string{"addr add 192.0.2.1/24 dev rc"}, []string{
			"addr add 192.0.2.2/24 dev hu", "addr add 10.0.0.1/24 dev hl", "route add default via 192.0.2.1 dev hu",
		}, "10.0.0", "10.0.0.2", "192.0.2.2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := newPlan(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct {
				who   string
				lines []string
				want  []string
			}{
				{"client", p.clientLinkCommands(), tc.client},
				{"router", p.routerLinkCommands(), tc.router},
				{"home", p.homeLinkCommands(), tc.home},
			} {
				for _, w := range c.want {
					if !slices.Contains(c.lines, w) {
						t.Errorf("%s lacks %q:\n%s", c.who, w, strings.Join(c.lines, "\n"))
					}
				}
			}
			for _, l := range p.routerLinkCommands() {
				if tc.routerLacks != "" && strings.Contains(l, tc.routerLacks) && !strings.Contains(l, "dev rs") {
					t.Errorf("router routes what it must not: %q", l)
				}
			}
			if p.clientHost.String() != tc.clientHost || p.clientPublic().String() != tc.clientPublic {
				t.Errorf("client %v, seen as %v; want %s, %s", p.clientHost, p.clientPublic(), tc.clientHost, tc.clientPublic)
			}
		})
	}
}

func TestPlanRefuses(t *testing.T) {
	for _, tc := range []struct {
		opts Options
		want string
	}{
		{Options{NAT: true}, "needs the IPv4 outer path"},
		{Options{Outer: OuterIPv4, OnLink: true}, "needs -outer ipv6"},
		{Options{Outer: "ipx"}, "want ipv6 or ipv4"},
	} {
		if _, err := newPlan(tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want %q", tc.opts, err, tc.want)
		}
	}
}

// The on-link client's range lies in its link's /64 and holds neither the
// router's address nor its own, which its AnyIP local route would take.
func TestOnLinkRange(t *testing.T) {
	p, err := newPlan(Options{OnLink: true})
	if err != nil {
		t.Fatal(err)
	}
	m, err := flowaddr.NewMapper(flowaddr.MapperConfig{Prefix: p.clientSpread, Bits: flowaddr.DefaultBits})
	if err != nil {
		t.Fatal(err)
	}
	first, last := netip.AddrFrom16(m.Addr16(0)), netip.AddrFrom16(m.Addr16(uint32(m.Len()-1)))
	if first.String() != "2001:db8:0:1:f::400" || last.String() != "2001:db8:0:1:f::7ff" {
		t.Errorf("range %v-%v, want flowtun's contiguous 2001:db8:0:1:f::400-7ff", first, last)
	}
	if !p.clientLink.Contains(first) || p.clientSpread.Contains(p.routerClient) || p.clientSpread.Contains(p.edgeClient) {
		t.Errorf("range %v: want it inside %v, without %v or %v", p.clientSpread, p.clientLink, p.routerClient, p.edgeClient)
	}
}

func TestParseNeighbours(t *testing.T) {
	out := []byte(`2001:db8:0:1:f::4a3 lladdr 52:54:00:00:00:01 REACHABLE
2001:db8:0:1::2 lladdr 52:54:00:00:00:01 STALE
2001:db8:0:1:f::512 lladdr 52:54:00:00:00:01 STALE
2001:db8:0:1:f::600  FAILED
fe80::5054:ff:fe00:1 lladdr 52:54:00:00:00:01 router REACHABLE
garbage
`)
	n := parseNeighbours(out, netip.MustParsePrefix("2001:db8:0:1:f::/80"))
	if n.Entries != 5 || n.InRange != 3 || n.States["STALE"] != 2 || n.States["REACHABLE"] != 2 || n.States["FAILED"] != 1 {
		t.Errorf("parsed %+v; want 5 entries, 3 in range, 2 STALE, 2 REACHABLE, 1 FAILED", n)
	}
}

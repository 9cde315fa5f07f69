package firewall

import (
	"net/netip"
	"strings"
	"testing"
)

var protect = Protect{Outside: "c0", Host: netip.MustParseAddr("2001:db8:a::1"), VPNPort: 51820}

func TestRulesOpenOnlyTheVPNPort(t *testing.T) {
	rules := Rules(protect)
	for _, want := range []string{
		"hook input priority filter; policy drop;",
		`iifname != "c0" accept`,
		"ct state established,related accept",
		"packet-too-big",
		"echo-request",
		"nd-neighbor-solicit",
		"ip6 daddr 2001:db8:a::1 udp dport 51820 accept",
		"counter name dropped drop",
	} {
		if !strings.Contains(rules, want) {
			t.Errorf("rules lack %q:\n%s", want, rules)
		}
	}
	// Nothing else is let in: one accept per line above, no other port.
	if n := strings.Count(rules, "dport"); n != 1 {
		t.Errorf("%d dport matches, want only the VPN's:\n%s", n, rules)
	}
	// The drop comes last: a rule after it would never match.
	lines := strings.Split(strings.TrimSpace(rules), "\n")
	if !strings.Contains(lines[len(lines)-3], "drop") {
		t.Errorf("the counted drop is not the chain's last rule:\n%s", rules)
	}
}

func TestRulesOpenServices(t *testing.T) {
	p := protect
	p.TCPPorts, p.UDPPorts = []int{5202, 5201}, []int{2113}
	rules := Rules(p)
	for _, want := range []string{
		"ip6 daddr 2001:db8:a::1 tcp dport { 5201, 5202 } accept",
		"ip6 daddr 2001:db8:a::1 udp dport { 2113 } accept",
	} {
		if !strings.Contains(rules, want) {
			t.Errorf("rules lack %q:\n%s", want, rules)
		}
	}
}

func TestRulesIPv4(t *testing.T) {
	p := Protect{Outside: "c0", Host: netip.MustParseAddr("192.0.2.2"), VPNPort: 51820, TCPPorts: []int{5201}}
	rules := Rules(p)
	for _, want := range []string{
		"ip daddr 192.0.2.2 udp dport 51820 accept",
		"ip daddr 192.0.2.2 tcp dport { 5201 } accept",
		"icmp type { destination-unreachable",
	} {
		if !strings.Contains(rules, want) {
			t.Errorf("rules lack %q:\n%s", want, rules)
		}
	}
	if strings.Contains(rules, "ip6 daddr") {
		t.Errorf("IPv4 rules match an IPv6 destination:\n%s", rules)
	}
}

func TestPairRules(t *testing.T) {
	for _, tc := range []struct {
		host string
		want []string
	}{
		{"2001:db8:a::1", []string{
			"type ipv6_addr . inet_service . ipv6_addr . inet_service",
			`oifname "c0" udp dport 51820 add @out { ip6 saddr . udp sport . ip6 daddr . udp dport }`,
			`iifname "c0" udp sport 51820 add @in { ip6 saddr . udp sport . ip6 daddr . udp dport }`,
			"priority -10",
		}},
		{"10.0.0.2", []string{
			"type ipv4_addr . inet_service . ipv4_addr . inet_service",
			`oifname "c0" udp dport 51820 add @out { ip saddr . udp sport . ip daddr . udp dport }`,
			`iifname "c0" udp sport 51820 add @in { ip saddr . udp sport . ip daddr . udp dport }`,
		}},
	} {
		rules := PairRules("c0", netip.MustParseAddr(tc.host), 51820)
		for _, want := range tc.want {
			if !strings.Contains(rules, want) {
				t.Errorf("%s: rules lack %q:\n%s", tc.host, want, rules)
			}
		}
	}
}

func TestParseCounter(t *testing.T) {
	out := `{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}}, {"counter": {"family": "inet", "name": "dropped", "table": "fstb_firewall", "handle": 1, "packets": 7, "bytes": 560}}]}`
	if n, err := parseCounter([]byte(out)); err != nil || n != 7 {
		t.Errorf("parseCounter = %d, %v; want 7", n, err)
	}
	if _, err := parseCounter([]byte(`{"nftables": []}`)); err == nil {
		t.Error("parseCounter found a counter in an empty listing")
	}
}

func TestParseSetSize(t *testing.T) {
	out := `{"nftables": [{"metainfo": {}}, {"set": {"family": "inet", "name": "out", "table": "fstb_pairs", "type": ["ipv6_addr", "ipv6_addr"], "elem": [{"concat": ["2001:db8:a::1", "2001:db8:b::1"]}, {"concat": ["2001:db8:a:1::5", "2001:db8:b::1"]}]}}]}`
	if n, err := parseSetSize([]byte(out)); err != nil || n != 2 {
		t.Errorf("parseSetSize = %d, %v; want 2", n, err)
	}
	empty := `{"nftables": [{"metainfo": {}}, {"set": {"family": "inet", "name": "out", "table": "fstb_pairs"}}]}`
	if n, err := parseSetSize([]byte(empty)); err != nil || n != 0 {
		t.Errorf("parseSetSize of an empty set = %d, %v; want 0", n, err)
	}
}

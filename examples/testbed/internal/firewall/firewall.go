// Package firewall puts a home router's stateful firewall (RFC 6092
// style, in nftables; IPv6, or IPv4 on the testbed's IPv4 outer path) in
// front of an end host of the testbed, reads what it dropped, and counts
// the outer endpoint pairs a tunnel used on the host's link.
//
// The rules sit on the end host's input hook, for packets that come in on
// its link to the router (the outside), not in a namespace of their own
// between host and router: conntrack in the host's namespace keeps one
// entry per 5-tuple with the same timeouts and the same NEW/ESTABLISHED
// decisions a home router's forward chain makes, since the host is all
// there is behind it. See the testbed's doc for why.
package firewall

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/flowspread/flowspread/internal/netns"
)

// Table names; the accounting table is apart from the firewall, so that
// pairs are counted with no firewall too.
const (
	table      = "fstb_firewall"
	counter    = "dropped"
	pairsTable = "fstb_pairs"
)

// Protect says what a firewall protects and what it lets in unasked.
type Protect struct {
	// Outside is the host's interface towards the router: the rules
	// apply to what arrives there, as a home router's to its WAN side.
	Outside string
	// Host is the protected end's own (canonical) address, and VPNPort
	// the VPN's UDP port on it: the one service open to the outside.
	Host    netip.Addr
	VPNPort int
	// TCPPorts and UDPPorts are other services open on Host (the
	// testbed's own load and probe servers on the server, which the
	// paths outside the tunnel must reach).
	TCPPorts, UDPPorts []int
}

// Rules returns the firewall's rule set for nft -f: replies and related
// packets pass (conntrack), ICMPv6 that IPv6 needs passes (RFC 4890:
// errors, echo, neighbour discovery from the link), and ICMP errors and
// echo for IPv4, the open services on Host (of its family) pass, and
// everything else from the outside is dropped and counted. What the host
// sends is not filtered: all of it may go out.
func Rules(p Protect) string {
	l3 := network(p.Host)
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", table)
	fmt.Fprintf(&b, "\tcounter %s {\n\t}\n", counter)
	b.WriteString("\tchain input {\n")
	b.WriteString("\t\ttype filter hook input priority filter; policy drop;\n")
	fmt.Fprintf(&b, "\t\tiifname != %q accept\n", p.Outside)
	b.WriteString("\t\tct state established,related accept\n")
	// RFC 4890 4.4.1: errors and echo; 4.4.1 and 4.4.4: neighbour
	// discovery, which only ever comes from the link (hop limit 255).
	b.WriteString("\t\ticmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem, echo-request, echo-reply } accept\n")
	b.WriteString("\t\ticmpv6 type { nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, nd-redirect } ip6 hoplimit 255 accept\n")
	if p.Host.Is4() {
		// RFC 1812's errors, and echo as RFC 6092 lets it in for IPv6.
		b.WriteString("\t\ticmp type { destination-unreachable, time-exceeded, parameter-problem, echo-request, echo-reply } accept\n")
	}
	fmt.Fprintf(&b, "\t\t%s daddr %s udp dport %d accept\n", l3, p.Host, p.VPNPort)
	if len(p.TCPPorts) > 0 {
		fmt.Fprintf(&b, "\t\t%s daddr %s tcp dport { %s } accept\n", l3, p.Host, ports(p.TCPPorts))
	}
	if len(p.UDPPorts) > 0 {
		fmt.Fprintf(&b, "\t\t%s daddr %s udp dport { %s } accept\n", l3, p.Host, ports(p.UDPPorts))
	}
	fmt.Fprintf(&b, "\t\tcounter name %s drop\n", counter)
	b.WriteString("\t}\n}\n")
	return b.String()
}

// network is nftables' name of a's network header: ip6, or ip for IPv4.
func network(a netip.Addr) string {
	if a.Is4() {
		return "ip"
	}
	return "ip6"
}

func ports(ps []int) string {
	s := make([]string, len(ps))
	for i, p := range slices.Sorted(slices.Values(ps)) {
		s[i] = strconv.Itoa(p)
	}
	return strings.Join(s, ", ")
}

// Install loads the firewall of p into ns, replacing one loaded before.
func Install(ns netns.Namespace, p Protect) error {
	return load(ns, table, Rules(p))
}

// load replaces the table name in ns with rules.
func load(ns netns.Namespace, name, rules string) error {
	// Deleting first makes Install idempotent; a missing table is fine.
	ns.Run("nft", "delete", "table", "inet", name)
	cmd := ns.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("in namespace %s: load the nftables rules: %w: %s\nrules:\n%s", ns, err, strings.TrimSpace(string(out)), rules)
	}
	return nil
}

// Dropped returns how many packets the firewall in ns has dropped.
func Dropped(ns netns.Namespace) (uint64, error) {
	out, err := ns.Output("nft", "-j", "list", "counter", "inet", table, counter)
	if err != nil {
		return 0, err
	}
	return parseCounter(out)
}

// parseCounter reads the packets of the counter in nft -j's output.
func parseCounter(data []byte) (uint64, error) {
	var doc struct {
		Nftables []struct {
			Counter *struct {
				Name    string `json:"name"`
				Packets uint64 `json:"packets"`
			} `json:"counter"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return 0, fmt.Errorf("read nft's counter: %w", err)
	}
	for _, o := range doc.Nftables {
		if o.Counter != nil && o.Counter.Name == counter {
			return o.Counter.Packets, nil
		}
	}
	return 0, fmt.Errorf("nft listed no counter %q", counter)
}

// Timeouts are conntrack's UDP timeouts in seconds: Unreplied for a pair
// that has seen no reply (or only within its first 2 s), Stream for one
// with traffic both ways after that.
type Timeouts struct {
	Unreplied int `json:"udp_timeout_s"`
	Stream    int `json:"udp_timeout_stream_s"`
}

// ConntrackTimeouts reads conntrack's UDP timeouts in ns (present once
// a firewall there uses conntrack).
func ConntrackTimeouts(ns netns.Namespace) (Timeouts, error) {
	var t Timeouts
	for name, into := range map[string]*int{
		"net.netfilter.nf_conntrack_udp_timeout":        &t.Unreplied,
		"net.netfilter.nf_conntrack_udp_timeout_stream": &t.Stream,
	} {
		out, err := ns.Output("sysctl", "-n", name)
		if err != nil {
			return t, err
		}
		if *into, err = strconv.Atoi(strings.TrimSpace(string(out))); err != nil {
			return t, fmt.Errorf("sysctl %s: %w", name, err)
		}
	}
	return t, nil
}

// PairRules returns the accounting table that records, on the link
// outside, every distinct outer endpoint pair (addresses and ports) of
// the VPN's UDP datagrams (to or from the peer's port port) in each
// direction: what the router sees of the tunnel, whether it spreads over
// addresses or over ports. host, the end's own address, gives the family.
func PairRules(outside string, host netip.Addr, port int) string {
	l3, addrType := network(host), "ipv6_addr"
	if host.Is4() {
		addrType = "ipv4_addr"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", pairsTable)
	for _, set := range []string{"out", "in"} {
		fmt.Fprintf(&b, "\tset %s {\n\t\ttype %s . inet_service . %s . inet_service\n\t\tsize 65535\n\t\tflags dynamic\n\t}\n", set, addrType, addrType)
	}
	pair := fmt.Sprintf("{ %s saddr . udp sport . %s daddr . udp dport }", l3, l3)
	// Before the firewall's chain (priority filter, 0), so that dropped
	// datagrams are counted as arriving too.
	fmt.Fprintf(&b, "\tchain output {\n\t\ttype filter hook output priority -10; policy accept;\n\t\toifname %q udp dport %d add @out %s\n\t}\n", outside, port, pair)
	fmt.Fprintf(&b, "\tchain input {\n\t\ttype filter hook input priority -10; policy accept;\n\t\tiifname %q udp sport %d add @in %s\n\t}\n", outside, port, pair)
	b.WriteString("}\n")
	return b.String()
}

// CountPairs loads the accounting table of PairRules into ns.
func CountPairs(ns netns.Namespace, outside string, host netip.Addr, port int) error {
	return load(ns, pairsTable, PairRules(outside, host, port))
}

// Pairs returns the distinct outer endpoint pairs recorded in ns since
// CountPairs or the last ResetPairs, sent (out) and received (in).
func Pairs(ns netns.Namespace) (out, in int, err error) {
	for _, set := range []struct {
		name string
		n    *int
	}{{"out", &out}, {"in", &in}} {
		data, err := ns.Output("nft", "-j", "list", "set", "inet", pairsTable, set.name)
		if err != nil {
			return out, in, err
		}
		if *set.n, err = parseSetSize(data); err != nil {
			return out, in, err
		}
	}
	return out, in, nil
}

// ResetPairs empties the accounting table's sets.
func ResetPairs(ns netns.Namespace) error {
	for _, set := range []string{"out", "in"} {
		if err := ns.Run("nft", "flush", "set", "inet", pairsTable, set); err != nil {
			return err
		}
	}
	return nil
}

// parseSetSize counts the elements of the set in nft -j's output.
func parseSetSize(data []byte) (int, error) {
	var doc struct {
		Nftables []struct {
			Set *struct {
				Elem []json.RawMessage `json:"elem"`
			} `json:"set"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return 0, fmt.Errorf("read nft's set: %w", err)
	}
	for _, o := range doc.Nftables {
		if o.Set != nil {
			return len(o.Set.Elem), nil
		}
	}
	return 0, fmt.Errorf("nft listed no set")
}

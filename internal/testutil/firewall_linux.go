package testutil

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// HomeFirewallRules are what a test adds to [HomeFirewall]'s table: Decls
// are declarations in the table (counters, sets, more chains), First are
// rules at the top of the forward chain, before the firewall judges a
// packet (to count what reaches it).
type HomeFirewallRules struct {
	Decls, First string
}

// HomeFirewall puts a home router's stateful IPv6 firewall, in the style
// of RFC 6092, on router's forward chain, in front of the hosts behind
// its interface inside: whatever they send goes out and opens state,
// replies come back, ICMPv6 passes, and the only unsolicited datagrams
// let in are UDP to hole, the address and port a user opens for the VPN.
// Everything else is dropped and counted in the counter "dropped" of the
// table "inet home" ([NftCounter]). It skips t where nft is missing.
func HomeFirewall(t testing.TB, router *Netns, inside string, hole netip.AddrPort, more HomeFirewallRules) {
	t.Helper()
	Nft(t, router, fmt.Sprintf(`
table inet home {
	counter dropped {}
	%s
	chain forward {
		type filter hook forward priority filter; policy drop;
		%s
		ct state established,related accept
		meta l4proto ipv6-icmp accept
		iifname %q accept
		ip6 daddr %s udp dport %d accept
		counter name "dropped" drop
	}
}
`, more.Decls, more.First, inside, hole.Addr(), hole.Port()))
}

// Nft loads an nftables rule set into ns. It skips t where nft is
// missing.
func Nft(t testing.TB, ns *Netns, rules string) {
	t.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("needs the nft command: apt-get install nftables (scripts/install-deps)")
	}
	file := filepath.Join(t.TempDir(), "rules.nft")
	if err := os.WriteFile(file, []byte(rules), 0o600); err != nil {
		t.Fatal(err)
	}
	ns.Run(t, "nft", "-f", file)
}

// NftCounter returns the packets the named counter of [HomeFirewall]'s
// table has counted.
func NftCounter(t testing.TB, router *Netns, name string) uint64 {
	t.Helper()
	var list struct {
		Nftables []struct {
			Counter *struct{ Packets uint64 } `json:"counter"`
		} `json:"nftables"`
	}
	out := router.Run(t, "nft", "-j", "list", "counter", "inet", "home", name)
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("nft counter %s: %v", name, err)
	}
	for _, o := range list.Nftables {
		if o.Counter != nil {
			return o.Counter.Packets
		}
	}
	t.Fatalf("nft counter %s: no count in %q", name, out)
	return 0
}

package testutil

import (
	"fmt"
	"net/netip"
	"testing"
)

// The addresses of NewIPv4Path: the client on its own network behind the
// router, the router's outside address (the client's public address
// through the NAT), and the server.
var (
	IPv4Client       = netip.MustParseAddr("10.9.0.2")
	IPv4RouterInside = netip.MustParseAddr("10.9.0.1")
	IPv4Public       = netip.MustParseAddr("192.0.2.1")
	IPv4Server       = netip.MustParseAddr("192.0.2.2")
)

// NewIPv4Path builds client - router - server namespaces on IPv4, the
// client's link named clientIf and the server's serverIf at their ends.
// With nat the router masquerades the client (Linux masquerade,
// nftables), as a home router does, and gives datagrams from the
// client's source ports first to last new random ports of 20000-29999,
// as a NAT whose ports are taken would; the client's other ports keep
// their numbers, as masquerade keeps a free port. Without nat the server
// routes to the client's network through the router.
func NewIPv4Path(t testing.TB, clientIf, serverIf string, nat bool, first, last uint16) (client, router, server *Netns) {
	t.Helper()
	SkipUnlessRoot(t)
	client, router, server = NewNetns(t), NewNetns(t), NewNetns(t)
	Veth(t, client, clientIf, router, "r0")
	Veth(t, router, "r1", server, serverIf)
	router.Run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	client.Run(t, "ip", "addr", "add", IPv4Client.String()+"/24", "dev", clientIf)
	router.Run(t, "ip", "addr", "add", IPv4RouterInside.String()+"/24", "dev", "r0")
	router.Run(t, "ip", "addr", "add", IPv4Public.String()+"/24", "dev", "r1")
	server.Run(t, "ip", "addr", "add", IPv4Server.String()+"/24", "dev", serverIf)
	client.Run(t, "ip", "route", "add", "default", "via", IPv4RouterInside.String())
	if !nat {
		server.Run(t, "ip", "route", "add", "10.9.0.0/24", "via", IPv4Public.String())
		return client, router, server
	}
	Nft(t, router, fmt.Sprintf(`table ip home {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "r1" udp sport %d-%d masquerade to :20000-29999 random
		oifname "r1" masquerade
	}
}
`, first, last))
	return client, router, server
}

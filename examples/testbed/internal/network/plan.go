package network

import (
	"errors"
	"fmt"
	"net/netip"
)

// Outer is the family of the outer path: the links to the router and the
// hosts' own addresses. The tunnels' inner addresses are IPv6 either way.
type Outer string

const (
	// OuterIPv6: every link and host address is IPv6, inside the
	// documentation prefix 2001:db8::/32 (RFC 3849).
	OuterIPv6 Outer = "ipv6"
	// OuterIPv4: every link and host address is IPv4, inside the
	// documentation ranges TEST-NET-1 and TEST-NET-2 (RFC 5737), and the
	// client behind a NAT on a private range (RFC 1918). No prefix is
	// routed to a host: a tunnel can spread only over ports.
	OuterIPv4 Outer = "ipv4"
)

// plan is the address plan of a topology: the hosts' own outer
// addresses, what the router routes to them, and each link's addresses.
type plan struct {
	outer       Outer
	nat, onLink bool

	// clientHost and serverHost are the hosts' own outer addresses:
	// the source of everything they send, on lo when a site is routed
	// to them, else on their link.
	clientHost, serverHost netip.Addr
	// clientSite and serverSite are routed to the hosts through the
	// router; not valid where nothing is (IPv4, the on-link client).
	clientSite, serverSite netip.Prefix
	// clientSpread and serverSpread are where a tunnel spreads its outer
	// addresses; not valid where it cannot (IPv4).
	clientSpread, serverSpread netip.Prefix

	// The client link joins the router (rc) to the client, or to the
	// NAT in front of it; the server link the router (rs) to the server.
	clientLink, serverLink     netip.Prefix
	routerClient, edgeClient   netip.Addr
	routerServer, serverOnLink netip.Addr

	// With the NAT: the client's private LAN, the home router's
	// address on it and the client's.
	lan                netip.Prefix
	homeLAN, clientLAN netip.Addr
}

// The IPv6 plan. Each end host has a site prefix routed to it through the
// router, as a delegated prefix would be; with -onlink the client has
// none, and spreads inside the client link's /64 instead.
var (
	clientSite6 = netip.MustParsePrefix("2001:db8:a::/48")
	serverSite6 = netip.MustParsePrefix("2001:db8:b::/48")
	clientHost6 = netip.MustParseAddr("2001:db8:a::1") // on the client's lo
	serverHost6 = netip.MustParseAddr("2001:db8:b::1") // on the server's lo
	// Each end spreads over a /64 of its site; flowtun makes it local
	// with an AnyIP route.
	clientSpread6 = netip.MustParsePrefix("2001:db8:a:1::/64")
	serverSpread6 = netip.MustParsePrefix("2001:db8:b:1::/64")

	clientLink6      = netip.MustParsePrefix("2001:db8:0:1::/64")
	routerClientAddr = netip.MustParseAddr("2001:db8:0:1::1")
	clientLinkAddr   = netip.MustParseAddr("2001:db8:0:1::2")
	serverLink6      = netip.MustParsePrefix("2001:db8:0:2::/64")
	routerServerAddr = netip.MustParseAddr("2001:db8:0:2::1")
	serverLinkAddr   = netip.MustParseAddr("2001:db8:0:2::2")

	// onLinkSpread is the on-link client's range, a part of the client
	// link's /64 that holds no link address, so that the AnyIP local
	// route for it (flowtun's -local-route) leaves the router's address
	// ::1 and the client's own ::2 where they are.
	onLinkSpread = netip.MustParsePrefix("2001:db8:0:1:f::/80")
)

// The IPv4 plan: TEST-NET-1 on the client link, TEST-NET-2 on the server
// link (RFC 5737), and 10.0.0.0/24 (RFC 1918) behind the NAT, whose
// public address is its own on the client link.
var (
	clientLink4   = netip.MustParsePrefix("192.0.2.0/24")
	routerClient4 = netip.MustParseAddr("192.0.2.1")
	edgeClient4   = netip.MustParseAddr("192.0.2.2")
	serverLink4   = netip.MustParsePrefix("198.51.100.0/24")
	routerServer4 = netip.MustParseAddr("198.51.100.1")
	serverOnLink4 = netip.MustParseAddr("198.51.100.2")
	lan4          = netip.MustParsePrefix("10.0.0.0/24")
	homeLAN4      = netip.MustParseAddr("10.0.0.1")
	clientLAN4    = netip.MustParseAddr("10.0.0.2")
)

// newPlan returns the address plan of opts, or says why there is none.
func newPlan(opts Options) (plan, error) {
	outer := opts.Outer
	if outer == "" {
		outer = OuterIPv6
	}
	p := plan{outer: outer, nat: opts.NAT, onLink: opts.OnLink}
	switch {
	case outer != OuterIPv6 && outer != OuterIPv4:
		return p, fmt.Errorf("outer path %q: want ipv6 or ipv4", outer)
	case opts.NAT && outer != OuterIPv4:
		return p, errors.New("the NAT (NAT44) needs the IPv4 outer path (-outer ipv4)")
	case opts.OnLink && outer != OuterIPv6:
		return p, errors.New("the on-link client is an IPv6 topology (neighbour discovery): it needs -outer ipv6")
	}
	if outer == OuterIPv4 {
		p.clientLink, p.routerClient, p.edgeClient = clientLink4, routerClient4, edgeClient4
		p.serverLink, p.routerServer, p.serverOnLink = serverLink4, routerServer4, serverOnLink4
		p.clientHost, p.serverHost = edgeClient4, serverOnLink4
		if p.nat {
			p.lan, p.homeLAN, p.clientLAN = lan4, homeLAN4, clientLAN4
			p.clientHost = clientLAN4
		}
		return p, nil
	}
	p.clientLink, p.routerClient, p.edgeClient = clientLink6, routerClientAddr, clientLinkAddr
	p.serverLink, p.routerServer, p.serverOnLink = serverLink6, routerServerAddr, serverLinkAddr
	p.serverHost, p.serverSite, p.serverSpread = serverHost6, serverSite6, serverSpread6
	p.clientHost, p.clientSite, p.clientSpread = clientHost6, clientSite6, clientSpread6
	if p.onLink {
		p.clientHost, p.clientSite, p.clientSpread = clientLinkAddr, netip.Prefix{}, onLinkSpread
	}
	return p, nil
}

// clientPublic is the client's outer address as the server sees it: the
// NAT's, behind one.
func (p plan) clientPublic() netip.Addr {
	if p.nat {
		return p.edgeClient
	}
	return p.clientHost
}

// addrOn is an ip addr add line for a on dev, with the length of its link.
func addrOn(a netip.Addr, link netip.Prefix, dev string) string {
	line := fmt.Sprintf("addr add %s/%d dev %s", a, link.Bits(), dev)
	if a.Is6() {
		line += " nodad"
	}
	return line
}

// hostCommands configure an end host once its link dev exists (ip
// -batch lines): its address on the link, its own address on lo when a
// site is routed to it, and the default route through gateway, from its
// own address.
func hostCommands(dev string, own, onLink netip.Addr, link netip.Prefix, gateway netip.Addr) []string {
	lines := []string{"link set lo up", "link set " + dev + " up"}
	if own != onLink {
		lines = append(lines, fmt.Sprintf("addr add %s/%d dev lo nodad", own, own.BitLen()))
	}
	return append(lines, addrOn(onLink, link, dev),
		fmt.Sprintf("route add default via %s dev %s src %s", gateway, dev, own))
}

// clientLinkCommands configure the client once its link c0 exists.
func (p plan) clientLinkCommands() []string {
	if p.nat {
		return hostCommands(clientIf, p.clientHost, p.clientLAN, p.lan, p.homeLAN)
	}
	return hostCommands(clientIf, p.clientHost, p.edgeClient, p.clientLink, p.routerClient)
}

// serverLinkCommands configure the server once its link s0 exists.
func (p plan) serverLinkCommands() []string {
	return hostCommands(serverIf, p.serverHost, p.serverOnLink, p.serverLink, p.routerServer)
}

// homeLinkCommands configure the home router once its links exist: its
// public address on the client link, its LAN address, the default route.
func (p plan) homeLinkCommands() []string {
	return []string{"link set lo up", "link set " + homeUpIf + " up", "link set " + homeLANIf + " up",
		addrOn(p.edgeClient, p.clientLink, homeUpIf), addrOn(p.homeLAN, p.lan, homeLANIf),
		fmt.Sprintf("route add default via %s dev %s", p.routerClient, homeUpIf)}
}

// routerLinkCommands configure the router once its links rc and rs exist,
// in a namespace or in the router VM: the links' addresses, and routes to
// the sites routed to the hosts. The on-link client has none: the router
// finds each of its addresses by neighbour discovery on rc.
func (p plan) routerLinkCommands() []string {
	lines := []string{
		"link set lo up",
		"link set " + RouterClientIf + " up",
		"link set " + RouterServerIf + " up",
		addrOn(p.routerClient, p.clientLink, RouterClientIf),
		addrOn(p.routerServer, p.serverLink, RouterServerIf),
	}
	if p.clientSite.IsValid() {
		lines = append(lines, fmt.Sprintf("route add %s via %s dev %s", p.clientSite, p.edgeClient, RouterClientIf))
	}
	if p.serverSite.IsValid() {
		lines = append(lines, fmt.Sprintf("route add %s via %s dev %s", p.serverSite, p.serverOnLink, RouterServerIf))
	}
	return lines
}

// forwardingSysctls are what a router of this plan's family needs.
func (p plan) forwardingSysctls() []string {
	if p.outer == OuterIPv4 {
		return []string{"net.ipv4.ip_forward=1"}
	}
	return []string{"net.ipv6.conf.all.forwarding=1"}
}

// natRules are the home router's nftables rules: Linux's own masquerade
// (NAT44, RFC 3022's NAPT) of everything that leaves towards the router,
// which rewrites the source to the home router's public address and
// keeps the source port where it is free. Replies, and only replies, find
// their way back through conntrack.
func natRules() string {
	return fmt.Sprintf(`table ip %s {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname %q masquerade
	}
}
`, natTable, homeUpIf)
}

// natTable is the home router's nftables table.
const natTable = "fstb_nat"

package host

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flowspread/flowspread/flowaddr"
)

// onLinkRoute is a connected route: a subnet on a link, reached without a
// gateway, whose addresses the kernel (and every neighbour) looks up by
// neighbour discovery.
type onLinkRoute struct {
	Subnet netip.Prefix
	Dev    string
	Index  int
}

// onLinkRouteFor returns the longest connected route of the main table
// that contains p: a unicast route with no gateway, on a link that does
// neighbour discovery (not loopback, not a point-to-point or tunnel link,
// which are NOARP), other than the default route. The kernel's own
// (proto kernel) and router advertisements' (proto ra) prefix routes are
// such routes, and so is one an administrator adds with `ip -6 route add
// SUBNET dev eth0`: the protocol does not matter. (IPv6 routes have no
// link scope: the kernel reports them all as scope global.)
func onLinkRouteFor(p netip.Prefix) (onLinkRoute, bool) {
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V6)
	if err != nil {
		return onLinkRoute{}, false
	}
	var best onLinkRoute
	found := false
	for _, r := range routes {
		if r.Dst == nil || r.Gw != nil || len(r.MultiPath) > 0 || r.Type != unix.RTN_UNICAST {
			continue
		}
		ones, _ := r.Dst.Mask.Size()
		ip, ok := netip.AddrFromSlice(r.Dst.IP)
		if !ok || ones == 0 || ones > p.Bits() || (found && ones <= best.Subnet.Bits()) {
			continue
		}
		subnet := netip.PrefixFrom(ip, ones).Masked()
		if !subnet.Contains(p.Addr()) {
			continue
		}
		link, err := netlink.LinkByIndex(r.LinkIndex)
		if err != nil || link.Attrs().Flags&net.FlagLoopback != 0 || link.Attrs().RawFlags&unix.IFF_NOARP != 0 {
			continue
		}
		best, found = onLinkRoute{Subnet: subnet, Dev: link.Attrs().Name, Index: r.LinkIndex}, true
	}
	return best, found
}

// rangeMapper is the mapper [conn.Listen] makes of cfg's range.
func rangeMapper(cfg settings) (*flowaddr.Mapper, error) {
	return flowaddr.NewMapper(flowaddr.MapperConfig{
		Prefix: cfg.Range.Prefix, Bits: cfg.Range.Bits, Layout: cfg.Layout, PermKey: cfg.PermKey,
	})
}

// rangeLocalRouteFix is the command that routes m's range, and only it,
// locally.
func rangeLocalRouteFix(m *flowaddr.Mapper) string {
	first := netip.AddrFrom16(m.Addr16(0))
	last := netip.AddrFrom16(m.Addr16(uint32(m.Len() - 1)))
	if m.Layout() != flowaddr.LayoutContiguous {
		return fmt.Sprintf("ip -6 route add local ADDRESS/128 dev lo for each of the %d addresses of the scattered range (a local route for the prefix would take the neighbours' addresses too)", m.Len())
	}
	return "ip -6 route add local " + coveringPrefix(first, last).String() + " dev lo"
}

// coveringPrefix returns the longest prefix holding both a and b.
func coveringPrefix(a, b netip.Addr) netip.Prefix {
	bits := a.BitLen()
	for bits > 0 && !netip.PrefixFrom(a, bits).Masked().Contains(b) {
		bits--
	}
	return netip.PrefixFrom(a, bits).Masked()
}

// checkRangeLocalRoute is [checkLocalRoute] for an on-link prefix: there
// the addresses of the range must be local, and the rest of the prefix,
// which the neighbours hold, must not.
func checkRangeLocalRoute(cfg settings, add addFinding) {
	m, err := rangeMapper(cfg)
	if err != nil {
		add(CheckLocalRoute, Block, "", "cannot list the range's addresses: %v", err)
		return
	}
	fix := rangeLocalRouteFix(m)
	var notLocal []string
	for _, b := range []uint32{0, uint32(m.Len() - 1)} {
		a := netip.AddrFrom16(m.Addr16(b))
		if typ, _, err := routeKind(a); err != nil || typ != unix.RTN_LOCAL {
			notLocal = append(notLocal, a.String())
		}
	}
	// The prefix's last address is no one's in practice (hosts take low
	// or random interface identifiers); local, it shows the whole prefix
	// is.
	p := m.Prefix()
	_, last := prefixEnds(p)
	if _, inRange := m.BucketOf(last.As16()); !inRange && len(notLocal) == 0 {
		if typ, _, err := routeKind(last); err == nil && typ == unix.RTN_LOCAL {
			add(CheckLocalRoute, Warn, "ip -6 route del local "+p.String()+" dev lo table local; then: "+fix,
				"all of the on-link prefix %v is routed locally: this host takes its neighbours' addresses for its own and cannot reach them; route only the range locally", p)
			return
		}
	}
	switch len(notLocal) {
	case 0:
		add(CheckLocalRoute, OK, "", "the %d addresses of the range are local: one socket receives for all of them", m.Len())
	default:
		add(CheckLocalRoute, Block, fix,
			"the range's addresses (%d of on-link %v) are not all routed locally (%v is not): datagrams to them never reach the socket", m.Len(), p, notLocal[0])
	}
}

// Neighbour-table figures of a Linux router (net.ipv6.neigh.default.*,
// Documentation/networking/ip-sysctl.rst): below gc_thresh1 entries the
// garbage collector leaves the table alone; gc_thresh3 is the hard limit
// for the whole table, which every host on the link shares.
const (
	linuxGCThresh1 = 128
	linuxGCThresh3 = 1024
)

// checkOnLink reports what an on-link prefix needs: neighbour proxies for
// the range's addresses, and their cost to the upstream router's table.
func checkOnLink(cfg settings, route onLinkRoute, add addFinding) {
	p := cfg.Range.Prefix.Masked()
	m, err := rangeMapper(cfg)
	if err != nil {
		add(CheckReachability, Warn, "", "%v is on-link on %s (connected route %v, no gateway); cannot list the range's addresses: %v", p, route.Dev, route.Subnet, err)
		return
	}
	n := m.Len()
	where := fmt.Sprintf("%v is on-link on %s (connected route %v, no gateway): the upstream router looks up each address by neighbour discovery", p, route.Dev, route.Subnet)
	cost := fmt.Sprintf("each of the range's %d addresses in use takes an entry in the router's neighbour table", n)
	detail := where + ", so this host must answer for the range (neighbour proxies) and route the range, not the prefix, locally; " + cost
	addrs, err := rangeAddrs(m)
	if err != nil {
		add(CheckReachability, Block, "use a smaller range: Bits 4 (16 addresses) on a home LAN", "%s. %v", detail, err)
		return
	}
	present, missing, sysctlsOK, err := proxyState(route.Index, route.Dev, addrs)
	proxyFix := fmt.Sprintf("host.AddNeighbourProxies(%q, mapper) in the program; or by hand: sysctl -w net.ipv6.conf.%s.proxy_ndp=1 net.ipv6.conf.%s.forwarding=1 "+
		"(and accept_ra=2 where it is 1), and ip -6 neigh add proxy ADDRESS dev %s for each of the %d addresses",
		route.Dev, route.Dev, route.Dev, route.Dev, n)
	complete := err == nil && present == n && sysctlsOK

	switch {
	case !complete:
		add(CheckReachability, Warn, "add neighbour proxies (host.AddNeighbourProxies) and the local route for the range: "+rangeLocalRouteFix(m), "%s", detail)
	case n > linuxGCThresh1:
		add(CheckReachability, Warn, "use a smaller range: Bits 4 (16 addresses) on a home LAN, and spread over ports for the rest",
			"%s, and this host answers for the range; but %s: more than the %d a Linux router keeps without collecting (its whole table holds %d by default; home routers often fewer)",
			where, cost, linuxGCThresh1, linuxGCThresh3)
	default:
		add(CheckReachability, OK, "", "%s, and this host answers for the range; %s", where, cost)
	}
	switch {
	case err != nil:
		add(CheckNeighbours, Warn, proxyFix, "cannot read the proxy entries of %s: %v", route.Dev, err)
	case present == n && !sysctlsOK:
		add(CheckNeighbours, Block, proxyFix,
			"all %d addresses of the range have proxy entries on %s, but its proxy_ndp or forwarding is off: the kernel answers only with both on", n, route.Dev)
	case present < n:
		add(CheckNeighbours, Block, proxyFix,
			"%d of the %d addresses of the range have proxy entries on %s (%v has none): the upstream router's neighbour solicitations for an address without one go unanswered, so datagrams to it never arrive",
			present, n, route.Dev, missing)
	default:
		add(CheckNeighbours, OK, "", "the kernel answers neighbour discovery on %s for all %d addresses of the range (proxy entries, proxy_ndp and forwarding on)", route.Dev, n)
	}
}

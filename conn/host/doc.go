// Package host prepares and checks the host a
// [github.com/flowspread/flowspread/conn.FlowSpreadConn] runs on: the
// administration that the data path in package conn leaves out.
//
// # Check a host
//
// [Diagnose] takes the [conn.Config] you would pass to [conn.Listen] and
// says, check by check, what the host lacks and the command that fixes
// it: an IPv6 prefix routed here and made local (or an interface to
// capture it on), or an on-link one with neighbour proxies for its range,
// the capabilities the mode needs, the socket options the kernel grants,
// a free port, reverse-path filters, forwarding, the MTU. It changes
// nothing.
//
//	r := host.Diagnose(cfg)
//	fmt.Print(r) // one line per check, with a fix where one is needed
//	if r.Blocking() { ... }
//
// examples/preflight is this as a command.
//
// # One probe with Listen
//
// Diagnose does not guess what Listen will find: it sets the very socket
// options Listen sets (IPV6_FREEBIND or IPV6_TRANSPARENT, the flow label
// option, the buffers, IPV6_RECVPKTINFO, UDP GSO and GRO), with the same
// code, on a throwaway socket, and reports what the kernel refused: an
// option the kernel would refuse Listen, it refuses Diagnose too. (The
// [conn.Raw] mode's AF_PACKET socket is not opened: Diagnose checks its
// capability and interface instead.)
//
// # Local routes
//
// The default [conn.AnyIP] receive mode needs every address of the prefix
// made local, as `ip -6 route add local PREFIX dev lo` does.
// [AddLocalRoute] does it through netlink, and gives back the function
// that undoes it; [RemoveLocalRoute] deletes such a route whoever added
// it. Both need CAP_NET_ADMIN and act in the network namespace of the
// calling thread.
//
// # Hosts without a routed prefix
//
// On the usual home LAN the /64 is on-link, not routed to the host: the
// upstream router looks up each destination address with a neighbour
// solicitation, and only the owner of an address answers. [Diagnose]
// tells such a prefix (one inside a connected route, no gateway) from a
// routed one. On-link, the host needs a local route for its range (not for
// the /64, which its neighbours share) and must answer neighbour discovery
// for the range's addresses: [AddNeighbourProxies] adds one proxy entry per
// address with the kernel's own proxy NDP, turns on the link's proxy_ndp
// and forwarding (which the kernel's proxy needs), and
// [NeighbourProxies.Remove] undoes exactly that.
//
// Each address in use costs an entry in the upstream router's neighbour
// table, which all hosts on its links share: Linux's defaults
// (gc_thresh1/2/3) are 128, 512 and 1024 entries for the whole table, and
// many home routers have smaller ones. Keep the range small on a home LAN,
// 2^4 addresses, and spread over ports for the rest. AddNeighbourProxies
// refuses more than [MaxNeighbourProxies]. docs/onlink.md has the setup by
// hand, the costs, Diagnose's findings and the measurements.
//
// # Platforms
//
// Everything here needs Linux. Elsewhere Diagnose reports one blocking
// finding, and the route and neighbour proxy functions return an error
// wrapping [errors.ErrUnsupported].
package host

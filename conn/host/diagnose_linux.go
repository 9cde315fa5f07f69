package host

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/flowspread/flowspread/conn"
	"github.com/flowspread/flowspread/conn/internal/sockopt"
)

// Diagnose checks whether this host is set up for [conn.Listen] with cfg,
// and says, for each thing it checks, what it found and the command that
// fixes what is wrong. It changes nothing. It looks at the network
// namespace of the calling thread. It reads cfg's Prefix, Port (0 skips
// the port check), Receive ([conn.Raw] selects the raw mode),
// Transparent, FlowLabel, DisableGSO and DisableGRO; the peers and keys
// are no business of the host.
//
// What it checks:
//   - the configuration itself (an IPv6 prefix, a port);
//   - that IPv6 is on (net.ipv6.conf.{all,lo,IFACE}.disable_ipv6);
//   - capabilities (CapEff in /proc): CAP_NET_RAW for the raw mode,
//     CAP_NET_ADMIN or CAP_NET_RAW for IPV6_TRANSPARENT;
//   - AnyIP mode: that the kernel routes addresses of the prefix as local
//     (route lookups of its first and last addresses); raw mode: that the
//     interface exists and is up, and that the kernel neither delivers the
//     prefix locally (datagrams twice) nor forwards it (they would leave
//     again);
//   - whether the prefix is routed here or on-link: inside a connected
//     route (a subnet on an interface, no gateway), where the upstream
//     router looks each address up by neighbour discovery. On-link, it
//     says so, checks that the range's addresses (not the whole prefix,
//     which the neighbours share) are routed locally, and counts the
//     range's proxy entries and the link's proxy_ndp and forwarding (see
//     [AddNeighbourProxies]); it warns when the range would crowd the
//     router's neighbour table. A prefix that merely overlaps a subnet on
//     a link gets a warning;
//   - kernel support, by setting on a fresh socket the options Listen
//     sets, with the same code: IPV6_FREEBIND (or IP_FREEBIND) or
//     IPV6_TRANSPARENT, IPV6_FLOWINFO_SEND for a flow label, UDP GSO,
//     the socket buffers, IPV6_RECVPKTINFO and IPV6_RECVTCLASS, UDP_GRO,
//     recvmmsg(2);
//   - that the port is free;
//   - reverse-path filtering: IPv6 has no rp_filter sysctl
//     (net.ipv4.conf.*.rp_filter is IPv4 only). A firewall rule can filter
//     by reverse path (ip6tables -m rpfilter, nftables fib), dropping
//     spread sources unless the peer's prefix routes back through the
//     interface they arrived on. Diagnose cannot read the rules (that takes
//     a firewall tool); it notes when the ip6tables rpfilter match is
//     registered (/proc/net/ip6_tables_matches) or the nftables fib module
//     is loaded (/proc/modules), as a reminder to look;
//   - IPv6 forwarding, for what it means in the mode chosen.
//
// It cannot see whether the upstream network routes the prefix to this
// host; it says so.
func Diagnose(cfg conn.Config) Report { return diagnose(settingsOf(cfg)) }

func diagnose(cfg settings) Report {
	var r Report
	add := func(check string, s Severity, fix string, format string, args ...any) {
		r.Findings = append(r.Findings, Finding{Check: check, Severity: s, Detail: fmt.Sprintf(format, args...), Fix: fix})
	}
	prefixOK := cfg.Range.Prefix.IsValid() && cfg.Range.Prefix.Addr().Is6() && !cfg.Range.Prefix.Addr().Is4In6()
	raw := cfg.Interface != ""
	switch {
	case !prefixOK:
		add(CheckConfig, Block, "pass the IPv6 prefix routed to this host, e.g. -prefix 2001:db8:b::/64",
			"prefix %v is not an IPv6 prefix: spreading needs an IPv6 prefix routed to this host", cfg.Range.Prefix)
	case cfg.Port == 0:
		add(CheckConfig, Warn, "pass the port the peers send to, e.g. -port 51820",
			"no port given: the port check is skipped, and the raw mode needs the port")
	default:
		mode := "AnyIP (a local route and one UDP socket)"
		if raw {
			mode = "raw (AF_PACKET on " + cfg.Interface + ")"
		}
		add(CheckConfig, OK, "", "prefix %v, port %d, receive mode %s", cfg.Range.Prefix.Masked(), cfg.Port, mode)
	}

	ipv6OK := checkIPv6(cfg, add)
	checkCapabilities(cfg, add)
	if prefixOK && ipv6OK {
		p := cfg.Range.Prefix.Masked()
		onLink, onLinkOK := onLinkRouteFor(p)
		switch {
		case raw:
			checkRawRouting(cfg, add)
		case onLinkOK:
			// Not the whole prefix: on-link, a local route for it would
			// take the neighbours' addresses too.
			checkRangeLocalRoute(cfg, add)
		default:
			checkLocalRoute(p, add)
		}
		if v, _ := readSysctl("net/ipv6/conf/all/forwarding"); v == "1" && !raw {
			add(CheckForwarding, OK, "", "IPv6 forwarding is on; the local route takes precedence over it for the prefix")
		}
		if onLinkOK {
			checkOnLink(cfg, onLink, add)
		} else {
			checkReachability(p, add)
		}
	}
	if ipv6OK {
		checkSocketFeatures(cfg, add)
	}
	checkRPFilter(add)
	return r
}

type addFinding func(check string, s Severity, fix string, format string, args ...any)

// readSysctl reads the sysctl under /proc/sys at path, in slashes
// ("net/ipv6/conf/all/forwarding"): a dotted name would split an
// interface name that has a dot, as a VLAN's does (eth0.100).
func readSysctl(path string) (string, error) {
	b, err := os.ReadFile("/proc/sys/" + path)
	return strings.TrimSpace(string(b)), err
}

func checkIPv6(cfg settings, add addFinding) bool {
	if _, err := os.Stat("/proc/sys/net/ipv6"); err != nil {
		add(CheckIPv6, Block, "remove ipv6.disable=1 from the kernel command line and reboot",
			"IPv6 is off in this kernel (no /proc/sys/net/ipv6)")
		return false
	}
	devs := []string{"all", "lo"}
	if cfg.Interface != "" {
		devs = append(devs, cfg.Interface)
	}
	ok := true
	for _, dev := range devs {
		// sysctl(8) takes the name in slashes too, which keeps a dot in
		// an interface name whole.
		key := "net/ipv6/conf/" + dev + "/disable_ipv6"
		if !strings.Contains(dev, ".") {
			key = strings.ReplaceAll(key, "/", ".")
		}
		if v, err := readSysctl("net/ipv6/conf/" + dev + "/disable_ipv6"); err == nil && v == "1" {
			add(CheckIPv6, Block, "sysctl -w "+key+"=0", "IPv6 is disabled (%s = 1)", key)
			ok = false
		}
	}
	if ok {
		add(CheckIPv6, OK, "", "IPv6 is on")
	}
	return ok
}

// Capability numbers from linux/capability.h.
const (
	capNetAdmin = 12
	capNetRaw   = 13
)

// effectiveCaps reads the calling thread's effective capability set.
func effectiveCaps() (uint64, error) {
	b, err := os.ReadFile("/proc/thread-self/status")
	if err != nil {
		if b, err = os.ReadFile("/proc/self/status"); err != nil {
			return 0, err
		}
	}
	return parseCapEff(b)
}

// parseCapEff finds the CapEff line of a /proc status file.
func parseCapEff(status []byte) (uint64, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CapEff:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, errors.New("no CapEff line")
}

func checkCapabilities(cfg settings, add addFinding) {
	caps, err := effectiveCaps()
	if err != nil {
		add(CheckCapabilities, Warn, "", "cannot read the capabilities from /proc: %v", err)
		return
	}
	has := func(c uint) bool { return caps&(1<<c) != 0 }
	blocked := false
	if cfg.Interface != "" && !has(capNetRaw) {
		add(CheckCapabilities, Block, "run as root, or: setcap cap_net_raw+ep /path/to/program",
			"the raw receive mode opens an AF_PACKET socket, which needs CAP_NET_RAW")
		blocked = true
	}
	if cfg.Transparent && !has(capNetAdmin) && !has(capNetRaw) {
		add(CheckCapabilities, Block, "run as root, or: setcap cap_net_admin+ep /path/to/program (or leave Transparent off: FREEBIND needs no capability)",
			"IPV6_TRANSPARENT needs CAP_NET_ADMIN or CAP_NET_RAW")
		blocked = true
	}
	if blocked {
		return
	}
	if !has(capNetAdmin) {
		add(CheckCapabilities, Info, "run as root, or: setcap cap_net_admin+ep /path/to/program",
			"no CAP_NET_ADMIN: enough to run, but AddLocalRoute and route changes need it, and the socket buffers stay within net.core.rmem_max")
		return
	}
	add(CheckCapabilities, OK, "", "the capabilities this mode needs are there")
}

// prefixEnds returns the first address after the prefix's own (which is
// the subnet-router anycast address) and the last address of p.
func prefixEnds(p netip.Prefix) (first, last netip.Addr) {
	a := p.Addr().As16()
	for i := p.Bits(); i < 128; i++ {
		a[i/8] |= 0x80 >> (i % 8)
	}
	first = p.Addr()
	if p.Bits() < 128 {
		first = first.Next()
	}
	return first, netip.AddrFrom16(a)
}

// routeKind asks the kernel how it routes a: its route type (unix.RTN_*),
// and the outgoing interface's name for a unicast route.
func routeKind(a netip.Addr) (typ int, dev string, err error) {
	routes, err := netlink.RouteGet(a.AsSlice())
	if err != nil {
		return 0, "", err
	}
	if len(routes) == 0 {
		return 0, "", errors.New("no route")
	}
	if ifi, err := net.InterfaceByIndex(routes[0].LinkIndex); err == nil {
		dev = ifi.Name
	}
	return routes[0].Type, dev, nil
}

func checkLocalRoute(p netip.Prefix, add addFinding) {
	fix := "ip -6 route add local " + p.String() + " dev lo"
	first, last := prefixEnds(p)
	var notLocal []string
	for _, a := range []netip.Addr{first, last} {
		if typ, _, err := routeKind(a); err != nil || typ != unix.RTN_LOCAL {
			notLocal = append(notLocal, a.String())
		}
	}
	switch len(notLocal) {
	case 0:
		add(CheckLocalRoute, OK, "", "addresses of %v are local: one socket receives for all of them", p)
	case 2:
		add(CheckLocalRoute, Block, fix,
			"%v is not routed locally: datagrams to its addresses never reach the socket (AnyIP mode needs a local route)", p)
	default:
		add(CheckLocalRoute, Block, fix,
			"only part of %v is routed locally (%s is not): a smaller local route covers the rest", p, strings.Join(notLocal, ", "))
	}
}

func checkRawRouting(cfg settings, add addFinding) {
	p := cfg.Range.Prefix.Masked()
	link, err := netlink.LinkByName(cfg.Interface)
	switch {
	case err != nil:
		add(CheckInterface, Block, "pick an interface from: ip link show",
			"no interface %q: %v", cfg.Interface, err)
	case link.Attrs().Flags&net.FlagUp == 0:
		add(CheckInterface, Block, "ip link set "+cfg.Interface+" up", "interface %s is down", cfg.Interface)
	default:
		add(CheckInterface, OK, "", "interface %s is up", cfg.Interface)
	}
	if err == nil {
		checkRawMTU(cfg.Interface, link.Attrs().MTU, add)
	}

	first, _ := prefixEnds(p)
	typ, dev, err := routeKind(first)
	forwarding, _ := readSysctl("net/ipv6/conf/all/forwarding")
	switch {
	case err == nil && typ == unix.RTN_LOCAL:
		add(CheckLocalRoute, Warn, "ip -6 route del local "+p.String()+" dev lo table local",
			"%v is routed locally: in the raw mode the kernel also delivers every datagram to the UDP socket, so it is received twice", p)
	case err != nil || typ == unix.RTN_BLACKHOLE || typ == unix.RTN_UNREACHABLE || typ == unix.RTN_PROHIBIT:
		add(CheckLocalRoute, OK, "", "%v is not routed out: the kernel drops its packets after the raw receiver has seen them", p)
	case forwarding == "1":
		add(CheckForwarding, Warn, "ip -6 route add blackhole "+p.String(),
			"IPv6 forwarding is on and %v routes out of %s: the kernel forwards the datagrams the raw receiver reads, so they leave again", p, dev)
	default:
		add(CheckForwarding, OK, "", "IPv6 forwarding is off: the kernel drops the prefix's packets after the raw receiver has seen them")
	}
}

// wireguardOverhead is what WireGuard adds to an inner packet over IPv6:
// IPv6 and UDP headers (48) and its own header and tag (32). With
// WireGuard's default MTU of 1420 the outer datagram is 1500 bytes.
const wireguardOverhead = 80

// checkRawMTU warns when the raw interface's MTU is below what a VPN with
// the usual inner MTU sends: peers' datagrams then arrive as IPv6
// fragments (their kernels fragment after a Packet Too Big), which the
// raw receiver reassembles, but at a cost.
func checkRawMTU(ifname string, mtu int, add addFinding) {
	const usual = 1420 + wireguardOverhead
	if mtu >= usual {
		add(CheckMTU, OK, "", "interface %s has MTU %d: a VPN's datagrams of up to %d bytes (WireGuard's default inner MTU of 1420 makes 1500) arrive whole", ifname, mtu, mtu)
		return
	}
	add(CheckMTU, Warn, fmt.Sprintf("set the VPN's inner MTU to %d at both ends (WireGuard: MTU = %d in the [Interface] section, or ip link set wg0 mtu %d)", mtu-wireguardOverhead, mtu-wireguardOverhead, mtu-wireguardOverhead),
		"interface %s has MTU %d, below the %d bytes a VPN with WireGuard's default inner MTU of 1420 sends: peers' datagrams arrive as IPv6 fragments. The raw receiver reassembles them (within the limits conn.Raw documents), but each costs a copy, and one lost fragment loses the datagram",
		ifname, mtu, usual)
}

// checkReachability warns when the prefix overlaps a subnet on a link
// without lying inside a connected route (see [checkOnLink] for that), and
// says what Diagnose cannot see of a routed prefix.
func checkReachability(p netip.Prefix, add addFinding) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V6)
	if err == nil {
		for _, a := range addrs {
			ones, _ := a.IPNet.Mask.Size()
			ip, ok := netip.AddrFromSlice(a.IPNet.IP)
			if !ok || ones == 128 {
				continue
			}
			sub := netip.PrefixFrom(ip, ones).Masked()
			if !sub.Overlaps(p) {
				continue
			}
			dev := strconv.Itoa(a.LinkIndex)
			if ifi, err := net.InterfaceByIndex(a.LinkIndex); err == nil {
				dev = ifi.Name
			}
			add(CheckReachability, Warn,
				"use a prefix routed to this host (e.g. a delegated prefix), or a prefix inside the subnet with neighbour proxies for its range (host.AddNeighbourProxies; by hand: sysctl -w net.ipv6.conf."+dev+".proxy_ndp=1 net.ipv6.conf."+dev+".forwarding=1 and ip -6 neigh add proxy ADDRESS dev "+dev+" for each address)",
				"%v overlaps %v, a subnet on link %s: neighbours look each address up by neighbour discovery, and nothing answers for the spread addresses", p, sub, dev)
			return
		}
	}
	add(CheckReachability, Info, "on the upstream router: route "+p.String()+" via this host's address",
		"%v is not on-link here (no connected route holds it), so it must be routed: datagrams reach this host only if the network routes %v to it; Diagnose cannot see the upstream routers", p, p)
}

// checkSocketFeatures sets on a fresh socket the options Listen sets on
// its own, with the same functions ([sockopt.SetSend], [sockopt.SetRecv]),
// reports what the kernel refused, and binds the port to see whether it
// is free.
func checkSocketFeatures(cfg settings, add addFinding) {
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		add(CheckFreebind, Block, "", "cannot open an IPv6 UDP socket to probe the kernel: %v", err)
		return
	}
	defer unix.Close(fd)

	send, err := sockopt.SetSend(fd, sockopt.SendOptions{Transparent: cfg.Transparent, FlowLabel: cfg.FlowLabel})
	reportSend(cfg, send, err, add)
	checkBuffers(send.Buffers, add)
	// Listen reads the raw mode's unspread datagrams from the socket
	// without GRO.
	recv, err := sockopt.SetRecv(fd, cfg.Interface == "" && !cfg.DisableGRO)
	reportRecv(cfg, recv, err, add)

	if cfg.Port != 0 {
		err := unix.Bind(fd, &unix.SockaddrInet6{Port: int(cfg.Port)})
		switch {
		case errors.Is(err, unix.EADDRINUSE):
			add(CheckPort, Block, fmt.Sprintf("stop the program using it (ss -ulpn 'sport = :%d') or choose another port", cfg.Port),
				"UDP port %d is in use by another socket", cfg.Port)
		case err != nil:
			add(CheckPort, Warn, "", "cannot bind UDP port %d to check it: %v", cfg.Port, err)
		default:
			add(CheckPort, OK, "", "UDP port %d is free", cfg.Port)
		}
	}
}

// reportSend turns what [sockopt.SetSend] found into findings.
func reportSend(cfg settings, c sockopt.SendCaps, err error, add addFinding) {
	var opt *sockopt.Error
	errors.As(err, &opt)
	switch {
	case opt != nil && opt.Option == "IPV6_TRANSPARENT":
		add(CheckFreebind, Block, "run as root or grant CAP_NET_ADMIN, or leave Transparent off",
			"IPV6_TRANSPARENT refused (%v): cannot send from the prefix's addresses", opt.Err)
	case opt != nil && opt.Option == "IPV6_FREEBIND":
		add(CheckFreebind, Block, "run as root and set Transparent (IPV6_TRANSPARENT)",
			"neither IPV6_FREEBIND nor IP_FREEBIND is accepted (%v): the socket cannot send from the prefix's addresses", opt.Err)
	case err != nil && opt == nil:
		add(CheckFreebind, Block, "", "cannot set the socket's options: %v", err)
	case c.Source == sockopt.FreebindIPv4Option:
		add(CheckFreebind, OK, "", "IP_FREEBIND works (this kernel predates IPV6_FREEBIND, Linux 4.15)")
	default:
		add(CheckFreebind, OK, "", "%v works: the socket can send from any address of the prefix", c.Source)
	}
	if cfg.FlowLabel && c.Source != sockopt.NoSource {
		if opt != nil && opt.Option == "IPV6_FLOWINFO_SEND" {
			add(CheckFlowLabel, Block, "leave FlowLabel off, or use a Linux 3.7 or newer kernel",
				"IPV6_FLOWINFO_SEND refused (%v): the socket cannot set the flow label", opt.Err)
		} else {
			add(CheckFlowLabel, OK, "", "IPV6_FLOWINFO_SEND works: each datagram carries the flow label of its address pair")
		}
	}
	switch {
	case cfg.DisableGSO:
		add(CheckGSO, Info, "", "UDP GSO is off (DisableGSO): one system call per datagram")
	case c.GSOErr != nil:
		add(CheckGSO, Warn, "a Linux 4.18 or newer kernel",
			"UDP GSO (UDP_SEGMENT) unsupported (%v): sending works, one system call per datagram", c.GSOErr)
	default:
		add(CheckGSO, OK, "", "UDP GSO (UDP_SEGMENT) works: runs of one flow go out in one system call")
	}
}

// checkBuffers warns when the kernel granted smaller socket buffers than
// Listen asks for: bursts beyond them are dropped whole.
func checkBuffers(b sockopt.Buffers, add addFinding) {
	if b.Recv >= sockopt.BufferSize && b.Send >= sockopt.BufferSize {
		add(CheckBuffers, OK, "", "the socket gets the %d MiB send and receive buffers it asks for", sockopt.BufferSize>>20)
		return
	}
	add(CheckBuffers, Warn,
		fmt.Sprintf("run with CAP_NET_ADMIN (root, or setcap cap_net_admin+ep), which may exceed the limits, or raise them: sysctl -w net.core.rmem_max=%d net.core.wmem_max=%d", sockopt.BufferSize, sockopt.BufferSize),
		"the socket asks for %d KiB buffers and gets %d KiB to receive and %d KiB to send (net.core.rmem_max and wmem_max): a burst beyond them is dropped whole, which the inner TCP sees as loss",
		sockopt.BufferSize>>10, b.Recv>>10, b.Send>>10)
}

// reportRecv turns what [sockopt.SetRecv] found into findings.
func reportRecv(cfg settings, c sockopt.RecvCaps, err error, add addFinding) {
	if err != nil {
		add(CheckPacketInfo, Block, "", "%v: the socket cannot tell which address of the prefix a datagram was sent to, or its ECN", err)
		return
	}
	add(CheckPacketInfo, OK, "", "IPV6_RECVPKTINFO and IPV6_RECVTCLASS work: the socket learns which address of the prefix each datagram was sent to, and its ECN")
	if cfg.Interface == "" {
		switch {
		case cfg.DisableGRO:
			add(CheckGRO, Info, "", "UDP GRO is off (DisableGRO): one datagram at a time from the kernel")
		case c.GROErr != nil:
			add(CheckGRO, Warn, "a Linux 5.0 or newer kernel",
				"UDP GRO unsupported (%v): receiving works, one datagram at a time from the kernel", c.GROErr)
		default:
			add(CheckGRO, OK, "", "UDP GRO works: the kernel hands over runs of one flow at once")
		}
	}
	if c.BatchErr != nil {
		add(CheckBatch, Warn, "", "recvmmsg(2) is missing (%v; some sandboxes and emulators lack it): receiving works, one datagram per system call", c.BatchErr)
	} else {
		add(CheckBatch, OK, "", "recvmmsg(2) works: many datagrams per system call")
	}
}

func checkRPFilter(add addFinding) {
	var found []string
	if b, err := os.ReadFile("/proc/thread-self/net/ip6_tables_matches"); err == nil {
		for _, line := range strings.Fields(string(b)) {
			if line == "rpfilter" {
				found = append(found, "the ip6tables rpfilter match")
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/modules"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if name, _, _ := strings.Cut(line, " "); name == "nft_fib_ipv6" {
				found = append(found, "the nftables fib module (nft_fib_ipv6)")
			}
		}
	}
	if len(found) > 0 {
		// A registered match or a loaded module says nothing about rules:
		// the kernel may have it built in. Reading rules needs a firewall
		// tool, so this stays a note.
		add(CheckRPFilter, Info, "look for rules: ip6tables -t raw -S | grep rpfilter; nft list ruleset | grep fib. If one applies, route each peer's prefix back out of the interface its datagrams arrive on, or exempt the VPN port",
			"%s is available (built in or loaded); Diagnose cannot see whether a rule uses it. Such a rule drops datagrams from a peer's spread addresses unless the route back to them leaves through the interface they arrived on", strings.Join(found, " and "))
		return
	}
	add(CheckRPFilter, OK, "",
		"no IPv6 reverse-path filter is loaded (IPv6 has no rp_filter sysctl; net.ipv4.conf.*.rp_filter is IPv4 only)")
}

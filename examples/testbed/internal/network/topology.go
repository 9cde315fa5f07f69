package network

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"time"

	"github.com/flowspread/flowspread/examples/testbed/internal/load"
	"github.com/flowspread/flowspread/internal/netns"
)

// Interface names. Every namespace has its own, so they never collide
// with the host's or another run's.
const (
	clientIf       = "c0" // client, towards the router
	serverIf       = "s0" // server, towards the router
	RouterClientIf = "rc" // router, towards the client: a bottleneck
	RouterServerIf = "rs" // router, towards the server: the bottleneck of client-to-server bulk flows
	// ClientIf and ServerIf are the end hosts' links to the router,
	// where a firewall in front of a host filters what comes in.
	ClientIf = clientIf
	ServerIf = serverIf

	wireClientIf  = "wc"  // wire, facing the client
	wireRouterCIf = "wrc" // wire, facing the router on the client side
	wireServerIf  = "ws"  // wire, facing the server
	wireRouterSIf = "wrs" // wire, facing the router on the server side

	homeUpIf  = "hu" // the home router (the NAT), towards the router
	homeLANIf = "hl" // the home router, towards the client
)

// Topology is the testbed's network (see the package's doc). The client
// and server site prefixes are routed through the router, whose egress
// on rs and rc is shaped to the bottleneck rate. Options choose variants:
// an IPv4 outer path, a NAT in front of the client, a client whose
// addresses are on-link rather than routed to it.
//
// Segmentation and receive offloads are off on every link to the router,
// so the bottleneck queues MTU-sized packets as it would on a real
// 20 Mbit/s line, not 64 KiB TCP segments that take 26 ms each to send.
//
// A Topology is not safe for concurrent setup or Close; commands in its
// namespaces may run concurrently.
type Topology struct {
	Client, Server netns.Namespace
	// Router runs commands (tc) where the router is: its namespace, or
	// the router VM.
	Router Router
	// Wire is the copying wire's namespace; empty with the other kinds.
	Wire netns.Namespace

	// Home is the home router's namespace, the NAT in front of the
	// client; empty without one.
	Home netns.Namespace

	// ClientHost and ServerHost are the end hosts' own outer addresses,
	// inside ClientSite and ServerSite where the router routes a site to
	// them (not valid where it routes none).
	ClientHost, ServerHost netip.Addr
	ClientSite, ServerSite netip.Prefix
	// ClientPublic is the client's outer address as the server sees
	// it: ClientHost, or the NAT's address in front of it.
	ClientPublic netip.Addr
	// ClientSpread and ServerSpread are the prefixes a tunnel may
	// spread its outer addresses over; not valid on an IPv4 path.
	ClientSpread, ServerSpread netip.Prefix
	// Outer is the outer path's family; NAT and OnLink say whether the
	// client is behind a NAT, and whether its addresses are on-link.
	Outer       Outer
	NAT, OnLink bool

	plan       plan
	self       string          // this program, which runs the helpers
	proxyDelay *time.Duration  // Options.ProxyDelay
	routerNS   netns.Namespace // empty when the router is a VM
	wires      []*wireProcess
	made       []netns.Namespace
	routerVM   *vmRouter
	taps       []string // made in this namespace, not yet moved
}

// Router runs commands where the router is: a namespace on this machine
// ([netns.Namespace]), or the router VM.
type Router interface {
	Run(args ...string) error
	Output(args ...string) ([]byte, error)
}

var _ Router = netns.Namespace("")

// Placement says which links of the topology go through a wire.
type Placement string

const (
	WireClient Placement = "client" // the client-router link
	WireBoth   Placement = "both"   // the router-server link too
	// WireNone leaves plain veth pairs, which carry the flow hash: only
	// to show what the wire is for (the control run then fails).
	WireNone Placement = "none"
)

// WireKind says how a wire removes the flow hash.
type WireKind string

const (
	// WireClearHash is a tc program on the router's ingress that clears
	// the hash (clearhash.go): no copy, no process, no CPU.
	WireClearHash WireKind = "clear-hash"
	// WireCopy is a forwarder that copies every frame between two
	// interfaces of a wire namespace (wire.go): a fresh packet, like a
	// cable, at the price of two syscalls per frame.
	WireCopy WireKind = "copy"
)

// Options say how to build a Topology.
type Options struct {
	// Self is the path of this program, which runs the wire forwarders,
	// attaches the hash-clearing program and serves as the router VM's
	// agent.
	Self string
	// Wire says which links go through a wire, and WireKind what it is;
	// only where the router is a namespace.
	Wire     Placement
	WireKind WireKind
	// VM, when set, puts the router in a VM instead of a namespace.
	VM *VMOptions
	// Outer is the outer path's family; empty is OuterIPv6.
	Outer Outer
	// NAT puts a home router between the client and the router, which
	// masquerades the client (NAT44: Linux's nftables masquerade) from
	// a private address. Needs OuterIPv4.
	NAT bool
	// OnLink gives the client no routed prefix: its addresses, and the
	// range it spreads over, lie in the client link's /64, which the
	// router resolves by neighbour discovery, and the client answers for
	// its range with the kernel's proxy NDP. Needs OuterIPv6.
	OnLink bool
	// ProxyDelay, when set, replaces the on-link client's proxy_delay:
	// the kernel answers a multicast solicitation for a proxied address
	// after a random time up to it (0.8 s by default, RFC 4861 section
	// 7.2.7), and the router holds the first datagram to each new
	// address meanwhile. Nil keeps the kernel's.
	ProxyDelay *time.Duration
	// Progress receives one line per setup step; may be nil.
	Progress func(string)
}

// routerKind joins the client and server namespaces through a router.
type routerKind interface {
	// namespaces returns the namespaces the router needs besides the
	// client's and the server's, in the order of the path, and says
	// where the router is.
	namespaces(t *Topology) (between []netns.Namespace, where string)
	// link builds the links, addresses and routes between the hosts and
	// the router, and the wires.
	link(t *Topology, progress func(string)) error
}

// New builds the namespaces, the router, links, addresses and routes, and
// checks that the client reaches the server. On error it removes
// everything it made.
func New(opts Options) (t *Topology, err error) {
	id := netns.RandomID()
	prefix := "fstb-" + id + "-"
	t, err = Plan(opts, prefix)
	if err != nil {
		return nil, err
	}
	t.self, t.proxyDelay = opts.Self, opts.ProxyDelay
	var kind routerKind = &namespaceRouter{opts: opts, prefix: prefix}
	if opts.VM != nil {
		kind = &vmRouterKind{opts: *opts.VM, self: opts.Self, id: id}
	}
	made := t // t is nil on the error returns
	defer func() {
		if err != nil {
			made.Close()
		}
	}()
	progress := opts.Progress
	if progress == nil {
		progress = func(string) {}
	}
	between, where := kind.namespaces(t)
	if t.Home != "" {
		between = append([]netns.Namespace{t.Home}, between...)
	}
	all := append(append([]netns.Namespace{t.Client}, between...), t.Server)
	names := make([]string, len(all))
	for i, n := range all {
		names[i] = strings.TrimPrefix(string(n), prefix)
	}
	progress("creating namespaces " + prefix + "{" + strings.Join(names, ",") + "}" + where)
	for _, n := range all {
		if err := t.addNamespace(n); err != nil {
			return nil, err
		}
	}
	if err := t.linkHome(progress); err != nil {
		return nil, err
	}
	if err := kind.link(t, progress); err != nil {
		return nil, err
	}
	if err := t.proxyNeighbours(progress); err != nil {
		return nil, err
	}
	progress("checking that the client reaches the server")
	if err := t.CheckReach(t.ServerHost); err != nil {
		return nil, err
	}
	return t, nil
}

// Plan returns the topology that New builds for opts, with its
// namespaces named from prefix, without building anything: its addresses
// and names, for tests and for a caller that checks its options early.
func Plan(opts Options, prefix string) (*Topology, error) {
	p, err := newPlan(opts)
	if err != nil {
		return nil, err
	}
	t := &Topology{
		Client: netns.Namespace(prefix + "client"), Server: netns.Namespace(prefix + "server"),
		ClientHost: p.clientHost, ServerHost: p.serverHost, ClientPublic: p.clientPublic(),
		ClientSite: p.clientSite, ServerSite: p.serverSite,
		ClientSpread: p.clientSpread, ServerSpread: p.serverSpread,
		Outer: p.outer, NAT: p.nat, OnLink: p.onLink, plan: p,
	}
	if p.nat {
		t.Home = netns.Namespace(prefix + "home")
	}
	return t, nil
}

// segmentationOff are the ethtool -K arguments that turn segmentation and
// receive offloads off on a link to the router (see Topology).
var segmentationOff = []string{"tso", "off", "gso", "off", "gro", "off"}

// addNamespace makes the namespace n, to be removed by Close.
func (t *Topology) addNamespace(n netns.Namespace) error {
	if _, err := netns.Add(string(n)); err != nil {
		return err
	}
	t.made = append(t.made, n)
	// No duplicate address detection (addresses are usable at once)
	// and no router advertisements (the routes are static).
	sysctls := []string{"-q", "-w",
		"net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0",
		"net.ipv6.conf.all.accept_ra=0", "net.ipv6.conf.default.accept_ra=0"}
	switch n {
	case t.routerNS:
		sysctls = append(sysctls, t.plan.forwardingSysctls()...)
	case t.Home:
		sysctls = append(sysctls, "net.ipv4.ip_forward=1")
	case t.Wire:
		// The wire is a cable: its own stack must neither send
		// (neighbour solicitations, MLD reports) nor answer.
		sysctls = append(sysctls, "net.ipv6.conf.default.disable_ipv6=1", "net.ipv6.conf.all.disable_ipv6=1")
	}
	return n.Run(append([]string{"sysctl"}, sysctls...)...)
}

// CheckReach proves that the client reaches to on the server, through the
// wire and the router (and a tunnel, for a tunnel's address), by a UDP
// exchange with irtt (already a dependency, unlike ping). The first
// packets also resolve the neighbours on every link.
func (t *Topology) CheckReach(to netip.Addr) error {
	server := netip.AddrPortFrom(to, load.IrttPort+9)
	srv, err := load.StartIrttServer(t.Server, server)
	if err != nil {
		return err
	}
	defer srv.Stop()
	var lastErr error
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		p, err := load.RunIrtt(ctx, t.Client, server, 50*time.Millisecond, time.Second)
		cancel()
		if err == nil && len(p.RTTms) > 0 {
			return nil
		}
		lastErr = err
		if err == nil {
			lastErr = errors.New("no probe was answered")
		}
	}
	return fmt.Errorf("the client cannot reach the server (%s) through the wire and the router: %w", to, lastErr)
}

// WireStats returns the counters of every wire since it started.
func (t *Topology) WireStats() ([]WireStats, error) {
	var all []WireStats
	for _, w := range t.wires {
		s, err := w.stats()
		if err != nil {
			return all, err
		}
		all = append(all, s)
	}
	return all, nil
}

// Close stops the wires and the router VM and deletes the namespaces,
// which removes every interface in them. It reports the first failure
// but always tries all.
func (t *Topology) Close() error {
	var errs []error
	for _, w := range t.wires {
		if _, err := w.stop(); err != nil {
			errs = append(errs, err)
		}
	}
	t.wires = nil
	if t.routerVM != nil {
		if err := t.routerVM.stop(); err != nil {
			errs = append(errs, err)
		}
		t.routerVM = nil
	}
	for _, tap := range t.taps {
		if out, err := exec.Command("ip", "link", "del", tap).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("ip link del %s: %w: %s", tap, err, bytes.TrimSpace(out)))
		}
	}
	t.taps = nil
	for _, n := range t.made {
		if err := n.Delete(); err != nil {
			errs = append(errs, err)
		}
	}
	t.made = nil
	return errors.Join(errs...)
}

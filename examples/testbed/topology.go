package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"time"
)

// netns is a network namespace made with `ip netns add`, by name.
type netns string

// command returns an unstarted command that runs args inside n.
func (n netns) command(args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", string(n)}, args...)...)
}

// commandContext is command, killed when ctx ends.
func (n netns) commandContext(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", string(n)}, args...)...)
	// `ip netns exec` replaces itself with the program, so this signal
	// reaches the program, which gets a chance to print its results.
	cmd.Cancel = func() error { return cmd.Process.Signal(interruptSignal) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// run runs args inside n; the error carries the command and its output.
func (n netns) run(args ...string) error {
	out, err := n.command(args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("in namespace %s: %s: %w: %s", n, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// output runs args inside n and returns its stdout.
func (n netns) output(args ...string) ([]byte, error) {
	cmd := n.command(args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("in namespace %s: %s: %w: %s", n, strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}

// ipBatch runs iproute2 commands (one per line, without the leading "ip")
// in n with a single process: under the VM's emulation every process
// start costs a tenth of a second.
func (n netns) ipBatch(lines ...string) error {
	cmd := exec.Command("ip", "-n", string(n), "-batch", "-")
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("in namespace %s: ip -batch: %w: %s\ncommands:\n%s", n, err, bytes.TrimSpace(out), strings.Join(lines, "\n"))
	}
	return nil
}

// The address plan, all inside the documentation prefix 2001:db8::/32
// (RFC 3849). Each end host has a site prefix routed to it through the
// router, as a delegated prefix would be: a tunnel that spreads its outer
// flows over many addresses takes them from there.
var (
	clientSite = netip.MustParsePrefix("2001:db8:a::/48")
	serverSite = netip.MustParsePrefix("2001:db8:b::/48")
	clientHost = netip.MustParseAddr("2001:db8:a::1") // on the client's lo
	serverHost = netip.MustParseAddr("2001:db8:b::1") // on the server's lo

	clientLinkNet    = netip.MustParsePrefix("2001:db8:0:1::/64")
	routerClientAddr = netip.MustParseAddr("2001:db8:0:1::1")
	clientLinkAddr   = netip.MustParseAddr("2001:db8:0:1::2")
	serverLinkNet    = netip.MustParsePrefix("2001:db8:0:2::/64")
	routerServerAddr = netip.MustParseAddr("2001:db8:0:2::1")
	serverLinkAddr   = netip.MustParseAddr("2001:db8:0:2::2")
)

// Interface names. Every namespace has its own, so they never collide
// with the host's or another run's.
const (
	clientIf       = "c0"  // client, towards the router
	serverIf       = "s0"  // server, towards the router
	routerClientIf = "rc"  // router, towards the client: a bottleneck
	routerServerIf = "rs"  // router, towards the server: the bottleneck of client-to-server bulk flows
	wireClientIf   = "wc"  // wire, facing the client
	wireRouterCIf  = "wrc" // wire, facing the router on the client side
	wireServerIf   = "ws"  // wire, facing the server
	wireRouterSIf  = "wrs" // wire, facing the router on the server side
)

// Topology is the testbed's network: namespaces in a line,
//
//	client ==c0--rc== router ==rs--s0== server
//
// The client and server site prefixes are routed through the router, whose
// egress on rs and rc is shaped to the bottleneck rate. Between the hosts
// and the router sits a wire that hands the router packets without the
// flow hash (skb->hash) the sender's kernel attached, as a real link does:
// a veth pair alone carries that hash across namespaces, and the router
// would then isolate flows it could not tell apart on a real network. The
// wire is one of two kinds (wireKind): a tc program on the router's
// ingress that clears the hash (the default, free), or a forwarder in a
// fourth namespace that copies every frame into a fresh packet,
//
//	client ==c0--wc== wire ==wrc--rc== router ==rs--ws== wire ==wrs--s0== server
//
// With wireBoth the router-server link has a wire too; with wireNone there
// is none (a diagnostic: the control then shows the leak).
//
// Segmentation and receive offloads are off on every link to the router,
// so the bottleneck queues MTU-sized packets as it would on a real
// 20 Mbit/s line, not 64 KiB TCP segments that take 26 ms each to send.
//
// A Topology is not safe for concurrent setup or Close; commands in its
// namespaces may run concurrently.
type Topology struct {
	// Router is empty when the router is a VM (newRouterVMTopology).
	Client, Router, Server netns
	// RouterCtl runs commands (tc) where the router is: Router, or the
	// router VM.
	RouterCtl commander
	// Wire is the copying wire's namespace; empty with the other kinds.
	Wire netns

	// ClientHost and ServerHost are the end hosts' own addresses, inside
	// ClientSite and ServerSite, which the router routes to them.
	ClientHost, ServerHost netip.Addr
	ClientSite, ServerSite netip.Prefix

	wires    []*wireProcess
	made     []netns
	routerVM *vmRouter
	taps     []string // made in this namespace, not yet moved
}

// wirePlacement says which links of the topology go through a wire.
type wirePlacement string

const (
	wireClient wirePlacement = "client" // the client-router link
	wireBoth   wirePlacement = "both"   // the router-server link too
	// wireNone leaves plain veth pairs, which carry the flow hash: only
	// to show what the wire is for (the control run then fails).
	wireNone wirePlacement = "none"
)

// wireKind says how a wire removes the flow hash.
type wireKind string

const (
	// wireClearHash is a tc program on the router's ingress that clears
	// the hash (clearhash.go): no copy, no process, no CPU.
	wireClearHash wireKind = "clear-hash"
	// wireCopy is a forwarder that copies every frame between two
	// interfaces of a wire namespace (wire.go): a fresh packet, like a
	// cable, at the price of two syscalls per frame.
	wireCopy wireKind = "copy"
)

// topologyOptions says how to build a Topology.
type topologyOptions struct {
	// Self is the path of this program, which runs the wire forwarders
	// and attaches the hash-clearing program.
	Self string
	// Wire says which links go through a wire, and WireKind what it is.
	Wire     wirePlacement
	WireKind wireKind
	// Progress receives one line per setup step; may be nil.
	Progress func(string)
}

// newTopology builds the namespaces, links, addresses and routes, sets up
// the wires and checks that the client reaches the server. On error it
// removes everything it made.
func newTopology(opts topologyOptions) (t *Topology, err error) {
	var suffix [3]byte
	rand.Read(suffix[:])
	prefix := "fstb-" + hex.EncodeToString(suffix[:]) + "-"
	copying := opts.Wire != wireNone && opts.WireKind == wireCopy
	t = &Topology{
		Client: netns(prefix + "client"), Router: netns(prefix + "router"), Server: netns(prefix + "server"),
		ClientHost: clientHost, ServerHost: serverHost,
		ClientSite: clientSite, ServerSite: serverSite,
	}
	t.RouterCtl = t.Router
	all := []netns{t.Client, t.Router, t.Server}
	names := prefix + "{client,router,server}"
	if copying {
		t.Wire = netns(prefix + "wire")
		all = []netns{t.Client, t.Wire, t.Router, t.Server}
		names = prefix + "{client,wire,router,server}"
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

	progress("creating namespaces " + names)
	for _, n := range all {
		if err := t.addNamespace(n); err != nil {
			return nil, err
		}
	}

	progress("linking " + strings.ReplaceAll(strings.Trim(names[len(prefix):], "{}"), ",", "-"))
	clientPeer, clientPeerNs := routerClientIf, t.Router
	if copying {
		clientPeer, clientPeerNs = wireClientIf, t.Wire
	}
	if err := t.Client.ipBatch(append([]string{
		"link add " + clientIf + " type veth peer name " + clientPeer + " netns " + string(clientPeerNs)},
		clientLinkCommands()...)...); err != nil {
		return nil, err
	}
	serverPeer, serverPeerNs := routerServerIf, t.Router
	if copying && opts.Wire == wireBoth {
		serverPeer, serverPeerNs = wireServerIf, t.Wire
	}
	if err := t.Server.ipBatch(append([]string{
		"link add " + serverIf + " type veth peer name " + serverPeer + " netns " + string(serverPeerNs)},
		serverLinkCommands()...)...); err != nil {
		return nil, err
	}
	if copying {
		wireCmds := []string{"link set lo up",
			"link add " + wireRouterCIf + " type veth peer name " + routerClientIf + " netns " + string(t.Router),
			"link set " + wireClientIf + " up promisc on",
			"link set " + wireRouterCIf + " up promisc on"}
		if opts.Wire == wireBoth {
			wireCmds = append(wireCmds,
				"link add "+wireRouterSIf+" type veth peer name "+routerServerIf+" netns "+string(t.Router),
				"link set "+wireServerIf+" up promisc on",
				"link set "+wireRouterSIf+" up promisc on")
		}
		if err := t.Wire.ipBatch(wireCmds...); err != nil {
			return nil, err
		}
	}
	if err := t.Router.ipBatch(routerLinkCommands()...); err != nil {
		return nil, err
	}

	progress("turning segmentation offloads off on the links to the router")
	// MTU-sized packets at the bottleneck (see Topology). Around the
	// copying wire, transmit checksum offload goes too: a frame can cross
	// a veth with its checksum not yet filled in (CHECKSUM_PARTIAL), and
	// the copy would carry it unfinished.
	features := slices.Clone(segmentationOff)
	offloads := map[netns][]string{
		t.Client: {clientIf},
		t.Router: {routerClientIf, routerServerIf},
		t.Server: {serverIf},
	}
	if copying {
		features = append(features, "tx", "off")
		offloads[t.Wire] = []string{wireClientIf, wireRouterCIf}
		if opts.Wire == wireBoth {
			offloads[t.Wire] = append(offloads[t.Wire], wireServerIf, wireRouterSIf)
		}
	}
	for n, ifs := range offloads {
		for _, ifname := range ifs {
			if err := n.run(append([]string{"ethtool", "-K", ifname}, features...)...); err != nil {
				return nil, err
			}
		}
	}

	switch {
	case opts.Wire == wireNone:
	case copying:
		progress("starting the wire forwarder")
		w, err := startWire(t.Wire, opts.Self, wireClientIf, wireRouterCIf)
		if err != nil {
			return nil, err
		}
		t.wires = append(t.wires, w)
		if opts.Wire == wireBoth {
			w, err := startWire(t.Wire, opts.Self, wireServerIf, wireRouterSIf)
			if err != nil {
				return nil, err
			}
			t.wires = append(t.wires, w)
		}
	default:
		ifs := []string{routerClientIf}
		if opts.Wire == wireBoth {
			ifs = append(ifs, routerServerIf)
		}
		progress("clearing the flow hash at the router's ingress on " + strings.Join(ifs, ", "))
		if err := t.Router.run(append([]string{opts.Self, "clear-hash"}, ifs...)...); err != nil {
			return nil, fmt.Errorf("the hash-clearing wire (-wire-kind copy needs no BPF): %w", err)
		}
	}

	progress("checking that the client reaches the server")
	if err := t.checkReach(t.Client, t.ServerHost); err != nil {
		return nil, err
	}
	return t, nil
}

// segmentationOff are the ethtool -K arguments that turn segmentation and
// receive offloads off on a link to the router (see Topology).
var segmentationOff = []string{"tso", "off", "gso", "off", "gro", "off"}

// addNamespace makes the namespace n, to be removed by Close.
func (t *Topology) addNamespace(n netns) error {
	if out, err := exec.Command("ip", "netns", "add", string(n)).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns add %s: %w: %s", n, err, bytes.TrimSpace(out))
	}
	t.made = append(t.made, n)
	// No duplicate address detection (addresses are usable at once)
	// and no router advertisements (the routes are static).
	sysctls := []string{"-q", "-w",
		"net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0",
		"net.ipv6.conf.all.accept_ra=0", "net.ipv6.conf.default.accept_ra=0"}
	switch n {
	case t.Router:
		sysctls = append(sysctls, "net.ipv6.conf.all.forwarding=1")
	case t.Wire:
		// The wire is a cable: its own stack must neither send
		// (neighbour solicitations, MLD reports) nor answer.
		sysctls = append(sysctls, "net.ipv6.conf.default.disable_ipv6=1", "net.ipv6.conf.all.disable_ipv6=1")
	}
	return n.run(append([]string{"sysctl"}, sysctls...)...)
}

// clientLinkCommands configure the client once its link c0 exists (ip
// -batch lines).
func clientLinkCommands() []string {
	return []string{
		"link set lo up",
		"link set " + clientIf + " up",
		"addr add " + clientHost.String() + "/128 dev lo nodad",
		"addr add " + clientLinkAddr.String() + "/64 dev " + clientIf + " nodad",
		// The host's own address is the source of everything it sends,
		// as on a site that got its prefix delegated.
		"route add default via " + routerClientAddr.String() + " dev " + clientIf + " src " + clientHost.String(),
	}
}

// serverLinkCommands configure the server once its link s0 exists.
func serverLinkCommands() []string {
	return []string{
		"link set lo up",
		"link set " + serverIf + " up",
		"addr add " + serverHost.String() + "/128 dev lo nodad",
		"addr add " + serverLinkAddr.String() + "/64 dev " + serverIf + " nodad",
		"route add default via " + routerServerAddr.String() + " dev " + serverIf + " src " + serverHost.String(),
	}
}

// routerLinkCommands configure the router once its links rc and rs exist,
// in a namespace or in the router VM.
func routerLinkCommands() []string {
	return []string{
		"link set lo up",
		"link set " + routerClientIf + " up",
		"link set " + routerServerIf + " up",
		"addr add " + routerClientAddr.String() + "/64 dev " + routerClientIf + " nodad",
		"addr add " + routerServerAddr.String() + "/64 dev " + routerServerIf + " nodad",
		"route add " + clientSite.String() + " via " + clientLinkAddr.String() + " dev " + routerClientIf,
		"route add " + serverSite.String() + " via " + serverLinkAddr.String() + " dev " + routerServerIf,
	}
}

// checkReach proves that from reaches to, through the wire and the router,
// by a UDP exchange with irtt (already a dependency, unlike ping). The
// first packets also resolve the neighbours on every link.
func (t *Topology) checkReach(from netns, to netip.Addr) error {
	srv, err := startIrttServer(t.Server, netip.AddrPortFrom(to, irttPort+9))
	if err != nil {
		return err
	}
	defer srv.stop()
	var lastErr error
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		p, err := runIrtt(ctx, from, netip.AddrPortFrom(to, irttPort+9), 50*time.Millisecond, time.Second)
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
func (t *Topology) WireStats() ([]wireStats, error) {
	var all []wireStats
	for _, w := range t.wires {
		s, err := w.stats()
		if err != nil {
			return all, err
		}
		all = append(all, s)
	}
	return all, nil
}

// Close stops the wires and deletes the namespaces, which removes every
// interface in them. It reports the first failure but always tries all.
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
		// Processes still running in a namespace keep it alive after
		// `ip netns del`; kill them first.
		if out, _ := exec.Command("ip", "netns", "pids", string(n)).Output(); len(bytes.TrimSpace(out)) > 0 {
			exec.Command("kill", append([]string{"-KILL"}, strings.Fields(string(out))...)...).Run()
		}
		if out, err := exec.Command("ip", "netns", "del", string(n)).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("ip netns del %s: %w: %s", n, err, bytes.TrimSpace(out)))
		}
	}
	t.made = nil
	return errors.Join(errs...)
}

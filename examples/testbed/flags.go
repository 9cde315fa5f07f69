package main

import (
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/flowspread/flowspread/examples/testbed/internal/network"
	"github.com/flowspread/flowspread/examples/testbed/internal/shaping"
	"github.com/flowspread/flowspread/examples/testbed/internal/tunnel"
)

// flagText holds the flags that parseFlags checks before they go into
// the config.
type flagText struct {
	qdisc, modes, wire, wireKind, firewall, outer, dimension string
	serverPrefix                                             bool
	// dimensionGiven: -dimension was on the command line; without it an
	// IPv4 outer path spreads over ports, the one dimension it allows.
	dimensionGiven bool
}

// parseFlags reads the command line into a config and checks it.
func parseFlags(args []string, stderr io.Writer) (*config, error) {
	fs := flag.NewFlagSet("testbed", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg, text := defineFlags(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (flags only; see -help)", fs.Arg(0))
	}
	fs.Visit(func(f *flag.Flag) { text.dimensionGiven = text.dimensionGiven || f.Name == "dimension" })
	if err := cfg.setChoices(text); err != nil {
		return nil, err
	}
	return cfg, cfg.check()
}

// defineFlags defines the flags of fs into a config.
func defineFlags(fs *flag.FlagSet) (*config, *flagText) {
	cfg, text := &config{}, &flagText{}
	fs.StringVar(&text.qdisc, "qdisc", string(shaping.FQCodel), "bottleneck qdisc: fq_codel (under HTB), cake-flows, cake-triple, cake-dual-srchost, cake-dual-dsthost (cake fair between hosts by address first: source or destination), or fifo (the control with no isolation)")
	fs.Float64Var(&cfg.RateMbit, "rate", 20, "bottleneck rate in Mbit/s, each way")
	fs.DurationVar(&cfg.Duration, "d", 20*time.Second, "measured time of each mode, cut into -rounds rounds (the whole, not each round's)")
	fs.IntVar(&cfg.Rounds, "rounds", 3, "rounds each mode's measured time is cut into: the latency verdict is judged in each round, with fresh probes, and reported with its spread across them")
	fs.DurationVar(&cfg.Omit, "warmup", 2*time.Second, "warm-up before each mode's measured time, left out of the results")
	fs.IntVar(&cfg.InnerFlows, "n", 4, "bulk TCP flows in the tunnel's position (inside it, when there is one)")
	fs.IntVar(&cfg.OuterFlows, "m", 4, "bulk TCP flows outside the tunnel")
	fs.DurationVar(&cfg.ProbeInterval, "probe", 10*time.Millisecond, "interval of the irtt latency probes")
	fs.DurationVar(&cfg.Idle, "idle", 3*time.Second, "probe both paths for this long before each mode's load, to measure each path's own delay with no queue (what the tunnel itself costs); 0 skips it")
	fs.StringVar(&text.modes, "modes", strings.Join(modeNames(), ","), "modes to run, in order, comma-separated")
	fs.StringVar(&cfg.OutDir, "out", "testbed-results", "directory for results.json and the plots")
	fs.StringVar(&text.wire, "wire", string(network.WireBoth), "where the hash-clearing wire sits: both (client-router and router-server links), client (the client-router link only: ACKs and probe replies then reach the router with the server's hash), or none (plain veths, which leak the flow hash: a diagnostic the control run fails); only where the router is a namespace, not with the router in a VM, whose network cards are real wires")
	fs.StringVar(&text.wireKind, "wire-kind", string(network.WireClearHash), "what the wire is: clear-hash (a tc program on the router's ingress clears the flow hash; free) or copy (a forwarder copies every frame into a fresh packet, as a cable does; costs a CPU under emulation)")
	fs.BoolVar(&cfg.Plots, "plots", true, "draw latency-cdf.png and throughput.png")
	fs.StringVar(&cfg.VM, "vm", "auto", "where to use a VM with Debian's stock kernel: router (only the router in the VM; the hosts, tunnels and loads here), always (everything in the VM), never, or auto (router when this kernel lacks the qdisc, always when it lacks only WireGuard for the control)")
	fs.StringVar(&cfg.VMRunner, "vm-runner", "", "path of scripts/vm (default: found from the working directory)")
	fs.IntVar(&cfg.VMMemMB, "vm-mem", 2048, "VM memory in MiB")
	fs.BoolVar(&cfg.RequireTargets, "require-targets", false, "exit with status 1 also when the spread mode ran and missed its targets (inner probe's p99 within 2 ms of the outer's over the same instants, Jain >= 0.95), or the one-flow mode ran and was not squeezed; with status 3 when the host was too busy to judge the latency (inconclusive: close other work and rerun)")
	fs.BoolVar(&cfg.LatencyTarget, "latency-target", true, "with -require-targets, require the spread mode's latency target too; false reports it without requiring it (under software emulation each pass through a user-space tunnel end costs about half a millisecond with no load, and a round trip makes four: more than the target allows)")
	fs.StringVar(&cfg.VPN, "vpn", vpnFlowtun, "the VPN of the one-flow and spread modes: flowtun (examples/flowtun), or wireguard (examples/wgspread: wireguard-go with its own StdNetBind for one-flow, spreading for spread)")
	fs.StringVar(&cfg.Flowtun, "flowtun", "", "path of a built examples/flowtun for the one-flow and spread modes with -vpn flowtun (default: go build it into -out)")
	fs.StringVar(&cfg.Wgspread, "wgspread", "", "path of a built examples/wgspread for the one-flow and spread modes with -vpn wireguard (default: go build it into -out)")
	fs.StringVar(&text.firewall, "firewall", firewallNone, "stateful firewalls (nftables, RFC 6092 style: replies, ICMPv6 and the VPN's port let in, the rest dropped) in front of: none, client, or both ends; behind one, flowtun or wgspread learns each flow's path instead of -open and keeps the canonical pair open with a 25 s keepalive (flowtun -keepalive, WireGuard's persistent keepalive)")
	fs.BoolVar(&cfg.Open, "open", false, "run flowtun or wgspread -open even behind a firewall: each flow on its own address pair at once, which shows the flows a firewall black-holes (with -firewall none flowtun always runs -open)")
	fs.BoolVar(&cfg.IdleCheck, "idle-check", false, "in each mode with a tunnel, leave a TCP connection through it idle "+idleCheckTime.String()+" (past conntrack's 30 s UDP timeout), then send a segment from each end, and count the retransmissions")
	fs.StringVar(&text.outer, "outer", string(network.OuterIPv6), "the outer path's family: ipv6 (sites routed to the hosts in 2001:db8::/32), or ipv4 (TEST-NET links, no prefix routed to a host: the spread mode spreads over ports only)")
	fs.BoolVar(&cfg.NAT, "nat", false, "put a home router that masquerades the client (NAT44, nftables masquerade) between the client and the router, the client on 10.0.0.0/24; needs -outer ipv4")
	fs.BoolVar(&cfg.OnLink, "onlink", false, "give the client no routed prefix: it spreads inside the /64 of its link to the router, which finds each address by neighbour discovery, and answers for its range with the kernel's proxy NDP; the router's neighbour entries on that link are counted after each mode (IPv6 only)")
	fs.DurationVar(&cfg.ProxyDelay, "proxy-delay", -1, "with -onlink, the client's net.ipv6.neigh.c0.proxy_delay: its kernel answers a solicitation for a range address after a random wait up to this, and the router holds the first datagram to each new address meanwhile, so each inner flow starts that much late and its measured seconds run past the outside flows'; negative keeps the kernel's 0.8 s, 0 answers at once")
	fs.StringVar(&text.dimension, "dimension", tunnel.DimensionAddresses, "what the spread mode spreads each inner flow over: addresses (outer address pairs), ports (outer source ports, from one address: one host at a host-fair qdisc) or both; -outer ipv4 allows only ports, its default")
	fs.BoolVar(&text.serverPrefix, "server-prefix", true, "give the server a spread prefix; false gives it one address, which the client spreads towards from its range (flowtun -spread src on the client, -spread dst on the server)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `usage: testbed [flags]

Measures how a VPN's inner flows fare at a flow-queueing bottleneck: bulk
TCP flows (iperf3) and a latency probe (irtt) inside and outside a tunnel,
through a router that shapes with fq_codel, cake or a FIFO. Needs root.
Modes: %s.

`, strings.Join(modeNames(), ", "))
		fs.PrintDefaults()
	}
	return cfg, text
}

// setChoices reads the flags that name one of a few choices.
func (cfg *config) setChoices(text *flagText) error {
	var err error
	if cfg.Qdisc, err = shaping.ParseKind(text.qdisc); err != nil {
		return err
	}
	switch w := network.Placement(text.wire); w {
	case network.WireClient, network.WireBoth, network.WireNone:
		cfg.Wire = w
	default:
		return fmt.Errorf("-wire %q: want client, both or none", text.wire)
	}
	switch k := network.WireKind(text.wireKind); k {
	case network.WireClearHash, network.WireCopy:
		cfg.WireKind = k
	default:
		return fmt.Errorf("-wire-kind %q: want clear-hash or copy", text.wireKind)
	}
	switch cfg.VPN {
	case vpnFlowtun, vpnWireGuard:
	default:
		return fmt.Errorf("-vpn %q: want flowtun or wireguard", cfg.VPN)
	}
	switch cfg.VM {
	case "auto", "always", "never", "router":
	default:
		return fmt.Errorf("-vm %q: want auto, router, always or never", cfg.VM)
	}
	switch text.firewall {
	case firewallNone, firewallClient, firewallBoth:
		cfg.Firewall = text.firewall
	default:
		return fmt.Errorf("-firewall %q: want none, client or both", text.firewall)
	}
	cfg.ServerSingle = !text.serverPrefix
	if err := cfg.setTopology(text); err != nil {
		return err
	}
	for _, name := range strings.Split(text.modes, ",") {
		name = strings.TrimSpace(name)
		if _, ok := findMode(name); !ok {
			return fmt.Errorf("unknown mode %q: want some of %s", name, strings.Join(modeNames(), ","))
		}
		if slices.Contains(cfg.Modes, name) {
			return fmt.Errorf("mode %q listed twice", name)
		}
		cfg.Modes = append(cfg.Modes, name)
	}
	return nil
}

// setTopology reads -outer and -dimension.
func (cfg *config) setTopology(text *flagText) error {
	switch o := network.Outer(text.outer); o {
	case network.OuterIPv6, network.OuterIPv4:
		cfg.Outer = o
	default:
		return fmt.Errorf("-outer %q: want ipv6 or ipv4", text.outer)
	}
	if cfg.Outer == network.OuterIPv4 && !text.dimensionGiven {
		text.dimension = tunnel.DimensionPorts
	}
	switch text.dimension {
	case tunnel.DimensionAddresses, tunnel.DimensionPorts, tunnel.DimensionBoth:
		cfg.Dimension = text.dimension
	default:
		return fmt.Errorf("-dimension %q: want addresses, ports or both", text.dimension)
	}
	return nil
}

// check checks the numbers of cfg.
func (cfg *config) check() error {
	switch {
	case cfg.RateMbit <= 0 || cfg.RateMbit > 10000:
		return fmt.Errorf("-rate %g: want a rate in Mbit/s above 0 and at most 10000", cfg.RateMbit)
	case cfg.Duration < 2*time.Second:
		return fmt.Errorf("-d %v: want at least 2s", cfg.Duration)
	case cfg.Rounds < 1 || cfg.Rounds > 20:
		return fmt.Errorf("-rounds %d: want 1 to 20", cfg.Rounds)
	case cfg.Duration-time.Second < time.Duration(cfg.Rounds)*time.Second:
		return fmt.Errorf("-d %v with -rounds %d: want at least 1s of probes a round, and the probes stop 1s before the load: -d at least %v", cfg.Duration, cfg.Rounds, time.Duration(cfg.Rounds+1)*time.Second)
	case cfg.Omit < 0:
		return fmt.Errorf("-warmup %v: want 0 or more", cfg.Omit)
	case cfg.InnerFlows < 1 || cfg.InnerFlows > 64:
		return fmt.Errorf("-n %d: want 1 to 64 flows", cfg.InnerFlows)
	case cfg.OuterFlows < 0 || cfg.OuterFlows > 64:
		return fmt.Errorf("-m %d: want 0 to 64 flows", cfg.OuterFlows)
	case cfg.ProbeInterval < time.Millisecond:
		return fmt.Errorf("-probe %v: want at least 1ms", cfg.ProbeInterval)
	case cfg.Idle != 0 && cfg.Idle < time.Second:
		return fmt.Errorf("-idle %v: want 0 (skip) or at least 1s", cfg.Idle)
	case cfg.VMMemMB < 512:
		return fmt.Errorf("-vm-mem %d: want at least 512 MiB", cfg.VMMemMB)
	case cfg.VPN != vpnFlowtun && cfg.ServerSingle:
		return fmt.Errorf("-server-prefix=false is flowtun's: it needs -vpn flowtun")
	case cfg.IdleCheck && !usesTunnelProgram(cfg):
		return fmt.Errorf("-idle-check needs a mode with flowtun's tunnel (one-flow or spread) in -modes")
	}
	return cfg.checkTopology()
}

// checkTopology checks that the topology flags and the dimension fit
// together.
func (cfg *config) checkTopology() error {
	switch {
	case cfg.NAT && cfg.Outer != network.OuterIPv4:
		return fmt.Errorf("-nat is a NAT44: it needs -outer ipv4")
	case cfg.ProxyDelay >= 0 && !cfg.OnLink:
		return fmt.Errorf("-proxy-delay is the on-link client's: give -onlink too")
	case cfg.OnLink && cfg.Outer != network.OuterIPv6:
		return fmt.Errorf("-onlink is an IPv6 topology (neighbour discovery): it cannot run with -outer ipv4")
	case cfg.Outer == network.OuterIPv4 && cfg.Dimension != tunnel.DimensionPorts:
		return fmt.Errorf("-outer ipv4 routes no prefix to a host, so the spread mode can spread only over ports: give -dimension ports")
	case cfg.Dimension != tunnel.DimensionAddresses && cfg.VPN != vpnFlowtun && slices.Contains(cfg.Modes, "spread"):
		return fmt.Errorf("-dimension %s is flowtun's for now: wgspread spreads over addresses only (give -vpn flowtun)", cfg.Dimension)
	case cfg.Dimension == tunnel.DimensionPorts && cfg.ServerSingle:
		return fmt.Errorf("-server-prefix=false is implied by -dimension ports (the server keeps one address and one port): drop it")
	}
	return nil
}

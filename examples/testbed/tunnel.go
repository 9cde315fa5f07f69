package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Tunnel is a VPN under test, brought up between the client and the
// server namespaces of a Topology for one mode and torn down after it.
// This is the seam where examples/flowtun plugs in: its one-outer-flow and
// spreading modes are Tunnels, as kernel WireGuard is for the control.
type Tunnel interface {
	// Start brings the tunnel up and returns the inner path: the
	// addresses that traffic inside the tunnel uses, reachable through it
	// once Start returns (routes included). The tunnel's outer packets
	// must leave the client from addresses inside topo.ClientSite towards
	// addresses inside topo.ServerSite, so that they cross the wire and
	// the router's bottleneck. Processes it starts must end when ctx is
	// done or Stop is called.
	Start(ctx context.Context, topo *Topology) (InnerPath, error)
	// Stop tears the tunnel down, leaving the topology as Start found it.
	Stop() error
}

// InnerPath is where the loads inside a tunnel go: from Client, on the
// client namespace, to Server, on the server namespace.
type InnerPath struct {
	Client, Server netip.Addr
}

// mode is one row of the experiment.
type mode struct {
	Name string
	// Describe says what the mode is, for the report.
	Describe string
	// DescribeWireGuard replaces Describe when -vpn wireguard runs the
	// mode's tunnel with wgspread instead of flowtun.
	DescribeWireGuard string
	// NewTunnel returns the tunnel of this mode, or nil for no tunnel
	// (the loads go straight from client to server). An error says why
	// the mode cannot run here; the row is then skipped, with the reason.
	NewTunnel func(cfg *config) (Tunnel, error)
	// Squeezed says what the router must see: true when the tunnel's
	// flows are one outer flow and so must get about one flow's share.
	Squeezed bool
	// Control marks the mode that proves the wire: kernel WireGuard must be
	// squeezed, or the wire leaks the flow hash and every row is invalid.
	Control bool
}

// modes lists every mode, in the order they run.
var modes = []mode{
	{
		Name:     "direct",
		Describe: "no tunnel: every bulk flow and both probes go straight from client to server",
	},
	{
		Name:              "one-flow",
		Describe:          "flowtun without spreading: the inner flows share one outer flow",
		DescribeWireGuard: "WireGuard (wgspread -stock-bind: wireguard-go's own StdNetBind) without spreading: the inner flows share one outer flow",
		NewTunnel:         func(cfg *config) (Tunnel, error) { return newTunnelProgram(cfg, false) },
		Squeezed:          true,
	},
	{
		Name:              "spread",
		Describe:          "flowtun spreading each inner flow over its own outer address pair",
		DescribeWireGuard: "WireGuard (wgspread) spreading each inner flow over its own outer address pair",
		NewTunnel:         func(cfg *config) (Tunnel, error) { return newTunnelProgram(cfg, true) },
	},
	{
		Name:     "control",
		Describe: "kernel WireGuard carrying the inner flows: one outer flow, which the wire must not let the router see through",
		NewTunnel: func(cfg *config) (Tunnel, error) {
			if cfg.RouterVM && !hostHasWireGuard() {
				return nil, errors.New("this kernel has no WireGuard, and the hosts run here with the router in a VM; nor is the control needed: every frame crosses into the VM's kernel through QEMU, so no flow hash can reach the router (-vm=always runs the control, everything in the VM)")
			}
			return &wireGuard{}, nil
		},
		Squeezed: true,
		Control:  true,
	},
}

// describe says what m is when cfg's VPN runs it.
func (m mode) describe(cfg *config) string {
	if cfg.VPN == vpnWireGuard && m.DescribeWireGuard != "" {
		return m.DescribeWireGuard
	}
	return m.Describe
}

// The VPNs -vpn chooses between for the one-flow and spread modes.
const (
	vpnFlowtun   = "flowtun"   // examples/flowtun
	vpnWireGuard = "wireguard" // examples/wgspread: wireguard-go with or without spreading
)

// newTunnelProgram returns the one-flow (spread false) or spread tunnel of
// cfg's VPN.
func newTunnelProgram(cfg *config, spread bool) (Tunnel, error) {
	if cfg.VPN == vpnWireGuard {
		return newWgspread(cfg, spread)
	}
	return newFlowtun(cfg, spread)
}

// tunnelProgram returns the package of the program that runs cfg's
// one-flow and spread modes, and the config field holding its binary.
func tunnelProgram(cfg *config) (pkg string, bin *string) {
	if cfg.VPN == vpnWireGuard {
		return wgspreadPackage, &cfg.Wgspread
	}
	return flowtunPackage, &cfg.Flowtun
}

func modeNames() []string {
	names := make([]string, len(modes))
	for i, m := range modes {
		names[i] = m.Name
	}
	return names
}

func findMode(name string) (mode, bool) {
	for _, m := range modes {
		if m.Name == name {
			return m, true
		}
	}
	return mode{}, false
}

// Kernel WireGuard, the control. Its outer packets all carry one
// 5-tuple; the kernel computes skb->hash from the inner packet before
// encrypting (commit c78a0b4a), which is why the testbed needs its wire.

var (
	wgInnerNet    = netip.MustParsePrefix("2001:db8:f::/64")
	wgInnerClient = netip.MustParseAddr("2001:db8:f::a")
	wgInnerServer = netip.MustParseAddr("2001:db8:f::b")
)

const (
	wgIf   = "wg0"
	wgPort = 51820
)

type wireGuard struct {
	topo *Topology
}

func (w *wireGuard) Start(ctx context.Context, topo *Topology) (InnerPath, error) {
	w.topo = topo
	clientKey, clientPub, err := wgKeyPair(topo.Client)
	if err != nil {
		return InnerPath{}, err
	}
	serverKey, serverPub, err := wgKeyPair(topo.Server)
	if err != nil {
		return InnerPath{}, err
	}
	ends := []struct {
		ns          netns
		key, peer   string
		self, inner netip.Addr
		remote      netip.Addr
	}{
		{topo.Client, clientKey, serverPub, topo.ClientHost, wgInnerClient, topo.ServerHost},
		{topo.Server, serverKey, clientPub, topo.ServerHost, wgInnerServer, topo.ClientHost},
	}
	for _, e := range ends {
		if err := e.ns.ipBatch("link add " + wgIf + " type wireguard"); err != nil {
			w.Stop()
			return InnerPath{}, fmt.Errorf("kernel WireGuard (needs the wireguard module): %w", err)
		}
		cmd := e.ns.command("wg", "set", wgIf, "listen-port", fmt.Sprint(wgPort), "private-key", "/proc/self/fd/0",
			"peer", e.peer, "endpoint", netip.AddrPortFrom(e.remote, wgPort).String(),
			"allowed-ips", wgInnerNet.String())
		// The key goes through a pipe, never a file (the VM has no
		// /dev/stdin link: no udev there).
		cmd.Stdin = strings.NewReader(e.key + "\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			w.Stop()
			return InnerPath{}, fmt.Errorf("wg set in %s: %w: %s", e.ns, err, bytes.TrimSpace(out))
		}
		if err := e.ns.ipBatch(
			"addr add "+e.inner.String()+"/64 dev "+wgIf+" nodad",
			"link set "+wgIf+" up",
		); err != nil {
			w.Stop()
			return InnerPath{}, err
		}
	}
	return InnerPath{Client: wgInnerClient, Server: wgInnerServer}, nil
}

func (w *wireGuard) Stop() error {
	if w.topo == nil {
		return nil
	}
	var errs []error
	for _, ns := range []netns{w.topo.Client, w.topo.Server} {
		if ns.command("ip", "link", "show", wgIf).Run() != nil {
			continue // never made
		}
		if err := ns.run("ip", "link", "del", wgIf); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// wgKeyPair makes a WireGuard key pair with the wg tool.
func wgKeyPair(ns netns) (private, public string, err error) {
	out, err := ns.output("wg", "genkey")
	if err != nil {
		return "", "", err
	}
	private = strings.TrimSpace(string(out))
	cmd := ns.command("wg", "pubkey")
	cmd.Stdin = strings.NewReader(private + "\n")
	pub, err := cmd.Output()
	if err != nil {
		return "", "", fmt.Errorf("wg pubkey: %w", err)
	}
	return private, strings.TrimSpace(string(pub)), nil
}

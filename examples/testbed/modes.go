package main

import (
	"errors"

	"github.com/flowspread/flowspread/examples/testbed/internal/tunnel"
)

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
	NewTunnel func(cfg *config) (tunnel.Tunnel, error)
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
		NewTunnel:         func(cfg *config) (tunnel.Tunnel, error) { return newTunnelProgram(cfg, false) },
		Squeezed:          true,
	},
	{
		Name:              "spread",
		Describe:          "flowtun spreading each inner flow over its own outer address pair",
		DescribeWireGuard: "WireGuard (wgspread) spreading each inner flow over its own outer address pair",
		NewTunnel:         func(cfg *config) (tunnel.Tunnel, error) { return newTunnelProgram(cfg, true) },
	},
	{
		Name:     "control",
		Describe: "kernel WireGuard carrying the inner flows: one outer flow, which the wire must not let the router see through",
		NewTunnel: func(cfg *config) (tunnel.Tunnel, error) {
			if cfg.RouterVM && !hostHasWireGuard() {
				return nil, errors.New("this kernel has no WireGuard, and the hosts run here with the router in a VM; nor is the control needed: every frame crosses into the VM's kernel through QEMU, so no flow hash can reach the router (-vm=always runs the control, everything in the VM)")
			}
			return &tunnel.WireGuard{}, nil
		},
		Squeezed: true,
		Control:  true,
	},
}

// describe says what m is when cfg's VPN runs it, over cfg's dimension.
func (m mode) describe(cfg *config) string {
	if cfg.VPN == vpnWireGuard && m.DescribeWireGuard != "" {
		return m.DescribeWireGuard
	}
	if m.Name == "spread" && cfg.Dimension != "" && cfg.Dimension != tunnel.DimensionAddresses {
		return spreadDescriptions[cfg.Dimension]
	}
	return m.Describe
}

// spreadDescriptions describe the spread mode over the other dimensions.
var spreadDescriptions = map[string]string{
	tunnel.DimensionPorts: "flowtun spreading each inner flow over its own outer source port, from the client's one address to the server's one address and port",
	tunnel.DimensionBoth:  "flowtun spreading each inner flow over its own outer address pair and source port",
}

// The VPNs -vpn chooses between for the one-flow and spread modes.
const (
	vpnFlowtun   = "flowtun"   // examples/flowtun
	vpnWireGuard = "wireguard" // examples/wgspread: wireguard-go with or without spreading
)

// newTunnelProgram returns the one-flow (spread false) or spread tunnel of
// cfg's VPN.
func newTunnelProgram(cfg *config, spread bool) (tunnel.Tunnel, error) {
	if cfg.VPN == vpnWireGuard {
		w, err := tunnel.NewWgspread(cfg.Wgspread, spread)
		if err != nil {
			return nil, err
		}
		w.Open, w.Keepalive = cfg.tunnelOpen(), cfg.keepalive()
		return w, nil
	}
	f, err := tunnel.NewFlowtun(cfg.Flowtun, spread)
	if err != nil {
		return nil, err
	}
	f.Open, f.Keepalive = cfg.tunnelOpen(), cfg.keepalive()
	f.ServerSingle = cfg.ServerSingle
	f.Dimension, f.NAT = cfg.Dimension, cfg.NAT
	return f, nil
}

// tunnelProgram returns the package of the program that runs cfg's
// one-flow and spread modes, and the config field holding its binary.
func tunnelProgram(cfg *config) (pkg string, bin *string) {
	if cfg.VPN == vpnWireGuard {
		return tunnel.WgspreadPackage, &cfg.Wgspread
	}
	return tunnel.FlowtunPackage, &cfg.Flowtun
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

// usesTunnelProgram reports whether cfg runs a mode whose tunnel is a
// program of this module (flowtun or wgspread, as -vpn says).
func usesTunnelProgram(cfg *config) bool {
	for _, name := range cfg.Modes {
		if name == "one-flow" || name == "spread" {
			return true
		}
	}
	return false
}

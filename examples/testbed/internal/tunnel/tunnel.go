// Package tunnel brings the VPNs under test up between the client and the
// server namespaces of a [network.Topology] and down again: flowtun and
// wgspread (this module's examples), with or without spreading, and
// kernel WireGuard, the control whose outer packets are one flow.
package tunnel

import (
	"context"
	"encoding/json"
	"net/netip"

	"github.com/flowspread/flowspread/examples/testbed/internal/network"
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
	Start(ctx context.Context, topo *network.Topology) (InnerPath, error)
	// Stop tears the tunnel down, leaving the topology as Start found it.
	Stop() error
}

// InnerPath is where the loads inside a tunnel go: from Client, on the
// client namespace, to Server, on the server namespace.
type InnerPath struct {
	Client, Server netip.Addr
}

// CounterReporter is a Tunnel that can tell its own counters (drops,
// authentication failures) while it runs.
type CounterReporter interface {
	Counters() map[string]json.RawMessage
}

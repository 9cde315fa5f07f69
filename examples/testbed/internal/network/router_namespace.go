package network

import (
	"fmt"
	"slices"
	"strings"

	"github.com/flowspread/flowspread/internal/netns"
)

// namespaceRouter is the router in a namespace of this machine, with a
// wire on its links (WireKind), or on none (WireNone):
//
//	client ==c0--rc== router ==rs--s0== server
//
// With the copying wire, a fourth namespace forwards every frame as a
// fresh packet,
//
//	client ==c0--wc== wire ==wrc--rc== router ==rs--ws== wire ==wrs--s0== server
//
// With WireBoth the router-server link has a wire too; with WireClient
// only the client-router link.
type namespaceRouter struct {
	opts   Options
	prefix string
}

// copying reports whether the wire is the copying forwarder.
func (r *namespaceRouter) copying() bool {
	return r.opts.Wire != WireNone && r.opts.WireKind == WireCopy
}

func (r *namespaceRouter) namespaces(t *Topology) ([]netns.Namespace, string) {
	t.routerNS = netns.Namespace(r.prefix + "router")
	t.Router = t.routerNS
	if !r.copying() {
		return []netns.Namespace{t.routerNS}, ""
	}
	t.Wire = netns.Namespace(r.prefix + "wire")
	return []netns.Namespace{t.Wire, t.routerNS}, ""
}

func (r *namespaceRouter) link(t *Topology, progress func(string)) error {
	path := "client-router-server"
	if r.copying() {
		path = "client-wire-router-server"
	}
	progress("linking " + path)
	if err := r.linkVeths(t); err != nil {
		return err
	}
	progress("turning segmentation offloads off on the links to the router")
	if err := r.offloadsOff(t); err != nil {
		return err
	}
	return r.startWire(t, progress)
}

// linkVeths makes the veth pairs from the hosts (or the client's NAT)
// to the router, through the wire's namespace when the wire copies, and
// configures both ends.
func (r *namespaceRouter) linkVeths(t *Topology) error {
	both := r.opts.Wire == WireBoth
	clientPeer, clientPeerNs := RouterClientIf, t.routerNS
	if r.copying() {
		clientPeer, clientPeerNs = wireClientIf, t.Wire
	}
	edge, edgeIf := t.edge()
	if err := edge.IPBatch(append([]string{
		"link add " + edgeIf + " type veth peer name " + clientPeer + " netns " + string(clientPeerNs)},
		t.edgeCommands()...)...); err != nil {
		return err
	}
	serverPeer, serverPeerNs := RouterServerIf, t.routerNS
	if r.copying() && both {
		serverPeer, serverPeerNs = wireServerIf, t.Wire
	}
	if err := t.Server.IPBatch(append([]string{
		"link add " + serverIf + " type veth peer name " + serverPeer + " netns " + string(serverPeerNs)},
		t.plan.serverLinkCommands()...)...); err != nil {
		return err
	}
	if r.copying() {
		wireCmds := []string{"link set lo up",
			"link add " + wireRouterCIf + " type veth peer name " + RouterClientIf + " netns " + string(t.routerNS),
			"link set " + wireClientIf + " up promisc on",
			"link set " + wireRouterCIf + " up promisc on"}
		if both {
			wireCmds = append(wireCmds,
				"link add "+wireRouterSIf+" type veth peer name "+RouterServerIf+" netns "+string(t.routerNS),
				"link set "+wireServerIf+" up promisc on",
				"link set "+wireRouterSIf+" up promisc on")
		}
		if err := t.Wire.IPBatch(wireCmds...); err != nil {
			return err
		}
	}
	return t.routerNS.IPBatch(t.plan.routerLinkCommands()...)
}

// offloadsOff leaves MTU-sized packets at the bottleneck (see Topology).
// Around the copying wire, transmit checksum offload goes too: a frame
// can cross a veth with its checksum not yet filled in
// (CHECKSUM_PARTIAL), and the copy would carry it unfinished.
func (r *namespaceRouter) offloadsOff(t *Topology) error {
	features := slices.Clone(segmentationOff)
	edge, edgeIf := t.edge()
	offloads := map[netns.Namespace][]string{
		edge:       {edgeIf},
		t.routerNS: {RouterClientIf, RouterServerIf},
		t.Server:   {serverIf},
	}
	if r.copying() {
		features = append(features, "tx", "off")
		offloads[t.Wire] = []string{wireClientIf, wireRouterCIf}
		if r.opts.Wire == WireBoth {
			offloads[t.Wire] = append(offloads[t.Wire], wireServerIf, wireRouterSIf)
		}
	}
	for n, ifs := range offloads {
		for _, ifname := range ifs {
			if err := n.Run(append([]string{"ethtool", "-K", ifname}, features...)...); err != nil {
				return err
			}
		}
	}
	return nil
}

// startWire starts the copying forwarders, or attaches the hash-clearing
// program to the router's ingress.
func (r *namespaceRouter) startWire(t *Topology, progress func(string)) error {
	both := r.opts.Wire == WireBoth
	switch {
	case r.opts.Wire == WireNone:
		return nil
	case r.copying():
		progress("starting the wire forwarder")
		pairs := [][2]string{{wireClientIf, wireRouterCIf}}
		if both {
			pairs = append(pairs, [2]string{wireServerIf, wireRouterSIf})
		}
		for _, p := range pairs {
			w, err := startWire(t.Wire, r.opts.Self, p[0], p[1])
			if err != nil {
				return err
			}
			t.wires = append(t.wires, w)
		}
		return nil
	}
	ifs := []string{RouterClientIf}
	if both {
		ifs = append(ifs, RouterServerIf)
	}
	progress("clearing the flow hash at the router's ingress on " + strings.Join(ifs, ", "))
	if err := t.routerNS.Run(append([]string{r.opts.Self, "clear-hash"}, ifs...)...); err != nil {
		return fmt.Errorf("the hash-clearing wire (-wire-kind copy needs no BPF): %w", err)
	}
	return nil
}

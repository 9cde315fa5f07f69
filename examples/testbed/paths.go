package main

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/flowspread/flowspread/examples/testbed/internal/firewall"
	"github.com/flowspread/flowspread/examples/testbed/internal/network"
	"github.com/flowspread/flowspread/examples/testbed/internal/reach"
	"github.com/flowspread/flowspread/examples/testbed/internal/report"
	"github.com/flowspread/flowspread/examples/testbed/internal/tunnel"
	"github.com/flowspread/flowspread/internal/netns"
)

// Where -firewall puts stateful firewalls.
const (
	firewallNone   = "none"
	firewallClient = "client" // in front of the client: a home router's
	firewallBoth   = "both"   // in front of the server too
)

const (
	// keepaliveBehindFirewall is flowtun's -keepalive behind a
	// firewall, as WireGuard advises: below conntrack's 30 s.
	keepaliveBehindFirewall = 25 * time.Second
	// idleCheckTime is how long -idle-check leaves its connection idle:
	// past conntrack's 30 s UDP timeout and flowtun's 20 s path timeout.
	idleCheckTime = 35 * time.Second
	// reachPort is the tcp-check listeners' port on the inner addresses.
	reachPort = 5301
	// pings are the echo flows each end opens; pingCount their echoes.
	pings     = 5
	pingCount = 3
)

// reorderCounters are nstat's counters of TCP reordering seen by a host.
var reorderCounters = []string{"TcpExtTCPSACKReorder", "TcpExtTCPTSReorder", "TcpExtTCPRenoReorder"}

// behindFirewall says whether -firewall put a firewall in front of an end.
func (cfg *config) behindFirewall() bool {
	return cfg.Firewall == firewallClient || cfg.Firewall == firewallBoth
}

// tunnelOpen says whether flowtun or wgspread runs -open: with no
// firewall (today's behaviour, so earlier figures stay comparable), or
// when -open asks; never behind the NAT, where the server learns the
// client's translated ports (flowtun refuses -open with nat-ports).
func (cfg *config) tunnelOpen() bool {
	return !cfg.NAT && (!cfg.behindFirewall() || cfg.Open)
}

// keepalive is flowtun's -keepalive, and wgspread's persistent keepalive:
// only behind a firewall or the NAT, whose mapping it keeps.
func (cfg *config) keepalive() time.Duration {
	if !cfg.behindFirewall() && !cfg.NAT {
		return 0
	}
	return keepaliveBehindFirewall
}

// countsPairs says whether the client counts the tunnel's outer endpoint
// pairs (nft): wherever the count says something the default run's does
// not, so today's runs need no nft.
func (cfg *config) countsPairs() bool {
	return cfg.behindFirewall() || cfg.ServerSingle || cfg.NAT || cfg.Dimension != tunnel.DimensionAddresses
}

// firewalled returns the namespaces with a firewall in front.
func (e *experiment) firewalled() []netns.Namespace {
	switch e.cfg.Firewall {
	case firewallClient:
		return []netns.Namespace{e.topo.Client}
	case firewallBoth:
		return []netns.Namespace{e.topo.Client, e.topo.Server}
	}
	return nil
}

// setUpFirewalls puts the firewalls of -firewall in front of the hosts,
// and the table counting the tunnel's outer pairs on the client's link,
// and returns conntrack's timeouts (nil without a firewall).
func (e *experiment) setUpFirewalls() (*firewall.Timeouts, error) {
	if e.cfg.countsPairs() {
		if err := firewall.CountPairs(e.topo.Client, network.ClientIf, e.topo.ClientHost, tunnel.FlowtunPort); err != nil {
			return nil, err
		}
		e.countPairs = true
	}
	if !e.cfg.behindFirewall() {
		return nil, nil
	}
	client := firewall.Protect{Outside: network.ClientIf, Host: e.topo.ClientHost, VPNPort: tunnel.FlowtunPort}
	// The server's own load and probe servers stay open: the paths
	// outside the tunnel (and the direct mode's) must reach them.
	server := firewall.Protect{Outside: network.ServerIf, Host: e.topo.ServerHost, VPNPort: tunnel.FlowtunPort,
		TCPPorts: []int{iperf3InnerPort, iperf3OuterPort}, UDPPorts: []int{irttInnerPort, irttOuterPort}}
	e.progress("stateful firewall in front of the %s", map[string]string{firewallClient: "client", firewallBoth: "client and the server"}[e.cfg.Firewall])
	if err := firewall.Install(e.topo.Client, client); err != nil {
		return nil, err
	}
	if e.cfg.Firewall == firewallBoth {
		if err := firewall.Install(e.topo.Server, server); err != nil {
			return nil, err
		}
	}
	t, err := firewall.ConntrackTimeouts(e.topo.Client)
	if err != nil {
		return nil, err
	}
	return &t, nil
}

// pathSnapshot is the counters of report.PathCounters at one instant.
type pathSnapshot struct {
	drops   uint64
	tun     tunnel.PathCounters
	reorder uint64
}

// snapshot reads the counters now; those it cannot read count 0.
func (e *experiment) snapshot(tun tunnel.Tunnel) pathSnapshot {
	var s pathSnapshot
	for _, ns := range e.firewalled() {
		if n, err := firewall.Dropped(ns); err == nil {
			s.drops += n
		}
	}
	if c, ok := tun.(tunnel.CounterReporter); ok {
		s.tun = tunnel.Paths(c.Counters())
	}
	for _, ns := range []netns.Namespace{e.topo.Client, e.topo.Server} {
		if m, err := reach.Counters(ns, reorderCounters...); err == nil {
			s.reorder += reach.Sum(m)
		}
	}
	return s
}

// since is the counters from earlier to s.
func (s pathSnapshot) since(earlier pathSnapshot) report.PathCounters {
	t := s.tun.Since(earlier.tun)
	return report.PathCounters{FirewallDrops: s.drops - earlier.drops, SentWaiting: t.SentWaiting,
		ProbesSent: t.SentProbes, PathsOpened: t.PathsOpened, ReorderEvents: s.reorder - earlier.reorder}
}

// checkPaths opens flows through the tunnel from each end before the
// load, and returns the mode's Paths with the checks' counters; the
// caller finishes it with finishPaths after the load.
func (e *experiment) checkPaths(ctx context.Context, tun tunnel.Tunnel, inner tunnel.InnerPath) (*report.Paths, pathSnapshot, error) {
	p := &report.Paths{Firewall: e.cfg.Firewall, NAT: e.cfg.NAT, Open: e.cfg.tunnelOpen(), KeepaliveS: e.cfg.keepalive().Seconds(),
		MustReach: !e.cfg.behindFirewall() || !e.cfg.Open, PairsOut: -1, PairsIn: -1}
	switch tun := tun.(type) {
	case *tunnel.Flowtun:
		p.Tunnel = "flowtun"
		if !tun.Spread { // one outer flow: no range, no pair to open
			p.Tunnel, p.Open = "flowtun without spreading", false
		}
	case *tunnel.Wgspread:
		p.Open = p.Open && tun.Spread
		switch {
		case !tun.Spread:
			p.Tunnel = "wgspread with the stock bind"
		case p.Open:
			p.Tunnel = "wgspread -open"
		default:
			p.Tunnel = "wgspread, learning each path"
		}
	default:
		p.Tunnel, p.Open, p.KeepaliveS = "kernel WireGuard", false, 0
	}
	if e.countPairs {
		if err := firewall.ResetPairs(e.topo.Client); err != nil {
			return nil, pathSnapshot{}, err
		}
	}
	before := e.snapshot(tun)
	e.progress("  opening %d pings and a TCP connection from each end through the tunnel", pings)
	atServer, err := reach.Listen(e.topo.Server, e.self, netip.AddrPortFrom(inner.Server, reachPort))
	if err != nil {
		return nil, before, err
	}
	defer atServer.Stop()
	atClient, err := reach.Listen(e.topo.Client, e.self, netip.AddrPortFrom(inner.Client, reachPort))
	if err != nil {
		return nil, before, err
	}
	defer atClient.Stop()
	var wg sync.WaitGroup
	var mu sync.Mutex
	open := func(r *report.Reach, what string, try func() error) {
		err := try()
		mu.Lock()
		defer mu.Unlock()
		r.Attempted++
		if err != nil {
			r.Failed = append(r.Failed, fmt.Sprintf("%s: %v", what, err))
			return
		}
		r.Completed++
	}
	sides := []struct {
		from    netns.Namespace
		to      netip.Addr
		r       *report.Reach
		firstID int
	}{
		{e.topo.Client, inner.Server, &p.FromClient, 1001},
		{e.topo.Server, inner.Client, &p.FromServer, 2001},
	}
	for _, s := range sides {
		for id := s.firstID; id < s.firstID+pings; id++ {
			wg.Go(func() {
				open(s.r, fmt.Sprintf("ping id %d", id), func() error {
					n, err := reach.Ping(s.from, s.to, id, pingCount)
					if err == nil && n == 0 {
						err = fmt.Errorf("none of %d echoes answered", pingCount)
					}
					return err
				})
			})
		}
		wg.Go(func() {
			open(s.r, "tcp", func() error { return reach.Dial(s.from, e.self, netip.AddrPortFrom(s.to, reachPort), 0) })
		})
	}
	wg.Wait()
	p.Checks = e.snapshot(tun).since(before)
	if p.FromClient.Completed < p.FromClient.Attempted || p.FromServer.Completed < p.FromServer.Attempted {
		e.progress("  flows through: %d/%d from the client, %d/%d from the server", p.FromClient.Completed, p.FromClient.Attempted, p.FromServer.Completed, p.FromServer.Attempted)
	}
	return p, before, ctx.Err()
}

// idleCheck leaves a TCP connection from the client idle for
// idleCheckTime, then sends a segment each way, and counts the
// retransmissions on both hosts.
func (e *experiment) idleCheck(inner tunnel.InnerPath) *report.IdleCheck {
	check := &report.IdleCheck{IdleS: idleCheckTime.Seconds()}
	retrans := func() uint64 {
		var sum uint64
		for _, ns := range []netns.Namespace{e.topo.Client, e.topo.Server} {
			if m, err := reach.Counters(ns, "TcpRetransSegs"); err == nil {
				sum += reach.Sum(m)
			}
		}
		return sum
	}
	e.progress("  idle check: a TCP connection through the tunnel idle for %v, then a segment each way", idleCheckTime)
	l, err := reach.Listen(e.topo.Server, e.self, netip.AddrPortFrom(inner.Server, reachPort+1))
	if err != nil {
		check.Error = err.Error()
		return check
	}
	defer l.Stop()
	before := retrans()
	err = reach.Dial(e.topo.Client, e.self, netip.AddrPortFrom(inner.Server, reachPort+1), idleCheckTime)
	check.Retransmits = retrans() - before
	check.Completed = err == nil
	if err != nil {
		check.Error = err.Error()
	}
	return check
}

// finishPaths adds the whole mode's counters and outer pairs to p.
func (e *experiment) finishPaths(p *report.Paths, tun tunnel.Tunnel, before pathSnapshot) {
	p.Mode = e.snapshot(tun).since(before)
	if e.countPairs {
		if out, in, err := firewall.Pairs(e.topo.Client); err == nil {
			p.PairsOut, p.PairsIn = out, in
		}
	}
}

package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/flowspread/flowspread/examples/testbed/internal/load"
	"github.com/flowspread/flowspread/examples/testbed/internal/network"
	"github.com/flowspread/flowspread/examples/testbed/internal/report"
	"github.com/flowspread/flowspread/examples/testbed/internal/shaping"
	"github.com/flowspread/flowspread/examples/testbed/internal/tunnel"
)

// Ports of the servers; each path has its own so that the direct mode,
// where inner and outer path share the server's address, works too.
const (
	iperf3InnerPort = 5201
	iperf3OuterPort = 5202
	irttInnerPort   = load.IrttPort
	irttOuterPort   = load.IrttPort + 1
)

// qdiscSampleInterval spaces the samples of the router's qdisc
// statistics: each one starts a tc process, which costs the emulated
// machine a noticeable share of its CPU.
const qdiscSampleInterval = 3 * time.Second

// runMode runs one mode and measures it. Failures become the row's
// status; only the whole experiment's setup errors stop the run.
func (e *experiment) runMode(ctx context.Context, m mode) (res report.ModeResult) {
	res = report.ModeResult{Mode: m.Name, Description: m.Describe, Dimension: e.cfg.dimension(m)}
	start := time.Now()
	defer func() { res.ElapsedS = time.Since(start).Seconds() }()
	fail := func(err error) report.ModeResult {
		res.Status = report.StatusFailed
		res.Reasons = append(res.Reasons, err.Error())
		return res
	}
	var tun tunnel.Tunnel
	if m.NewTunnel != nil {
		t, err := m.NewTunnel(e.cfg)
		if err != nil {
			res.Status, res.Reasons = report.StatusSkipped, []string{err.Error()}
			return res
		}
		tun = t
	}
	if err := e.shapeRouter(); err != nil {
		return fail(err)
	}
	// Counted also when the load fails: a full neighbour table may say why.
	countNeighbours, err := e.watchNeighbours()
	if err != nil {
		return fail(err)
	}
	defer countNeighbours(&res)
	inner, stop, err := e.startTunnel(ctx, tun)
	if err != nil {
		return fail(err)
	}
	defer stop()
	servers, err := e.startServers(ctx, inner, tun != nil)
	defer stopServers(servers)
	if err != nil {
		return fail(err)
	}
	if tun != nil {
		paths, before, err := e.checkPaths(ctx, tun, inner)
		if err != nil {
			return fail(err)
		}
		res.Paths = paths
		// Also when the load fails: the firewalls' drops may say why.
		defer e.finishPaths(paths, tun, before)
	}
	got, err := e.measure(ctx, inner, &res)
	if err != nil {
		return fail(err)
	}
	if res.Paths != nil && e.cfg.IdleCheck {
		res.Paths.Idle = e.idleCheck(inner)
	}
	e.collect(tun, got, &res)
	res.Measure(report.Config{Qdisc: string(e.cfg.Qdisc), RateMbit: e.cfg.RateMbit,
		InnerFlows: e.cfg.InnerFlows, OuterFlows: e.cfg.OuterFlows},
		report.Kind{Squeezed: m.Squeezed, Control: m.Control}, got.rounds(e.cfg), e.cfg.targets())
	return res
}

// watchNeighbours empties the router's neighbour table on the client
// link with -onlink, and returns what adds its entries to a mode's result
// after the mode (nothing without -onlink).
func (e *experiment) watchNeighbours() (func(*report.ModeResult), error) {
	if !e.cfg.OnLink {
		return func(*report.ModeResult) {}, nil
	}
	if err := e.topo.FlushNeighbours(); err != nil {
		return nil, err
	}
	return func(res *report.ModeResult) {
		n, err := e.topo.CountNeighbours()
		if err != nil {
			res.Notes = append(res.Notes, "the router's neighbour entries could not be counted: "+err.Error())
			return
		}
		res.Neighbours = &n
	}, nil
}

// dimension is what mode m spreads over, for its row: only the spread
// mode spreads.
func (cfg *config) dimension(m mode) string {
	if m.Name != "spread" {
		return ""
	}
	return cfg.Dimension
}

// shapeRouter puts the bottleneck qdisc on both of the router's links.
func (e *experiment) shapeRouter() error {
	for _, dev := range []string{network.RouterServerIf, network.RouterClientIf} {
		if err := shaping.Shape(e.topo.Router, dev, e.cfg.Qdisc, e.cfg.RateMbit); err != nil {
			return err
		}
	}
	return nil
}

// startTunnel brings tun up, when there is one, and returns the inner
// path and what stops it.
func (e *experiment) startTunnel(ctx context.Context, tun tunnel.Tunnel) (tunnel.InnerPath, func(), error) {
	direct := tunnel.InnerPath{Client: e.topo.ClientHost, Server: e.topo.ServerHost}
	if tun == nil {
		return direct, func() {}, nil
	}
	e.progress("  starting the tunnel")
	p, err := tun.Start(ctx, e.topo)
	if err != nil {
		return direct, func() {}, fmt.Errorf("start the tunnel: %w", err)
	}
	return p, func() {
		if err := tun.Stop(); err != nil {
			e.progress("  stopping the tunnel: %v", err)
		}
	}, nil
}

// startServers starts the iperf3 and irtt servers of both paths, all at
// once: each waits until its server listens, and under emulation a
// process takes a while to get there. Through a fresh tunnel it then
// sends one exchange, as the first packets wait for its handshake.
func (e *experiment) startServers(ctx context.Context, inner tunnel.InnerPath, tunnelled bool) ([]*load.Server, error) {
	e.progress("  starting iperf3 and irtt servers")
	srv, host := e.topo.Server, e.topo.ServerHost
	starts := []func() (*load.Server, error){
		func() (*load.Server, error) { return load.StartIperf3Server(srv, inner.Server, iperf3InnerPort) },
		func() (*load.Server, error) { return load.StartIperf3Server(srv, host, iperf3OuterPort) },
		func() (*load.Server, error) {
			return load.StartIrttServer(srv, netip.AddrPortFrom(inner.Server, irttInnerPort), netip.AddrPortFrom(host, irttOuterPort))
		},
	}
	servers := make([]*load.Server, len(starts))
	errs := make([]error, len(starts))
	var started sync.WaitGroup
	for i, start := range starts {
		started.Go(func() { servers[i], errs[i] = start() })
	}
	started.Wait()
	if err := errors.Join(errs...); err != nil {
		return servers, err
	}
	if tunnelled {
		if _, err := load.RunIrtt(ctx, e.topo.Client, netip.AddrPortFrom(inner.Server, irttInnerPort), 100*time.Millisecond, time.Second); err != nil {
			return servers, fmt.Errorf("nothing crosses the tunnel: %w", err)
		}
	}
	e.progress("  servers up")
	return servers, nil
}

func stopServers(servers []*load.Server) {
	for _, s := range servers {
		if s != nil {
			s.Stop()
		}
	}
}

// collect adds what the tunnel and the wires counted, and the probes'
// summaries, to res.
func (e *experiment) collect(tun tunnel.Tunnel, got *measured, res *report.ModeResult) {
	if c, ok := tun.(tunnel.CounterReporter); ok {
		res.TunnelCounters = c.Counters()
		if dropped, auth := tunnel.Drops(res.TunnelCounters); dropped > 0 {
			res.Notes = append(res.Notes, fmt.Sprintf("the tunnel ends dropped %d datagrams (%d failed authentication): see tunnel_counters in results.json", dropped, auth))
		}
	}
	if wireAfter, err := e.topo.WireStats(); err == nil {
		for i := range wireAfter {
			res.Wire = append(res.Wire, wireAfter[i].Since(got.wireBefore[i]))
		}
	} else {
		res.Reasons = append(res.Reasons, err.Error())
	}
	res.Flows = got.flows
	innerAll, outerAll := got.whole()
	res.InnerProbe = report.NewProbeSummary(innerAll)
	res.OuterProbe = report.NewProbeSummary(outerAll)
}

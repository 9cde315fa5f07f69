package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"
)

// config is one experiment, from the command line.
type config struct {
	Qdisc         qdiscKind
	RateMbit      float64
	Duration      time.Duration // measured time of each mode's bulk load
	Omit          time.Duration // warm-up before it, left out of the results
	InnerFlows    int           // N: bulk flows in the tunnel's position
	OuterFlows    int           // M: bulk flows outside the tunnel
	ProbeInterval time.Duration
	// Idle is how long both probes run before each mode's load, to
	// measure each path's own delay (0: not measured).
	Idle     time.Duration
	Modes    []string
	OutDir   string
	Wire     wirePlacement
	WireKind wireKind
	Plots    bool
	// VPN is the tunnel of the one-flow and spread modes: vpnFlowtun or
	// vpnWireGuard.
	VPN string
	// Flowtun and Wgspread are the paths of the binaries the tunnel
	// modes run, as VPN says; the testbed builds the one it needs when
	// empty.
	Flowtun, Wgspread string
	// RequireTargets fails the run when the spread mode misses its
	// targets, as CI and scripts/experiment want.
	RequireTargets bool
	// LatencyTarget: RequireTargets includes the latency target.
	LatencyTarget bool

	VM string // auto, router, always or never
	// RouterVM: the router runs in a VM, the hosts here (routervm.go).
	RouterVM bool
	VMRunner string
	VMMemMB  int
}

// Ports of the servers; each path has its own so that the direct mode,
// where inner and outer path share the server's address, works too.
const (
	iperf3InnerPort = 5201
	iperf3OuterPort = 5202
	irttInnerPort   = irttPort
	irttOuterPort   = irttPort + 1
)

// minShareOfRate is how much of the bottleneck rate the bulk flows must
// carry together for a mode to count: TCP over IPv6 carries about 94% of
// the frame bytes that HTB or cake meter (89% inside WireGuard). Less
// means something else was the bottleneck (the tunnel, the wire, the
// emulated CPU), and then the qdisc under test decided nothing.
const minShareOfRate = 0.8

// qdiscSampleInterval spaces the samples of the router's qdisc
// statistics: each one starts a tc process, which costs the emulated
// machine a noticeable share of its CPU.
const qdiscSampleInterval = 3 * time.Second

// maxWireLoss is the share of frames the wire may fail to pass on.
const maxWireLoss = 0.01

// experiment runs the modes of cfg in turn on one topology.
type experiment struct {
	cfg   *config
	self  string
	log   io.Writer
	topo  *Topology
	start time.Time
}

// progress prints one line of progress with the seconds since the start.
func (e *experiment) progress(format string, args ...any) {
	fmt.Fprintf(e.log, "testbed: %5.1fs "+format+"\n", append([]any{time.Since(e.start).Seconds()}, args...)...)
}

// run builds the topology, runs every mode and returns the report. The
// report is returned, with the modes done so far, even when ctx ends.
func (e *experiment) run(ctx context.Context) (*report, error) {
	start := time.Now()
	e.start = start
	rep := &report{Config: newReportConfig(e.cfg, start)}
	opts := topologyOptions{
		Self:     e.self,
		Wire:     e.cfg.Wire,
		WireKind: e.cfg.WireKind,
		Progress: func(s string) { e.progress("%s", s) },
	}
	var topo *Topology
	var err error
	if e.cfg.RouterVM {
		topo, err = newRouterVMTopology(opts, routerVMOptions{
			Runner: e.cfg.VMRunner, OutDir: e.cfg.OutDir, MemMB: e.cfg.VMMemMB, Timeout: vmTimeout(e.cfg),
		})
		if err == nil {
			if k, kerr := topo.RouterCtl.output("uname", "-r"); kerr == nil {
				rep.Config.RouterKernel = strings.TrimSpace(string(k))
			}
		}
	} else {
		topo, err = newTopology(opts)
	}
	if err != nil {
		return nil, err
	}
	e.topo = topo
	defer func() {
		if err := topo.Close(); err != nil {
			e.progress("cleanup: %v", err)
		}
	}()
	for i, name := range e.cfg.Modes {
		m, _ := findMode(name)
		m.Describe = m.describe(e.cfg)
		if ctx.Err() != nil {
			break
		}
		e.progress("mode %d/%d: %s (%s)", i+1, len(e.cfg.Modes), m.Name, m.Describe)
		res := e.runMode(ctx, m)
		rep.Modes = append(rep.Modes, res)
		if res.Status == statusOK || res.Status == statusInvalid {
			e.progress("mode %s: %.1f Mbit/s in all, tunnel share %.2f, Jain %.3f, inner probe p99 %.1f ms, outer probe p99 %.1f ms",
				m.Name, float64(res.TotalMbit), float64(res.TunnelShare), float64(res.Jain),
				float64(res.InnerProbe.P99), float64(res.OuterProbe.P99))
		} else {
			e.progress("mode %s: %s: %s", m.Name, res.Status, strings.Join(res.Reasons, "; "))
		}
	}
	rep.Config.ElapsedS = time.Since(start).Seconds()
	rep.judge()
	if ctx.Err() != nil {
		return rep, ctx.Err()
	}
	return rep, nil
}

// runMode runs one mode and measures it. Failures become the row's
// status; only the whole experiment's setup errors stop the run.
func (e *experiment) runMode(ctx context.Context, m mode) (res modeResult) {
	cfg, topo := e.cfg, e.topo
	res = modeResult{Mode: m.Name, Description: m.Describe}
	start := time.Now()
	defer func() { res.ElapsedS = time.Since(start).Seconds() }()
	fail := func(err error) modeResult {
		res.Status = statusFailed
		res.Reasons = append(res.Reasons, err.Error())
		return res
	}

	var tun Tunnel
	if m.NewTunnel != nil {
		t, err := m.NewTunnel(cfg)
		if err != nil {
			res.Status = statusSkipped
			res.Reasons = []string{err.Error()}
			return res
		}
		tun = t
	}

	for _, dev := range []struct {
		ns  commander
		dev string
	}{{topo.RouterCtl, routerServerIf}, {topo.RouterCtl, routerClientIf}} {
		if err := shape(dev.ns, dev.dev, cfg.Qdisc, cfg.RateMbit); err != nil {
			return fail(err)
		}
	}

	inner := InnerPath{Client: topo.ClientHost, Server: topo.ServerHost}
	if tun != nil {
		e.progress("  starting the tunnel")
		p, err := tun.Start(ctx, topo)
		if err != nil {
			return fail(fmt.Errorf("start the tunnel: %w", err))
		}
		defer func() {
			if err := tun.Stop(); err != nil {
				e.progress("  stopping the tunnel: %v", err)
			}
		}()
		inner = p
	}

	e.progress("  starting iperf3 and irtt servers")
	var daemons []*daemon
	defer func() {
		for _, d := range daemons {
			if d != nil {
				d.stop()
			}
		}
	}()
	// Started together: each waits until its server listens, and under
	// emulation a process takes a while to get there.
	starts := []func() (*daemon, error){
		func() (*daemon, error) { return startIperf3Server(topo.Server, inner.Server, iperf3InnerPort) },
		func() (*daemon, error) { return startIperf3Server(topo.Server, topo.ServerHost, iperf3OuterPort) },
		func() (*daemon, error) {
			return startIrttServer(topo.Server,
				netip.AddrPortFrom(inner.Server, irttInnerPort), netip.AddrPortFrom(topo.ServerHost, irttOuterPort))
		},
	}
	daemons = make([]*daemon, len(starts))
	startErrs := make([]error, len(starts))
	var started sync.WaitGroup
	for i, start := range starts {
		started.Go(func() { daemons[i], startErrs[i] = start() })
	}
	started.Wait()
	if err := errors.Join(startErrs...); err != nil {
		return fail(err)
	}
	// The first packets through a fresh tunnel wait for its handshake:
	// one exchange before the clock starts.
	if tun != nil {
		if _, err := runIrtt(ctx, topo.Client, netip.AddrPortFrom(inner.Server, irttInnerPort), 100*time.Millisecond, time.Second); err != nil {
			return fail(fmt.Errorf("nothing crosses the tunnel: %w", err))
		}
	}

	e.progress("  servers up")
	if cfg.Idle > 0 {
		e.progress("  idle: both probes for %v, with no load", cfg.Idle)
		in, out, err := e.probeIdle(ctx, netip.AddrPortFrom(inner.Server, irttInnerPort))
		if err != nil {
			return fail(err)
		}
		res.InnerIdle, res.OuterIdle = &in, &out
	}
	wireBefore, err := topo.WireStats()
	if err != nil {
		return fail(err)
	}

	e.progress("  load: %d bulk flows inside, %d outside, 2 probes, %v warm-up + %v measured",
		cfg.InnerFlows, cfg.OuterFlows, cfg.Omit, cfg.Duration)
	loadCtx, cancelLoad := context.WithCancel(ctx)
	defer cancelLoad()
	var (
		wg                     sync.WaitGroup
		mu                     sync.Mutex
		errs                   []error
		innerFlows, outerFlows []flowResult
		innerProbe, outerProbe probeResult
	)
	record := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
		cancelLoad()
	}
	wg.Go(func() {
		f, err := runIperf3(loadCtx, topo.Client, inner.Server, iperf3InnerPort, cfg.InnerFlows, cfg.Duration, cfg.Omit, "inner", "inner")
		if err != nil {
			record(fmt.Errorf("bulk flows inside: %w", err))
		}
		innerFlows = f
	})
	if cfg.OuterFlows > 0 {
		wg.Go(func() {
			f, err := runIperf3(loadCtx, topo.Client, topo.ServerHost, iperf3OuterPort, cfg.OuterFlows, cfg.Duration, cfg.Omit, "outer", "outer")
			if err != nil {
				record(fmt.Errorf("bulk flows outside: %w", err))
			}
			outerFlows = f
		})
	}
	// The probes measure the loaded queue: they start after the warm-up
	// and stop a second before the bulk flows do.
	probeTime := max(cfg.Duration-time.Second, time.Second)
	probe := func(server netip.AddrPort, into *probeResult, what string) {
		select {
		case <-time.After(cfg.Omit):
		case <-loadCtx.Done():
			return
		}
		p, err := runIrtt(loadCtx, topo.Client, server, cfg.ProbeInterval, probeTime)
		if err != nil {
			record(fmt.Errorf("%s probe: %w", what, err))
		}
		*into = p
	}
	wg.Go(func() { probe(netip.AddrPortFrom(inner.Server, irttInnerPort), &innerProbe, "inner") })
	wg.Go(func() { probe(netip.AddrPortFrom(topo.ServerHost, irttOuterPort), &outerProbe, "outer") })

	// The qdiscs' flow counts exist only while packets are queued: sample
	// them through the measured time.
	res.Qdisc = &qdiscStats{Device: routerServerIf}
	res.ReverseQdisc = &qdiscStats{Device: routerClientIf}
	sample := func() {
		qs, err := sampleQdiscs(topo.RouterCtl)
		if err != nil {
			return
		}
		if q, ok := leaf(qs, routerServerIf); ok {
			res.Qdisc.add(q)
		}
		if q, ok := leaf(qs, routerClientIf); ok {
			res.ReverseQdisc.add(q)
		}
	}
	loadDone := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(qdiscSampleInterval)
		defer tick.Stop()
		begin := time.Now()
		for {
			select {
			case <-loadDone:
				return
			case <-tick.C:
			}
			elapsed := time.Since(begin)
			if elapsed < cfg.Omit {
				continue
			}
			sample()
			e.progress("  load running for %d s: the bottleneck has %d flows queued", int(elapsed/time.Second), res.Qdisc.lastFlows)
		}
	}()
	wg.Wait()
	close(loadDone)
	<-sampled
	if len(errs) > 0 {
		return fail(errors.Join(errs...))
	}
	e.progress("  load done")
	if c, ok := tun.(counterReporter); ok {
		res.TunnelCounters = c.Counters()
		if dropped, auth := flowtunDrops(res.TunnelCounters); dropped > 0 {
			res.Notes = append(res.Notes, fmt.Sprintf("the tunnel ends dropped %d datagrams (%d failed authentication): see tunnel_counters in results.json", dropped, auth))
		}
	}
	sample() // the final counters, after the last packet
	if wireAfter, err := topo.WireStats(); err == nil {
		for i := range wireAfter {
			res.Wire = append(res.Wire, wireAfter[i].since(wireBefore[i]))
		}
	} else {
		res.Reasons = append(res.Reasons, err.Error())
	}

	res.Flows = append(innerFlows, outerFlows...)
	res.InnerProbe = newProbeSummary(innerProbe)
	res.OuterProbe = newProbeSummary(outerProbe)
	res.measure(cfg, m)
	return res
}

// probeIdle runs the inner probe (to innerServer) and the outer probe at
// once, before any load: each path's own delay, which for the inner path
// is the tunnel's processing at its two ends.
func (e *experiment) probeIdle(ctx context.Context, innerServer netip.AddrPort) (inner, outer probeSummary, err error) {
	var (
		wg       sync.WaitGroup
		in, out  probeResult
		inErr    error
		outErr   error
		interval = e.cfg.ProbeInterval
	)
	wg.Go(func() { in, inErr = runIrtt(ctx, e.topo.Client, innerServer, interval, e.cfg.Idle) })
	wg.Go(func() {
		out, outErr = runIrtt(ctx, e.topo.Client, netip.AddrPortFrom(e.topo.ServerHost, irttOuterPort), interval, e.cfg.Idle)
	})
	wg.Wait()
	if inErr != nil {
		return inner, outer, fmt.Errorf("inner probe, with no load: %w", inErr)
	}
	if outErr != nil {
		return inner, outer, fmt.Errorf("outer probe, with no load: %w", outErr)
	}
	return newProbeSummary(in), newProbeSummary(out), nil
}

// newReportConfig records the experiment's settings and the machine.
func newReportConfig(cfg *config, start time.Time) reportConfig {
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return reportConfig{
		Qdisc:           string(cfg.Qdisc),
		RateMbit:        cfg.RateMbit,
		DurationS:       cfg.Duration.Seconds(),
		OmitS:           cfg.Omit.Seconds(),
		InnerFlows:      cfg.InnerFlows,
		OuterFlows:      cfg.OuterFlows,
		ProbeIntervalMs: float64(cfg.ProbeInterval) / float64(time.Millisecond),
		Wire:            string(cfg.Wire),
		WireKind:        string(cfg.WireKind),
		RouterVM:        cfg.RouterVM,
		VPN:             cfg.VPN,
		Kernel:          strings.TrimSpace(string(kernel)),
		InVM:            os.Getenv("FLOWSPREAD_IN_VM") == "1",
		Started:         start.UTC().Format(time.RFC3339),
	}
}

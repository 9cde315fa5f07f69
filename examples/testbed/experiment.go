package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/flowspread/flowspread/examples/testbed/internal/network"
	"github.com/flowspread/flowspread/examples/testbed/internal/report"
	"github.com/flowspread/flowspread/examples/testbed/internal/shaping"
	"github.com/flowspread/flowspread/examples/testbed/internal/verdict"
)

// config is one experiment, from the command line.
type config struct {
	Qdisc    shaping.Kind
	RateMbit float64
	// Duration is the measured time of each mode's bulk load, cut into
	// Rounds rounds, each judged on its own.
	Duration      time.Duration
	Rounds        int
	Omit          time.Duration // warm-up before it, left out of the results
	InnerFlows    int           // N: bulk flows in the tunnel's position
	OuterFlows    int           // M: bulk flows outside the tunnel
	ProbeInterval time.Duration
	// Idle is how long both probes run before each mode's load, to
	// measure each path's own delay (0: not measured).
	Idle     time.Duration
	Modes    []string
	OutDir   string
	Wire     network.Placement
	WireKind network.WireKind
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

	// Firewall is where stateful firewalls stand: firewallNone,
	// firewallClient or firewallBoth. Open runs flowtun -open behind
	// them anyway.
	Firewall string
	Open     bool
	// IdleCheck leaves a TCP connection through each tunnel idle past
	// conntrack's UDP timeout (idleCheckTime), then sends both ways.
	IdleCheck bool
	// ServerSingle gives the server one address and no spread prefix:
	// the client spreads towards it from its range.
	ServerSingle bool

	// Outer is the outer path's family; NAT puts a masquerading home
	// router in front of the client; OnLink gives the client no routed
	// prefix, only its link's /64.
	Outer  network.Outer
	NAT    bool
	OnLink bool
	// ProxyDelay replaces the on-link client's proxy_delay when 0 or
	// more; negative keeps the kernel's 0.8 s.
	ProxyDelay time.Duration
	// Dimension is what the spread mode spreads over: one of tunnel's
	// DimensionAddresses, DimensionPorts or DimensionBoth.
	Dimension string

	VM string // auto, router, always or never
	// RouterVM: the router runs in a VM, the hosts here.
	RouterVM bool
	VMRunner string
	VMMemMB  int

	built string // a tunnel binary this run built, removed at its end
}

// targets are the latency verdict's targets for cfg.
func (cfg *config) targets() verdict.Targets {
	return verdict.Targets{Gap: report.TargetGap, Quantile: report.TargetQuantile, Interval: cfg.ProbeInterval}
}

// experiment runs the modes of cfg in turn on one topology.
type experiment struct {
	cfg   *config
	self  string
	log   io.Writer
	topo  *network.Topology
	start time.Time
	// countPairs: the client counts the tunnel's outer pairs (nft).
	countPairs bool
}

// progress prints one line of progress with the seconds since the start.
func (e *experiment) progress(format string, args ...any) {
	fmt.Fprintf(e.log, "testbed: %5.1fs "+format+"\n", append([]any{time.Since(e.start).Seconds()}, args...)...)
}

// run builds the topology, runs every mode and returns the report. The
// report is returned, with the modes done so far, even when ctx ends.
func (e *experiment) run(ctx context.Context) (*report.Report, error) {
	e.start = time.Now()
	rep := &report.Report{Config: newReportConfig(e.cfg, e.start)}
	topo, err := e.buildTopology()
	if err != nil {
		return nil, err
	}
	e.topo = topo
	defer func() {
		if err := topo.Close(); err != nil {
			e.progress("cleanup: %v", err)
		}
	}()
	if rep.Config.Conntrack, err = e.setUpFirewalls(); err != nil {
		return nil, err
	}
	if e.cfg.RouterVM {
		if k, err := topo.Router.Output("uname", "-r"); err == nil {
			rep.Config.RouterKernel = strings.TrimSpace(string(k))
		}
	}
	for i, name := range e.cfg.Modes {
		if ctx.Err() != nil {
			break
		}
		m, _ := findMode(name)
		m.Describe = m.describe(e.cfg)
		e.progress("mode %d/%d: %s (%s)", i+1, len(e.cfg.Modes), m.Name, m.Describe)
		res := e.runMode(ctx, m)
		rep.Modes = append(rep.Modes, res)
		e.summarize(res)
	}
	rep.Config.ElapsedS = time.Since(e.start).Seconds()
	rep.Validate()
	return rep, ctx.Err()
}

// buildTopology builds the network, with the router in a namespace or,
// with cfg.RouterVM, in a VM.
func (e *experiment) buildTopology() (*network.Topology, error) {
	opts := network.Options{
		Self:       e.self,
		Wire:       e.cfg.Wire,
		WireKind:   e.cfg.WireKind,
		Outer:      e.cfg.Outer,
		NAT:        e.cfg.NAT,
		OnLink:     e.cfg.OnLink,
		ProxyDelay: e.cfg.proxyDelay(),
		Progress:   func(s string) { e.progress("%s", s) },
	}
	if e.cfg.RouterVM {
		opts.VM = &network.VMOptions{Runner: e.cfg.VMRunner, OutDir: e.cfg.OutDir, MemMB: e.cfg.VMMemMB, Timeout: vmTimeout(e.cfg)}
	}
	return network.New(opts)
}

// summarize prints one mode's outcome.
func (e *experiment) summarize(res report.ModeResult) {
	if res.Status != report.StatusOK && res.Status != report.StatusInvalid {
		e.progress("mode %s: %s: %s", res.Mode, res.Status, strings.Join(res.Reasons, "; "))
		return
	}
	e.progress("mode %s: %.1f Mbit/s in all, tunnel share %.2f, Jain %.3f, inner probe p99 %.1f ms, outer probe p99 %.1f ms, latency %s",
		res.Mode, float64(res.TotalMbit), float64(res.TunnelShare), float64(res.Jain),
		float64(res.InnerProbe.P99), float64(res.OuterProbe.P99), res.Targets.Latency)
}

// proxyDelay is -proxy-delay for the network: nil keeps the kernel's.
func (cfg *config) proxyDelay() *time.Duration {
	if cfg.ProxyDelay < 0 {
		return nil
	}
	return &cfg.ProxyDelay
}

// proxyDelayOf is the -proxy-delay the report records, in seconds: nil
// without -onlink or where the kernel's was kept.
func proxyDelayOf(cfg *config) *float64 {
	if !cfg.OnLink || cfg.ProxyDelay < 0 {
		return nil
	}
	s := cfg.ProxyDelay.Seconds()
	return &s
}

// newReportConfig records the experiment's settings and the machine.
func newReportConfig(cfg *config, start time.Time) report.Config {
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return report.Config{
		Qdisc:           string(cfg.Qdisc),
		RateMbit:        cfg.RateMbit,
		DurationS:       cfg.Duration.Seconds(),
		OmitS:           cfg.Omit.Seconds(),
		InnerFlows:      cfg.InnerFlows,
		OuterFlows:      cfg.OuterFlows,
		ProbeIntervalMs: float64(cfg.ProbeInterval) / float64(time.Millisecond),
		Rounds:          cfg.Rounds,
		Wire:            string(cfg.Wire),
		WireKind:        string(cfg.WireKind),
		RouterVM:        cfg.RouterVM,
		VPN:             cfg.VPN,
		Firewall:        cfg.Firewall,
		ServerSingle:    cfg.ServerSingle,
		Outer:           string(cfg.Outer),
		NAT:             cfg.NAT,
		OnLink:          cfg.OnLink,
		ProxyDelayS:     proxyDelayOf(cfg),
		Kernel:          strings.TrimSpace(string(kernel)),
		InVM:            os.Getenv("FLOWSPREAD_IN_VM") == "1",
		Started:         start.UTC().Format(time.RFC3339),
	}
}

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"
)

// interruptSignal asks a tool to stop early and still print what it has.
var interruptSignal = os.Interrupt

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is the program, returning its exit status: 0 when the report is
// valid, 1 when it is not or the run failed, 2 when it refused to start.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "wire" {
		return wireMain(args[1:])
	}
	if len(args) > 0 && args[0] == "clear-hash" {
		return clearHashMain(args[1:])
	}
	if len(args) > 0 && args[0] == "router-agent" {
		return routerAgentMain(args[1:])
	}
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "testbed:", err)
		return 2
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(stderr, "testbed: needs root to create network namespaces and qdiscs: run it as root (sudo)")
		return 2
	}
	if missing := missingTools(cfg); len(missing) > 0 {
		fmt.Fprintf(stderr, "testbed: missing %s: run scripts/install-deps (it installs them with apt-get)\n", strings.Join(missing, ", "))
		return 2
	}

	if pkg, bin := tunnelProgram(cfg); usesTunnelProgram(cfg) && *bin == "" && os.Getenv("FLOWSPREAD_IN_VM") != "1" {
		if err := os.MkdirAll(cfg.OutDir, 0o755); err != nil {
			fmt.Fprintln(stderr, "testbed:", err)
			return 1
		}
		built, err := buildProgram(cfg.OutDir, pkg)
		if err != nil {
			fmt.Fprintln(stderr, "testbed:", err)
			return 2
		}
		defer os.Remove(built)
		*bin = built
	}

	place, reason, err := vmPlan(cfg)
	if err != nil {
		fmt.Fprintln(stderr, "testbed:", err)
		return 1
	}
	if place == placeRouterVM {
		runner, err := findVMRunner(cfg.VMRunner)
		if err != nil {
			fmt.Fprintln(stderr, "testbed:", err)
			return 2
		}
		cfg.VMRunner, cfg.RouterVM = runner, true
		fmt.Fprintf(stderr, "testbed: %s: the router runs in a VM with Debian's stock kernel (scripts/vm), the hosts and their tunnels here\n", why(reason))
		if cfg.VM == "auto" {
			fmt.Fprintln(stderr, "testbed: (-vm=always runs everything in the VM, -vm=never refuses)")
		}
	}
	if place == placeVM {
		fmt.Fprintf(stderr, "testbed: %s: running the experiment in a VM with Debian's stock kernel (scripts/vm; boot takes about 10 s)\n", why(reason))
		if cfg.VM == "auto" {
			fmt.Fprintln(stderr, "testbed: (-vm=never refuses instead)")
		}
		start := time.Now()
		code, err := runInVM(cfg, args, stdout, stderr)
		if err != nil {
			fmt.Fprintln(stderr, "testbed:", err)
			return 1
		}
		fmt.Fprintf(stderr, "testbed: the VM run took %.0f s in all, boot included; results in %s\n", time.Since(start).Seconds(), cfg.OutDir)
		return code
	}
	if cfg.VM == "never" && os.Getenv("FLOWSPREAD_IN_VM") != "1" {
		if lack, err := hostLacks(cfg); err == nil && lack != "" {
			fmt.Fprintf(stderr, "testbed: this kernel lacks %s, and -vm=never forbids the VM: run with -vm=auto\n", lack)
			return 2
		}
	}

	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(stderr, "testbed: cannot find this program, which runs the wire:", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	e := &experiment{cfg: cfg, self: self, log: stderr}
	rep, err := e.run(ctx)
	if rep == nil {
		fmt.Fprintln(stderr, "testbed:", err)
		return 1
	}
	if err != nil {
		fmt.Fprintln(stderr, "testbed: stopped early:", err)
	}
	rep.writeTable(stdout)
	files, werr := rep.writeOutputs(cfg.OutDir, cfg.Plots)
	if len(files) > 0 {
		fmt.Fprintf(stderr, "testbed: wrote %s\n", strings.Join(files, ", "))
	}
	if werr != nil {
		fmt.Fprintln(stderr, "testbed:", werr)
		return 1
	}
	if !rep.Valid || err != nil {
		return 1
	}
	if cfg.RequireTargets {
		if missed := rep.missedTargets(cfg.LatencyTarget); missed != "" {
			fmt.Fprintln(stderr, "testbed:", missed)
			return 1
		}
	}
	return 0
}

// why turns vmPlan's reason into words: a flag, or what the kernel lacks.
func why(reason string) string {
	if strings.HasPrefix(reason, "-vm=") {
		return "as " + reason + " asks"
	}
	return "this kernel lacks " + reason
}

// parseFlags reads the command line into a config and checks it.
func parseFlags(args []string, stderr io.Writer) (*config, error) {
	fs := flag.NewFlagSet("testbed", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := &config{}
	qdisc := fs.String("qdisc", string(qdiscFQCodel), "bottleneck qdisc: fq_codel (under HTB), cake-flows, cake-triple, or fifo (the control with no isolation)")
	fs.Float64Var(&cfg.RateMbit, "rate", 20, "bottleneck rate in Mbit/s, each way")
	fs.DurationVar(&cfg.Duration, "d", 20*time.Second, "measured time of each mode")
	fs.DurationVar(&cfg.Omit, "warmup", 2*time.Second, "warm-up before each mode's measured time, left out of the results")
	fs.IntVar(&cfg.InnerFlows, "n", 4, "bulk TCP flows in the tunnel's position (inside it, when there is one)")
	fs.IntVar(&cfg.OuterFlows, "m", 4, "bulk TCP flows outside the tunnel")
	fs.DurationVar(&cfg.ProbeInterval, "probe", 10*time.Millisecond, "interval of the irtt latency probes")
	fs.DurationVar(&cfg.Idle, "idle", 3*time.Second, "probe both paths for this long before each mode's load, to measure each path's own delay with no queue (what the tunnel itself costs); 0 skips it")
	modeList := fs.String("modes", strings.Join(modeNames(), ","), "modes to run, in order, comma-separated")
	fs.StringVar(&cfg.OutDir, "out", "testbed-results", "directory for results.json and the plots")
	wire := fs.String("wire", "both", "where the hash-clearing wire sits: both (client-router and router-server links), client (the client-router link only: ACKs and probe replies then reach the router with the server's hash), or none (plain veths, which leak the flow hash: a diagnostic the control run fails); only where the router is a namespace, not with the router in a VM, whose network cards are real wires")
	kind := fs.String("wire-kind", string(wireClearHash), "what the wire is: clear-hash (a tc program on the router's ingress clears the flow hash; free) or copy (a forwarder copies every frame into a fresh packet, as a cable does; costs a CPU under emulation)")
	fs.BoolVar(&cfg.Plots, "plots", true, "draw latency-cdf.png and throughput.png")
	fs.StringVar(&cfg.VM, "vm", "auto", "where to use a VM with Debian's stock kernel: router (only the router in the VM; the hosts, tunnels and loads here), always (everything in the VM), never, or auto (router when this kernel lacks the qdisc, always when it lacks only WireGuard for the control)")
	fs.StringVar(&cfg.VMRunner, "vm-runner", "", "path of scripts/vm (default: found from the working directory)")
	fs.IntVar(&cfg.VMMemMB, "vm-mem", 2048, "VM memory in MiB")
	fs.BoolVar(&cfg.RequireTargets, "require-targets", false, "exit with status 1 also when the spread mode ran and missed its targets (inner probe p99 within 2 ms of the outer's, Jain >= 0.95), or the one-flow mode ran and was not squeezed")
	fs.BoolVar(&cfg.LatencyTarget, "latency-target", true, "with -require-targets, require the spread mode's latency target too; false reports it without requiring it (under software emulation each pass through a user-space tunnel end costs about half a millisecond with no load, and a round trip makes four: more than the target allows)")
	fs.StringVar(&cfg.VPN, "vpn", vpnFlowtun, "the VPN of the one-flow and spread modes: flowtun (examples/flowtun), or wireguard (examples/wgspread: wireguard-go with its own StdNetBind for one-flow, spreading for spread)")
	fs.StringVar(&cfg.Flowtun, "flowtun", "", "path of a built examples/flowtun for the one-flow and spread modes with -vpn flowtun (default: go build it into -out)")
	fs.StringVar(&cfg.Wgspread, "wgspread", "", "path of a built examples/wgspread for the one-flow and spread modes with -vpn wireguard (default: go build it into -out)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `usage: testbed [flags]

Measures how a VPN's inner flows fare at a flow-queueing bottleneck: bulk
TCP flows (iperf3) and a latency probe (irtt) inside and outside a tunnel,
through a router that shapes with fq_codel, cake or a FIFO. Needs root.
Modes: %s.

`, strings.Join(modeNames(), ", "))
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (flags only; see -help)", fs.Arg(0))
	}
	var err error
	if cfg.Qdisc, err = parseQdiscKind(*qdisc); err != nil {
		return nil, err
	}
	switch w := wirePlacement(*wire); w {
	case wireClient, wireBoth, wireNone:
		cfg.Wire = w
	default:
		return nil, fmt.Errorf("-wire %q: want client, both or none", *wire)
	}
	switch k := wireKind(*kind); k {
	case wireClearHash, wireCopy:
		cfg.WireKind = k
	default:
		return nil, fmt.Errorf("-wire-kind %q: want clear-hash or copy", *kind)
	}
	switch cfg.VPN {
	case vpnFlowtun, vpnWireGuard:
	default:
		return nil, fmt.Errorf("-vpn %q: want flowtun or wireguard", cfg.VPN)
	}
	switch cfg.VM {
	case "auto", "always", "never", "router":
	default:
		return nil, fmt.Errorf("-vm %q: want auto, router, always or never", cfg.VM)
	}
	for _, name := range strings.Split(*modeList, ",") {
		name = strings.TrimSpace(name)
		if _, ok := findMode(name); !ok {
			return nil, fmt.Errorf("unknown mode %q: want some of %s", name, strings.Join(modeNames(), ","))
		}
		if slices.Contains(cfg.Modes, name) {
			return nil, fmt.Errorf("mode %q listed twice", name)
		}
		cfg.Modes = append(cfg.Modes, name)
	}
	switch {
	case cfg.RateMbit <= 0 || cfg.RateMbit > 10000:
		return nil, fmt.Errorf("-rate %g: want a rate in Mbit/s above 0 and at most 10000", cfg.RateMbit)
	case cfg.Duration < 2*time.Second:
		return nil, fmt.Errorf("-d %v: want at least 2s", cfg.Duration)
	case cfg.Omit < 0:
		return nil, fmt.Errorf("-warmup %v: want 0 or more", cfg.Omit)
	case cfg.InnerFlows < 1 || cfg.InnerFlows > 64:
		return nil, fmt.Errorf("-n %d: want 1 to 64 flows", cfg.InnerFlows)
	case cfg.OuterFlows < 0 || cfg.OuterFlows > 64:
		return nil, fmt.Errorf("-m %d: want 0 to 64 flows", cfg.OuterFlows)
	case cfg.ProbeInterval < time.Millisecond:
		return nil, fmt.Errorf("-probe %v: want at least 1ms", cfg.ProbeInterval)
	case cfg.Idle != 0 && cfg.Idle < time.Second:
		return nil, fmt.Errorf("-idle %v: want 0 (skip) or at least 1s", cfg.Idle)
	case cfg.VMMemMB < 512:
		return nil, fmt.Errorf("-vm-mem %d: want at least 512 MiB", cfg.VMMemMB)
	}
	return cfg, nil
}

// toolPackages maps each program the testbed runs to its Debian package.
var toolPackages = map[string]string{
	"ip": "iproute2", "tc": "iproute2", "ethtool": "ethtool",
	"iperf3": "iperf3", "irtt": "irtt", "wg": "wireguard-tools",
}

// missingTools lists the programs cfg needs that are not installed, with
// their packages.
func missingTools(cfg *config) []string {
	need := []string{"ip", "tc", "ethtool", "iperf3", "irtt"}
	if slices.Contains(cfg.Modes, "control") || cfg.VPN == vpnWireGuard && usesTunnelProgram(cfg) {
		need = append(need, "wg")
	}
	var missing []string
	for _, tool := range need {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, fmt.Sprintf("%s (package %s)", tool, toolPackages[tool]))
		}
	}
	return missing
}

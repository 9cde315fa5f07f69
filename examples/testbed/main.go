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

	"github.com/flowspread/flowspread/examples/testbed/internal/network"
	"github.com/flowspread/flowspread/examples/testbed/internal/reach"
	"github.com/flowspread/flowspread/examples/testbed/internal/report"
	"github.com/flowspread/flowspread/examples/testbed/internal/tunnel"
)

// Exit statuses.
const (
	exitMet          = 0 // the report is valid (and, with -require-targets, the targets met)
	exitNotMet       = 1 // invalid, failed, or a target missed
	exitRefused      = 2 // refused to start: a flag, root or a tool
	exitInconclusive = 3 // -require-targets: the host was too busy to judge the latency
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// helpers are the subcommands this program runs itself as: the copying
// wire, the hash-clearing tc program, the router VM's agent.
var helpers = map[string]func([]string) int{
	"wire":              network.WireMain,
	"clear-hash":        network.ClearHashMain,
	"router-agent":      network.RouterAgentMain,
	"neighbour-proxies": network.NeighbourProxiesMain,
	"tcp-check":         reach.TCPMain,
}

// run is the program, returning its exit status (exitMet and so on).
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		if helper, ok := helpers[args[0]]; ok {
			return helper(args[1:])
		}
	}
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitMet
	}
	if err != nil {
		fmt.Fprintln(stderr, "testbed:", err)
		return exitRefused
	}
	if code, ok := prepare(cfg, stderr); !ok {
		return code
	}
	if cfg.built != "" {
		defer os.Remove(cfg.built)
	}
	place, code, ok := placeExperiment(cfg, stderr)
	if !ok {
		return code
	}
	if place == placeVM {
		return runWholeInVM(cfg, args, stdout, stderr)
	}
	return runHere(cfg, stdout, stderr)
}

// prepare checks that the experiment can run here and builds the tunnel
// program it needs; false with the exit status when it cannot.
func prepare(cfg *config, stderr io.Writer) (int, bool) {
	if os.Geteuid() != 0 {
		fmt.Fprintln(stderr, "testbed: needs root to create network namespaces and qdiscs: run it as root (sudo)")
		return exitRefused, false
	}
	if missing := missingTools(cfg); len(missing) > 0 {
		fmt.Fprintf(stderr, "testbed: missing %s: run scripts/install-deps (it installs them with apt-get)\n", strings.Join(missing, ", "))
		return exitRefused, false
	}
	pkg, bin := tunnelProgram(cfg)
	if !usesTunnelProgram(cfg) || *bin != "" || os.Getenv("FLOWSPREAD_IN_VM") == "1" {
		return exitMet, true
	}
	if err := os.MkdirAll(cfg.OutDir, 0o755); err != nil {
		fmt.Fprintln(stderr, "testbed:", err)
		return exitNotMet, false
	}
	built, err := tunnel.Build(cfg.OutDir, pkg)
	if err != nil {
		fmt.Fprintln(stderr, "testbed:", err)
		return exitRefused, false
	}
	*bin, cfg.built = built, built
	return exitMet, true
}

// placeExperiment decides where the experiment runs (vmPlan) and says
// so; false with the exit status when it cannot run.
func placeExperiment(cfg *config, stderr io.Writer) (string, int, bool) {
	place, reason, err := vmPlan(cfg)
	if err != nil {
		fmt.Fprintln(stderr, "testbed:", err)
		return "", exitNotMet, false
	}
	switch place {
	case placeRouterVM:
		runner, err := network.FindVMRunner(cfg.VMRunner)
		if err != nil {
			fmt.Fprintln(stderr, "testbed:", err)
			return "", exitRefused, false
		}
		cfg.VMRunner, cfg.RouterVM = runner, true
		fmt.Fprintf(stderr, "testbed: %s: the router runs in a VM with Debian's stock kernel (scripts/vm), the hosts and their tunnels here\n", why(reason))
		if cfg.VM == "auto" {
			fmt.Fprintln(stderr, "testbed: (-vm=always runs everything in the VM, -vm=never refuses)")
		}
	case placeVM:
		fmt.Fprintf(stderr, "testbed: %s: running the experiment in a VM with Debian's stock kernel (scripts/vm; boot takes about 10 s)\n", why(reason))
		if cfg.VM == "auto" {
			fmt.Fprintln(stderr, "testbed: (-vm=never refuses instead)")
		}
	default:
		if cfg.VM == "never" && os.Getenv("FLOWSPREAD_IN_VM") != "1" {
			if lack, err := hostLacks(cfg); err == nil && lack != "" {
				fmt.Fprintf(stderr, "testbed: this kernel lacks %s, and -vm=never forbids the VM: run with -vm=auto\n", lack)
				return "", exitRefused, false
			}
		}
	}
	return place, exitMet, true
}

// runWholeInVM runs this program with args in the VM and returns its
// exit status.
func runWholeInVM(cfg *config, args []string, stdout, stderr io.Writer) int {
	start := time.Now()
	code, err := runInVM(cfg, args, stdout, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "testbed:", err)
		return exitNotMet
	}
	fmt.Fprintf(stderr, "testbed: the VM run took %.0f s in all, boot included; results in %s\n", time.Since(start).Seconds(), cfg.OutDir)
	return code
}

// runHere runs the experiment on this machine (the router perhaps in a
// VM), prints the table, writes the outputs and returns the exit status.
func runHere(cfg *config, stdout, stderr io.Writer) int {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(stderr, "testbed: cannot find this program, which runs the wire:", err)
		return exitNotMet
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	e := &experiment{cfg: cfg, self: self, log: stderr}
	rep, err := e.run(ctx)
	if rep == nil {
		fmt.Fprintln(stderr, "testbed:", err)
		return exitNotMet
	}
	if err != nil {
		fmt.Fprintln(stderr, "testbed: stopped early:", err)
	}
	rep.WriteTable(stdout)
	files, werr := rep.WriteOutputs(cfg.OutDir, cfg.Plots)
	if len(files) > 0 {
		fmt.Fprintf(stderr, "testbed: wrote %s\n", strings.Join(files, ", "))
	}
	if werr != nil {
		fmt.Fprintln(stderr, "testbed:", werr)
		return exitNotMet
	}
	if err != nil {
		return exitNotMet
	}
	return exitStatus(rep, cfg, stderr)
}

// exitStatus is the exit status of a run that went to its end, saying
// on stderr why it is not exitMet.
func exitStatus(rep *report.Report, cfg *config, stderr io.Writer) int {
	if !rep.Valid {
		return exitNotMet
	}
	if !cfg.RequireTargets {
		return exitMet
	}
	missed, inconclusive := rep.Missed(cfg.LatencyTarget)
	switch {
	case inconclusive:
		fmt.Fprintln(stderr, "testbed:", missed)
		return exitInconclusive
	case missed != "":
		fmt.Fprintln(stderr, "testbed:", missed)
		return exitNotMet
	}
	return exitMet
}

// why turns vmPlan's reason into words: a flag, or what the kernel lacks.
func why(reason string) string {
	if strings.HasPrefix(reason, "-vm=") {
		return "as " + reason + " asks"
	}
	return "this kernel lacks " + reason
}

// toolPackages maps each program the testbed runs to its Debian package.
var toolPackages = map[string]string{
	"ip": "iproute2", "tc": "iproute2", "ethtool": "ethtool",
	"iperf3": "iperf3", "irtt": "irtt", "wg": "wireguard-tools",
	"nft": "nftables", "ping": "iputils-ping", "nstat": "iproute2",
}

// missingTools lists the programs cfg needs that are not installed, with
// their packages.
func missingTools(cfg *config) []string {
	need := []string{"ip", "tc", "ethtool", "iperf3", "irtt"}
	if usesTunnelProgram(cfg) || slices.Contains(cfg.Modes, "control") {
		need = append(need, "ping", "nstat") // the reachability checks
	}
	if cfg.countsPairs() {
		need = append(need, "nft") // and the NAT's masquerade
	}
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

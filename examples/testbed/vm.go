package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/flowspread/flowspread/examples/testbed/internal/network"
	"github.com/flowspread/flowspread/internal/netns"
)

// The kernels of many build machines lack fq_codel, cake or WireGuard.
// Then the testbed runs itself inside a VM that boots Debian's stock
// kernel on the host's own root file system (scripts/vm): the binary, the
// tools (iperf3, irtt, wg) and their versions are the host's.

// Where the experiment runs (-vm).
const (
	placeHere     = "here"   // everything on this machine
	placeVM       = "vm"     // everything in the VM
	placeRouterVM = "router" // the hosts here, the router in the VM (package network)
)

// vmPlan says where this experiment runs, and why when it is not here.
// With -vm auto: here when this kernel has what the experiment needs; the
// router in the VM when this kernel lacks the qdisc, since only the router
// needs it; everything in the VM when only WireGuard for the control is
// missing.
func vmPlan(cfg *config) (place, reason string, err error) {
	if os.Getenv("FLOWSPREAD_IN_VM") == "1" {
		return placeHere, "", nil // already inside: never nest
	}
	switch cfg.VM {
	case "never":
		return placeHere, "", nil
	case "always":
		return placeVM, "-vm=always", nil
	case "router":
		return placeRouterVM, "-vm=router", nil
	}
	lack, err := hostLacks(cfg)
	switch {
	case err != nil:
		return "", "", err
	case lack == "":
		return placeHere, "", nil
	case lack == lackWireGuard:
		return placeVM, lack, nil
	}
	return placeRouterVM, lack, nil
}

// lackWireGuard is what hostLacks says when only WireGuard is missing.
const lackWireGuard = "kernel WireGuard (for the control mode)"

// hostLacks tries, in a scratch namespace, what the experiment needs from
// the kernel, and returns the first thing missing, or "".
func hostLacks(cfg *config) (string, error) {
	ns, err := netns.Add("fstb-probe-" + netns.RandomID())
	if err != nil {
		return "", err
	}
	defer ns.Delete()

	if err := ns.Run("ip", "link", "add", "probe0", "type", "veth", "peer", "name", "probe1"); err != nil {
		return "veth interfaces", nil
	}
	for _, args := range cfg.Qdisc.SetupCommands("probe0", cfg.RateMbit) {
		if err := ns.Run(append([]string{"tc"}, args...)...); err != nil {
			return fmt.Sprintf("the %s qdisc (tc %s failed)", cfg.Qdisc.KernelQdisc(), strings.Join(args, " ")), nil
		}
	}
	if slices.Contains(cfg.Modes, "control") {
		if err := ns.Run("ip", "link", "add", "probewg", "type", "wireguard"); err != nil {
			return lackWireGuard, nil
		}
	}
	return "", nil
}

// hostHasWireGuard reports whether this kernel can make a WireGuard link.
func hostHasWireGuard() bool {
	ns, err := netns.Add("fstb-probe-" + netns.RandomID())
	if err != nil {
		return false
	}
	defer ns.Delete()
	return ns.Run("ip", "link", "add", "probewg", "type", "wireguard") == nil
}

// vmTimeout bounds the VM's run: boot, setup, every mode, with room for a
// slow emulated machine.
func vmTimeout(cfg *config) time.Duration {
	perMode := cfg.Omit + cfg.Duration + 30*time.Second
	return 2*time.Minute + time.Duration(len(cfg.Modes))*perMode*2
}

// runInVM runs this program with args inside the VM and returns its exit
// status. The binary is copied into the output directory, which the VM
// shares read-write as its working directory, so the results land there.
func runInVM(cfg *config, args []string, stdout, stderr io.Writer) (int, error) {
	runner, err := network.FindVMRunner(cfg.VMRunner)
	if err != nil {
		return 0, err
	}
	return network.RunInVM(network.VMRun{
		Runner: runner, OutDir: cfg.OutDir, MemMB: cfg.VMMemMB, Timeout: vmTimeout(cfg), Args: args,
		Programs: map[string]string{"flowtun": cfg.Flowtun, "wgspread": cfg.Wgspread},
	}, stdout, stderr)
}

package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The kernels of many build machines lack fq_codel, cake or WireGuard.
// Then the testbed runs itself inside a VM that boots Debian's stock
// kernel on the host's own root file system (scripts/vm): the binary, the
// tools (iperf3, irtt, wg) and their versions are the host's.

// Where the experiment runs (-vm).
const (
	placeHere     = "here"   // everything on this machine
	placeVM       = "vm"     // everything in the VM
	placeRouterVM = "router" // the hosts here, the router in the VM (routervm.go)
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
	var suffix [3]byte
	rand.Read(suffix[:])
	ns := netns("fstb-probe-" + hex.EncodeToString(suffix[:]))
	if out, err := exec.Command("ip", "netns", "add", string(ns)).CombinedOutput(); err != nil {
		return "", fmt.Errorf("ip netns add %s: %w: %s", ns, err, out)
	}
	defer exec.Command("ip", "netns", "del", string(ns)).Run()

	if err := ns.run("ip", "link", "add", "probe0", "type", "veth", "peer", "name", "probe1"); err != nil {
		return "veth interfaces", nil
	}
	for _, args := range cfg.Qdisc.setupCommands("probe0", cfg.RateMbit) {
		if err := ns.run(append([]string{"tc"}, args...)...); err != nil {
			return fmt.Sprintf("the %s qdisc (tc %s failed)", cfg.Qdisc.kernelQdisc(), strings.Join(args, " ")), nil
		}
	}
	if slices.Contains(cfg.Modes, "control") {
		if err := ns.run("ip", "link", "add", "probewg", "type", "wireguard"); err != nil {
			return lackWireGuard, nil
		}
	}
	return "", nil
}

// hostHasWireGuard reports whether this kernel can make a WireGuard link.
func hostHasWireGuard() bool {
	var suffix [3]byte
	rand.Read(suffix[:])
	ns := netns("fstb-probe-" + hex.EncodeToString(suffix[:]))
	if err := exec.Command("ip", "netns", "add", string(ns)).Run(); err != nil {
		return false
	}
	defer exec.Command("ip", "netns", "del", string(ns)).Run()
	return ns.run("ip", "link", "add", "probewg", "type", "wireguard") == nil
}

// findVMRunner returns the path of scripts/vm: the -vm-runner flag, or
// the first scripts/vm found going up from the working directory, then
// from this program's own directory.
func findVMRunner(flagValue string) (string, error) {
	if flagValue != "" {
		return filepath.Abs(flagValue)
	}
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if exe, err := os.Executable(); err == nil {
		starts = append(starts, filepath.Dir(exe))
	}
	for _, dir := range starts {
		for {
			candidate := filepath.Join(dir, "scripts", "vm")
			if st, err := os.Stat(candidate); err == nil && !st.IsDir() {
				return candidate, nil
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return "", errors.New("cannot find scripts/vm, the project's VM runner: run the testbed from inside the flowspread checkout, or pass -vm-runner PATH")
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
	runner, err := findVMRunner(cfg.VMRunner)
	if err != nil {
		return 0, err
	}
	out, err := filepath.Abs(cfg.OutDir)
	if err != nil {
		return 0, err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return 0, err
	}
	self, err := os.Executable()
	if err != nil {
		return 0, fmt.Errorf("find this program to run it in the VM: %w", err)
	}
	// The VM hides the host's /tmp (where `go run` builds), so the binary
	// travels in the shared directory, under a name no other run uses.
	bin := ".testbed-vm-" + strconv.Itoa(os.Getpid())
	if err := copyFile(self, filepath.Join(out, bin)); err != nil {
		return 0, fmt.Errorf("copy this program into %s for the VM: %w", out, err)
	}
	defer os.Remove(filepath.Join(out, bin))

	// Later flags win: the VM's copy must not start another VM, and
	// writes into the shared directory.
	vmArgs := []string{"-m", strconv.Itoa(cfg.VMMemMB), "-c", "2",
		"-t", strconv.Itoa(int(vmTimeout(cfg) / time.Second)), "--", "./" + bin}
	vmArgs = append(vmArgs, args...)
	vmArgs = append(vmArgs, "-vm=never", "-out=.")
	for _, prog := range []struct{ flag, bin string }{{"flowtun", cfg.Flowtun}, {"wgspread", cfg.Wgspread}} {
		if prog.bin == "" {
			continue
		}
		// Built into the shared directory, which is the VM's working
		// directory.
		name := filepath.Base(prog.bin)
		if filepath.Dir(prog.bin) != out {
			name = "." + prog.flag + "-vm-" + strconv.Itoa(os.Getpid())
			if err := copyFile(prog.bin, filepath.Join(out, name)); err != nil {
				return 0, fmt.Errorf("copy %s into %s for the VM: %w", prog.bin, out, err)
			}
			defer os.Remove(filepath.Join(out, name))
		}
		vmArgs = append(vmArgs, "-"+prog.flag+"=./"+name)
	}
	cmd := exec.Command(runner, vmArgs...)
	cmd.Dir = out
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("run %s: %w", runner, err)
	}
	// A signal to this program stops the VM too, which the runner does
	// when it gets the signal (a terminal's Ctrl-C reaches both anyway).
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		for sig := range sigs {
			cmd.Process.Signal(sig)
		}
	}()
	err = cmd.Wait()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode(), nil
	}
	if err != nil {
		return 0, fmt.Errorf("run %s: %w", runner, err)
	}
	return 0, nil
}

func copyFile(from, to string) error {
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return err
	}
	return dst.Close()
}

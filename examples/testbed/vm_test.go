package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flowspread/flowspread/examples/testbed/internal/report"
)

// vmRunner is the project's VM runner, from this package's directory.
func vmRunner(t *testing.T) string {
	t.Helper()
	path, err := filepath.Abs(filepath.Join("..", "..", "scripts", "vm"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the VM runner: %v", err)
	}
	return path
}

// stopGently makes a timed-out command get SIGTERM, which scripts/vm
// passes on to its VM, instead of a SIGKILL that would leave QEMU running.
func stopGently(cmd *exec.Cmd) {
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
}

// TestVMRunner boots the VM and checks what the testbed relies on: the
// qdiscs and WireGuard this machine's kernel may lack, the shared working
// directory, separate stdout and stderr, environment, and the command's
// exit status.
func TestVMRunner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("scripts/vm needs root (it installs packages and shares / over 9p): run the tests as root")
	}
	dir := t.TempDir()
	script := `set -e
tc qdisc add dev lo root fq_codel
tc qdisc replace dev lo root cake bandwidth 20mbit besteffort triple-isolate
tc qdisc replace dev lo root handle 1: htb default 1
ip link add wgtest type wireguard
ip link add vmtest0 type veth peer name vmtest1
echo "$GREETING" > from-vm
tc qdisc show dev lo
echo to-stderr >&2
exit 7`
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, vmRunner(t), "-t", "300", "-e", "GREETING=hello from the VM", "--", "sh", "-c", script)
	stopGently(cmd)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 7 {
		t.Fatalf("exit: %v, want status 7\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	if !strings.Contains(stdout.String(), "qdisc htb 1: root") {
		t.Errorf("stdout lacks the qdisc listing:\n%s", stdout.String())
	}
	if strings.Contains(stdout.String(), "to-stderr") || !strings.Contains(stderr.String(), "to-stderr") {
		t.Errorf("stderr not kept apart: stdout %q, stderr %q", stdout.String(), stderr.String())
	}
	got, err := os.ReadFile(filepath.Join(dir, "from-vm"))
	if err != nil || string(got) != "hello from the VM\n" {
		t.Errorf("file written in the VM: %q, %v", got, err)
	}
}

// TestExperimentInVM runs a short experiment end to end through
// -vm=always: the binary built on the host, re-executed in the VM, the
// wire, WireGuard and fq_codel, and the report it writes back. CI's
// scripts/vm-tests runs the whole shortened experiment in the VM, which
// covers this, so it runs only when FLOWSPREAD_VM_EXPERIMENT=1.
func TestExperimentInVM(t *testing.T) {
	rep, table, _ := runTestbedInVM(t, &config{Modes: []string{"control"}},
		"scripts/vm-tests runs the experiment in the VM; set FLOWSPREAD_VM_EXPERIMENT=1 to run this one too",
		"-modes", "direct,control")
	checkDirectAndControl(t, rep, table)
}

// runTestbedInVM builds the testbed, runs it with -vm=always at 10 Mbit/s
// for 6 s per mode plus args, and returns its report, its table (stdout)
// and its progress (stderr). It skips the test unless
// FLOWSPREAD_VM_EXPERIMENT=1 (saying skipWhy), it runs as root, not with
// -short, and with every tool the modes of need use.
func runTestbedInVM(t *testing.T, need *config, skipWhy string, args ...string) (rep *report.Report, stdout, stderr string) {
	t.Helper()
	if os.Getenv("FLOWSPREAD_VM_EXPERIMENT") != "1" {
		t.Skip(skipWhy)
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (namespaces, scripts/vm): run the tests as root")
	}
	if testing.Short() {
		t.Skip("boots a VM and runs two modes for about a minute; skipped with -short")
	}
	if missing := missingTools(need); len(missing) > 0 {
		t.Skipf("missing %s: run scripts/install-deps", strings.Join(missing, ", "))
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "testbed")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out := filepath.Join(dir, "out")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"-vm=always", "-vm-runner", vmRunner(t),
		"-rate", "10", "-d", "6s", "-warmup", "2s", "-plots=false", "-out", out}, args...)...)
	stopGently(cmd)
	var outBuf, errBuf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &outBuf, &errBuf
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 1) {
		// 1 is an invalid report, judged by the caller; anything else is a failure.
		t.Fatalf("testbed: %v\nstdout:\n%s\nstderr:\n%s", err, outBuf.String(), errBuf.String())
	}
	rep, err = report.Read(filepath.Join(out, "results.json"))
	if err != nil {
		t.Fatalf("%v\nstderr:\n%s", err, errBuf.String())
	}
	if !rep.Config.InVM {
		t.Error("the report says it did not run in the VM")
	}
	for _, pattern := range []string{".testbed-vm-*", ".wgspread-*"} {
		if left, _ := filepath.Glob(filepath.Join(out, pattern)); len(left) > 0 {
			t.Errorf("binaries copied for the VM were left in the output directory: %q", left)
		}
	}
	return rep, outBuf.String(), errBuf.String()
}

// checkDirectAndControl asserts what the direct and control modes must
// show at a flow-queueing bottleneck behind the wire: direct flows are
// fair, WireGuard's are squeezed into about one flow's share.
func checkDirectAndControl(t *testing.T, rep *report.Report, table string) {
	t.Helper()
	if len(rep.Modes) != 2 {
		t.Fatalf("%d modes in the report, want 2\n%s", len(rep.Modes), table)
	}
	direct, control := rep.Modes[0], rep.Modes[1]
	for _, r := range rep.Modes {
		if r.Status != report.StatusOK && r.Status != report.StatusInvalid {
			t.Fatalf("mode %s: %s: %q\n%s", r.Mode, r.Status, r.Reasons, table)
		}
		if len(r.Flows) != rep.Config.InnerFlows+rep.Config.OuterFlows {
			t.Errorf("mode %s: %d flows", r.Mode, len(r.Flows))
		}
		if r.InnerProbe.Samples == 0 || r.OuterProbe.Samples == 0 {
			t.Errorf("mode %s: a probe got no replies", r.Mode)
		}
		if r.Qdisc == nil || r.Qdisc.Kind != "fq_codel" || r.Qdisc.Packets == 0 {
			t.Errorf("mode %s: bottleneck qdisc statistics %+v", r.Mode, r.Qdisc)
		}
	}
	// The shares say something only when the bottleneck decided them: on
	// a machine too busy to fill the link (other jobs taking the CPU from
	// the emulated one) the flows were limited before the router.
	saturated := func(r report.ModeResult) bool {
		return float64(r.TotalMbit) >= report.MinShareOfRate*rep.Config.RateMbit
	}
	if !saturated(direct) || !saturated(control) {
		t.Skipf("the machine was too busy to fill the %g Mbit/s link (direct %.1f, control %.1f Mbit/s): the shares prove nothing; rerun on a quieter machine\n%s",
			rep.Config.RateMbit, float64(direct.TotalMbit), float64(control.TotalMbit), table)
	}
	if float64(direct.Jain) < 0.9 {
		t.Errorf("direct flows unfair: Jain %.3f\n%s", float64(direct.Jain), table)
	}
	// One flow's share is 1/(M+1) = 0.2; isolated would be 0.5.
	if share := float64(control.TunnelShare); share > 0.35 {
		t.Errorf("WireGuard's flows got %.2f of the goodput: the router isolated them, so the wire leaks the hash\n%s", share, table)
	}
	if control.Status != report.StatusOK || direct.Status != report.StatusOK {
		t.Errorf("direct %s %q, control %s %q; want both ok\n%s", direct.Status, direct.Reasons, control.Status, control.Reasons, table)
	}
}

// TestVMPlanFlags: -vm router, always and never decide without probing
// the kernel, and a testbed already in the VM never starts another.
func TestVMPlanFlags(t *testing.T) {
	for _, tc := range []struct {
		vm, inVM, place string
	}{
		{"router", "", placeRouterVM},
		{"always", "", placeVM},
		{"never", "", placeHere},
		{"router", "1", placeHere},
		{"always", "1", placeHere},
	} {
		t.Setenv("FLOWSPREAD_IN_VM", tc.inVM)
		cfg := testConfig()
		cfg.VM = tc.vm
		place, reason, err := vmPlan(cfg)
		if err != nil || place != tc.place {
			t.Errorf("-vm %s, FLOWSPREAD_IN_VM=%q: place %q (%q), %v; want %q", tc.vm, tc.inVM, place, reason, err, tc.place)
		}
		if place != placeHere && !strings.Contains(why(reason), "-vm="+tc.vm) {
			t.Errorf("-vm %s: the message %q does not name the flag", tc.vm, why(reason))
		}
	}
}

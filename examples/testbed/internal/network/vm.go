package network

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"
)

// FindVMRunner returns the path of scripts/vm: the -vm-runner flag, or
// the first scripts/vm found going up from the working directory, then
// from this program's own directory.
func FindVMRunner(flagValue string) (string, error) {
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

// VMRun is one run of this program inside a VM with Debian's stock
// kernel, booted by scripts/vm on the host's own root file system.
type VMRun struct {
	Runner string // scripts/vm
	// OutDir is shared read-write with the VM as its working directory,
	// so the results land there.
	OutDir  string
	MemMB   int
	Timeout time.Duration
	// Args are this program's arguments in the VM; Programs are the
	// binaries it runs, by the flag that names them (flowtun: -flowtun),
	// carried into OutDir as the VM hides the host's /tmp.
	Args     []string
	Programs map[string]string
}

// RunInVM runs this program as r says inside the VM and returns its exit
// status.
func RunInVM(r VMRun, stdout, stderr io.Writer) (int, error) {
	out, err := filepath.Abs(r.OutDir)
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
	if err := CopyFile(self, filepath.Join(out, bin)); err != nil {
		return 0, fmt.Errorf("copy this program into %s for the VM: %w", out, err)
	}
	defer os.Remove(filepath.Join(out, bin))

	// Later flags win: the VM's copy must not start another VM, and
	// writes into the shared directory.
	vmArgs := []string{"-m", strconv.Itoa(r.MemMB), "-c", "2",
		"-t", strconv.Itoa(int(r.Timeout / time.Second)), "--", "./" + bin}
	vmArgs = append(vmArgs, r.Args...)
	vmArgs = append(vmArgs, "-vm=never", "-out=.")
	progArgs, copies, err := carryPrograms(r.Programs, out)
	defer func() {
		for _, c := range copies {
			os.Remove(c)
		}
	}()
	if err != nil {
		return 0, err
	}
	vmArgs = append(vmArgs, progArgs...)
	return runForwardingSignals(exec.Command(r.Runner, vmArgs...), out, stdout, stderr)
}

// carryPrograms puts each of programs (by flag) into the shared directory
// out, which is the VM's working directory, and returns the flags that
// name them there and the copies it made.
func carryPrograms(programs map[string]string, out string) (args, copies []string, err error) {
	for _, flag := range slices.Sorted(maps.Keys(programs)) {
		bin := programs[flag]
		if bin == "" {
			continue
		}
		name := filepath.Base(bin) // built into out already
		if filepath.Dir(bin) != out {
			name = "." + flag + "-vm-" + strconv.Itoa(os.Getpid())
			if err := CopyFile(bin, filepath.Join(out, name)); err != nil {
				return args, copies, fmt.Errorf("copy %s into %s for the VM: %w", bin, out, err)
			}
			copies = append(copies, filepath.Join(out, name))
		}
		args = append(args, "-"+flag+"=./"+name)
	}
	return args, copies, nil
}

// runForwardingSignals runs cmd in dir and returns its exit status. A
// signal to this program stops the VM too, which the runner does when it
// gets the signal (a terminal's Ctrl-C reaches both anyway).
func runForwardingSignals(cmd *exec.Cmd, dir string, stdout, stderr io.Writer) (int, error) {
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("run %s: %w", cmd.Path, err)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		for sig := range sigs {
			cmd.Process.Signal(sig)
		}
	}()
	err := cmd.Wait()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode(), nil
	}
	if err != nil {
		return 0, fmt.Errorf("run %s: %w", cmd.Path, err)
	}
	return 0, nil
}

// CopyFile copies the file from to to, executable.
func CopyFile(from, to string) error {
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
